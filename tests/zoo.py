"""The test zoo: small torch models covering what the converter and the pruners must handle.

Models are tiny (16x16 or 32x32 images, a few channels) so that exporting, converting
and pruning stay fast. Shapes inside ``forward`` are computed from the data (``-1``,
``x.shape``) so a model pruned by hand still runs. Every model is scriptable
(``torch.jit.script``) as well as traceable.

``ZOO`` holds every model; the converter tests use the first five, the pruning tests
all of them. :func:`resnet18` is the ResNet-style net the benches time at 224 px.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.version_converter
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from prunekit.v1 import model_pb2


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


class MLP(nn.Module):
    """Flatten from a 3-D input, Linear chains, dropout, GELU, tanh, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 24)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(24, 16)
        self.fc3 = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.relu(self.fc1(x.flatten(1))))
        y = torch.tanh(F.gelu(self.fc2(y)))
        return torch.log_softmax(self.fc3(y), -1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, -1).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        return self.o(y)


class TinyTransformer(nn.Module):
    """Embedding + positions, hand-written multi-head attention, LayerNorm, a GELU FFN."""

    def __init__(self, vocab: int = 40, dim: int = 16, heads: int = 2, seq: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.1)
        self.attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 32)
        self.ff2 = nn.Linear(32, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos
        x = self.norm1(x + self.attn(x))
        x = self.norm2(x + self.ff2(F.gelu(self.ff1(x))))
        return self.head(x.mean(1))


class EncoderLayer(nn.Module):
    """A post-norm (BERT) or pre-norm (ViT) transformer encoder layer."""

    def __init__(self, dim: int, heads: int, hidden: int, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, hidden)
        self.ff2 = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.ff2(F.gelu(self.ff1(self.norm2(x))))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


class BertLike(nn.Module):
    """Token and position embeddings, two post-norm encoder layers, a pooler and a classifier."""

    def __init__(self, vocab: int = 40, dim: int = 32, heads: int = 4, seq: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.Sequential(
            EncoderLayer(dim, heads, 64, pre_norm=False), EncoderLayer(dim, heads, 64, pre_norm=False)
        )
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.norm(self.embed(ids) + self.pos))
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


class ViTLike(nn.Module):
    """Patch embedding (strided conv), a class token, positions, two pre-norm encoder layers."""

    def __init__(self, dim: int = 32, heads: int = 4, patch: int = 8, size: int = 32) -> None:
        super().__init__()
        tokens = (size // patch) ** 2 + 1
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.1)
        self.layers = nn.Sequential(
            EncoderLayer(dim, heads, 64, pre_norm=True), EncoderLayer(dim, heads, 64, pre_norm=True)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.patch(x).flatten(2).transpose(1, 2)
        y = torch.cat([self.cls.expand(y.shape[0], -1, -1), y], 1) + self.pos
        y = self.norm(self.layers(y))
        return self.head(y[:, 0])


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[[], nn.Module]
    inputs: tuple[model_pb2.InputSpec, ...]
    kind: str = "cnn"
    """``cnn``, ``mlp`` or ``transformer``: which structured methods apply."""

    def build(self) -> nn.Module:
        torch.manual_seed(0)
        model = self.factory()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.2, 0.2)
        return model.eval()

    def sample(self, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(seed)
        tensors = []
        for spec in self.inputs:
            shape = [batch, *spec.shape[1:]]
            if spec.dtype == model_pb2.DATA_TYPE_INT64:
                tensors.append(torch.randint(0, 40, shape, generator=generator))
            else:
                tensors.append(torch.randn(shape, generator=generator))
        return tuple(tensors)


def _image(channels: int = 3, size: int = 16) -> tuple[model_pb2.InputSpec, ...]:
    return (model_pb2.InputSpec(name="image", shape=[2, channels, size, size]),)


def _ids(seq: int) -> tuple[model_pb2.InputSpec, ...]:
    return (model_pb2.InputSpec(name="ids", shape=[2, seq], dtype=model_pb2.DATA_TYPE_INT64),)


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry("resnet", ResNetLike, _image()),
        ZooEntry("mobile", MobileLike, _image()),
        ZooEntry("unet", UNetLike, _image()),
        ZooEntry("mlp", MLP, (model_pb2.InputSpec(name="features", shape=[2, 4, 8]),), kind="mlp"),
        ZooEntry("transformer", TinyTransformer, _ids(8), kind="transformer"),
        ZooEntry("mobilenetv2", MobileNetV2Like, _image(size=32)),
        ZooEntry("densenet", DenseNetLike, _image(size=32)),
        ZooEntry("senet", SENetLike, _image(size=32)),
        ZooEntry("shufflenet", ShuffleNetLike, _image(size=32)),
        ZooEntry("vit", ViTLike, _image(size=32), kind="transformer"),
        ZooEntry("bert", BertLike, _ids(16), kind="transformer"),
        ZooEntry("resnet18", lambda: ResNet18(width=16, classes=10), _image(size=32)),
    )
}
CONVERTER_MODELS = ("resnet", "mobile", "unet", "mlp", "transformer")
"""The models the converter's own tests export at every opset."""


def resnet18(size: int = 224, width: int = 64) -> ZooEntry:
    """The ResNet-18-style net at ``size`` px, batch 1 (the benches' model)."""
    inputs = (model_pb2.InputSpec(name="image", shape=[1, 3, size, size]),)
    return ZooEntry(f"resnet18-{size}", lambda: ResNet18(width), inputs)


LEGACY_OPSETS = (11, 13, 17, 20)
NEWEST_OPSET = onnx.defs.onnx_opset_version()


def export(
    model: nn.Module,
    entry: ZooEntry,
    path: Path,
    exporter: str,
    opset: int,
    *,
    training: bool = False,
) -> Path:
    """Export ``model`` to ``path`` (atomically: concurrent test workers may race).

    ``exporter``: ``legacy`` (``dynamo=False``), ``dynamo`` (static shapes),
    ``dynamo-batch`` (a symbolic batch dimension), or ``converted`` (legacy at opset 20,
    then ``onnx.version_converter`` to ``opset``).
    """
    args = entry.sample()
    names = [spec.name for spec in entry.inputs]
    partial = path.with_suffix(f".{os.getpid()}.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter.startswith("dynamo"):
            dynamic = None
            if exporter == "dynamo-batch":  # a symbolic batch dimension
                first = next(iter(inspect.signature(model.forward).parameters))
                dynamic = {first: {0: torch.export.Dim("batch", min=1, max=64)}}
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                external_data=False,
                verbose=False,
                opset_version=opset,
                dynamic_shapes=dynamic,
            )
            assert program is not None
            program.save(str(partial))
        else:
            torch.onnx.export(
                model,
                args,
                str(partial),
                dynamo=False,
                opset_version=min(opset, 20),
                input_names=names,
                output_names=["output"],
                dynamic_axes={n: {0: "batch"} for n in [*names, "output"]},
                do_constant_folding=False,
                training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
            )
    if exporter == "converted":  # the legacy export at 20, raised by onnx's version converter
        upgraded = onnx.version_converter.convert_version(onnx.load(str(partial)), opset)
        onnx.save(upgraded, str(partial))
    partial.replace(path)
    return path


def save_torchscript(model: nn.Module, entry: ZooEntry, path: Path, how: str) -> Path:
    """Save ``model`` as TorchScript, ``how`` = ``script`` (``torch.jit.script``) or ``trace``."""
    partial = path.with_suffix(f".{os.getpid()}.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "script":
            module = torch.jit.script(model)
        else:
            module = torch.jit.trace(model, entry.sample(), check_trace=False)
        torch.jit.save(module, str(partial))
    partial.replace(path)
    return path


FORMATS = ("legacy", "dynamo", "script", "trace")
"""How a zoo model is handed over: legacy or dynamo ONNX export, TorchScript script or trace."""


def cache_dir() -> Path:
    """A directory shared by test workers and runs, keyed by this file and the torch version."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"prunekit-zoo-{os.getuid()}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(name: str, fmt: str) -> Path:
    """The zoo model ``name`` in format ``fmt`` (see :data:`FORMATS`), exported once and cached on disk."""
    entry = ZOO[name]
    torchscript = fmt in ("script", "trace")
    path = cache_dir() / f"{name}-{fmt}.{'pt' if torchscript else 'onnx'}"
    if not path.exists():
        model = entry.build()
        if torchscript:
            save_torchscript(model, entry, path, fmt)
        else:
            export(model, entry, path, fmt, 17 if fmt == "legacy" else 18)
    return path
