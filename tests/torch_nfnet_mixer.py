"""Compact PyTorch NFNet-F and MLP-Mixer with timm's module names (timm is not installed): the
independent references for cnnjax's models and their weight conversion. Written from the papers
and timm's state-dict layout, with plain torch.nn."""

import math

import torch
import torch.nn.functional as F
from torch import nn

GELU_GAMMA = 1.7015043497085571  # DeepMind's/timm's constant for GELU


class StdConv(nn.Conv2d):
    """Scaled weight-standardised convolution with TF "SAME" padding; `gain` is (O, 1, 1, 1)."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, eps=1e-5):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=True)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1))
        self.eps = eps

    def forward(self, x):
        w = self.weight
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        w = self.gain * (w - mean) / torch.sqrt((var + self.eps) * fan_in)
        pads = []
        for n, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                        (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, self.bias, self.stride, 0, 1, self.groups)


def gamma_gelu(x):
    return F.gelu(x) * GELU_GAMMA


class SE(nn.Module):
    def __init__(self, ch, reduced):
        super().__init__()
        self.fc1 = nn.Conv2d(ch, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, ch, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class Downsample(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                     if stride > 1 else nn.Identity())
        self.conv = StdConv(cin, cout)

    def forward(self, x):
        return self.conv(self.pool(x))


class NFBlock(nn.Module):
    def __init__(self, cin, cout, stride, beta, alpha=0.2, group_size=128):
        super().__init__()
        mid = cout // 2
        groups = mid // group_size
        self.alpha, self.beta = alpha, beta
        self.downsample = Downsample(cin, cout, stride) if (cin != cout or stride > 1) else None
        self.conv1 = StdConv(cin, mid)
        self.conv2 = StdConv(mid, mid, 3, stride, groups)
        self.conv2b = StdConv(mid, mid, 3, 1, groups)
        self.conv3 = StdConv(mid, cout)
        self.attn_last = SE(cout, cout // 2)
        self.skipinit_gain = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        out = gamma_gelu(x) * self.beta
        shortcut = x if self.downsample is None else self.downsample(out)
        h = self.conv1(out)
        h = self.conv2(gamma_gelu(h))
        h = self.conv2b(gamma_gelu(h))
        h = self.conv3(gamma_gelu(h))
        h = 2.0 * self.attn_last(h)
        return h * self.skipinit_gain * self.alpha + shortcut


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = StdConv(3, 16, 3, 2)
        self.conv2 = StdConv(16, 32, 3, 1)
        self.conv3 = StdConv(32, 64, 3, 1)
        self.conv4 = StdConv(64, 128, 3, 2)

    def forward(self, x):
        x = self.conv1(x)
        for conv in (self.conv2, self.conv3, self.conv4):
            x = conv(gamma_gelu(x))
        return x


class Head(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class NFNet(nn.Module):
    """timm's dm_nfnet_f{k-1}: depths (1, 2, 6, 3) * k."""

    def __init__(self, depths=(1, 2, 6, 3), num_classes=1000, alpha=0.2):
        super().__init__()
        self.stem = Stem()
        stages, cin, var = [], 128, 1.0  # var: the expected variance of the next block's input
        for i, (n, width) in enumerate(zip(depths, (256, 512, 1536, 1536))):
            blocks = []
            for j in range(n):
                blocks.append(NFBlock(cin, width, 2 if (i > 0 and j == 0) else 1,
                                      beta=1.0 / math.sqrt(var), alpha=alpha))
                var = (1.0 if j == 0 else var) + alpha ** 2
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_conv = StdConv(1536, 3072)
        self.head = Head(3072, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(gamma_gelu(self.final_conv(x)))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class MixerBlock(nn.Module):
    def __init__(self, dim, tokens, tokens_hidden, channels_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(tokens, tokens_hidden)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, channels_hidden)

    def forward(self, x):  # (N, tokens, dim)
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class MlpMixer(nn.Module):
    """timm's mixer_*16_224: layers, dim, token / channel MLP widths."""

    def __init__(self, layers, dim, tokens_hidden, channels_hidden, num_classes=1000,
                 image=224, patch=16):
        super().__init__()
        self.stem = PatchEmbed(dim, patch)
        tokens = (image // patch) ** 2
        self.blocks = nn.Sequential(*[MixerBlock(dim, tokens, tokens_hidden, channels_hidden)
                                      for _ in range(layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x))).mean(dim=1))


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial gains, skip gains, biases and layer-norm affines, so every converted tensor
    matters in the comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gain", "skipinit_gain") or (leaf == "weight" and p.ndim == 1):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
