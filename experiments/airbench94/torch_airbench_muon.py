"""airbench94_muon (KellerJordan/cifar10-airbench, airbench94_muon.py: 94.01% mean over 200 runs
in 2.59 s on an A100) in plain PyTorch on the CPU: the reference `configs/airbench94_muon.py` is
compared with, on the same data (the CIFAR-10 JPEG q75 copy) and the same machine.

    python experiments/airbench94/torch_airbench_muon.py --seed=0 \
        --checkpoint=runs/airbench94_muon/torch_seed0.ckpt.pt \
        --json=runs/airbench94_muon/torch_seed0.json

The recipe is the original's (values with the function they come from in HYP); data loading,
the network, whitening, TTA and evaluation are torch_airbench.py's, which follow the same
public code. Differences from the original, all forced by the CPU: float32 NCHW instead of fp16
channels_last (the Newton-Schulz iteration stays in bfloat16 as in the original, or float32
with --ns_dtype=float32 on a CPU without bfloat16), no torch.compile. Checkpoints after every
epoch; the same command resumes from one. One JSON line at the end, as torch_airbench.py.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_airbench import (AlternatingFlipLoader, Net, evaluate, init_whitening,  # noqa: E402
                            load_cifar, parser, record, set_threads, split_tensors)

HYP = dict(
    batch_size=2000,          # main(): batch_size = 2000
    epochs=8,                 # main(): total_train_steps = ceil(8 * len(train_loader))
    whiten_bias_epochs=3,     # main(): whiten_bias_train_steps = ceil(3 * len(train_loader))
    bias_lr=0.053,            # main(): bias_lr (whitening bias and batch-norm biases)
    head_lr=0.67,             # main(): head_lr
    wd_per_example=2e-6,      # main(): wd = 2e-6 * batch_size, weight_decay=wd/lr per group
    sgd_momentum=0.85,        # main(): SGD(..., momentum=0.85, nesterov=True)
    muon_lr=0.24,             # main(): Muon(filter_params, lr=0.24, momentum=0.6, nesterov=True)
    muon_momentum=0.6,
    ns_steps=3,               # zeropower_via_newtonschulz5(G, steps=3)
    label_smoothing=0.2,      # F.cross_entropy(..., label_smoothing=0.2, reduction="sum")
    widths=(64, 256, 256),
    bn_momentum=0.6,          # BatchNorm(momentum=0.6): PyTorch momentum 0.4
    whiten_samples=5000,      # init_whiten(train_images[:5000]), eps 5e-4
    whiten_eps=5e-4,
    translate=2,
)


def newton_schulz5(g: torch.Tensor, steps: int, dtype: torch.dtype, eps: float = 1e-7):
    """The original's zeropower_via_newtonschulz5: quintic iteration (3.4445, -4.7750, 2.0315)
    on G / (||G|| + eps), transposed when rows > cols."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    if g.size(0) > g.size(1):
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.size(0) > g.size(1) else x


class Muon(torch.optim.Optimizer):
    """The original's Muon: Nesterov momentum, each filter renormalised to norm sqrt(out), then
    the orthogonalised update of the (out, in*kh*kw) view."""

    def __init__(self, params, lr: float, momentum: float, ns_steps: int, ns_dtype: torch.dtype):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps,
                                      ns_dtype=ns_dtype))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad)
                g = p.grad.add(buf, alpha=group["momentum"])
                p.mul_(len(p) ** 0.5 / p.norm())
                update = newton_schulz5(g.reshape(len(g), -1), group["ns_steps"],
                                        group["ns_dtype"]).view(g.shape)
                p.add_(update.to(p.dtype), alpha=-group["lr"])


def make_optimizers(net: Net, hyp: dict, ns_dtype: torch.dtype):
    """main()'s two optimisers: SGD on the whitening bias, the batch-norm biases and the head
    (coupled decay wd/lr), Muon on the 3x3 filters."""
    wd = hyp["wd_per_example"] * hyp["batch_size"]
    filters = [p for p in net.parameters() if p.ndim == 4 and p.requires_grad]
    norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    sgd = torch.optim.SGD(
        [dict(params=[net.whiten.bias], lr=hyp["bias_lr"], weight_decay=wd / hyp["bias_lr"]),
         dict(params=norm_biases, lr=hyp["bias_lr"], weight_decay=wd / hyp["bias_lr"]),
         dict(params=[net.head.weight], lr=hyp["head_lr"], weight_decay=wd / hyp["head_lr"])],
        momentum=hyp["sgd_momentum"], nesterov=True)
    muon = Muon(filters, hyp["muon_lr"], hyp["muon_momentum"], hyp["ns_steps"], ns_dtype)
    for opt in (sgd, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return sgd, muon


def train(data: dict, seed: int, hyp: dict = HYP, ns_dtype: torch.dtype = torch.bfloat16,
          max_steps: int | None = None, train_subset: int | None = None,
          test_subset: int | None = None, log=print, checkpoint: Path | None = None,
          device: str = "cpu", amp: bool = False, compile: bool = False) -> dict:
    """One run; with `checkpoint`, saved after every epoch and resumed by the same command.
    On a GPU (`device="cuda"`) the speed-aware setting is `amp` (bfloat16 autocast, channels_last)
    and `compile` (torch.compile), as the original runs fp16 channels_last compiled."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr, xte, yte = split_tensors(data, gen, train_subset, test_subset)
    xtr, ytr, xte, yte = (t.to(device) for t in (xtr, ytr, xte, yte))
    loader = AlternatingFlipLoader(xtr, ytr, hyp["batch_size"], hyp["translate"], gen)
    total = math.ceil(hyp["epochs"] * len(loader))
    whiten_steps = math.ceil(hyp["whiten_bias_epochs"] * len(loader))
    if max_steps:
        total = min(total, max_steps)

    # airbench94_muon.py: plain nn.Conv2d whitening (default bias), head / 256, unit-std head.
    net = Net(hyp["widths"], hyp["bn_momentum"], 1 / hyp["widths"][-1], zero_whiten_bias=False)
    with torch.no_grad():
        net.head.weight.mul_(1 / net.head.weight.std())
    # The class folders are ordered by class: sample the whitening images at random.
    sample = torch.randperm(len(xtr), generator=gen)[:hyp["whiten_samples"]]
    init_whitening(net.whiten, xtr[sample.to(device)].cpu(), hyp["whiten_eps"])
    net = net.to(device, memory_format=torch.channels_last if amp else torch.contiguous_format)
    sgd, muon = make_optimizers(net, hyp, ns_dtype)
    forward = torch.compile(net) if compile else net
    autocast = lambda: torch.autocast(device.split(":")[0], torch.bfloat16, enabled=amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp["label_smoothing"], reduction="sum")

    step, t0, c0, first_epoch, epoch_times = 0, time.time(), time.process_time(), 0, []
    if checkpoint and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False, map_location=device)
        net.load_state_dict(ck["net"])
        sgd.load_state_dict(ck["sgd"])
        muon.load_state_dict(ck["muon"])
        gen.set_state(ck["gen"])
        step, epoch_times, first_epoch = ck["step"], ck["epoch_times"], ck["epoch"] + 1
        loader.epoch = first_epoch
        t0, c0 = t0 - ck["train_seconds"], c0 - ck["cpu_seconds"]
        log(f"resumed from {checkpoint} after epoch {ck['epoch']} (step {step})")
    for epoch in range(first_epoch, math.ceil(total / len(loader))):
        net.train()
        te = time.time()
        for xb, yb in loader:
            train_whiten_bias = step < whiten_steps
            net.whiten.bias.requires_grad = train_whiten_bias
            with autocast():
                loss = loss_fn(forward(xb).float(), yb)
            sgd.zero_grad(set_to_none=True)
            muon.zero_grad(set_to_none=True)
            loss.backward()
            # main(): the whitening bias decays to 0 over its steps, the rest over the run.
            sgd.param_groups[0]["lr"] = sgd.param_groups[0]["initial_lr"] * (
                1 - step / whiten_steps)
            for group in sgd.param_groups[1:] + muon.param_groups:
                group["lr"] = group["initial_lr"] * (1 - step / total)
            sgd.step()
            muon.step()
            step += 1
            if step >= total:
                break
        epoch_times.append(time.time() - te)
        log(f"epoch {epoch} step {step}/{total} loss {loss.item() / len(yb):.4f} "
            f"time {epoch_times[-1]:.1f}s")
        if checkpoint:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(dict(epoch=epoch, step=step, net=net.state_dict(), sgd=sgd.state_dict(),
                            muon=muon.state_dict(), gen=gen.get_state(),
                            epoch_times=epoch_times, train_seconds=time.time() - t0,
                            cpu_seconds=time.process_time() - c0), tmp)
            tmp.rename(checkpoint)
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    with autocast():
        acc = evaluate(forward, xte, yte, tta=False)
        acc_tta = evaluate(forward, xte, yte, tta=True)
    return dict(test_accuracy_tta=acc_tta, test_accuracy=acc, steps=step,
                train_seconds=round(train_s, 1), train_cpu_seconds=round(train_cpu, 1),
                wall_seconds=round(time.time() - t0, 1),
                epoch_seconds=[round(t, 1) for t in epoch_times])


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--ns_dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = p.parse_args(argv)
    set_threads(args.threads)
    start = time.time()
    data = load_cifar(args.data, args.cache)
    result = train(data, args.seed, ns_dtype=getattr(torch, args.ns_dtype),
                   max_steps=args.max_steps or None, train_subset=args.train_subset or None,
                   test_subset=args.test_subset or None, checkpoint=args.checkpoint,
                   log=lambda s: print(s, flush=True))
    record(result, args, start, recipe="airbench94_muon", ns_dtype=args.ns_dtype)


if __name__ == "__main__":
    main()
