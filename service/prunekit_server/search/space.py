"""The search space: each prunable group's widths worth trying, what narrowing it costs and saves.

For every group (a root Conv/Linear and the layers that shrink with it, from Torch-Pruning's dependency
graph) the space knows which layers' input or output channels follow its width (and by how many channels
per root channel: a Linear after a flatten loses a whole feature map per channel), the quality loss
measured when the group alone is narrowed (the sensitivity curves: ``1 - cosine + (1 - top1) / 2``), and
its *levels*: the widths where latency actually drops on this runtime. Levels start from fractions of the
width aligned to 8 (4 below 64 channels, 1 below 16) and keep only a width whose layers, timed through the
latency table, are at least :data:`STEP_GAIN` faster than at the last kept width (hardware-aware rounding).

Latency of a set of widths is predicted from the tables: each layer's time with both widths changed is
``t(in, out0) * t(in0, out) / t(in0, out0)`` (:meth:`Space.estimate`, for the search), or looked up at the
exact shapes of an assembled model (:meth:`Space.exact`); what the tables do not cover (the other layers)
is the measured baseline minus the tabled layers, scaled by the layers' output size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import unsupported_model
from ..measure.latency import Device
from .layers import LayerShape
from .table import LatencyTable
from .timing import ort_errors, time_layer

FRACTIONS = (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)
STEP_GAIN = 0.015


@dataclass(frozen=True)
class Effect:
    """Narrowing a group by one root channel removes ``per_channel`` of ``layer``'s ``side`` channels."""

    layer: str
    side: str
    """"in" or "out"."""
    per_channel: float


@dataclass
class GroupSpace:
    """One group: its root layer path and name, chunks, chunk width, effects, loss curve and levels."""

    key: str
    name: str
    chunks: int
    width: int
    effects: tuple[Effect, ...]
    loss_ratios: tuple[float, ...]
    losses: tuple[float, ...]
    floor: int
    levels: tuple[int, ...] = ()

    def loss(self, kept: int) -> float:
        """The quality loss measured (interpolated) when only this group keeps ``kept`` per chunk."""
        ratio = 1.0 - kept / self.width
        if ratio <= 0.0 or not self.loss_ratios:
            return 0.0
        xs = (0.0, *self.loss_ratios)
        ys = (0.0, *self.losses)
        if ratio >= xs[-1]:
            slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-9)
            return ys[-1] + max(slope, 0.0) * (ratio - xs[-1])
        return float(np.interp(ratio, xs, ys))

    def candidates(self) -> list[int]:
        """Widths to consider, widest first (before the latency filter)."""
        align = 8 if self.width >= 64 else 4 if self.width >= 16 else 1
        found = {self.width}
        for fraction in FRACTIONS:
            kept = max(align, round(self.width * fraction / align) * align)
            if self.floor <= kept < self.width:
                found.add(kept)
        return sorted(found, reverse=True)


class Space:
    """The groups, the baseline layers and the table; predictions of latency for sets of widths."""

    def __init__(
        self,
        groups: Sequence[GroupSpace],
        layers: Sequence[LayerShape],
        table: LatencyTable,
        baseline_ms: float,
        *,
        threads: int,
        device: Device,
        timing_until: float = math.inf,
    ) -> None:
        self.groups = list(groups)
        self.layers = list(layers)
        self.table = table
        self.threads, self.device = threads, device
        self.timing_until = timing_until
        self._base = {layer.path: layer for layer in self.layers}
        self._refused: set[str] = set()
        self._elements = sum(layer.output_elements() for layer in self.layers) or 1
        self.scale = 1.0
        tabled = sum(self.layer_ms(layer) for layer in self.layers)
        if tabled > baseline_ms > 0:
            self.scale = baseline_ms / tabled
        self.rest_ms = max(0.0, baseline_ms - tabled * self.scale)
        self._by_layer: dict[str, list[tuple[GroupSpace, Effect]]] = {}
        for group in self.groups:
            for effect in group.effects:
                self._by_layer.setdefault(effect.layer, []).append((group, effect))

    def layer_ms(self, shape: LayerShape) -> float:
        """The tabled p50 of ``shape`` (timed now when the table lacks it).

        A shape the runtime refuses to run alone, or one missing once the timing time is spent, is
        scaled from its layer's baseline time by MACs (and never stored).
        """
        signature = shape.signature()
        base = self._base.get(shape.path)
        fallback = base is not None and base != shape
        late = signature in self._refused or time.monotonic() > self.timing_until
        if fallback and late and signature not in self.table.entries:
            return self._scaled(shape)
        try:
            return self.table.lookup(
                signature, lambda: time_layer(shape, threads=self.threads, device=self.device)
            )
        except ort_errors() as exc:
            if not fallback:
                raise unsupported_model(f"layer {shape.path} cannot be timed alone: {exc}"[:400]) from None
            self._refused.add(signature)
            return self._scaled(shape)

    def _scaled(self, shape: LayerShape) -> float:
        base = self._base[shape.path]
        return self.layer_ms(base) * shape.macs() / max(1, base.macs())

    def _widths_of(self, layer: LayerShape, widths: Mapping[str, int]) -> tuple[int, int]:
        in_ch, out_ch = layer.in_ch, layer.out_ch
        for group, effect in self._by_layer.get(layer.path, ()):
            removed = (group.width - widths.get(group.key, group.width)) * group.chunks
            lost = round(removed * effect.per_channel)
            if effect.side == "in":
                in_ch -= lost
            else:
                out_ch -= lost
        return max(1, in_ch), max(1, out_ch)

    def _separable(self, layer: LayerShape, in_ch: int, out_ch: int) -> float:
        base = self.layer_ms(layer)
        if (in_ch, out_ch) == (layer.in_ch, layer.out_ch):
            return base
        if layer.depthwise:
            return self.layer_ms(layer.resized(in_ch, out_ch))
        if in_ch == layer.in_ch or out_ch == layer.out_ch:
            return self.layer_ms(layer.resized(in_ch, out_ch))
        by_in = self.layer_ms(layer.resized(in_ch, layer.out_ch))
        by_out = self.layer_ms(layer.resized(layer.in_ch, out_ch))
        return by_in * by_out / base if base > 0 else 0.0

    def estimate(self, widths: Mapping[str, int]) -> float:
        """Predicted p50 (ms) with these kept chunk widths (group key -> width; absent: unchanged)."""
        total = 0.0
        elements = 0
        for layer in self.layers:
            in_ch, out_ch = self._widths_of(layer, widths)
            total += self._separable(layer, in_ch, out_ch)
            elements += layer.resized(in_ch, out_ch).output_elements()
        return total * self.scale + self.rest_ms * elements / self._elements

    def group_cost(self, group: GroupSpace, width: int) -> float:
        """Predicted p50 (ms) of the layers that follow ``group`` when only it keeps ``width``."""
        paths = {effect.layer for effect in group.effects}
        total = 0.0
        for layer in self.layers:
            if layer.path in paths:
                total += self._separable(layer, *self._widths_of(layer, {group.key: width}))
        return total * self.scale

    def exact(self, shapes: Sequence[LayerShape]) -> float:
        """Predicted p50 (ms) of an assembled model whose Conv/Linear layers are ``shapes``."""
        total = sum(self.layer_ms(shape) for shape in shapes)
        elements = sum(shape.output_elements() for shape in shapes)
        return total * self.scale + self.rest_ms * elements / self._elements

    def fill_levels(self) -> None:
        """Keep, per group, the widths where the tabled latency of its layers drops (see the module doc)."""
        for group in self.groups:
            kept: list[int] = []
            last = math.inf
            for width in group.candidates():
                cost = self.group_cost(group, width)
                if not kept or cost <= last * (1.0 - STEP_GAIN):
                    kept.append(width)
                    last = cost
            group.levels = tuple(kept)


@dataclass(frozen=True)
class State:
    """A point on the search path: kept chunk width per group, predicted p50, summed quality loss."""

    widths: dict[str, int]
    predicted_ms: float
    loss: float


def greedy_path(
    space: Space, *, stop_ms: float = 0.0, on_step: Callable[[int], None] | None = None
) -> list[State]:
    """From full widths, step the group whose next level costs least quality per predicted ms saved.

    Ends when no group can step (or the prediction falls below ``stop_ms``); the states in order.
    """
    position = {g.key: 0 for g in space.groups}
    widths = {g.key: g.width for g in space.groups}
    current = space.estimate(widths)
    states = [State(dict(widths), current, 0.0)]
    loss = 0.0
    while current > stop_ms:
        best: tuple[float, GroupSpace, float] | None = None
        for group in space.groups:
            index = position[group.key] + 1
            if index >= len(group.levels):
                continue
            trial = {**widths, group.key: group.levels[index]}
            predicted = space.estimate(trial)
            gain = current - predicted
            added = group.loss(group.levels[index]) - group.loss(widths[group.key])
            score = max(added, 0.0) / gain if gain > 0 else math.inf
            if best is None or score < best[0]:
                best = (score, group, predicted)
        if best is None or not math.isfinite(best[0]):
            break
        _, group, current = best
        position[group.key] += 1
        widths[group.key] = group.levels[position[group.key]]
        loss += max(0.0, group.loss(widths[group.key]) - group.loss(group.levels[position[group.key] - 1]))
        states.append(State(dict(widths), current, loss))
        if on_step is not None:
            on_step(len(states))
    return states
