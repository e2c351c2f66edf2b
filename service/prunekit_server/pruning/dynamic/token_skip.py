"""TOKEN_SKIP: from one encoder layer on, each input keeps only its most attended tokens.

Layers are found by their attention: each 4-D ``Softmax`` whose last two dimensions are the token
count is one layer's attention, and the layer's input is the deepest exit point (:mod:`.points`, a
``(N, T, D)`` tensor every path passes through) before it. At layer ``from_layer`` the graph scores
each token by the attention the first token paid it in the layer before (averaged over heads; the
first token, a class token, always scores highest), keeps the top ``k`` with ``TopK`` and gathers them
with ``GatherElements``; the later layers read the gathered tensor and run on ``k`` tokens. ``k`` is
one int64 initializer (:data:`KEEP`): the spec's ``keep_tokens`` or ``keep_ratio`` of the tokens, or the
fewest of :data:`KEEP_RATIOS` meeting the calibration rule. The later layers must take any token count
(shapes computed from ``Shape``, not baked in): otherwise ``DYNAMIC_NOT_APPLICABLE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from prunekit.spec.dynamic_configs import DynamicConfig
from prunekit.v1 import model_pb2

from ...measure.accuracy import run_batched
from ...measure.latency import cpu_session
from .calibrate import CalibrationRule
from .errors import not_applicable
from .heads import axes_node, opset_of
from .points import ExitPoint, Graph, classifier_output, exit_points, tensor_shapes

__all__ = ["KEEP", "KEEP_RATIOS", "TokenPoint", "TokenSkip", "token_skip", "with_keep"]

KEEP = "dyn_keep_tokens"
KEEP_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The kept fractions tried when calibrating."""
_BIG = 1e4


@dataclass(frozen=True)
class TokenPoint:
    """One kept-token count: its metric on the calibration inputs and its estimated MACs share."""

    keep_tokens: int
    metric: float
    macs_fraction: float


@dataclass
class TokenSkip:
    """The built model, the tokens per layer, the chosen ``keep_tokens`` and the sweep behind it."""

    model: onnx.ModelProto
    layer_tokens: list[int]
    keep_tokens: int
    tokens: int
    calibrated: bool
    metric: str
    rule: str
    sweep: list[TokenPoint]
    warnings: list[str] = field(default_factory=list)


def _layers(graph: Graph, points: Sequence[ExitPoint]) -> list[tuple[ExitPoint, str]]:
    """(layer input, attention probabilities) per layer in graph order."""
    shapes = tensor_shapes(graph.model, graph.inputs)
    layers = []
    for node in graph.nodes:
        shape = shapes.get(node.output[0], (0, ()))[1] if node.output else ()
        if node.op_type != "Softmax" or len(shape) != 4 or shape[-1] != shape[-2]:
            continue
        before = graph.ancestors(node.output[0])
        inside = [p for p in points if graph.producer.get(p.tensor) in before and p.shape[1] == shape[-1]]
        if inside:
            layers.append((max(inside, key=lambda p: p.macs_fraction), node.output[0]))
    return layers


def _gather_nodes(
    point: ExitPoint, probs: str, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    tokens, width = point.shape[1], point.shape[2]
    row, score, boosted, values, index, column, wide, kept = (
        f"dyn_tokens_{s}" for s in ("row", "score", "boosted", "values", "index", "column", "wide", "kept")
    )
    zero = numpy_helper.from_array(np.asarray(0, dtype=np.int64), "dyn_tokens_zero")
    boost = numpy_helper.from_array(
        np.asarray([_BIG] + [0.0] * (tokens - 1), dtype=np.float32), "dyn_tokens_boost"
    )
    spread = numpy_helper.from_array(np.asarray([1, 1, width], dtype=np.int64), "dyn_tokens_spread")
    nodes = [helper.make_node("Gather", [probs, zero.name], [row], name=row, axis=2)]
    mean, consts = axes_node("ReduceMean", row, score, [1], opset)
    nodes += mean
    nodes += [
        helper.make_node("Add", [score, boost.name], [boosted], name=boosted),
        helper.make_node("TopK", [boosted, KEEP], [values, index], name=index, axis=1, largest=1, sorted=1),
    ]
    unsqueeze_axes = numpy_helper.from_array(np.asarray([2], dtype=np.int64), "dyn_tokens_axes")
    if opset >= 13:
        nodes.append(helper.make_node("Unsqueeze", [index, unsqueeze_axes.name], [column], name=column))
        consts.append(unsqueeze_axes)
    else:
        nodes.append(helper.make_node("Unsqueeze", [index], [column], name=column, axes=[2]))
    nodes += [
        helper.make_node("Expand", [column, spread.name], [wide], name=wide),
        helper.make_node("GatherElements", [point.tensor, wide], [kept], name=kept, axis=1),
    ]
    return nodes, [*consts, zero, boost, spread], kept


def _skip_model(graph: Graph, point: ExitPoint, probs: str, keep: int) -> onnx.ModelProto:
    """``graph``'s model whose nodes after ``point`` read its ``keep`` most attended tokens."""
    model = graph.model
    before = graph.ancestors(point.tensor) | graph.ancestors(probs)
    nodes, consts, kept = _gather_nodes(point, probs, opset_of(model))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    del out.graph.value_info[:]
    for index, node in enumerate(graph.nodes):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if index not in before:
            for i, name in enumerate(copy.input):
                if name == point.tensor:
                    copy.input[i] = kept
        out.graph.node.append(copy)
    position = max(before) + 1 if before else 0
    for offset, node in enumerate(nodes):
        out.graph.node.insert(position + offset, node)
    out.graph.initializer.extend(consts)
    out.graph.initializer.append(numpy_helper.from_array(np.asarray([keep], dtype=np.int64), KEEP))
    return out


def with_keep(model: onnx.ModelProto, keep: int) -> onnx.ModelProto:
    """A copy of a token-skipping ``model`` that keeps ``keep`` tokens."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.name == KEEP:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray([keep], dtype=np.int64), KEEP))
            return out
    raise KeyError(f"{KEEP} is not an initializer: not a token-skipping model")


def _top1(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], batch: int, scratch: Path) -> np.ndarray:
    path = scratch / "dynamic_tokens.onnx"
    path.write_bytes(model.SerializeToString())
    outputs = run_batched(cpu_session(path), inputs, batch)
    first = np.concatenate([item[0] for item in outputs.items])
    top: np.ndarray = first.reshape(first.shape[0], -1).argmax(axis=1)
    return top


def _choose_layer(layers: list[tuple[ExitPoint, str]], config: DynamicConfig) -> int:
    if len(layers) < 2:
        raise not_applicable(
            f"token skipping needs at least two attention layers (found {len(layers)}): the scores come from "
            "the layer before the first one skipping tokens"
        )
    chosen = config.from_layer or len(layers) // 2
    if chosen >= len(layers):
        raise not_applicable(
            f"from_layer {chosen} is past the model's last attention layer ({len(layers) - 1})"
        )
    return chosen


def token_skip(
    model: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    config: DynamicConfig,
    calibration: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    rule: CalibrationRule,
    scratch: Path,
) -> TokenSkip:
    """Build the token-skipping form of ``model`` (see the module docstring)."""
    graph = Graph(model, inputs)
    output = classifier_output(graph)
    layers = _layers(graph, exit_points(graph, output))
    start = _choose_layer(layers, config)
    point, probs = layers[start][0], layers[start - 1][1]
    tokens = point.shape[1]
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
    run = batch if batch > 1 else 64
    scratch.mkdir(parents=True, exist_ok=True)
    skipped = _skip_model(graph, point, probs, tokens)
    original = _top1(model, calibration, run, scratch)
    try:
        _top1(with_keep(skipped, max(1, tokens // 2)), calibration, run, scratch)
    except Exception as exc:  # ORT refuses the rewired graph: its shapes are baked in
        raise not_applicable(
            f"the layers after from_layer {start} do not take fewer tokens ({exc})"
        ) from None
    reference = labels if rule.metric == "accuracy" and labels is not None else original
    baseline = float(np.mean(original == reference))
    share = point.macs_fraction
    given = config.keep_tokens or (math.ceil(config.keep_ratio * tokens) if config.keep_ratio else 0)
    counts = sorted(
        {max(1, math.ceil(r * tokens)) for r in KEEP_RATIOS} | ({min(given, tokens)} if given else set())
    )
    sweep = []
    for keep in counts:
        top = _top1(with_keep(skipped, keep), calibration, run, scratch)
        sweep.append(TokenPoint(keep, float(np.mean(top == reference)), share + (1 - share) * keep / tokens))
    good = [p for p in sweep if rule.meets(p.metric, baseline)]
    warnings = []
    if given:
        keep = min(given, tokens)
    elif good:
        keep = min(good, key=lambda p: p.keep_tokens).keep_tokens
    else:
        keep = tokens
        warnings.append(
            "DYNAMIC_RULE_NOT_MET: no kept-token count meets the calibration rule; every token is kept"
        )
    layer_tokens = [tokens if i < start else keep for i in range(len(layers))]
    return TokenSkip(
        model=with_keep(skipped, keep),
        layer_tokens=layer_tokens,
        keep_tokens=keep,
        tokens=tokens,
        calibrated=not given,
        metric=rule.metric if labels is not None else "top1_agreement",
        rule=rule.describe(),
        sweep=sweep,
        warnings=warnings,
    )
