"""WANDA and SPARSEGPT: the weight-zeroing criteria that read calibration inputs.

:func:`calibrated_values` gives the new value of each weight a weight-zeroing
method hands it (UNSTRUCTURED per layer, N_M), or leaves it out with the reason
(the method then falls back to magnitude):

* ``wanda``: one pass over the feeds on the original model accumulates, per
  layer, the squared L2 norm of each input column; weights are ranked by
  ``|w| x norm`` within their output row (or N:M group) and the lowest zeroed.
* ``sparsegpt``: layer by layer in graph order, the model *with the layers
  before already pruned* is run to accumulate that one layer's ``H = X^T X``;
  :func:`.solvers.sparsegpt` prunes and reconstructs it. Only one layer's
  Hessian is held at a time. The math runs on CUDA when torch has it.

Conv columns are reordered (kernel position major) so that N:M groups run
along input channels, as the N_M method lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..base import PruneContext, apply_tensors
from ..weights import matrix_to_weight, resolve_weight, weight_matrix
from .activations import input_rows, layer_input_problem, tensors_per_feed
from .solvers import Sparsity, sparsegpt, wanda

__all__ = ["Sparsity", "calibrated_values"]

SYNTHETIC_WARNING = (
    "SYNTHETIC_CALIBRATION: {criterion} ranked weights on synthetic inputs (the job has no train data): "
    "its choices know nothing of the real input distribution"
)


@dataclass
class _Layer:
    weight_name: str
    node: onnx.NodeProto
    shape: tuple[int, ...]
    perm: tuple[int, ...]
    matrix: np.ndarray
    order: np.ndarray

    def unorder(self, matrix: np.ndarray, dtype: np.dtype[np.generic]) -> np.ndarray:
        restored = np.empty_like(matrix)
        restored[:, self.order] = matrix
        return matrix_to_weight(self.node, restored, self.shape, self.perm).astype(dtype)


def _column_order(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    """Column permutation of a Conv's matrix putting its input channels innermost."""
    channels, kernel = shape[1], int(np.prod(shape[2:]))
    return np.arange(channels * kernel).reshape(channels, kernel).T.reshape(-1)


def _layers(
    model: onnx.ModelProto, targets: Sequence[tuple[str, onnx.NodeProto]]
) -> tuple[list[_Layer], dict[str, str]]:
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    layers, skipped = [], {}
    for weight_name, node in targets:
        resolved = resolve_weight(node.input[1], inits, producers)
        if resolved is None:
            skipped[weight_name] = "weight not found behind Identity/Transpose"
            continue
        shape, perm = tuple(int(d) for d in inits[weight_name].dims), tuple(resolved[1])
        matrix, reason = weight_matrix(node, numpy_helper.to_array(inits[weight_name]), perm)
        reason = reason or layer_input_problem(node, shape)
        if matrix is None or reason:
            skipped[weight_name] = reason
            continue
        order = _column_order(node, shape) if node.op_type == "Conv" else np.arange(matrix.shape[1])
        layers.append(_Layer(weight_name, node, shape, perm, matrix[:, order], order))
    return layers, skipped


def _column_squares(model: onnx.ModelProto, layers: list[_Layer], context: PruneContext) -> list[np.ndarray]:
    sums = [np.zeros(layer.matrix.shape[1]) for layer in layers]
    names = [layer.node.input[0] for layer in layers]
    for values in tensors_per_feed(model, names, context.feeds):
        for i, layer in enumerate(layers):
            rows = input_rows(layer.node, layer.shape, values[layer.node.input[0]]).double()
            sums[i] += (rows**2).sum(dim=0).numpy()[layer.order]
    return sums


def _hessian(model: onnx.ModelProto, layer: _Layer, context: PruneContext, device: str) -> np.ndarray:
    size = layer.matrix.shape[1]
    dtype = torch.float64 if device == "cpu" else torch.float32
    hessian = torch.zeros((size, size), dtype=dtype, device=device)
    for values in tensors_per_feed(model, [layer.node.input[0]], context.feeds):
        rows = input_rows(layer.node, layer.shape, values[layer.node.input[0]]).to(device, dtype)[
            :, layer.order
        ]
        hessian += rows.T @ rows
    return np.asarray(hessian.cpu().numpy())


def calibrated_values(
    model: onnx.ModelProto,
    targets: Sequence[tuple[str, onnx.NodeProto]],
    sparsity: Sparsity,
    criterion: str,
    context: PruneContext,
) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """New values of the ``(weight name, node)`` targets, the skipped ones with reasons, and warnings.

    ``criterion`` is ``"wanda"`` or ``"sparsegpt"``; the feeds are ``context.feeds``
    (a ``SYNTHETIC_CALIBRATION`` warning when they are synthetic).
    """
    layers, skipped = _layers(model, targets)
    warnings = [SYNTHETIC_WARNING.format(criterion=criterion.upper())] if context.synthetic else []
    dtypes = {t.name: numpy_helper.to_array(t).dtype for t in model.graph.initializer}
    values: dict[str, np.ndarray] = {}
    if criterion == "wanda":
        for layer, squares in zip(layers, _column_squares(model, layers, context), strict=True):
            values[layer.weight_name] = layer.unorder(
                wanda(layer.matrix, squares, sparsity), dtypes[layer.weight_name]
            )
        return values, skipped, warnings
    device = "cuda" if torch.cuda.is_available() else "cpu"
    current = model
    for layer in layers:
        hessian = _hessian(current, layer, context, device)
        pruned = sparsegpt(layer.matrix, hessian, sparsity, device)
        values[layer.weight_name] = layer.unorder(pruned, dtypes[layer.weight_name])
        current = apply_tensors(current, {layer.weight_name: values[layer.weight_name]})
    return values, skipped, warnings
