"""Plain PyTorch references for the classic models (torchvision is not installed): AlexNet,
VGG and GoogLeNet with torchvision's module names, so their state dicts carry torchvision's keys;
the 2012 paper's two-tower AlexNet, LeNet-5, Kim's TextCNN and U-Net with cnnjax's module names,
for tests that copy weights by hand. All take NCHW images (token ids (N, L) for TextCNN)."""

import torch
from torch import nn
from torch.nn import functional as F

VGG_WIDTHS = (64, 128, 256, 512, 512)
VGG_DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


class AlexNetTV(nn.Module):
    """torchvision's AlexNet."""

    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 36, 4096), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNetPaper(nn.Module):
    """The 2012 paper's network on 227x227: conv2/4/5 in two groups, LRN after conv1 and conv2.

    `lrn_alpha` is torch's alpha, which torch divides by the window size n (see the test).
    The paper's net has no torchvision weights; its fc6 reads conv5's maps flattened in (H, W, C)
    order, as cnnjax's NHWC model does, so weights copy without permuting fc6's rows.
    """

    def __init__(self, num_classes=1000, lrn_alpha=5e-4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, 4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.lrn = nn.LocalResponseNorm(5, alpha=lrn_alpha, beta=0.75, k=2.0)
        self.fc6 = nn.Linear(6 * 6 * 256, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.lrn(F.relu(self.conv1(x))), 3, 2)
        x = F.max_pool2d(self.lrn(F.relu(self.conv2(x))), 3, 2)
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.fc8(F.relu(self.fc7(F.relu(self.fc6(x)))))


class VGG(nn.Module):
    """torchvision's VGG: `depth` in 11, 13, 16, 19, optional batch norm after each conv."""

    def __init__(self, depth=11, batch_norm=False, num_classes=1000, dropout=0.5):
        super().__init__()
        layers, cin = [], 3
        for n, width in zip(VGG_DEPTHS[depth], VGG_WIDTHS):
            for _ in range(n):
                layers.append(nn.Conv2d(cin, width, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
                cin = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """torchvision's module: the "5x5" branch has a 3x3 kernel; the pool branch uses ceil_mode."""

    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, num_classes, dropout=0.7):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet without `transform_input`; in training with aux_logits it returns
    (logits, aux1, aux2), otherwise the logits."""

    def __init__(self, num_classes=1000, aux_logits=False, dropout=0.2, dropout_aux=0.7):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is not None:
            return logits, aux1, aux2
        return logits


class LeNet5(nn.Module):
    """LeNet-5 with all-to-all C3, average-pool subsampling and 1.7159 tanh(2a/3)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)

    def forward(self, x):
        def squash(a):
            return 1.7159 * torch.tanh(a * 2.0 / 3.0)
        x = F.avg_pool2d(squash(self.c1(x)), 2)
        x = F.avg_pool2d(squash(self.c3(x)), 2)
        x = torch.flatten(squash(self.c5(x)), 1)  # C5's maps are 1x1
        return self.output(squash(self.f6(x)))


class TextCNN(nn.Module):
    """Kim (2014): embeddings, Conv1d per width h (module `conv{h}`) + ReLU, max over time,
    dropout, linear."""

    def __init__(self, vocab_size, embed_dim, widths=(3, 4, 5), maps=100, num_classes=2,
                 dropout=0.5):
        super().__init__()
        self.widths = widths
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        for h in widths:
            setattr(self, f"conv{h}", nn.Conv1d(embed_dim, maps, h))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(maps * len(widths), num_classes)

    def forward(self, tokens):
        x = self.embedding(tokens).transpose(1, 2)  # (N, k, L): Conv1d wants channels first
        feats = [F.relu(getattr(self, f"conv{h}")(x)).amax(dim=2) for h in self.widths]
        return self.fc(self.dropout(torch.cat(feats, 1)))


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class UNetDown(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.convs = DoubleConv(cin, cout)

    def forward(self, x):
        return self.convs(F.max_pool2d(x, 2))


class UNetUp(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.convs = DoubleConv(2 * cout, cout)

    def forward(self, x, skip):
        return self.convs(torch.cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net with zero-padded 3x3 convolutions (so any size divisible by
    2 ** (len(widths) - 1) keeps its size), the expansive path concatenating [skip, upsampled]."""

    def __init__(self, cin, num_classes, widths=(64, 128, 256, 512, 1024)):
        super().__init__()
        self.inc = DoubleConv(cin, widths[0])
        for i in range(len(widths) - 1):
            setattr(self, f"down{i + 1}", UNetDown(widths[i], widths[i + 1]))
            setattr(self, f"up{i + 1}", UNetUp(widths[-1 - i], widths[-2 - i]))
        self.outc = nn.Conv2d(widths[0], num_classes, 1)
        self.levels = len(widths) - 1

    def forward(self, x):
        skips, x = [], self.inc(x)
        for i in range(self.levels):
            skips.append(x)
            x = getattr(self, f"down{i + 1}")(x)
        for i in range(self.levels):
            x = getattr(self, f"up{i + 1}")(x, skips.pop())
        return self.outc(x)

