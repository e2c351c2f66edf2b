"""N:M semi-structured sparsity: keep the ``n`` largest of every ``m`` consecutive weights.

The groups run along each layer's reduction (input-channel) axis, the layout
sparse tensor cores accelerate:

* ``Gemm``: the weight's input-feature axis (axis 1 with ``transB=1``, axis 0
  otherwise); ``MatMul`` with a constant weight: its second-to-last axis (the
  weight may sit behind ``Identity`` and ``Transpose`` nodes, as the legacy
  exporter writes ``nn.Linear``; the permutation is followed back to the
  initializer);
* ``Conv``: the input channels ``C_in / groups`` of each (output channel,
  kernel position), as TensorRT and NVIDIA's ASP lay 2:4 convolutions out;
* ``ConvTranspose`` (weight ``[C_in, C_out / groups, k...]``): its input
  channels too, axis 0, for ungrouped layers (a grouped one is skipped).

A layer whose reduction size is not a multiple of ``m`` (a depthwise conv, a
3-channel stem) is skipped with the reason; so are layers matching ``ignore``,
and output layers (those from which a graph output
is reached without passing another weighted layer) unless
``prune_output_layers``. Selection is by magnitude (NaN as the largest); ties
keep the lower position. Shapes do not change: the gain needs a runtime with
sparse kernels, which the result's ``N_M_RUNTIME_SUPPORT`` warning names.
``importance`` ``wanda`` or ``sparsegpt`` choose each group's survivors with
calibration inputs instead (:mod:`.calibrated`; sparsegpt also updates the kept
weights); a layer they cannot read falls back to magnitude (``CALIBRATION_SKIPPED``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from prunekit.spec.prune_configs import NMConfig

from ..errors import FieldViolation, invalid_spec, unsupported_model
from .base import (
    WEIGHTED_OPS,
    LayerPruneInfo,
    PruneContext,
    PruneResult,
    initializers,
    register_pruner,
)
from .calibrated import Sparsity, calibrated_values
from .weights import output_layers, resolve_weight

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})

RUNTIME_SUPPORT = (
    "N_M_RUNTIME_SUPPORT: {n}:{m} sparsity keeps shapes; only sparse kernels turn it into speed. "
    "{hardware} TensorRT with sparsity enabled (--sparsity=enable / BuilderFlag.SPARSE_WEIGHTS) on "
    "NVIDIA Ampere or newer GPUs, and PyTorch semi-structured sparse tensors "
    "(to_sparse_semi_structured, cuSPARSELt) on CUDA, use it. ONNX Runtime on CPU runs dense kernels: "
    "no speed-up there, the gain is compressed size."
)


@dataclass(frozen=True)
class _Use:
    """One node reading a weight: its name, op type, and the reduction axis in the initializer's layout."""

    name: str
    op_type: str
    axis: int | None
    reason: str = ""


@dataclass
class _Weight:
    name: str
    tensor: TensorProto
    uses: list[_Use] = field(default_factory=list)


def _reduction_axis(node: onnx.NodeProto, rank: int) -> tuple[int | None, str]:
    """The reduction axis of ``node``'s input 1 as it is consumed, or None and why not."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return (1, "") if rank >= 3 else (None, "a Conv weight needs rank 3 or more")
    if node.op_type == "ConvTranspose":
        if attrs.get("group", 1) != 1:
            return None, "a grouped ConvTranspose is left dense"
        return (0, "") if rank >= 3 else (None, "a ConvTranspose weight needs rank 3 or more")
    if node.op_type == "Gemm":
        return (1 if attrs.get("transB", 0) else 0), ""
    if node.op_type == "MatMul":
        return (rank - 2, "") if rank >= 2 else (None, "a 1-D MatMul weight has no reduction groups")
    return None, f"{node.op_type}: no runtime accelerates N:M sparsity for it"


def _collect(model: onnx.ModelProto) -> list[_Weight]:
    inits = initializers(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    weights: dict[str, _Weight] = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        resolved = resolve_weight(node.input[1], inits, producers)
        if resolved is None:
            continue
        source, perm = resolved
        name = node.name or f"{node.op_type}_{index}"
        axis, reason = _reduction_axis(node, len(perm))
        use = _Use(name, node.op_type, perm[axis] if axis is not None else None, reason)
        weights.setdefault(source, _Weight(source, inits[source])).uses.append(use)
    return list(weights.values())


def nm_mask(value: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Boolean mask of the weights kept: the ``n`` largest magnitudes of every ``m`` along ``axis``.

    ``value.shape[axis]`` must be a multiple of ``m``. NaN counts as the largest; ties keep lower positions.
    """
    wide = np.float64 if value.dtype == np.float64 else np.float32
    mags = np.abs(np.moveaxis(value.astype(wide), axis, -1))
    mags[np.isnan(mags)] = np.inf
    moved_shape = mags.shape
    groups = mags.reshape(-1, m)
    order = np.argsort(-groups, axis=1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :n], True, axis=1)
    return np.moveaxis(keep.reshape(moved_shape), -1, axis)


def _skip_reason(w: _Weight, config: NMConfig, outputs: set[str]) -> str:
    names = [w.name, *(u.name for u in w.uses)]
    hit = next((p for p in config.ignore for name in names if fnmatchcase(name, p)), None)
    if hit is not None:
        return f"matches ignore pattern {hit!r}"
    reason = next((u.reason for u in w.uses if u.axis is None), "")
    if reason:
        return reason
    if len({u.axis for u in w.uses}) > 1:
        return "the nodes sharing this weight reduce over different axes"
    if w.tensor.data_type not in FLOAT_TYPES:
        return f"weight element type {TensorProto.DataType.Name(w.tensor.data_type)} is not floating point"
    if not config.prune_output_layers and any(u.name in outputs for u in w.uses):
        return "output layer (set prune_output_layers to include it)"
    axis = w.uses[0].axis
    assert axis is not None
    size = int(w.tensor.dims[axis])
    if size % config.m:
        return f"reduction size {size} is not a multiple of m={config.m}"
    return ""


@register_pruner(NMConfig)
def prune_n_m(model: onnx.ModelProto, config: NMConfig, context: PruneContext) -> PruneResult:
    """Apply N:M sparsity as the module docstring states.

    Raises ``UNSUPPORTED_MODEL`` when no layer is eligible for a reason other
    than ``ignore``, and ``INVALID_SPEC`` when the ignore patterns leave none.
    """
    weights = _collect(model)
    outputs = output_layers(model)
    tensors: dict[str, np.ndarray] = {}
    layers: list[LayerPruneInfo] = []
    reasons: list[str] = []
    skips = {w.name: _skip_reason(w, config, outputs) for w in weights}
    calibrated, warnings = _calibrated(model, config, context, [w for w in weights if not skips[w.name]])
    for w in weights:
        value = numpy_helper.to_array(w.tensor)
        shape = tuple(int(d) for d in w.tensor.dims)
        before = int(np.count_nonzero(value))
        reason = skips[w.name]
        after = before
        if not reason and w.name in calibrated:
            tensors[w.name] = calibrated[w.name]
            after = int(np.count_nonzero(calibrated[w.name]))
        elif not reason:
            axis = w.uses[0].axis
            assert axis is not None
            keep = nm_mask(value, axis, config.n, config.m)
            if np.any(value[~keep] != 0):
                new = np.where(keep, value, np.zeros((), dtype=value.dtype)).astype(value.dtype)
                tensors[w.name] = new
                after = int(np.count_nonzero(new))
        else:
            reasons.append(reason)
        uses = [(u.name, u.op_type) for u in w.uses]
        layers.append(LayerPruneInfo.zeroed(uses, w.name, shape, (before, after), reason))
    pruned = [layer for layer in layers if not layer.skipped]
    if not pruned:
        if weights and all(r.startswith("matches ignore pattern") for r in reasons):
            raise invalid_spec(
                [
                    FieldViolation(
                        "spec.prune.ignore", "the patterns match every N:M-eligible layer of the model"
                    )
                ]
            )
        detail = "; ".join(sorted({f"{layer.name}: {layer.skip_reason}" for layer in layers})[:5])
        raise unsupported_model(
            f"no layer can take {config.n}:{config.m} sparsity"
            + (f" ({detail})" if detail else ": the model has no Conv, Gemm or MatMul with a constant weight")
        )
    warnings.insert(0, _runtime_warning(config))
    skipped = [layer for layer in layers if layer.skipped and not layer.skip_reason.startswith("matches")]
    if skipped:
        names = ", ".join(layer.name for layer in skipped[:8]) + (" ..." if len(skipped) > 8 else "")
        warnings.append(f"N_M_LAYERS_SKIPPED: {len(skipped)} layer(s) left dense: {names}")
    return PruneResult(tensors=tensors, layers=layers, warnings=warnings)


def _calibrated(
    model: onnx.ModelProto, config: NMConfig, context: PruneContext, weights: list[_Weight]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """WANDA / SPARSEGPT values of the eligible weights read by one node (none for magnitude)."""
    if config.importance == "magnitude":
        return {}, []
    nodes = {node.name: node for node in model.graph.node}
    single = [
        (w.name, nodes[w.uses[0].name]) for w in weights if len(w.uses) == 1 and w.uses[0].name in nodes
    ]
    reasons = {w.name: "weight without a single named node" for w in weights if w.name not in dict(single)}
    sparsity = Sparsity(n=config.n, m=config.m)
    values, skipped, warnings = calibrated_values(model, single, sparsity, config.importance, context)
    reasons.update(skipped)
    if reasons:
        names = ", ".join(f"{name} ({why})" for name, why in sorted(reasons.items())[:8])
        warnings.append(f"CALIBRATION_SKIPPED: {config.n}:{config.m} by magnitude instead: {names}")
    return values, warnings


def _runtime_warning(config: NMConfig) -> str:
    hardware = (
        "2:4 is the pattern sparse tensor cores run:"
        if (config.n, config.m) == (2, 4)
        else f"{config.n}:{config.m} is not 2:4, the only pattern sparse tensor cores run: no runtime "
        "accelerates it today. For 2:4,"
    )
    return RUNTIME_SUPPORT.format(n=config.n, m=config.m, hardware=hardware)
