"""What the calibrated criteria read of a GraphModule's layers: their inputs as rows, one layer at a time.

A layer is *calibratable* when its input can be read as rows ``x`` with ``y = M x`` for its weight
matrix ``M`` (``out x fan_in``, the weight flattened): a Linear (rows along the last axis) or a 2-D
Conv with ``groups`` 1, numeric zero padding (rows are its ``im2col`` patches, channel-major, as
:func:`..calibrated.activations.patch_rows` gives them), called once by the graph.
:func:`layer_inputs` runs the model on each batch only as far as the layer and stops there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from ..calibrated.activations import patch_rows

__all__ = [
    "ROW_ELEMENTS",
    "calibratable",
    "calibration_problem",
    "evaluating",
    "kernel_size",
    "layer_inputs",
    "layer_rows",
    "matrix_of",
    "solver",
    "with_ones",
]

ROW_ELEMENTS = 1 << 24
"""At most this many row elements are materialised at once (batches of a Conv's patches are split)."""


def calibration_problem(module: nn.Module) -> str:
    """Why ``module``'s inputs cannot be read as rows of its matrix ("" when they can)."""
    if isinstance(module, nn.Linear):
        return ""
    if not isinstance(module, nn.Conv2d):
        return "only Linear and 2-D Conv layers are calibrated"
    if module.groups != 1:
        return "a grouped or depthwise convolution (each output reads its own inputs)"
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        return "a convolution with string or non-zero padding"
    return ""


def calibratable(gm: fx.GraphModule) -> dict[str, str]:
    """Module path -> reason ("" when calibratable) for every Linear and Conv the graph calls."""
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    found: dict[str, str] = {}
    for path, count in calls.items():
        module = gm.get_submodule(path)
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        found[path] = "the graph calls it more than once" if count > 1 else calibration_problem(module)
    return found


def kernel_size(module: nn.Module) -> int:
    """Columns of the matrix per input channel: 1 for a Linear, ``kh x kw`` for a Conv."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return int(weight[0, 0].numel()) if weight.dim() > 2 else 1


def matrix_of(module: nn.Module) -> torch.Tensor:
    """The layer's weight as ``out x fan_in`` (a view)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach().reshape(weight.shape[0], -1)


def block_samples(module: nn.Module, x: torch.Tensor) -> int:
    """How many samples of ``x`` make a block of at most :data:`ROW_ELEMENTS` rows' elements for a Conv."""
    if not isinstance(module, nn.Conv2d):
        return max(1, x.shape[0])
    per_sample = int(module.weight[0].numel()) * max(1, x.shape[2] * x.shape[3])
    return max(1, ROW_ELEMENTS // per_sample)


def layer_rows(module: nn.Module, x: torch.Tensor, step: int = 0) -> Iterator[torch.Tensor]:
    """The rows of one input ``x`` of a calibratable ``module``, a Conv's in blocks of ``step`` samples
    (0: :func:`block_samples`; two layers read side by side pass the same step)."""
    if isinstance(module, nn.Linear):
        yield x.reshape(-1, x.shape[-1])
        return
    assert isinstance(module, nn.Conv2d)
    assert not isinstance(module.padding, str)
    step = step or block_samples(module, x)
    ph, pw = (int(p) for p in module.padding)
    for start in range(0, x.shape[0], step):
        yield patch_rows(
            x[start : start + step], module.kernel_size, (ph, pw, ph, pw), module.stride, module.dilation
        )


class _ReachedError(Exception):
    pass


def layer_inputs(
    model: nn.Module, layer: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]
) -> Iterator[torch.Tensor]:
    """The input ``layer`` receives on each batch (the model stops there)."""
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0].detach().float())
        raise _ReachedError

    handle = layer.register_forward_pre_hook(hook)
    try:
        for batch in batches:
            seen.clear()
            try:
                with torch.no_grad():
                    model(*batch)
            except _ReachedError:
                pass
            if seen:
                yield seen[0]
    finally:
        handle.remove()


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Run the body with ``modules`` in eval mode (BatchNorm on its running statistics), then restore."""
    modes = [m.training for m in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def solver() -> tuple[str, torch.dtype]:
    """Where the calibrated statistics accumulate: float64 on CPU, float32 on CUDA when torch has it."""
    return ("cuda", torch.float32) if torch.cuda.is_available() else ("cpu", torch.float64)


def with_ones(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` with a column of ones appended (a bias's input)."""
    return torch.cat([rows, torch.ones_like(rows[:, :1])], dim=1)
