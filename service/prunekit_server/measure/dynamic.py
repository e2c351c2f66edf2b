"""Latency of input-dependent models, per input: what one random input cannot show.

Every model is run on every feed (one feed: the model's batch of real inputs), interleaved feed by
feed with the model order rotating each round, for ``rounds`` rounds or until ``max_seconds`` have
passed (at least one round); a feed's latency is its median over the rounds. The distribution over
feeds gives mean, p50, p90 and p99; the first round's outputs give top-1 against labels and against the
reference model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .latency import cpu_session, percentile, runtime_name

__all__ = ["PerInput", "PerInputStats", "describe_protocol", "measure_per_input"]

WARMUP_FEEDS = 5


@dataclass(frozen=True)
class PerInputStats:
    """One model over the feeds: latency summary (ms), per-feed latencies, top-1 facts."""

    name: str
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    latencies_ms: tuple[float, ...]
    accuracy: float | None
    top1_agreement: float


@dataclass(frozen=True)
class PerInput:
    """Every model's :class:`PerInputStats` (by name) and the rounds run."""

    models: Mapping[str, PerInputStats]
    rounds: int


def _stats(
    name: str, latencies: list[float], top1: np.ndarray, reference: np.ndarray, labels: np.ndarray | None
) -> PerInputStats:
    ordered = sorted(latencies)
    accuracy = float(np.mean(top1 == labels)) if labels is not None and len(labels) == len(top1) else None
    return PerInputStats(
        name=name,
        mean_ms=statistics.fmean(ordered),
        p50_ms=percentile(ordered, 50),
        p90_ms=percentile(ordered, 90),
        p99_ms=percentile(ordered, 99),
        latencies_ms=tuple(latencies),
        accuracy=accuracy,
        top1_agreement=float(np.mean(top1 == reference)) if len(top1) else 0.0,
    )


def _top1(outputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([o.reshape(o.shape[0], -1).argmax(axis=1) for o in outputs])


def measure_per_input(
    models: Mapping[str, Path],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    reference: str,
    labels: np.ndarray | None = None,
    threads: int = 1,
    rounds: int = 3,
    max_seconds: float = 30.0,
) -> PerInput:
    """Time every model on every feed as the module docstring says.

    ``reference`` names the model top-1 agreement is measured against; ``labels`` (one per sample of the
    feeds, in order) give accuracy.
    """
    if not feeds:
        raise ValueError("no feeds to measure on")
    sessions = {name: cpu_session(path, threads=threads) for name, path in models.items()}
    names = list(sessions)
    for name in names:
        for feed in feeds[:WARMUP_FEEDS]:
            sessions[name].run(None, feed)
    times: dict[str, list[list[float]]] = {name: [[] for _ in feeds] for name in names}
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    started = time.monotonic()
    done = 0
    while done < rounds and (done == 0 or time.monotonic() - started < max_seconds):
        order = names[done % len(names) :] + names[: done % len(names)]
        for index, feed in enumerate(feeds):
            for name in order:
                begin = time.perf_counter()
                out = sessions[name].run(None, feed)
                times[name][index].append((time.perf_counter() - begin) * 1000.0)
                if done == 0:
                    outputs[name].append(np.asarray(out[0]))
        done += 1
    top1 = {name: _top1(outputs[name]) for name in names}
    stats = {
        name: _stats(name, [statistics.median(t) for t in times[name]], top1[name], top1[reference], labels)
        for name in names
    }
    return PerInput(models=stats, rounds=done)


def describe_protocol(feeds: int, batch: int, threads: int, rounds: int) -> str:
    """The per-input protocol in words."""
    return (
        f"{runtime_name()} CPU, {threads} thread(s); {feeds} feed(s) of batch {batch}, every model on every "
        f"feed, interleaved feed by feed (model order rotating), {rounds} round(s) after {WARMUP_FEEDS} "
        "warm-up feeds; a feed's latency is its median over the rounds"
    )
