"""The zoo's convolutional models: ResNet-, MobileNet-, DenseNet-, SE-, ShuffleNet- and U-Net-style."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNetLike(nn.Module):
    """Residual adds, a strided downsample branch, max pooling, global pooling, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer1(self.pool(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class ResNet18(nn.Module):
    """ResNet-18's layout (7x7 stem, four stages of two basic blocks, 64 to 512 channels)."""

    def __init__(self, width: int = 64, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        widths = [width, width * 2, width * 4, width * 8]
        blocks: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate(widths):
            blocks += [BasicBlock(cin, cout, 1 if stage == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 2, 1)
        self.expand = nn.Conv2d(channels // 2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.hardsigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * scale


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, -1, h, w)


class MobileLike(nn.Module):
    """Depthwise and grouped convs, squeeze-excitation, concat branches, channel shuffle, pools."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.se = SqueezeExcite(16)
        self.branch_a = nn.Conv2d(16, 8, 1)
        self.branch_b = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8))
        self.mix = nn.Conv2d(16, 16, 1, groups=4)
        self.head = nn.Linear(16 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(self.pw(F.relu6(self.dw(self.stem(x)))))
        y = self.se(y)
        y = torch.cat([self.branch_a(y), F.leaky_relu(self.branch_b(y), 0.1)], 1)
        y = self.mix(channel_shuffle(y, 2))
        y = F.avg_pool2d(y, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        y = F.max_pool2d(y, 2, 2)
        return self.head(y.reshape(y.shape[0], -1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2Like(nn.Module):
    """Inverted residuals: 1x1 expansion, depthwise 3x3, linear 1x1 projection, residual adds."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, stride=2)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 4),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
        )
        self.last = nn.Sequential(nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.last(self.blocks(self.stem(x)))
        return self.fc(y.mean((2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, y], 1)


class DenseNetLike(nn.Module):
    """A dense block (every layer's output concatenated to its input) and a transition layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8), DenseLayer(32, 8))
        self.transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 24, 1, bias=False))
        self.norm = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.transition(self.block(self.stem(x))), 2)
        y = F.relu(self.norm(y))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class SEBlock(nn.Module):
    """A residual block gated by squeeze-excitation with Linear layers (SE-ResNet style)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc1 = nn.Linear(channels, channels // 4)
        self.fc2 = nn.Linear(channels // 4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        b, c, _, _ = y.shape
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3)))))).view(b, c, 1, 1)
        return F.relu(x + y * scale)


class SENetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, stride=2)
        self.block1 = SEBlock(16)
        self.down = _conv_bn(16, 32, stride=2)
        self.block2 = SEBlock(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block2(self.down(self.block1(self.stem(x))))
        return self.fc(y.mean((2, 3)))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's basic unit: split the channels, transform one half, concat, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)


class ShuffleDown(nn.Module):
    """ShuffleNetV2's downsampling unit: two strided branches, concat, shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half = cout // 2
        self.left = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )
        self.right = nn.Sequential(
            nn.Conv2d(cin, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, stride=2)
        self.down = ShuffleDown(16, 32)
        self.unit = ShuffleUnit(32)
        self.last = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.last(self.unit(self.down(self.stem(x))))
        return self.fc(y.mean((2, 3)))


class UNetLike(nn.Module):
    """Concat skips, a ConvTranspose decoder, nearest and bilinear upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = _conv_bn(3, 8)
        self.enc2 = _conv_bn(8, 16, stride=2)
        self.bottom = _conv_bn(16, 16, stride=2)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = _conv_bn(24, 8)
        self.dec2 = _conv_bn(16, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(s1)
        b = self.bottom(s2)
        y = self.dec1(torch.cat([self.up1(b), s2], 1))
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        y = self.dec2(torch.cat([y, s1], 1))
        y = F.interpolate(y, scale_factor=0.5, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(y))


class FramedVAD(nn.Module):
    """A voice-activity detector: frames audio by its sample rate (a scalar input), convolves the frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(32, 32, 3, padding=1)
        self.conv2 = nn.Conv1d(32, 16, 3, padding=1)
        self.head = nn.Linear(16, 2)

    def forward(self, audio: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
        hop = torch.div(sr, 500, rounding_mode="floor")
        frames = audio.reshape(audio.shape[0], -1, hop).transpose(1, 2)
        y = torch.relu(self.conv2(torch.relu(self.conv1(frames))))
        return self.head(y.mean(2))
