"""A YOLOv8-style detector at toy size: C2f blocks, SPPF, an FPN/PAN neck of concat chains, two heads."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNSiLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2 = ConvBNSiLU(c, c, 3), ConvBNSiLU(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """Split in two (``chunk``), n bottlenecks on the second half, every partial result concatenated."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvBNSiLU(cin, 2 * self.c)
        self.cv2 = ConvBNSiLU((2 + n) * self.c, cout)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Three chained 5x5 max pools, the four maps concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBNSiLU(cin, hidden)
        self.cv2 = ConvBNSiLU(hidden * 4, cout)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class YoloLike(nn.Module):
    """Backbone to strides 8/16/32, SPPF, top-down (upsample + concat) and bottom-up (strided conv +
    concat) paths, per scale a box and a class branch; output ``(batch, 4 + classes, anchors)``."""

    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(ConvBNSiLU(3, w, 3, 2), ConvBNSiLU(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))
        self.p3 = nn.Sequential(ConvBNSiLU(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 2))
        self.p4 = nn.Sequential(ConvBNSiLU(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w))
        self.p5 = nn.Sequential(ConvBNSiLU(8 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w), SPPF(8 * w, 8 * w))
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4 = C2f(16 * w, 8 * w, shortcut=False)
        self.td3 = C2f(12 * w, 4 * w, shortcut=False)
        self.down3 = ConvBNSiLU(4 * w, 4 * w, 3, 2)
        self.bu4 = C2f(12 * w, 8 * w, shortcut=False)
        self.down4 = ConvBNSiLU(8 * w, 8 * w, 3, 2)
        self.bu5 = C2f(16 * w, 8 * w, shortcut=False)
        self.box = nn.ModuleList(
            nn.Sequential(ConvBNSiLU(c, 2 * w, 3), nn.Conv2d(2 * w, 4, 1)) for c in (4 * w, 8 * w, 8 * w)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBNSiLU(c, 2 * w, 3), nn.Conv2d(2 * w, classes, 1))
            for c in (4 * w, 8 * w, 8 * w)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.p3(self.stem(x))
        c4 = self.p4(c3)
        c5 = self.p5(c4)
        t4 = self.td4(torch.cat([self.up(c5), c4], 1))
        t3 = self.td3(torch.cat([self.up(t4), c3], 1))
        b4 = self.bu4(torch.cat([self.down3(t3), t4], 1))
        b5 = self.bu5(torch.cat([self.down4(b4), c5], 1))
        outputs = []
        for feature, box, cls in zip((t3, b4, b5), self.box, self.cls, strict=True):
            outputs.append(torch.cat([box(feature), cls(feature).sigmoid()], 1).flatten(2))
        return torch.cat(outputs, 2)
