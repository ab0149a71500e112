"""Fast kernels behind one switch, each equal to its pure-JAX reference in `cnnjax.ops`: Pallas
kernels for the operations where XLA's GPU lowering is weak, and the CPU extension
(`cnnjax.kernels.onednn`): oneDNN's convolutions, which every convolution of `cnnjax.ops` goes
through on an x86-64 CPU once this package is imported (`dispatch.conv_backend`), and cnnjax's
batch-norm and pooling kernels (the same passes as the Pallas ones). Every pass is a JAX
primitive (`cnnjax.kernels.primitive`) with JVP, transpose and batching rules, so the kernels
compose with jit, grad, jvp, jacfwd, hessian, linearize, vmap, shard_map and export, and
reverse mode runs their backward kernels.

Entry points (usable under any transformation; each runs its Pallas kernel on a GPU under "auto" or
"pallas", in the Pallas interpreter with `interpret=True` (the argument or the switch's), its CPU
kernel (batch norm, pooling) on an x86-64 CPU under "auto" or "onednn", and its reference
otherwise: other switches or backends, arguments the kernel does not take):
- depthwise_conv2d(x, w, b=None, *, stride=1, padding="SAME", interpret=False)
- max_pool2d(x, window, *, stride=None, padding=0, interpret=False)
- avg_pool2d(x, window, *, stride=None, padding=0, count_include_pad=True, interpret=False)
- batch_norm_act(x, scale, bias, *, residual=None, activation="relu", eps=1e-5,
  interpret=False) -> (y, mean, var)

The switch ("auto", the default, "xla", "pallas" or "onednn"; see `dispatch`): `use("pallas")`
(a context manager), `set_default("pallas")` (process-wide), `KernelScoped(model, "pallas")` (a
model's init/apply; what `config.model.kernels` sets).
"""

from cnnjax.kernels import dispatch
from cnnjax.kernels.batch_norm_act import batch_norm_act
from cnnjax.kernels.depthwise import depthwise_conv2d
from cnnjax.kernels.dispatch import CHOICES, KernelScoped, Setting, current, set_default, use
from cnnjax.kernels.pool import avg_pool2d, max_pool2d
from cnnjax.ops.hooks import register_kernel as _register_kernel

_register_kernel("conv", dispatch.conv_backend)
