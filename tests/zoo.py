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
from torch import nn

from prunekit.v1 import model_pb2

from .zoo_cnn import (
    DenseNetLike,
    FramedVAD,
    MobileLike,
    MobileNetV2Like,
    ResNet18,
    ResNetLike,
    SENetLike,
    ShuffleNetLike,
    UNetLike,
)
from .zoo_shufflenet import ShuffleNetV2
from .zoo_transformers import MLP, Attention, BertLike, PreNormEncoder, TinyTransformer, TorchViT, ViTLike
from .zoo_yolo import YoloLike

__all__ = [
    "CONVERTER_MODELS",
    "FORMATS",
    "LEGACY_OPSETS",
    "NEWEST_OPSET",
    "ZOO",
    "Attention",
    "ZooEntry",
    "cache_dir",
    "cached",
    "export",
    "number_tensors",
    "resnet18",
    "save_torchscript",
]


_TORCH = {model_pb2.DATA_TYPE_UNSPECIFIED: torch.float32, model_pb2.DATA_TYPE_INT64: torch.int64}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[[], nn.Module]
    inputs: tuple[model_pb2.InputSpec, ...]
    kind: str = "cnn"
    """``cnn``, ``mlp`` or ``transformer``: which structured methods apply."""
    fast_path: bool = False
    """Trace without gradients, as inference code does: torch's fused attention fast paths appear."""

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
            shape = [batch, *spec.shape[1:]] if spec.shape else []
            if spec.HasField("value"):
                tensors.append(torch.full(shape, spec.value, dtype=torch.float64).to(_TORCH[spec.dtype]))
            elif spec.dtype == model_pb2.DATA_TYPE_INT64:
                tensors.append(torch.randint(0, 40, shape, generator=generator))
            else:
                tensors.append(torch.randn(shape, generator=generator))
        return tuple(tensors)


def _image(channels: int = 3, size: int = 16) -> tuple[model_pb2.InputSpec, ...]:
    return (model_pb2.InputSpec(name="image", shape=[2, channels, size, size]),)


def _ids(seq: int) -> tuple[model_pb2.InputSpec, ...]:
    return (model_pb2.InputSpec(name="ids", shape=[2, seq], dtype=model_pb2.DATA_TYPE_INT64),)


def _audio() -> tuple[model_pb2.InputSpec, ...]:
    """Audio samples and a scalar sample rate that must be 16 kHz (the frames are sized by it)."""
    rate = model_pb2.InputSpec(name="sr", shape=[], dtype=model_pb2.DATA_TYPE_INT64, value=16000)
    return (model_pb2.InputSpec(name="audio", shape=[2, 512]), rate)


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
        ZooEntry("encoder", PreNormEncoder, _ids(16), kind="transformer"),
        ZooEntry("resnet18", lambda: ResNet18(width=16, classes=10), _image(size=32)),
        ZooEntry("vad", FramedVAD, _audio()),
        ZooEntry("shufflenetv2", ShuffleNetV2, _image(size=32)),
        ZooEntry("torchvit", TorchViT, _image(size=32), kind="transformer", fast_path=True),
        ZooEntry("yolo", YoloLike, _image(size=64)),
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
    scalars = {spec.name for spec in entry.inputs if not spec.shape}
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
                dynamic_axes={n: {0: "batch"} for n in [*names, "output"] if n not in scalars},
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
            with torch.set_grad_enabled(not entry.fast_path):
                module = torch.jit.trace(model, entry.sample(), check_trace=False)
        torch.jit.save(module, str(partial))
    partial.replace(path)
    return path


FORMATS = ("legacy", "dynamo", "script", "trace")
"""How a zoo model is handed over: legacy or dynamo ONNX export, TorchScript script or trace."""


def cache_dir() -> Path:
    """A directory shared by test workers and runs, keyed by the zoo's files and the torch version."""
    here = Path(__file__).parent
    sources = b"".join((here / name).read_bytes() for name in sorted(p.name for p in here.glob("zoo*.py")))
    digest = hashlib.sha256(sources + torch.__version__.encode()).hexdigest()[:12]
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


def number_tensors(model: onnx.ModelProto, *, first: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` whose tensors and nodes are named ``0``, ``1``... as older exporters name them."""
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    names: dict[str, str] = {}

    def number(name: str) -> str:
        if name and name not in names:
            names[name] = str(first + len(names))
        return names.get(name, name)

    graph = renamed.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = number(value.name)
    for tensor in graph.initializer:
        tensor.name = number(tensor.name)
    for node in graph.node:
        node.input[:] = [number(n) for n in node.input]
        node.output[:] = [number(n) for n in node.output]
        node.name = number(f"node:{node.name}")
    onnx.checker.check_model(renamed)
    return renamed
