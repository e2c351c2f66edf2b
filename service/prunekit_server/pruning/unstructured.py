"""Unstructured magnitude pruning: zero the smallest-magnitude weights.

Eligible layers are Conv, ConvTranspose, Gemm and MatMul nodes whose input 1
is a floating-point initializer (float32, float64, float16 or bfloat16),
possibly behind ``Identity`` nodes. Biases are never touched. Shapes do not
change, so dense runtimes do not get faster; the model compresses better.

Exactness: with ``scope="global"`` exactly ``round(ratio * total)`` weights
are selected over all eligible weights (``total`` their element count); with
``scope="per_layer"`` exactly ``round(ratio * n)`` of each layer's ``n``.
Python's ``round`` (half to even) is used. Selection is by absolute value;
ties at the threshold go to the lower position, positions ordered by the
weight's first use in the graph, then C order within the weight. NaN weights
count as the largest. A weight read by several nodes is pruned once and left
alone when any of its nodes (or its name) matches an ``ignore`` pattern.

``importance`` ``wanda`` or ``sparsegpt`` (``per_layer`` only) choose with
calibration inputs instead (:mod:`.calibrated`): ``round(ratio * fan_in)`` of
each output row (wanda) or ``round(ratio * size)`` of each column block
(sparsegpt, which also updates the kept weights); a layer they cannot read
falls back to magnitude (``CALIBRATION_SKIPPED``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from prunekit.spec.prune_configs import Scope, UnstructuredConfig

from ..errors import FieldViolation, invalid_spec, unsupported_model
from .base import (
    LayerPruneInfo,
    PruneContext,
    PruneResult,
    WeightedLayer,
    initializers,
    register_pruner,
    weighted_layers,
)
from .calibrated import Sparsity, calibrated_values

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})
__all__ = ["FLOAT_TYPES", "Scope", "UnstructuredConfig", "prune_unstructured"]


@dataclass
class _Weight:
    name: str
    layers: list[WeightedLayer]
    tensor: TensorProto
    value: np.ndarray | None = None
    skip_reason: str = ""


def _magnitudes(value: np.ndarray) -> np.ndarray:
    """Flat absolute values, exact (float16/bfloat16 widen to float32), NaN as +inf."""
    wide = np.float64 if value.dtype == np.float64 else np.float32
    mags: np.ndarray = np.abs(value.astype(wide).reshape(-1))
    mags[np.isnan(mags)] = np.inf
    return mags


def select_smallest(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of exactly ``k`` smallest entries of a flat array; ties go to lower indices."""
    n = magnitudes.size
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    if k >= n:
        mask[:] = True
        return mask
    threshold = np.partition(magnitudes, k - 1)[k - 1]
    mask = np.asarray(magnitudes < threshold, dtype=bool)
    need = k - int(np.count_nonzero(mask))
    mask[np.flatnonzero(magnitudes == threshold)[:need]] = True
    return mask


def _collect(model: onnx.ModelProto, config: UnstructuredConfig) -> tuple[list[_Weight], list[str]]:
    inits = initializers(model)
    weights: dict[str, _Weight] = {}
    for layer in weighted_layers(model):
        weights.setdefault(layer.weight_name, _Weight(layer.weight_name, [], inits[layer.weight_name]))
        weights[layer.weight_name].layers.append(layer)
    warnings: list[str] = []
    for w in weights.values():
        names = [w.name, *(layer.name for layer in w.layers)]
        hit = next((p for p in config.ignore for n in names if fnmatchcase(n, p)), None)
        if hit is not None:
            w.skip_reason = f"matches ignore pattern {hit!r}"
        elif w.tensor.data_type not in FLOAT_TYPES:
            type_name = TensorProto.DataType.Name(w.tensor.data_type)
            w.skip_reason = f"weight element type {type_name} is not floating point"
            warnings.append(f"WEIGHT_NOT_FLOAT: layer {w.layers[0].name!r} skipped: {w.skip_reason}")
        else:
            w.value = numpy_helper.to_array(w.tensor)
    return list(weights.values()), warnings


def _info(w: _Weight, new: np.ndarray | None) -> LayerPruneInfo:
    shape = tuple(int(d) for d in w.tensor.dims)
    value = w.value if w.value is not None else numpy_helper.to_array(w.tensor)
    before = int(np.count_nonzero(value))
    after = int(np.count_nonzero(new)) if new is not None else before
    uses = [(layer.name, layer.op_type) for layer in w.layers]
    skip_reason = w.skip_reason if w.value is None else ""
    return LayerPruneInfo.zeroed(uses, w.name, shape, (before, after), skip_reason)


def _calibrated(
    model: onnx.ModelProto, config: UnstructuredConfig, context: PruneContext, weights: list[_Weight]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """WANDA / SPARSEGPT values of the weights read by one node; the others are left to magnitude."""
    single = [(w.name, w.layers[0].node) for w in weights if len(w.layers) == 1]
    reasons = {w.name: "weight shared by several nodes" for w in weights if len(w.layers) > 1}
    values, skipped, warnings = calibrated_values(
        model, single, Sparsity(ratio=config.ratio), config.importance, context
    )
    reasons.update(skipped)
    if reasons:
        names = ", ".join(f"{name} ({why})" for name, why in sorted(reasons.items())[:8])
        warnings.append(f"CALIBRATION_SKIPPED: pruned by magnitude instead: {names}")
    return values, warnings


@register_pruner(UnstructuredConfig)
def prune_unstructured(
    model: onnx.ModelProto, config: UnstructuredConfig, context: PruneContext
) -> PruneResult:
    """Zero the smallest-magnitude weights as the module docstring states.

    Raises ``UNSUPPORTED_MODEL`` when the model has no eligible layer and
    ``INVALID_SPEC`` when ``ignore`` matches every eligible layer.
    """
    weights, warnings = _collect(model, config)
    active = [(w, w.value) for w in weights if w.value is not None]
    if not active:
        if any(w.tensor.data_type in FLOAT_TYPES for w in weights):
            raise invalid_spec(
                [FieldViolation("spec.prune.ignore", "the patterns match every prunable layer of the model")]
            )
        raise unsupported_model(
            "no prunable layer: unstructured pruning needs Conv, ConvTranspose, Gemm or MatMul layers "
            "with a floating-point constant weight"
        )
    calibrated: dict[str, np.ndarray] = {}
    if config.importance != "magnitude":
        calibrated, fallback = _calibrated(model, config, context, [w for w, _ in active])
        warnings += fallback
    mags = [_magnitudes(value) for _, value in active]
    if config.scope == "global":
        total = sum(m.size for m in mags)
        flat = np.concatenate(mags) if len(mags) > 1 else mags[0]
        mask = select_smallest(flat, round(config.ratio * total))
        masks = np.split(mask, np.cumsum([m.size for m in mags])[:-1])
    else:
        masks = [select_smallest(m, round(config.ratio * m.size)) for m in mags]
    tensors: dict[str, np.ndarray] = {}
    new_values: dict[str, np.ndarray] = {}
    for (w, value), selected in zip(active, masks, strict=True):
        if w.name in calibrated:
            tensors[w.name] = new_values[w.name] = calibrated[w.name]
            continue
        if not np.any(value.reshape(-1)[selected] != 0):
            new_values[w.name] = value
            continue
        new = value.copy()
        new.reshape(-1)[selected] = 0
        tensors[w.name] = new
        new_values[w.name] = new
    layers = [_info(w, new_values.get(w.name)) for w in weights]
    return PruneResult(tensors=tensors, layers=layers, warnings=warnings)
