"""A compact PyTorch ResNet with torchvision's module names (torchvision itself is not installed):
the independent reference for cnnjax's ResNets and their weight conversion."""

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64):
        super().__init__()
        self.cin = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if stride != 1 or self.cin != planes * block.expansion:
                    down = nn.Sequential(nn.Conv2d(self.cin, planes * block.expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * block.expansion))
                blocks.append(block(self.cin, planes, stride, down, groups, width_per_group))
                self.cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3)), 1))


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so eval mode is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# --- Functional PyTorch residual blocks on cnnjax's parameter dicts ------------------------
# The reference for cnnjax.ops.residual and its Flax wrappers in training and evaluation mode:
# torch's own conv2d / batch_norm on the same numbers, with gradients from torch.autograd.

def to_torch(tree, requires_grad: bool = False):
    """Nested dicts / lists of NHWC-convention arrays as float64 torch tensors (kernels HWIO ->
    OIHW)."""
    import numpy as np
    if isinstance(tree, dict):
        return {k: to_torch(v, requires_grad) for k, v in tree.items()}
    if isinstance(tree, list):
        return [to_torch(v, requires_grad) for v in tree]
    a = np.asarray(tree, np.float64)
    t = torch.tensor(a.transpose(3, 2, 0, 1) if a.ndim == 4 else a)
    return t.requires_grad_(requires_grad)


def from_torch_tree(tree):
    """The inverse of `to_torch` (for values and gradients), as float64 NumPy."""
    if isinstance(tree, dict):
        return {k: from_torch_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [from_torch_tree(v) for v in tree]
    a = tree.detach().numpy()
    return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a


def _bn(p, s, name, x, train, new):
    """torch's batch norm; `new[name]` gets the updated running statistics in cnnjax's convention.

    torch updates running_var with the unbiased batch variance, cnnjax (like Flax) with the
    biased one; both use running = 0.9 running + 0.1 batch. The biased value is recovered from
    torch's update as old + (torch_new - old) (n - 1) / n, where old is 0.9 running."""
    mean, var = s[name]["mean"].clone(), s[name]["var"].clone()
    y = torch.nn.functional.batch_norm(x, mean, var, p[name]["scale"], p[name]["bias"],
                                       training=train, momentum=0.1, eps=1e-5)
    if train:
        n = x.numel() // x.shape[1]
        old_var = 0.9 * s[name]["var"]
        new[name] = {"mean": mean, "var": old_var + (var - old_var) * (n - 1) / n}
    return y


def _conv(p, name, x, stride=1, padding=0, groups=1):
    return torch.nn.functional.conv2d(x, p[name]["kernel"], stride=stride, padding=padding,
                                      groups=groups)


def _shortcut(p, s, x, cout, stride, shortcut, train, new):
    if shortcut == "none":
        return None
    if "downsample" in p:
        y = _conv(p["downsample"], "conv", x, stride)
        if "bn" in p["downsample"]:
            new["downsample"] = {}
            y = _bn(p["downsample"], s["downsample"], "bn", y, train, new["downsample"])
        return y
    if stride != 1 or x.shape[1] != cout:  # option A: subsample, zero channels at both ends
        extra = cout - x.shape[1]
        return torch.nn.functional.pad(x[:, :, ::stride, ::stride],
                                       (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x


def block(kind: str, p, s, x, *, stride: int, train: bool, shortcut: str = "B", groups: int = 1):
    """(y, new running statistics) of one residual block, NCHW; `kind` is basic, bottleneck,
    preact or preact_bottleneck (He et al. 2016a Fig. 2/5 with torchvision's stride on the 3x3;
    He et al. 2016b's pre-activation, a projection taking the pre-activated input)."""
    relu, new = torch.relu, {}
    cout = p["conv3" if "conv3" in p else "conv2"]["kernel"].shape[0]
    if kind == "basic":
        y = relu(_bn(p, s, "bn1", _conv(p, "conv1", x, stride, 1), train, new))
        y = _bn(p, s, "bn2", _conv(p, "conv2", y, 1, 1), train, new)
        sc = _shortcut(p, s, x, cout, stride, shortcut, train, new)
        return relu(y if sc is None else y + sc), new
    if kind == "bottleneck":
        y = relu(_bn(p, s, "bn1", _conv(p, "conv1", x), train, new))
        y = relu(_bn(p, s, "bn2", _conv(p, "conv2", y, stride, 1, groups), train, new))
        y = _bn(p, s, "bn3", _conv(p, "conv3", y), train, new)
        sc = _shortcut(p, s, x, cout, stride, shortcut, train, new)
        return relu(y if sc is None else y + sc), new
    pre = relu(_bn(p, s, "bn1", x, train, new))
    if kind == "preact":
        y = _conv(p, "conv1", pre, stride, 1)
        y = _conv(p, "conv2", relu(_bn(p, s, "bn2", y, train, new)), 1, 1)
    else:
        y = _conv(p, "conv1", pre)
        y = _conv(p, "conv2", relu(_bn(p, s, "bn2", y, train, new)), stride, 1)
        y = _conv(p, "conv3", relu(_bn(p, s, "bn3", y, train, new)))
    sc = _shortcut(p, s, pre if "downsample" in p else x, cout, stride, shortcut, train, new)
    return (y if sc is None else y + sc), new


def cifar_resnet(p, s, x, *, depth: int, train: bool):
    """He et al. 2016a's CIFAR ResNet (sec. 4.2): 3x3 stem of 16, three stages of (depth - 2) / 6
    basic blocks (16, 32, 64 channels, option-A shortcuts), global average pool, linear head.
    cnnjax's names: conv1, bn1, layer{i}_{j}, fc. Returns (logits, new running statistics)."""
    new = {}
    y = torch.relu(_bn(p, s, "bn1", _conv(p, "conv1", x, 1, 1), train, new))
    n = (depth - 2) // 6
    for i in range(3):
        for j in range(n):
            name = f"layer{i + 1}_{j}"
            y, new[name] = block("basic", p[name], s[name], y, stride=2 if (i > 0 and j == 0) else 1,
                                 train=train, shortcut="A")
    return y.mean((2, 3)) @ p["fc"]["kernel"] + p["fc"]["bias"], new
