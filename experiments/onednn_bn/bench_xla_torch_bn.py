import os, sys, time, statistics
os.environ["OMP_NUM_THREADS"]="1"
os.environ["XLA_FLAGS"]="--xla_cpu_multi_thread_eigen=false"
import jax, jax.numpy as jnp, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, "/work/wt/cpu-step")
from cnnjax import ops
def jx(shape, residual):
    x = jnp.asarray(np.random.randn(*shape).astype(np.float32))
    r = jnp.asarray(np.random.randn(*shape).astype(np.float32)) if residual else None
    s = jnp.ones(shape[-1]); b = jnp.zeros(shape[-1])
    g = jnp.asarray(np.random.randn(*shape).astype(np.float32))
    def f(x, s, b, r):
        y, m, v = ops.batch_norm(x, s, b, train=True, residual=r, activation="relu")
        return y, m, v
    def step(x, s, b, r, g):
        (y, m, v), vjp = jax.vjp(f, x, s, b, r)
        return y, m, v, vjp((g, jnp.zeros_like(m), jnp.zeros_like(v)))
    c = jax.jit(step).lower(x, s, b, r, g).compile()
    return lambda: jax.block_until_ready(c(x, s, b, r, g))
def tt(shape, residual):
    n,h,w,c = shape
    x = torch.randn(n,c,h,w).contiguous(memory_format=torch.channels_last).requires_grad_()
    r = torch.randn(n,c,h,w).contiguous(memory_format=torch.channels_last).requires_grad_() if residual else None
    bn = torch.nn.BatchNorm2d(c)
    g = torch.randn(n,c,h,w).contiguous(memory_format=torch.channels_last)
    def run():
        y = bn(x)
        if residual: y = y + r
        y = torch.relu(y)
        y.backward(g)
    return run
def timed(f, n=5):
    f(); ts=[]
    for _ in range(n):
        t=time.process_time(); f(); ts.append(time.process_time()-t)
    return statistics.median(ts)*1e3
for shape in [(128,32,32,16),(128,16,16,32),(128,8,8,64),(512,16,16,256)]:
    for res in (False, True):
        a, b = jx(shape, res), tt(shape, res)
        ra, rb = [], []
        for _ in range(3):
            ra.append(timed(a)); rb.append(timed(b))
        print(shape, "residual" if res else "", f"xla {statistics.median(ra):.2f} ms torch {statistics.median(rb):.2f} ms ratio {statistics.median(ra)/statistics.median(rb):.2f}", flush=True)
