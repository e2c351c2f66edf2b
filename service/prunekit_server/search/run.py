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
   the lightest on ties; when fine-tuning follows, the one keeping the most MACs); when none does,
   the fastest faithful one (else the best) and the outcome says the target was not met.

Predictions are made before each candidate is timed: the tables' sum (:meth:`~.space.Space.exact`),
divided by the mode's speed-up on the original, times the median measured/predicted ratio of the mode's
earlier candidates in this search, from any base (a per-job calibration; before a mode has one, every
mode's candidates so far; the first candidate of the search has none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from prunekit.spec.structured_configs import StructuredConfig
from prunekit.spec.target import WIDTH_TECHNIQUES, TargetConfig

from ..measure.latency import Device, cpu_model, runtime_name
from ..pruning.base import PruneContext, PruneResult
from ..pruning.structured.engine import Method, Run, layer_infos, weights_of
from ..pruning.structured.groups import dependency_graph
from .bases import Base, low_rank_bases, unit_bases
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
    goal = path[0].predicted_ms * bench.base_speedup * factor / bench.target_speedup
    index: int | None = _index_for(path, goal)
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


def choose(candidates: Sequence[CandidateRecord], *, recovers: bool = False) -> tuple[CandidateRecord, bool]:
    """Mark the Pareto front and the selected candidate (see the module doc, step 5); (it, target met).

    Quality is the candidate's :attr:`~.outcome.CandidateRecord.score`: top-1 accuracy on the eval
    split's labels when measured, else cosine similarity to the original. With ``recovers`` (fine-tuning
    follows) the candidates meeting the target rank by MACs first (see :class:`~.judging.Bound`).
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
    if good and recovers:
        best = max(good, key=lambda c: (c.macs, c.score, -c.measured_speedup))
    elif good:
        best = max(good, key=lambda c: (c.score, c.cosine, -c.measured_speedup))
    elif faithful:
        best = max(faithful, key=lambda c: (c.measured_speedup, c.score))
    else:
        best = max(candidates, key=lambda c: (c.score, c.cosine, c.measured_speedup))
    best.selected = True
    return best, bool(good)


@dataclass
class _Budget:
    """One base's share of the search: when its sensitivity, table timing and candidates must end."""

    share: float
    deadline: float


def _bench(
    inputs: SearchInputs,
    base: Base,
    outcome: SearchOutcome,
    target: TargetConfig,
    budget: _Budget,
    progress: Callable[[str], None],
) -> tuple[Bench, list[State]]:
    """Convert and analyse ``base``, build its space on the node's table, and the greedy path."""
    run = Run(base.model, inputs.structured, inputs.context, inputs.method)
    widths = any(p in WIDTH_TECHNIQUES for p in target.pruning)
    groups = run.groups() if widths else []
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
        budget_s=budget.share * SENSITIVITY_SHARE,
        known=outcome.curves,
    )
    if not base.derived:
        outcome.warnings += [f"GROUP_NOT_SEARCHED: {reason}" for reason in skipped]
    base_ms, base_speedup = outcome.baseline_ms, 1.0
    if base.derived:
        timed = time_models(
            {"baseline": inputs.model_path, "base": base.path},
            inputs.timing_feed,
            threads=inputs.threads,
            device=inputs.device,
        )
        base_speedup = timed["baseline"] / timed["base"]
        base_ms = outcome.baseline_ms / base_speedup
    assert outcome.table is not None
    space = Space(
        spaces,
        layers_of(run.gm, run.args),
        outcome.table,
        base_ms,
        threads=inputs.threads,
        device=inputs.device,
        timing_until=time.monotonic() + budget.share * TABLE_SHARE,
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
        base_speedup=base_speedup,
        history=outcome.calibration,
        removed=base.removed,
        factorized=base.factorized,
    )
    return bench, path


def _candidates(
    bench: Bench,
    path: Sequence[State],
    target: TargetConfig,
    outcome: SearchOutcome,
    factors: dict[str, float],
    names: Callable[[], str],
    deadline: float,
    progress: Callable[[str], None],
) -> list[CandidateRecord]:
    """Walk the path for no quantization and each allowed mode, while the budget lasts."""
    found: list[CandidateRecord] = []
    for mode in ("none", *target.quantization):
        if found and time.monotonic() > deadline:
            outcome.warnings.append(f"SEARCH_BUDGET_SPENT: {target.budget_seconds:g} s ran out before {mode}")
            break
        progress("candidates without quantization" if mode == "none" else f"candidates with {mode}")
        if mode not in factors:
            factors[mode] = _mode_factor(bench, mode)
            if mode != "none" and factors[mode] <= 1.0:
                outcome.warnings.append(
                    f"QUANTIZATION_NOT_FASTER: {mode} made the original {factors[mode]:.2f}x as fast here"
                )
        if mode != "none" and factors[mode] <= 1.0:
            continue
        found += _walk(bench, path, mode, factors[mode], names, deadline)
    return found


def _bases(
    inputs: SearchInputs, target: TargetConfig, outcome: SearchOutcome, progress: Callable[[str], None]
) -> list[Base]:
    """The original, then (``layer``) it without its least important units, (``low_rank``) it factorized."""
    bases = [Base(inputs.model, inputs.model_path)]
    if "layer" in target.pruning or "low_rank" in target.pruning:
        inputs.scratch.mkdir(parents=True, exist_ok=True)
    if "layer" in target.pruning:
        progress("ranking removable layers")
        bases += unit_bases(inputs.model, inputs.context, inputs.scratch, inputs.structured.ignore)
    if "low_rank" in target.pruning:
        progress("factorizing layers")
        factorized, why_not = low_rank_bases(
            inputs.model, inputs.context, inputs.scratch, inputs.structured.ignore
        )
        bases += factorized
        outcome.warnings += why_not
    return bases


def _finish(inputs: SearchInputs, outcome: SearchOutcome, benches: Mapping[str, Bench]) -> None:
    """Choose, keep the chosen candidate's files only, and assemble its model into the outcome."""
    chosen, outcome.met = choose(outcome.candidates, recovers=inputs.bound.recovers)
    outcome.selected, outcome.quantization = chosen.name, chosen.quantization
    bench = benches[chosen.name]
    for each in {id(b): b for b in benches.values()}.values():
        each.discard(keep=chosen.name)
    built = bench.assemble(chosen.kept)
    warnings = list(bench.run.warnings + outcome.warnings)
    if chosen.removed:
        warnings.append(f"LAYERS_REMOVED: {', '.join(chosen.removed)} (the search's layer technique)")
    if chosen.factorized:
        warnings.append(
            f"LAYERS_FACTORIZED: {len(chosen.factorized)} layer(s) split in two by truncated SVD before"
            f" narrowing ({', '.join(chosen.factorized[:5])}{', ...' if len(chosen.factorized) > 5 else ''};"
            " the search's low_rank technique)"
        )
    outcome.result = PruneResult(
        tensors={},
        layers=layer_infos(built.gm, weights_of(bench.run.gm), bench.run.skipped),
        warnings=warnings,
        model=built.model,
        module=built.gm,
    )
    outcome.model = built.model


def search_target(
    inputs: SearchInputs, target: TargetConfig, progress: Callable[[str], None]
) -> SearchOutcome:
    """Search as the module doc says; the outcome holds the chosen pruned model (not yet quantized)."""
    started = time.monotonic()
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
    outcome.table = load_table(inputs.tables_dir, node_kind(inputs.threads, inputs.device, inputs.batch))
    table = outcome.table
    progress(f"latency table {table.kind.key}: {'reused' if table.reused else 'new'}, timing layers")
    bases = _bases(inputs, target, outcome, progress)
    counter = iter(range(1, 10_000))
    factors: dict[str, float] = {}
    benches: dict[str, Bench] = {}
    for i, base in enumerate(bases):
        share = target.budget_seconds / len(bases)
        budget = _Budget(share, started + share * (i + 1))
        if base.derived:
            progress(f"searching {base.label}")
        bench, path = _bench(inputs, base, outcome, target, budget, progress)
        found = _candidates(
            bench, path, target, outcome, factors, lambda: f"c{next(counter):02d}", budget.deadline, progress
        )
        outcome.candidates += found
        benches.update({c.name: bench for c in found})
    _finish(inputs, outcome, benches)
    if inputs.tables_dir is not None:
        table.save(inputs.tables_dir)
    outcome.seconds = time.monotonic() - started
    return outcome
