"""Assembling a candidate from kept widths, and timing and comparing it against the original."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import fx

from ..measure.latency import Device
from ..pruning.base import PruneContext
from ..pruning.structured.engine import Run
from ..pruning.structured.export import export_pruned
from ..pruning.structured.groups import Group, dependency_graph
from ..pruning.structured.targets import apply, count_macs, plan
from .judging import Bound, Judging
from .layers import layers_of
from .outcome import CandidateRecord, LayerWidth
from .space import Space
from .timing import time_models

Quantizer = Callable[[Path, str], Path]
"""(float ONNX path, mode) -> the quantized model's path."""


@dataclass
class Assembled:
    gm: fx.GraphModule
    model: onnx.ModelProto
    widths: dict[str, int]


@dataclass
class Bench:
    """Everything a candidate is assembled and measured with."""

    run: Run
    groups: Sequence[Group]
    scores: Mapping[str, torch.Tensor]
    space: Space
    original: Path
    context: PruneContext
    judge: Judging
    timing_feed: dict[str, np.ndarray]
    threads: int
    device: Device
    scratch: Path
    quantize: Quantizer
    target_speedup: float
    tolerance: float
    bound: Bound = field(default_factory=Bound)
    """What a candidate's quality must keep (nothing when fine-tuning follows: the evaluation judges)."""
    base_speedup: float = 1.0
    """The original's p50 over the base's (1 for the original itself)."""
    removed: tuple[str, ...] = ()
    """The units the base lacks (see :mod:`.bases`)."""
    factorized: tuple[str, ...] = ()
    """The layers the base has factorized (see :mod:`.bases`)."""
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per quantization mode: measured / table-predicted p50 of the candidates measured so far (shared
    by the benches of one search)."""
    files: dict[str, list[Path]] = field(default_factory=dict)
    """Candidate name -> the files it wrote in ``scratch``."""

    def discard(self, *, keep: str) -> None:
        """Delete every candidate's files but ``keep``'s (scratch space is the worker's to spend)."""
        for name, paths in self.files.items():
            if name != keep:
                for path in paths:
                    path.unlink(missing_ok=True)

    def _corrected(self, mode: str, predicted: float) -> float:
        """``predicted`` times the median ratio measured/predicted of this mode's earlier candidates (of
        every mode's, before this mode has one: the tables misjudge narrowing alike in every mode)."""
        seen = self.history.get(mode) or [r for ratios in self.history.values() for r in ratios]
        return predicted * statistics.median(seen) if seen else predicted

    def assemble(self, widths: Mapping[str, int]) -> Assembled:
        """The model with these kept chunk widths (a copy; the bench's graph is not changed)."""
        work = copy.deepcopy(self.run.gm)
        graph = dependency_graph(work, self.run.args)
        original = {g.key: g.chunk_width for g in self.groups}
        own = {k: (original[k] - w) / original[k] for k, w in widths.items() if w < original.get(k, w)}
        chosen = plan(
            self.groups,
            self.scores,
            original,
            0.0,
            scope="per_layer",
            round_to=1,
            max_layer_ratio=self.run.config.max_layer_ratio,
            own_ratios=own,
        )
        if not chosen.empty:
            apply(work, graph, chosen)
        return Assembled(work, export_pruned(work, self.run.model, self.context), dict(widths))

    def speedup_of(self, path: Path) -> tuple[float, float]:
        """(candidate p50 ms, baseline p50 / candidate p50), timed in turns with the original."""
        timed = time_models(
            {"baseline": self.original, "candidate": path},
            self.timing_feed,
            threads=self.threads,
            device=self.device,
        )
        return timed["candidate"], timed["baseline"] / timed["candidate"]

    def measure(
        self, name: str, widths: Mapping[str, int], quantization: str, factor: float
    ) -> CandidateRecord:
        """Assemble, quantize (unless "none"), time and compare a candidate (``factor``: mode speed-up)."""
        built = self.assemble(widths)
        path = self.scratch / f"{name}.onnx"
        path.write_bytes(built.model.SerializeToString())
        raw = self.space.exact(layers_of(built.gm, self.run.args)) / factor
        predicted = self._corrected(quantization, raw)
        macs = count_macs(built.gm, self.run.args)
        self.files[name] = [path]
        if quantization != "none":
            path = self.quantize(path, quantization)
            self.files[name].append(path)
        measured, speedup = self.speedup_of(path)
        self.history.setdefault(quantization, []).append(measured / raw if raw > 0 else 1.0)
        verdict = self.judge(path)
        spaces = {g.key: g for g in self.space.groups}
        return CandidateRecord(
            name=name,
            quantization=quantization,
            predicted_ms=predicted,
            table_ms=raw,
            measured_ms=measured,
            measured_speedup=speedup,
            macs=macs,
            size_bytes=path.stat().st_size,
            quality=verdict.quality,
            accuracy=verdict.accuracy,
            widths=tuple(
                LayerWidth(spaces[k].name, spaces[k].width * spaces[k].chunks, w * spaces[k].chunks)
                for k, w in sorted(widths.items())
                if k in spaces and w < spaces[k].width
            ),
            meets_target=speedup >= self.target_speedup / (1.0 + self.tolerance),
            faithful=self.bound.met_by(verdict),
            removed=self.removed,
            factorized=self.factorized,
            kept=dict(widths),
        )
