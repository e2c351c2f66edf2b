"""TOKEN_SKIP: from one encoder layer on, each input keeps only its best scored tokens.

Layers are found by their attention: each 4-D ``Softmax`` whose last two dimensions are the token
count is one layer's attention, and the layer's input is the deepest exit point (:mod:`.points`, a
``(N, T, D)`` tensor every path passes through) before it. At layer ``from_layer`` the graph scores
each token: by the attention the first token paid it in the layer before (averaged over heads), or
(``token_scorer`` learned, the default) by a linear function of its hidden state plus a learned
multiple of the log of that attention, trained with the later layers (:mod:`.distill`). The first
token (a class token) always ranks first. ``TopK`` keeps the top ``k`` and ``GatherElements`` gathers
them; the later layers read the gathered tensor and run on ``k`` tokens, their weights distilled from
the original on the kept tokens unless ``frozen_layers`` (:mod:`.token_train`). ``k`` is
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
from .distill import ATTENTION_FLOOR, ScorerWeights
from .early_exit import Split
from .errors import not_applicable
from .heads import axes_node, opset_of
from .points import ExitPoint, Graph, Output, classifier_output, exit_points, tensor_shapes
from .token_train import distill_layers, probe_tokens, with_tensors

__all__ = ["KEEP", "KEEP_RATIOS", "TokenPoint", "TokenSkip", "token_skip", "with_keep"]

KEEP = "dyn_keep_tokens"
KEEP_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The kept fractions tried when calibrating."""
TRAIN_RATIO = 0.6
"""Calibrating, the later layers are distilled on the swept counts up to this share of the tokens."""
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
    distill_steps: int = 0


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


def score_nodes(probs: str, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """The attention each token got ``(N, T)`` from attention probabilities ``probs``: the first token's
    row averaged over heads."""
    row, score = "dyn_tokens_row", "dyn_tokens_attention"
    zero = numpy_helper.from_array(np.asarray(0, dtype=np.int64), "dyn_tokens_zero")
    nodes = [helper.make_node("Gather", [probs, zero.name], [row], name=row, axis=2)]
    mean, consts = axes_node("ReduceMean", row, score, [1], opset)
    return [*nodes, *mean], [*consts, zero], score


def _learned_nodes(
    point: ExitPoint, attention: str, scorer: ScorerWeights
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """The learned scores ``(N, T)``: ``hidden @ w + b + a * log(attention + floor)``."""
    weight, bias, factor, floor = (
        numpy_helper.from_array(np.asarray(v, dtype=np.float32), f"dyn_scorer_{n}")
        for n, v in (
            ("w", scorer.weight.reshape(-1)),
            ("b", scorer.bias),
            ("a", scorer.attention_weight),
            ("floor", ATTENTION_FLOOR),
        )
    )
    floored, logs, scaled, linear, summed, score = (
        f"dyn_scorer_{s}" for s in ("floored", "log", "scaled", "linear", "summed", "score")
    )
    nodes = [
        helper.make_node("Add", [attention, floor.name], [floored], name=floored),
        helper.make_node("Log", [floored], [logs], name=logs),
        helper.make_node("Mul", [logs, factor.name], [scaled], name=scaled),
        helper.make_node("MatMul", [point.tensor, weight.name], [linear], name=linear),
        helper.make_node("Add", [linear, bias.name], [summed], name=summed),
        helper.make_node("Add", [summed, scaled], [score], name=score),
    ]
    return nodes, [weight, bias, factor, floor], score


def _gather_nodes(
    point: ExitPoint, probs: str, opset: int, scorer: ScorerWeights | None
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    tokens, width = point.shape[1], point.shape[2]
    nodes, consts, score = score_nodes(probs, opset)
    if scorer is not None:
        more, constants, score = _learned_nodes(point, score, scorer)
        nodes, consts = [*nodes, *more], [*consts, *constants]
    boosted, values, index, column, wide, kept = (
        f"dyn_tokens_{s}" for s in ("boosted", "values", "index", "column", "wide", "kept")
    )
    boost = numpy_helper.from_array(
        np.asarray([_BIG] + [0.0] * (tokens - 1), dtype=np.float32), "dyn_tokens_boost"
    )
    spread = numpy_helper.from_array(np.asarray([1, 1, width], dtype=np.int64), "dyn_tokens_spread")
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
    return nodes, [*consts, boost, spread], kept


def _skip_model(
    graph: Graph, point: ExitPoint, probs: str, keep: int, scorer: ScorerWeights | None = None
) -> onnx.ModelProto:
    """``graph``'s model whose nodes after ``point`` read its ``keep`` best scored tokens."""
    model = graph.model
    before = graph.ancestors(point.tensor) | graph.ancestors(probs)
    nodes, consts, kept = _gather_nodes(point, probs, opset_of(model), scorer)
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


def _counts(config: DynamicConfig, tokens: int) -> tuple[list[int], int]:
    """The kept counts swept and the spec's own (0: none given)."""
    given = config.keep_tokens or (math.ceil(config.keep_ratio * tokens) if config.keep_ratio else 0)
    counts = {max(1, math.ceil(r * tokens)) for r in KEEP_RATIOS} | ({min(given, tokens)} if given else set())
    return sorted(counts), min(given, tokens) if given else 0


@dataclass(frozen=True)
class _Site:
    """Where tokens are skipped: the graph, its output, the layer input, the scores' attention, the later
    layers' attention, the tokens."""

    graph: Graph
    output: Output
    point: ExitPoint
    probs: str
    later: tuple[str, ...]
    start: int
    layers: int

    @property
    def tokens(self) -> int:
        return self.point.shape[1]


def _site(model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], config: DynamicConfig) -> _Site:
    graph = Graph(model, inputs)
    output = classifier_output(graph)
    layers = _layers(graph, exit_points(graph, output))
    start = _choose_layer(layers, config)
    later = tuple(probs for _, probs in layers[start:])
    return _Site(graph, output, layers[start][0], layers[start - 1][1], later, start, len(layers))


def _distilled(
    site: _Site, plain: onnx.ModelProto, config: DynamicConfig, train: Split, keeps: list[int], batch: int,
    scratch: Path, seed: int,
) -> tuple[onnx.ModelProto, int, list[str]]:  # fmt: skip
    """The token-skipping model with the learned scorer and the distilled later layers (per ``config``),
    the steps trained; with a warning, ``plain`` (the attention scores and the original layers) when the
    later layers cannot run on their own."""
    learn, layers = config.token_scorer == "learned", not config.frozen_layers
    if not (learn or layers):
        return plain, 0, []
    scores = score_nodes(site.probs, opset_of(site.graph.model))
    training = probe_tokens(site.graph, site.point, scores, site.output, train, batch, scratch)
    try:
        found = distill_layers(
            site.graph, site.point, site.later, site.output, training, keeps, config.steps, seed,
            learn_scorer=learn, train_layers=layers,
        )  # fmt: skip
    except ValueError as exc:  # the later layers cannot run alone: the attention scores alone
        return plain, 0, [f"DYNAMIC_NOT_DISTILLED: attention scores and the original layers are used ({exc})"]
    skipped = _skip_model(site.graph, site.point, site.probs, site.tokens, found.scorer)
    return with_tensors(skipped, found.tensors), len(found.losses), []


def token_skip(
    model: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    config: DynamicConfig,
    train: Split,
    calibration: Split,
    rule: CalibrationRule,
    scratch: Path,
    seed: int = 0,
) -> TokenSkip:
    """Build the token-skipping form of ``model`` (see the module docstring)."""
    site = _site(model, inputs, config)
    tokens = site.tokens
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
    run = batch if batch > 1 else 64
    scratch.mkdir(parents=True, exist_ok=True)
    original = _top1(model, calibration.inputs, run, scratch)
    try:
        plain = _skip_model(site.graph, site.point, site.probs, tokens)
        _top1(with_keep(plain, max(1, tokens // 2)), calibration.inputs, run, scratch)
    except Exception as exc:  # ORT refuses the rewired graph: its shapes are baked in
        raise not_applicable(
            f"the layers after from_layer {site.start} do not take fewer tokens ({exc})"
        ) from None
    counts, given = _counts(config, tokens)
    trained_on = [given] if given else [c for c in counts if c <= TRAIN_RATIO * tokens] or counts
    skipped, steps, warnings = _distilled(site, plain, config, train, trained_on, run, scratch, seed)
    labels = calibration.labels
    reference = labels if rule.metric == "accuracy" and labels is not None else original
    baseline = float(np.mean(original == reference))
    share = site.point.macs_fraction
    sweep = []
    for keep in counts:
        top = _top1(with_keep(skipped, keep), calibration.inputs, run, scratch)
        sweep.append(TokenPoint(keep, float(np.mean(top == reference)), share + (1 - share) * keep / tokens))
    good = [p for p in sweep if rule.meets(p.metric, baseline)]
    if given:
        keep = given
    elif good:
        keep = min(good, key=lambda p: p.keep_tokens).keep_tokens
    else:  # every token, through the original layers: the original's outputs
        keep, skipped, steps = tokens, plain, 0
        warnings.append(
            "DYNAMIC_RULE_NOT_MET: no kept-token count meets the calibration rule; every token is kept, "
            "by the original layers"
        )
    return TokenSkip(
        model=with_keep(skipped, keep),
        layer_tokens=[tokens if i < site.start else keep for i in range(site.layers)],
        keep_tokens=keep,
        tokens=tokens,
        calibrated=not given,
        metric=rule.metric if labels is not None else "top1_agreement",
        rule=rule.describe(),
        sweep=sweep,
        warnings=warnings,
        distill_steps=steps,
    )
