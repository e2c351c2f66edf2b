"""Sensitivity analysis: how the outputs move when one layer group alone loses channels.

For every prunable group (Torch-Pruning's dependency groups on the converted
GraphModule, one per root Conv/Linear: the root's output channels plus every
layer that must shrink with them), the group alone is pruned at each ratio,
lowest group-L1 channels first, on a copy of the graph; the pruned copy runs
on the feeds and its first output is compared with the unpruned one: mean
per-sample cosine similarity and arg-max (top-1) agreement. Ratios are
applied in increasing order on the same copy (the channels removed at 0.3
include those removed at 0.1), so each group costs one copy and one
dependency-graph build. ``ignore`` matches are not roots, nor are output
layers (pruning them changes the output shape, and with it the comparison);
a group that cannot be pruned alone is skipped with the reason.

:func:`auto_layer_ratios` turns the curves into per-layer ratios: one loss
threshold for all layers, each layer pruned as far as its curve stays under
it, the threshold chosen so that the channel-weighted mean ratio equals the
target (least sensitive layers pruned most).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import torch
import torch_pruning as tp
from torch import fx, nn

from prunekit.v1 import model_pb2

from .base import MetricCurve
from .fx_tools import fidelity, first_match, names_of, origin, output_modules, run_batches

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.5, 0.7)
MAX_RATIOS = 16
_ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class LayerCurve:
    """Fidelity of the model's outputs after pruning one group alone, per ratio.

    ``layer`` is the root layer's ONNX node name (its module path when the
    converter recorded none), ``module`` its path in the GraphModule,
    ``channels`` the group's width, ``kept`` the channels left at each ratio.
    """

    layer: str
    module: str
    channels: int
    ratios: tuple[float, ...]
    cosine_similarity: tuple[float, ...]
    top1_agreement: tuple[float, ...]
    kept: tuple[int, ...] = ()

    def metric_curves(self) -> list[MetricCurve]:
        """The curve as report entries: one per metric."""
        return [
            MetricCurve(self.layer, "cosine_similarity", self.ratios, self.cosine_similarity),
            MetricCurve(self.layer, "top1_agreement", self.ratios, self.top1_agreement),
        ]


@dataclass
class Sensitivity:
    """Every curve (most sensitive first: largest mean ``1 - cosine``), the groups skipped
    (``layer: reason``) and the seconds it took."""

    curves: list[LayerCurve] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique ratios, each 0 < r < 1, at most :data:`MAX_RATIOS`; ``ValueError`` otherwise."""
    values = sorted({float(r) for r in ratios})
    if not values:
        raise ValueError("at least one ratio is needed")
    if len(values) > MAX_RATIOS:
        raise ValueError(f"at most {MAX_RATIOS} ratios")
    if any(not (math.isfinite(r) and 0.0 < r < 1.0) for r in values):
        raise ValueError("every ratio must satisfy 0 < ratio < 1")
    return tuple(values)


def _build(gm: nn.Module, args: tuple[torch.Tensor, ...]) -> tp.DependencyGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "unwrapped parameters": free parameters are never roots
        return tp.DependencyGraph().build_dependency(gm, example_inputs=list(args))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what a failing trial prints (fx echoes the generated code of a failing GraphModule)."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _roots(
    gm: fx.GraphModule, graph: tp.DependencyGraph, ignore: Sequence[str]
) -> tuple[list[tuple[str, int]], list[str]]:
    """(module path, channels) of every group root, and the skipped roots with reasons."""
    paths = {module: name for name, module in gm.named_modules()}
    outputs = output_modules(gm)
    ignored = [m for m, name in paths.items() if name in outputs or first_match(ignore, names_of(gm, name))]
    roots: list[tuple[str, int]] = []
    skipped = [f"{origin(gm, paths[m]).name}: output layer" for m in ignored if paths[m] in outputs]
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=_ROOT_TYPES):
        module = group[0].dep.target.module
        channels = len(group[0].idxs)
        if channels < 2:
            skipped.append(f"{origin(gm, paths[module]).name}: a single channel")
            continue
        roots.append((paths[module], channels))
    return roots, skipped


def _prune_to(graph: tp.DependencyGraph, module: nn.Module, keep: int) -> None:
    """Prune ``module``'s group down to ``keep`` channels, lowest group L1 first."""
    pruner = graph.get_pruner_of_module(module)
    current = int(pruner.get_out_channels(module))
    if keep >= current:
        return
    group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(current)))
    scores = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)(group)
    if scores is None:
        raise ValueError("no importance for this group")
    drop = torch.argsort(scores, stable=True)[: current - keep].tolist()
    group = graph.get_pruning_group(module, pruner.prune_out_channels, sorted(int(i) for i in drop))
    if not graph.check_pruning_group(group):
        raise ValueError("the group would lose every channel")
    group.prune()


def _curve(
    gm: fx.GraphModule,
    path: str,
    channels: int,
    ratios: Sequence[float],
    batches: Sequence[tuple[torch.Tensor, ...]],
    reference: Sequence[Sequence[torch.Tensor]],
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
    """Cosine, top-1 and channels kept at each ratio, pruning one copy of ``gm`` step by step."""
    work = copy.deepcopy(gm)
    graph = _build(work, batches[0])
    module = work.get_submodule(path)
    cosines: list[float] = []
    top1: list[float] = []
    kept: list[int] = []
    for ratio in ratios:
        keep = min(channels - 1, max(1, channels - max(1, round(ratio * channels))))
        _prune_to(graph, module, keep)
        result = fidelity(reference, run_batches(work, batches))
        cosines.append(result.cosine_similarity)
        top1.append(result.top1_agreement)
        kept.append(keep)
    return tuple(cosines), tuple(top1), tuple(kept)


def _reuse_key(gm: fx.GraphModule, path: str, name: str, channels: int, ratios: Sequence[float]) -> str:
    """What must match for a curve to carry over to another model: the root's node name (not its module
    path: converters number unnamed layers in order, so paths shift when layers come or go), width,
    weight shape and the ratios."""
    weight = getattr(gm.get_submodule(path), "weight", None)
    shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
    return f"{name}|{channels}|{shape}|{tuple(ratios)}"


def graph_sensitivity(
    gm: fx.GraphModule,
    batches: Sequence[tuple[torch.Tensor, ...]],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    ignore: Sequence[str] = (),
    budget_s: float | None = None,
    known: dict[str, LayerCurve] | None = None,
) -> Sensitivity:
    """The curves of every group of ``gm`` on ``batches`` (the first batch traces the graph).

    With ``budget_s``, groups not started within that many seconds are
    skipped ("time budget"). ``known`` carries curves between closely related models (the bases of a
    latency search): a group whose root layer has the same ONNX node name, width, weight shape and
    ratios as a known curve takes it instead of being measured again, and every curve measured here
    is added to it.
    """
    started = time.monotonic()
    ratios = check_ratios(ratios)
    if not batches:
        raise ValueError("sensitivity needs at least one batch of inputs")
    gm.eval()
    reference = run_batches(gm, batches)
    graph = _build(gm, batches[0])
    roots, skipped = _roots(gm, graph, ignore)
    curves: list[LayerCurve] = []
    for path, channels in roots:
        name = origin(gm, path).name
        key = _reuse_key(gm, path, name, channels, ratios)
        if known is not None and key in known:
            curves.append(replace(known[key], module=path))
            continue
        if budget_s is not None and time.monotonic() - started > budget_s:
            skipped.append(f"{name}: not analysed within the time budget of {budget_s:g} s")
            continue
        try:
            with _quiet():
                cosines, top1, kept = _curve(gm, path, channels, ratios, batches, reference)
        except Exception as exc:  # a group Torch-Pruning cannot prune alone: reported, not fatal
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            skipped.append(f"{name}: {type(exc).__name__}: {detail}")
            continue
        curves.append(LayerCurve(name, path, channels, ratios, cosines, top1, kept))
        if known is not None:
            known[key] = curves[-1]
    curves.sort(key=lambda c: -float(np.mean([1.0 - v for v in c.cosine_similarity])))
    return Sensitivity(curves, skipped, time.monotonic() - started)


def model_sensitivity(
    model: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    feeds: Sequence[Mapping[str, np.ndarray]],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    ignore: Sequence[str] = (),
    budget_s: float | None = None,
) -> Sensitivity:
    """:func:`graph_sensitivity` of an ONNX model converted at ``inputs``' shapes, on ``feeds``."""
    from ..modelio.onnx_to_fx import onnx_to_fx

    gm = onnx_to_fx(model, inputs=list(inputs))
    batches = [
        tuple(torch.from_numpy(np.asarray(feed[spec.name], order="C")) for spec in inputs) for feed in feeds
    ]
    return graph_sensitivity(gm, batches, ratios, ignore=ignore, budget_s=budget_s)


def _loss_at(curve: LayerCurve, ratio: float) -> float:
    """``1 - cosine`` at ``ratio``: 0 at 0, linear between points, the last slope beyond, non-decreasing."""
    xs = [0.0, *curve.ratios]
    ys = np.maximum.accumulate([0.0, *(1.0 - c for c in curve.cosine_similarity)])
    if ratio <= xs[-1]:
        return float(np.interp(ratio, xs, ys))
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 0.0
    return float(ys[-1] + slope * (ratio - xs[-1]))


def _ratio_at(curve: LayerCurve, threshold: float, cap: float) -> float:
    """The largest ratio up to ``cap`` whose loss stays within ``threshold`` (bisection on the curve)."""
    if _loss_at(curve, cap) <= threshold:
        return cap
    lo, hi = 0.0, cap
    for _ in range(50):
        mid = (lo + hi) / 2
        if _loss_at(curve, mid) <= threshold:
            lo = mid
        else:
            hi = mid
    return lo


def auto_layer_ratios(
    curves: Sequence[LayerCurve],
    target_ratio: float,
    max_layer_ratio: float = 0.9,
    *,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per-layer ratios whose weighted mean is ``target_ratio``, least sensitive layers pruned most.

    One threshold on the loss ``1 - cosine`` is shared by every layer; each
    layer gets the largest ratio (at most ``max_layer_ratio``) its curve keeps
    under the threshold, and the threshold is searched so that the mean of the
    ratios, weighted by ``weights`` (default: each group's channels), is the
    target. When even ``max_layer_ratio`` everywhere falls short, every layer
    gets ``max_layer_ratio``. Keys are the curves' ``layer`` names.
    """
    if not 0.0 < target_ratio < 1.0 or not 0.0 < max_layer_ratio < 1.0:
        raise ValueError("target_ratio and max_layer_ratio must be between 0 and 1")
    if not curves:
        return {}
    w = np.asarray([float((weights or {}).get(c.layer, c.channels)) for c in curves])
    if w.sum() <= 0:
        raise ValueError("the weights must not all be zero")

    def spread(threshold: float) -> np.ndarray:
        return np.asarray([_ratio_at(c, threshold, max_layer_ratio) for c in curves])

    def mean(ratios: np.ndarray) -> float:
        return float((ratios * w).sum() / w.sum())

    top = max(_loss_at(c, max_layer_ratio) for c in curves)
    if mean(spread(top)) <= target_ratio:
        return {c.layer: max_layer_ratio for c in curves}
    lo, hi = 0.0, top
    for _ in range(60):
        mid = (lo + hi) / 2
        if mean(spread(mid)) < target_ratio:
            lo = mid
        else:
            hi = mid
    low, high = spread(lo), spread(hi)
    m_low, m_high = mean(low), mean(high)
    alpha = 1.0 if m_high == m_low else (target_ratio - m_low) / (m_high - m_low)
    ratios = low + alpha * (high - low)
    return {c.layer: float(r) for c, r in zip(curves, ratios, strict=True)}
