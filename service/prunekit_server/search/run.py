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
5. Of the candidates meeting the target and the quality rule (the evaluation's fidelity floors; none when
   fine-tuning follows, which the final evaluation judges) the most faithful is selected, the lightest on
   ties; when none does, the fastest faithful one (else the most faithful) and the outcome says the
   target was not met.

Predictions are made before each candidate is timed: the tables' sum (:meth:`~.space.Space.exact`),
divided by the mode's speed-up on the original, times the median measured/predicted ratio of the mode's
earlier candidates in this search (a per-job calibration; the first candidate has none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from prunekit.spec.structured_configs import StructuredConfig
from prunekit.spec.target import TargetConfig

from ..measure.latency import Device, cpu_model, runtime_name
from ..measure.quality import QualityRule
from ..pruning.base import PruneContext, PruneResult
from ..pruning.structured.engine import Method, Run, layer_infos, weights_of
from ..pruning.structured.groups import dependency_graph
from .build import group_spaces
from .candidates import Bench, Quantizer
from .layers import layers_of
from .outcome import TOLERANCE, CandidateRecord, SearchOutcome, TableUse
from .space import Space, State, greedy_path
from .table import NodeKind, load_table
from .timing import time_models

MAX_TRIES_PER_MODE = 4
SENSITIVITY_SHARE = 0.3
"""At most this share of the budget goes to the sensitivity analysis."""


@dataclass(frozen=True)
class SearchInputs:
    """The model (in memory and on disk), how to prune and quantize it, and where to time it."""

    model: onnx.ModelProto
    model_path: Path
    structured: StructuredConfig
    method: Method
    context: PruneContext
    quality_feeds: Sequence[dict[str, np.ndarray]]
    timing_feed: dict[str, np.ndarray]
    threads: int
    device: Device
    batch: int
    tables_dir: Path | None
    scratch: Path
    quantize: Quantizer
    rule: QualityRule | None = None
    """The fidelity floors candidates must reach; None when fine-tuning follows (it judges later)."""


def node_kind(threads: int, device: Device, batch: int) -> NodeKind:
    """The node kind this worker times on."""
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    return NodeKind(runtime_name(), provider, device, cpu_model(), threads, batch)


def _index_for(path: Sequence[State], goal_ms: float) -> int:
    return next((i for i, s in enumerate(path) if s.predicted_ms <= goal_ms), len(path) - 1)


def _walk(
    bench: Bench, path: Sequence[State], mode: str, factor: float, names: Callable[[], str], deadline: float
) -> list[CandidateRecord]:
    """Candidates along ``path`` for one quantization mode (see the module doc, step 4)."""
    found: dict[int, CandidateRecord] = {}
    index = _index_for(path, path[0].predicted_ms * factor / bench.target_speedup)
    for _ in range(MAX_TRIES_PER_MODE):
        if time.monotonic() > deadline or index in found:
            break
        record = bench.measure(names(), path[index].widths, mode, factor)
        found[index] = record
        misses = [i for i, r in found.items() if not r.meets_target]
        hits = [i for i, r in found.items() if r.meets_target]
        if record.meets_target:
            below = max((i for i in misses if i < index), default=-1)
            if index - below <= 1 or index == 0:
                break
            index = (below + index + 1) // 2
            continue
        if index == len(path) - 1:
            break
        shortfall = bench.target_speedup / max(record.measured_speedup, 1e-9)
        step = _index_for(path, path[index].predicted_ms / shortfall)
        ceiling = min((i for i in hits if i > index), default=len(path))
        index = max(index + 1, min(step, ceiling - 1))
    return list(found.values())


def _mode_factor(bench: Bench, mode: str) -> float:
    if mode == "none":
        return 1.0
    quantized = bench.quantize(bench.original, mode)
    return bench.speedup_of(quantized)[1]


def _choose(outcome: SearchOutcome) -> None:
    candidates = outcome.candidates
    for c in candidates:
        c.pareto = not any(
            o is not c
            and o.measured_speedup >= c.measured_speedup
            and o.cosine >= c.cosine
            and (o.measured_speedup > c.measured_speedup or o.cosine > c.cosine)
            for o in candidates
        )
    meeting = [c for c in candidates if c.meets_target]
    pool = meeting or candidates
    key = (
        (lambda c: (c.cosine, c.measured_speedup)) if meeting else (lambda c: (c.measured_speedup, c.cosine))
    )
    best = max(pool, key=key)
    best.selected = True
    outcome.met, outcome.selected, outcome.quantization = bool(meeting), best.name, best.quantization


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
    )
    run = Run(inputs.model, inputs.structured, inputs.context, inputs.method)
    groups = run.groups()
    graph = dependency_graph(run.gm, run.args)
    scores = run.scores(groups, graph)
    progress(f"measuring the sensitivity of {len(groups)} group(s)")
    spaces = group_spaces(
        run.gm,
        graph,
        groups,
        run.batches,
        ignore=inputs.structured.ignore,
        max_layer_ratio=inputs.structured.max_layer_ratio,
        budget_s=target.budget_seconds * SENSITIVITY_SHARE,
    )
    table = load_table(inputs.tables_dir, node_kind(inputs.threads, inputs.device, inputs.batch))
    progress(f"latency table {table.kind.key}: {'reused' if table.reused else 'new'}, timing layers")
    space = Space(
        spaces, layers_of(run.gm, run.args), table, baseline_ms, threads=inputs.threads, device=inputs.device
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
        inputs.quality_feeds,
        inputs.timing_feed,
        inputs.threads,
        inputs.device,
        inputs.scratch,
        inputs.quantize,
        outcome.target_speedup,
        TOLERANCE,
        inputs.rule,
    )
    counter = iter(range(1, 10_000))

    def names() -> str:
        return f"c{next(counter):02d}"

    for mode in ("none", *target.quantization):
        if time.monotonic() > deadline:
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
    if not outcome.candidates:
        outcome.candidates.append(bench.measure(names(), path[0].widths, "none", 1.0))
    _choose(outcome)
    chosen = outcome.chosen()
    assert chosen is not None
    before = weights_of(run.gm)
    built = bench.assemble(chosen.kept)
    outcome.result = PruneResult(
        tensors={},
        layers=layer_infos(built.gm, before, run.skipped),
        warnings=run.warnings + outcome.warnings,
        model=built.model,
        module=built.gm,
    )
    outcome.model = built.model
    outcome.tables = [
        TableUse(
            table.kind.key,
            table.kind.describe(),
            table.reused,
            len(table.used),
            len(table.timed),
            table.seconds,
        )
    ]
    if inputs.tables_dir is not None:
        table.save(inputs.tables_dir)
    outcome.seconds = time.monotonic() - started
    return outcome
