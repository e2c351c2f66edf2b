"""Quantization-aware training: fine-tune a model under int8 fake quantization, return its float weights.

The model is converted to a GraphModule; every Conv and Linear gets

* its weight fake-quantized per output channel, symmetric int8 (scale ``max|w| / 127``, recomputed at
  every step, straight-through gradients), and
* its input fake-quantized per tensor, asymmetric uint8, with the range its calibration inputs cover
  (observed once before training, zero included) -- what ONNX Runtime's static quantization does.

It is then fine-tuned (AdamW, cosine schedule, distillation from the float model mixed with the
labels' loss; on CUDA when the worker has it, in float32) for the config's steps, the fake quantization
removed, and the trained float weights exported: static quantization of that model gives the QAT variant.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.spec.finetune_configs import FinetuneConfig
from prunekit.spec.quantize_configs import AwareTrainingConfig
from prunekit.v1 import model_pb2

from ..modelio.onnx_to_fx import onnx_to_fx
from ..pruning.base import PruneContext
from ..pruning.structured.export import export_pruned
from .datasets import Dataset
from .finetune import finetune

__all__ = ["aware_training", "fake_quantized_layers"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 fake quantization of a weight."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, weight.dim()))
        scale = (weight.detach().abs().amax(dim=dims).clamp(min=1e-8) / 127.0).float()
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -128, 127)


class _InputFakeQuant:
    """A forward pre-hook: per-tensor uint8 fake quantization of a layer's input over ``[low, high]``."""

    def __init__(self, low: float, high: float) -> None:
        low, high = min(low, 0.0), max(high, 0.0)
        self.scale = max((high - low) / 255.0, 1e-8)
        self.zero = int(np.clip(round(-low / self.scale), 0, 255))

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = torch.fake_quantize_per_tensor_affine(args[0], self.scale, self.zero, 0, 255)
        return (x, *args[1:])


def _ranges(
    model: nn.Module, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str]
) -> dict[str, list[float]]:
    """Each Conv/Linear's input range over the feeds: name -> [min, max]."""
    seen: dict[str, list[float]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):

            def record(_: nn.Module, args: tuple[torch.Tensor, ...], key: str = name) -> None:
                low, high = float(args[0].min()), float(args[0].max())
                old = seen.setdefault(key, [low, high])
                old[0], old[1] = min(old[0], low), max(old[1], high)

            handles.append(module.register_forward_pre_hook(record))
    with torch.no_grad():
        for feed in feeds:
            model(*(torch.from_numpy(np.asarray(feed[n])) for n in names))
    for handle in handles:
        handle.remove()
    return seen


def fake_quantized_layers(
    model: nn.Module, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str]
) -> list[torch.utils.hooks.RemovableHandle]:
    """Put the fake quantization of the module docstring on ``model`` (in place); the input hooks' handles.

    Layers the feeds never reach keep a float input.
    """
    ranges = _ranges(model, feeds, names)
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            parametrize.register_parametrization(module, "weight", _WeightFakeQuant())
            if name in ranges:
                handles.append(module.register_forward_pre_hook(_InputFakeQuant(*ranges[name])))
    return handles


def _remove(model: nn.Module, handles: Sequence[torch.utils.hooks.RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)


def aware_training(
    model: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    train: Dataset,
    eval: Dataset | None,
    config: AwareTrainingConfig,
    calibration: Sequence[dict[str, np.ndarray]],
) -> onnx.ModelProto:
    """``model`` fine-tuned under fake quantization (module docstring); its float weights as ONNX.

    ``calibration`` feeds fix the input ranges; ``train`` (and ``eval``, to keep the best weights)
    are the job's data.
    """
    student = onnx_to_fx(model, inputs=list(inputs))
    teacher = copy.deepcopy(student).eval()
    names = [spec.name for spec in inputs]
    handles = fake_quantized_layers(student, calibration, names)
    plan = FinetuneConfig(
        epochs=0,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=0,
        mixed_precision=False,
    )
    finetune(student, teacher, train, eval, plan)
    student.cpu()
    _remove(student, handles)
    return export_pruned(student, model, PruneContext(inputs=tuple(inputs)))
