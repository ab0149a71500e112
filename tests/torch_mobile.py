"""PyTorch MobileNetV2, MobileNetV3 (large, small) and EfficientNet-B0 in plain torch.nn with
torchvision's module names and state_dict keys (torchvision itself is not installed): the
independent reference for cnnjax's mobile networks and their weight conversion.

Only evaluation is needed from them, so EfficientNet's stochastic depth (the identity in
evaluation) is left out. Channel widths are the papers' tables written out at width 1.0.
"""

import torch
from torch import nn
from torch.nn import functional as F


def round8(v: float) -> int:
    """The nearest multiple of 8 (at least 8), one more multiple if that loses over 10%."""
    r = max(8, 8 * int((v + 4) // 8))
    return r + 8 if r < 0.9 * v else r


def conv_bn(cin, cout, k, stride=1, groups=1, act=None, eps=1e-5, momentum=0.1):
    """torchvision's Conv2dNormActivation: Sequential(conv, bn[, act]) -> keys .0 and .1."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps, momentum=momentum)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SE(nn.Module):
    def __init__(self, channels, squeeze, act, gate):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act, self.gate = act, gate

    def forward(self, x):
        s = self.gate(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * s


class V2Block(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    # (t, c, n, s), Sandler et al. 2018 Table 2
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(V2Block(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class V3Block(nn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        bn = dict(eps=1e-3, momentum=0.01)
        layers = [conv_bn(cin, exp, 1, act=act, **bn)] if exp != cin else []
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act, **bn))
        if se:
            layers.append(SE(exp, round8(exp // 4), F.relu, F.hardsigmoid))
        layers.append(conv_bn(exp, cout, 1, **bn))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


RE, HS = nn.ReLU, nn.Hardswish
# (in, kernel, expanded, out, SE, activation, stride): Howard et al. 2019 Tables 1 and 2
V3_SETTINGS = {
    "large": [(16, 3, 16, 16, False, RE, 1), (16, 3, 64, 24, False, RE, 2),
              (24, 3, 72, 24, False, RE, 1), (24, 5, 72, 40, True, RE, 2),
              (40, 5, 120, 40, True, RE, 1), (40, 5, 120, 40, True, RE, 1),
              (40, 3, 240, 80, False, HS, 2), (80, 3, 200, 80, False, HS, 1),
              (80, 3, 184, 80, False, HS, 1), (80, 3, 184, 80, False, HS, 1),
              (80, 3, 480, 112, True, HS, 1), (112, 3, 672, 112, True, HS, 1),
              (112, 5, 672, 160, True, HS, 2), (160, 5, 960, 160, True, HS, 1),
              (160, 5, 960, 160, True, HS, 1)],
    "small": [(16, 3, 16, 16, True, RE, 2), (16, 3, 72, 24, False, RE, 2),
              (24, 3, 88, 24, False, RE, 1), (24, 5, 96, 40, True, HS, 2),
              (40, 5, 240, 40, True, HS, 1), (40, 5, 240, 40, True, HS, 1),
              (40, 5, 120, 48, True, HS, 1), (48, 5, 144, 48, True, HS, 1),
              (48, 5, 288, 96, True, HS, 2), (96, 5, 576, 96, True, HS, 1),
              (96, 5, 576, 96, True, HS, 1)],
}


class MobileNetV3(nn.Module):
    def __init__(self, size="large", num_classes=1000):
        super().__init__()
        setting = V3_SETTINGS[size]
        layers = [conv_bn(3, 16, 3, 2, act=nn.Hardswish, eps=1e-3, momentum=0.01)]
        layers += [V3Block(*row) for row in setting]
        last = setting[-1][3]
        layers.append(conv_bn(last, 6 * last, 1, act=nn.Hardswish, eps=1e-3, momentum=0.01))
        self.features = nn.Sequential(*layers)
        hidden = {"large": 1280, "small": 1024}[size]
        self.classifier = nn.Sequential(nn.Linear(6 * last, hidden), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, t):
        super().__init__()
        exp = cin * t
        layers = [conv_bn(cin, exp, 1, act=nn.SiLU)] if exp != cin else []
        layers += [conv_bn(exp, exp, k, stride, groups=exp, act=nn.SiLU),
                   SE(exp, max(1, cin // 4), F.silu, torch.sigmoid),
                   conv_bn(exp, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class EfficientNetB0(nn.Module):
    # (t, k, s, in, out, layers): Tan & Le 2019 Table 1
    SETTING = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
               (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
               (6, 3, 1, 192, 320, 1)]

    def __init__(self, num_classes=1000):
        super().__init__()
        layers = [conv_bn(3, 32, 3, 2, act=nn.SiLU)]
        for t, k, s, cin, cout, n in self.SETTING:
            layers.append(nn.Sequential(*[MBConv(cin if i == 0 else cout, cout, k,
                                                 s if i == 0 else 1, t) for i in range(n)]))
        layers.append(conv_bn(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def he_fan_out_(model: nn.Module) -> None:
    """torchvision's convolution init, so activations keep their scale through the depth."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
