"""Small sample models made locally (no downloads), for the tests and benches (``tests.samples``).

Weights are random but deterministic (seeded), so the same call yields the
same bytes on the same torch version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

SampleFormat = Literal["onnx", "torchscript"]


class _Block(nn.Module):
    """Conv-BN-ReLU-Conv-BN with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SampleCNN(nn.Module):
    """A ResNet-style classifier: stem, residual stages, global pool, linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = _Block(width, width, 1)
        self.layer2 = _Block(width, width * 2, 2)
        self.layer3 = _Block(width * 2, width * 4, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))  # type: ignore[no-any-return]


class SampleMLP(nn.Module):
    """A three-layer perceptron (Gemm/MatMul layers only)."""

    def __init__(self, features: int = 64, hidden: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def sample_module(kind: Literal["cnn", "mlp"] = "cnn", *, seed: int = 0, width: int = 32) -> nn.Module:
    """A freshly initialised sample module in eval mode (``width``: the CNN's, or 1/8 of the MLP's hidden)."""
    torch.manual_seed(seed)
    module: nn.Module = SampleCNN(width=width) if kind == "cnn" else SampleMLP(hidden=8 * width)
    return module.eval()


def sample_input_shape(kind: Literal["cnn", "mlp"] = "cnn", *, image_size: int = 32) -> list[int]:
    """The input shape (batch 1) the sample of ``kind`` is exported with."""
    return [1, 3, image_size, image_size] if kind == "cnn" else [1, 64]


def write_sample_model(
    path: Path,
    fmt: SampleFormat = "onnx",
    kind: Literal["cnn", "mlp"] = "cnn",
    *,
    seed: int = 0,
    width: int = 32,
    image_size: int = 32,
    opset: int = 17,
) -> list[int]:
    """Write a sample model to ``path`` and return its input shape.

    ONNX files come from the legacy exporter with a dynamic batch dimension
    and the input named ``input``; TorchScript files from ``torch.jit.trace``.
    """
    module = sample_module(kind, seed=seed, width=width)
    shape = sample_input_shape(kind, image_size=image_size)
    example = torch.randn(*shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        traced = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path))
        return shape
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    return shape
