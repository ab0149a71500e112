"""PyTorch versions of cnnjax models for side-by-side benchmarks, used when torchvision/timm
(which have most of them) are not installed. Same architectures as cnnjax's, NCHW."""

from __future__ import annotations

import torch
from torch import nn


class _CifarBlock(nn.Module):
    """He et al. 2016 sec. 4.2 basic block with the parameter-free option-A shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        s = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            s = nn.functional.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return torch.relu(y + s)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(_CifarBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class _Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: 1x1, 3x3 (stride here), 1x1 x4; projection shortcut
    when the shape changes."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    """He et al. 2016's ResNet-50 (Table 1) as torchvision builds it (stride in the 3x3)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                       nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)], 64
        for i, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            for j in range(blocks):
                layers.append(_Bottleneck(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = 4 * width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.c1, self.c3, self.c5 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Conv2d(16, 120, 5)
        self.f6, self.out = nn.Linear(120, 84), nn.Linear(84, num_classes)

    def forward(self, x):
        act = lambda z: 1.7159 * torch.tanh(z * 2 / 3)
        x = nn.functional.avg_pool2d(act(self.c1(x)), 2)
        x = nn.functional.avg_pool2d(act(self.c3(x)), 2)
        x = act(self.c5(x)).flatten(1)
        return self.out(act(self.f6(x)))


# cnnjax name -> timm name, for the models torchvision lacks.
TIMM_NAMES = {"mixer_s16": "mixer_s16_224", "mixer_b16": "mixer_b16_224", "mixer_l16": "mixer_l16_224",
              "nfnet_f0": "dm_nfnet_f0", "nfnet_f1": "dm_nfnet_f1"}


def create(name: str, num_classes: int) -> nn.Module:
    """The torch model for a cnnjax model name: torchvision/timm when installed, else ours."""
    if name.startswith("cifar_resnet"):
        return CifarResNet(int(name.removeprefix("cifar_resnet")), num_classes)
    if name == "lenet5":
        return LeNet5(num_classes)
    try:
        import torchvision.models as tvm
        if name == "alexnet_tv":
            return tvm.alexnet(num_classes=num_classes)
        if hasattr(tvm, name):
            return getattr(tvm, name)(num_classes=num_classes)
    except ImportError:
        pass
    try:
        import timm
        return timm.create_model(TIMM_NAMES.get(name, name), num_classes=num_classes)
    except (ImportError, RuntimeError) as e:
        if name == "resnet50":
            return ResNet50(num_classes)
        raise ValueError(f"no PyTorch version of {name!r} here (install torchvision or timm): {e}") from None
