"""The latency-target search: per-layer widths (and a quantization mode) that reach a measured latency.

1. The original is timed (interleaved protocol of :mod:`.timing`); the target becomes a speed-up.
2. The model is converted and its groups selected as CHANNEL/NEURON pruning does; each group's layers,
   quality loss and levels make the :class:`~.space.Space`, timed through the node kind's latency table
   (:mod:`.table`, staged from storage and written back).
3. A greedy path narrows, step by step, the group whose next level costs least quality per predicted
   millisecond saved (:func:`~.space.greedy_path`).
4. For no quantization and each allowed mode (its speed-up measured on the original first), the point of
   the path predicted to reach the target is assembled, timed against the original and compared with it;
   a miss moves further along the path by the measured shortfall, a hit tries a lighter point between,
   while the budget lasts.
5. Of the candidates meeting the target and the quality bound (the accuracy rule when the eval split's
   labels can judge it, else the evaluation's fidelity floors; none when fine-tuning follows, which the
   final evaluation judges) the best is selected (top-1 accuracy when measured, else cosine similarity;
   the lightest on ties); when none does, the fastest faithful one (else the best) and the outcome says
   the target was not met.

Predictions are made before each candidate is timed: the tables' sum (:meth:`~.space.Space.exact`),
divided by the mode's speed-up on the original, times the median measured/predicted ratio of the mode's
earlier candidates in this search (a per-job calibration; the first candidate has none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from prunekit.spec.structured_configs import StructuredConfig
from prunekit.spec.target import TargetConfig

from ..measure.latency import Device, cpu_model, runtime_name
from ..pruning.base import PruneContext, PruneResult
from ..pruning.structured.engine import Method, Run, layer_infos, weights_of
from ..pruning.structured.groups import dependency_graph
from .build import group_spaces
from .candidates import Bench, Quantizer
from .judging import Bound, Judging
from .layers import layers_of
from .outcome import TOLERANCE, CandidateRecord, SearchOutcome
from .space import Space, State, greedy_path
from .table import NodeKind, load_table
from .timing import time_models

MAX_TRIES_PER_MODE = 4
SENSITIVITY_SHARE = 0.3
"""At most this share of the budget goes to the sensitivity analysis."""
TABLE_SHARE = 0.3
"""Layers are timed until this share of the budget is spent; later shapes are scaled by MACs."""


@dataclass(frozen=True)
class SearchInputs:
    """The model (in memory and on disk), how to prune and quantize it, and where to time it."""

    model: onnx.ModelProto
    model_path: Path
    structured: StructuredConfig
    method: Method
    context: PruneContext
    judge: Judging
    timing_feed: dict[str, np.ndarray]
    threads: int
    device: Device
    batch: int
    tables_dir: Path | None
    scratch: Path
    quantize: Quantizer
    bound: Bound = field(default_factory=Bound)
    """What candidates' quality must keep; nothing when fine-tuning follows (the evaluation judges)."""


def node_kind(threads: int, device: Device, batch: int) -> NodeKind:
    """The node kind this worker times on."""
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    return NodeKind(runtime_name(), provider, device, cpu_model(), threads, batch)


def _index_for(path: Sequence[State], goal_ms: float) -> int:
    return next((i for i, s in enumerate(path) if s.predicted_ms <= goal_ms), len(path) - 1)


def _next_index(
    found: dict[int, CandidateRecord], index: int, path_len: int, bench: Bench, path: Sequence[State]
) -> int | None:
    """Where the walk goes after measuring ``found[index]``; None when it is done."""
    record = found[index]
    if record.meets_target:
        below = max((i for i, r in found.items() if not r.meets_target and i < index), default=-1)
        return None if index - below <= 1 else (below + index + 1) // 2
    if index == path_len - 1:
        return None
    shortfall = bench.target_speedup / max(record.measured_speedup, 1e-9)
    step = _index_for(path, path[index].predicted_ms / shortfall)
    ceiling = min((i for i, r in found.items() if r.meets_target and i > index), default=path_len)
    following = max(index + 1, min(step, ceiling - 1))
    return following if following < ceiling else None


def _walk(
    bench: Bench,
    path: Sequence[State],
    mode: str,
    factor: float,
    names: Callable[[], str],
    deadline: float,
) -> list[CandidateRecord]:
    """Candidates along ``path`` for one quantization mode (see the module doc, step 4).

    The first candidate is measured even past the deadline: every mode tried gets one point.
    """
    found: dict[int, CandidateRecord] = {}
    index: int | None = _index_for(path, path[0].predicted_ms * factor / bench.target_speedup)
    while index is not None and index not in found and len(found) < MAX_TRIES_PER_MODE:
        if found and time.monotonic() > deadline:
            break
        found[index] = bench.measure(names(), path[index].widths, mode, factor)
        index = _next_index(found, index, len(path), bench, path)
    return list(found.values())


def _mode_factor(bench: Bench, mode: str) -> float:
    if mode == "none":
        return 1.0
    quantized = bench.quantize(bench.original, mode)
    factor = bench.speedup_of(quantized)[1]
    quantized.unlink(missing_ok=True)
    return factor


def choose(candidates: Sequence[CandidateRecord]) -> tuple[CandidateRecord, bool]:
    """Mark the Pareto front and the selected candidate (see the module doc, step 5); (it, target met).

    Quality is the candidate's :attr:`~.outcome.CandidateRecord.score`: top-1 accuracy on the eval
    split's labels when measured, else cosine similarity to the original.
    """
    for c in candidates:
        c.pareto = not any(
            o is not c
            and o.measured_speedup >= c.measured_speedup
            and o.score >= c.score
            and (o.measured_speedup > c.measured_speedup or o.score > c.score)
            for o in candidates
        )
    good = [c for c in candidates if c.meets_target and c.faithful]
    faithful = [c for c in candidates if c.faithful]
    if good:
        best = max(good, key=lambda c: (c.score, c.cosine, -c.measured_speedup))
    elif faithful:
        best = max(faithful, key=lambda c: (c.measured_speedup, c.score))
    else:
        best = max(candidates, key=lambda c: (c.score, c.cosine, c.measured_speedup))
    best.selected = True
    return best, bool(good)


def _bench(
    inputs: SearchInputs,
    target: TargetConfig,
    outcome: SearchOutcome,
    deadline: float,
    progress: Callable[[str], None],
) -> tuple[Bench, list[State]]:
    """Convert and analyse the model, build the space on the node's table, and the greedy path."""
    run = Run(inputs.model, inputs.structured, inputs.context, inputs.method)
    prunes = bool(target.pruning)
    groups = run.groups() if prunes else []
    graph = dependency_graph(run.gm, run.args)
    scores = run.scores(groups, graph) if groups else {}
    progress(f"measuring the sensitivity of {len(groups)} group(s)")
    spaces, skipped = group_spaces(
        run.gm,
        graph,
        groups,
        run.batches,
        ignore=inputs.structured.ignore,
        max_layer_ratio=inputs.structured.max_layer_ratio,
        budget_s=target.budget_seconds * SENSITIVITY_SHARE,
    )
    outcome.warnings += [f"GROUP_NOT_SEARCHED: {reason}" for reason in skipped]
    table = load_table(inputs.tables_dir, node_kind(inputs.threads, inputs.device, inputs.batch))
    outcome.table = table
    progress(f"latency table {table.kind.key}: {'reused' if table.reused else 'new'}, timing layers")
    space = Space(
        spaces,
        layers_of(run.gm, run.args),
        table,
        outcome.baseline_ms,
        threads=inputs.threads,
        device=inputs.device,
        timing_until=time.monotonic() + target.budget_seconds * TABLE_SHARE,
    )
    space.fill_levels()
    path = greedy_path(space)
    inputs.scratch.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        run,
        groups,
        scores,
        space,
        inputs.model_path,
        inputs.context,
        inputs.judge,
        inputs.timing_feed,
        inputs.threads,
        inputs.device,
        inputs.scratch,
        inputs.quantize,
        outcome.target_speedup,
        TOLERANCE,
        inputs.bound,
    )
    return bench, path


def _candidates(
    bench: Bench,
    path: Sequence[State],
    target: TargetConfig,
    outcome: SearchOutcome,
    deadline: float,
    progress: Callable[[str], None],
) -> None:
    """Walk the path for no quantization and each allowed mode, while the budget lasts."""
    counter = iter(range(1, 10_000))

    def names() -> str:
        return f"c{next(counter):02d}"

    for mode in ("none", *target.quantization):
        if outcome.candidates and time.monotonic() > deadline:
            outcome.warnings.append(f"SEARCH_BUDGET_SPENT: {target.budget_seconds:g} s ran out before {mode}")
            break
        progress("candidates without quantization" if mode == "none" else f"candidates with {mode}")
        factor = _mode_factor(bench, mode)
        if mode != "none" and factor <= 1.0:
            outcome.warnings.append(
                f"QUANTIZATION_NOT_FASTER: {mode} made the original {factor:.2f}x as fast here"
            )
            continue
        outcome.candidates += _walk(bench, path, mode, factor, names, deadline)


def search_target(
    inputs: SearchInputs, target: TargetConfig, progress: Callable[[str], None]
) -> SearchOutcome:
    """Search as the module doc says; the outcome holds the chosen pruned model (not yet quantized)."""
    started = time.monotonic()
    deadline = started + target.budget_seconds
    progress("timing the original")
    baseline_ms = time_models(
        {"baseline": inputs.model_path}, inputs.timing_feed, threads=inputs.threads, device=inputs.device
    )["baseline"]
    target_ms = target.latency_ms or baseline_ms / target.speedup
    outcome = SearchOutcome(
        target_ms=target_ms,
        target_speedup=baseline_ms / target_ms,
        baseline_ms=baseline_ms,
        techniques=(*target.pruning, *target.quantization),
        absolute=bool(target.latency_ms),
    )
    bench, path = _bench(inputs, target, outcome, deadline, progress)
    _candidates(bench, path, target, outcome, deadline, progress)
    chosen, outcome.met = choose(outcome.candidates)
    outcome.selected, outcome.quantization = chosen.name, chosen.quantization
    bench.discard(keep=chosen.name)
    built = bench.assemble(chosen.kept)
    outcome.result = PruneResult(
        tensors={},
        layers=layer_infos(built.gm, weights_of(bench.run.gm), bench.run.skipped),
        warnings=bench.run.warnings + outcome.warnings,
        model=built.model,
        module=built.gm,
    )
    outcome.model = built.model
    if inputs.tables_dir is not None and outcome.table is not None:
        outcome.table.save(inputs.tables_dir)
    outcome.seconds = time.monotonic() - started
    return outcome
