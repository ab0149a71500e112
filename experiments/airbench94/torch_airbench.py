"""airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498)
in plain PyTorch on the CPU: the reference the cnnjax config `configs/airbench94.py` is compared
with, on the same data (the CIFAR-10 JPEG q75 copy) and the same machine.

    python experiments/airbench94/torch_airbench.py --seed=0 \
        --json=/work/runs/airbench94/torch_seed0.json

Everything follows the paper and its public code (airbench94.py); the values are the paper's
Table/section numbers as noted beside each. NCHW, float32 (the paper trains in fp16 on a GPU).
The run prints one line per epoch and, at the end, one JSON line (also written to --json) with
the TTA and plain test accuracy, the wall time, the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The paper's normalisation (the original CIFAR-10 statistics), kept for the JPEG copy too.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

HYP = dict(
    batch_size=1024,          # sec. 3.1
    epochs=9.9,               # sec. 3 / Table 1: 9.9 epochs for 94%
    lr=11.5,                  # per 1024 examples, decoupled form (public code hyp['opt']['lr'])
    momentum=0.85,            # Nesterov SGD
    weight_decay=0.0153,      # per 1024 examples, decoupled from the learning rate
    bias_scaler=64.0,         # BatchNorm biases' learning rate x64 (sec. 3.4), not their decay
    label_smoothing=0.2,
    whiten_bias_epochs=3,     # the whitening layer's bias trains for the first 3 epochs only
    widths=(64, 256, 256),    # sec. 3.1 block widths
    bn_momentum=0.6,          # running average keeps 0.6 (PyTorch momentum 0.4)
    scaling_factor=1 / 9,     # the head's output multiplier
    whiten_samples=5000,      # images whose 2x2 patches give the whitening covariance
    whiten_eps=5e-4,
    translate=2,              # random translation by up to 2 px, reflection padding
    lookahead_every=5,        # sec. 3.5: EMA every 5 steps, decay 0.95^5 (step/total)^3
)


def load_jpeg_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) int64 labels of `root/split/<class>/*.jpg`, in
    class-then-file-name order."""
    from PIL import Image
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = root / split / name
        for path in sorted(folder.iterdir()):
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def load_cifar(root: Path, cache: Path) -> dict[str, np.ndarray]:
    """The JPEG copy decoded once into `cache/cifar10_jpeg.npz` (not part of the repository)."""
    file = cache / "cifar10_jpeg.npz"
    if not file.exists():
        if not (root / "train").is_dir():
            sys.exit(f"error: --data={root} has no train/ folder; expected the CIFAR-10 JPEG copy "
                     f"(train/<class>/*.jpg, test/<class>/*.jpg)")
        cache.mkdir(parents=True, exist_ok=True)
        xtr, ytr = load_jpeg_split(root, "train")
        xte, yte = load_jpeg_split(root, "test")
        tmp = cache / f"cifar10_jpeg.{os.getpid()}.tmp.npz"
        np.savez(tmp, train_x=xtr, train_y=ytr, test_x=xte, test_y=yte)
        tmp.rename(file)
    with np.load(file) as data:
        return {k: data[k] for k in data.files}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW."""
    x = torch.from_numpy(images).float().div_(255).permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


# ----------------------------------------------------------------------------- data


class AlternatingFlipLoader:
    """Sec. 3.6 alternating flip + random translation, on the images' device (drawn from the
    CPU generator, so a seed gives the same order on any device). Epoch 0 flips a random half
    of the images; the translations are drawn per image per epoch from the reflection-padded
    (once) images; on odd epochs every image is flipped. Batches are a fresh permutation per epoch, last partial
    batch dropped."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 translate: int, generator: torch.Generator):
        self.labels, self.batch_size, self.r, self.gen = labels, batch_size, translate, generator
        flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
        base = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        self.padded = F.pad(base, (translate,) * 4, mode="reflect")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def _translated(self) -> torch.Tensor:
        n, r = len(self.labels), self.r
        h = self.padded.shape[-1] - 2 * r
        shifts = torch.randint(-r, r + 1, (n, 2), generator=self.gen).to(self.padded.device)
        out = torch.empty(n, 3, h, h, device=self.padded.device, dtype=self.padded.dtype)
        for sy in range(-r, r + 1):
            for sx in range(-r, r + 1):
                m = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
                out[m] = self.padded[m, :, r + sy:r + sy + h, r + sx:r + sx + h]
        return out

    def __iter__(self):
        images = self._translated()
        if self.epoch % 2 == 1:
            images = images.flip(-1)
        self.epoch += 1
        order = torch.randperm(len(images), generator=self.gen).to(images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[idx], self.labels[idx]


# ----------------------------------------------------------------------------- network


class BatchNorm(nn.BatchNorm2d):
    """Scale frozen at 1, bias trained, eps 1e-12."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 'same' convolution without bias; the first in_channels filters are the identity
    (Dirac), the rest keep PyTorch's default initialisation."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding="same", bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[:w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__()
        self.conv1, self.conv2 = Conv(cin, cout), Conv(cout, cout)
        self.norm1, self.norm2 = BatchNorm(cout, bn_momentum), BatchNorm(cout, bn_momentum)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Net(nn.Module):
    """airbench94.py's network. `zero_whiten_bias`: its Conv.reset_parameters zeroes the
    whitening bias (airbench94_muon.py's plain nn.Conv2d keeps PyTorch's default uniform)."""

    def __init__(self, widths=HYP["widths"], bn_momentum=HYP["bn_momentum"],
                 scaling_factor=HYP["scaling_factor"], zero_whiten_bias: bool = True):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        if zero_whiten_bias:
            nn.init.zeros_(self.whiten.bias)
        self.block1 = ConvGroup(24, widths[0], bn_momentum)
        self.block2 = ConvGroup(widths[0], widths[1], bn_momentum)
        self.block3 = ConvGroup(widths[1], widths[2], bn_momentum)
        self.head = nn.Linear(widths[2], 10, bias=False)
        self.scaling_factor = scaling_factor

    def forward(self, x):
        x = F.gelu(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        x = F.max_pool2d(x, 3).flatten(1)
        return self.head(x) * self.scaling_factor


def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float) -> None:
    """Sec. 3.2: the 2x2x3 patches' (uncentred) covariance's eigenvectors scaled by
    1/sqrt(eigenvalue + eps), then their negatives: 24 filters."""
    c, (kh, kw) = images.shape[1], conv.kernel_size
    patches = images.unfold(2, kh, 1).unfold(3, kw, 1)            # N C H' W' kh kw
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw).double()
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = torch.linalg.eigh(cov)
    eigval, eigvec = eigval.flip(0), eigvec.T.flip(0)              # largest first
    w = (eigvec / torch.sqrt(eigval + eps)[:, None]).reshape(-1, c, kh, kw)
    conv.weight.data[:] = torch.cat([w, -w]).float()


class Lookahead:
    """Sec. 3.5: every k steps the weights (and batch-norm statistics) become an EMA of
    themselves, decay 0.95^k (step/total)^3, and are copied back into the network."""

    def __init__(self, net: nn.Module):
        self.ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net: nn.Module, decay: float) -> None:
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].lerp_(v, 1 - decay)
                v.copy_(self.ema[k])


# ----------------------------------------------------------------------------- train / eval


def tta_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sec. 3.7, level 2: mirror + one-pixel translations. The plain and mirrored image weigh
    1/4 each; the (-1,-1) and (+1,+1) reflection-padded translations and their mirrors 1/8."""
    def mirror(v):
        return 0.5 * net(v) + 0.5 * net(v.flip(-1))
    h = x.shape[-1]
    padded = F.pad(x, (1,) * 4, mode="reflect")
    shifted = 0.5 * (mirror(padded[:, :, :h, :h]) + mirror(padded[:, :, 2:, 2:]))
    return 0.5 * mirror(x) + 0.5 * shifted


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, tta: bool,
             batch: int = 2000) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        logits = tta_logits(net, xb) if tta else net(xb)
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def make_optimizer(net: Net, hyp: dict) -> torch.optim.SGD:
    """The decoupled hyperparameters in PyTorch's coupled SGD: a step of lr x (1 + 1/(1 - m))
    per 1024 examples is the paper's lr, the decay per step is wd x batch / 1024 of it, and the
    BN biases' larger lr leaves their decay unchanged."""
    kilostep = 1024 * (1 + 1 / (1 - hyp["momentum"]))
    lr = hyp["lr"] / kilostep
    wd = hyp["weight_decay"] * hyp["batch_size"] / kilostep
    lr_bias = lr * hyp["bias_scaler"]
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    groups = [dict(params=norm_biases, lr=lr_bias, weight_decay=wd / lr_bias),
              dict(params=others, lr=lr, weight_decay=wd / lr)]
    return torch.optim.SGD(groups, lr=lr, momentum=hyp["momentum"], nesterov=True)


def triangle(total: int, start: float = 0.2, peak: float = 0.23, end: float = 0.07):
    """Learning-rate multiplier: start -> 1 at int(peak x total) -> end at total (linear)."""
    xp, fp = [0, int(peak * total), total], [start, 1.0, end]
    return lambda step: float(np.interp(step, xp, fp))


def split_tensors(data: dict, gen: torch.Generator, train_subset: int | None,
                  test_subset: int | None) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels) of `data` as normalised NCHW
    tensors; `train_subset` random training images drawn from `gen`, `test_subset` test
    images from a fixed seed (the same for every run)."""
    xtr, ytr = to_tensor(data["train_x"]), torch.from_numpy(data["train_y"])
    if train_subset:
        keep = torch.randperm(len(xtr), generator=gen)[:train_subset]
        xtr, ytr = xtr[keep], ytr[keep]
    xte, yte = to_tensor(data["test_x"]), torch.from_numpy(data["test_y"])
    if test_subset:
        keep = torch.randperm(len(xte), generator=torch.Generator().manual_seed(0))[:test_subset]
        xte, yte = xte[keep], yte[keep]
    return xtr, ytr, xte, yte


def train(data: dict, seed: int, hyp: dict = HYP, max_steps: int | None = None,
          train_subset: int | None = None, test_subset: int | None = None, log=print,
          checkpoint: Path | None = None) -> dict:
    """One run; with `checkpoint`, the state is saved there after every epoch and a run
    started again with the same arguments continues from it (bit-identical data order)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr, xte, yte = split_tensors(data, gen, train_subset, test_subset)
    loader = AlternatingFlipLoader(xtr, ytr, hyp["batch_size"], hyp["translate"], gen)
    total = math.ceil(len(loader) * hyp["epochs"])
    if max_steps:
        total = min(total, max_steps)

    net = Net(hyp["widths"], hyp["bn_momentum"], hyp["scaling_factor"])
    lookahead = Lookahead(net)
    # The class folders are ordered by class: sample the whitening images at random.
    sample = torch.randperm(len(xtr), generator=gen)[:hyp["whiten_samples"]]
    init_whitening(net.whiten, xtr[sample], hyp["whiten_eps"])
    opt = make_optimizer(net, hyp)
    lr_mult = triangle(total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_mult)
    decay = 0.95 ** hyp["lookahead_every"] * (torch.arange(total + 1) / total) ** 3
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp["label_smoothing"], reduction="none")

    step, t0, c0, first_epoch, epoch_times = 0, time.time(), time.process_time(), 0, []
    if checkpoint and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        lookahead.ema = ck["ema"]
        gen.set_state(ck["gen"])
        step, epoch_times, first_epoch = ck["step"], ck["epoch_times"], ck["epoch"] + 1
        loader.epoch = first_epoch
        t0, c0 = t0 - ck["train_seconds"], c0 - ck["cpu_seconds"]
        log(f"resumed from {checkpoint} after epoch {ck['epoch']} (step {step})")
    for epoch in range(first_epoch, math.ceil(total / len(loader))):
        net.whiten.bias.requires_grad = epoch < hyp["whiten_bias_epochs"]
        net.train()
        te = time.time()
        for xb, yb in loader:
            loss = loss_fn(net(xb), yb).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % hyp["lookahead_every"] == 0:
                lookahead.update(net, decay[step].item())
            if step >= total:
                lookahead.update(net, 1.0)
                break
        epoch_times.append(time.time() - te)
        log(f"epoch {epoch} step {step}/{total} loss {loss.item() / len(yb):.4f} "
            f"time {epoch_times[-1]:.1f}s")
        if checkpoint:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(dict(epoch=epoch, step=step, net=net.state_dict(), opt=opt.state_dict(),
                            sched=sched.state_dict(), ema=lookahead.ema, gen=gen.get_state(),
                            epoch_times=epoch_times, train_seconds=time.time() - t0,
                            cpu_seconds=time.process_time() - c0), tmp)
            tmp.rename(checkpoint)
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    acc = evaluate(net, xte, yte, tta=False)
    acc_tta = evaluate(net, xte, yte, tta=True)
    return dict(test_accuracy_tta=acc_tta, test_accuracy=acc, steps=step,
                train_seconds=round(train_s, 1), train_cpu_seconds=round(train_cpu, 1),
                wall_seconds=round(time.time() - t0, 1),
                epoch_seconds=[round(t, 1) for t in epoch_times])


def machine() -> str:
    """CPU model and core count (the results' machine column)."""
    model = platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def parser(description: str) -> argparse.ArgumentParser:
    """The command-line flags both ports (this one and torch_airbench_muon.py) take."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default="../shared/data/cifar10_jpeg", type=Path)
    p.add_argument("--cache", default="runs/airbench94_cache", type=Path)
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--threads", default=0, type=int, help="torch threads (0: torch's default)")
    p.add_argument("--max_steps", default=0, type=int, help="stop early (testing)")
    p.add_argument("--train_subset", default=0, type=int, help="train on this many images")
    p.add_argument("--test_subset", default=0, type=int, help="evaluate on this many images")
    p.add_argument("--json", default=None, type=Path, help="also write the result here")
    p.add_argument("--checkpoint", default=None, type=Path,
                   help="save after every epoch here; rerunning the command resumes from it")
    return p


def set_threads(threads: int) -> None:
    if threads < 0:
        sys.exit(f"error: --threads={threads}; expected 0 (default) or a positive count")
    if threads:
        torch.set_num_threads(threads)


def record(result: dict, args: argparse.Namespace, start: float, **extra) -> None:
    """Adds the run's provenance to `result`, prints it as one JSON line and writes --json."""
    result.update(
        seed=args.seed, **extra, dataset="CIFAR-10 (JPEG q75 copy)",
        framework=f"torch {torch.__version__}", threads=torch.get_num_threads(),
        process_seconds=round(time.time() - start, 1), machine=machine(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        command="python " + " ".join(sys.argv))
    print(json.dumps(result), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    set_threads(args.threads)
    start = time.time()
    data = load_cifar(args.data, args.cache)
    result = train(data, args.seed, max_steps=args.max_steps or None,
                   train_subset=args.train_subset or None, test_subset=args.test_subset or None,
                   checkpoint=args.checkpoint, log=lambda s: print(s, flush=True))
    record(result, args, start)


if __name__ == "__main__":
    main()
