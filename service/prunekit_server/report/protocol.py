"""How the numbers were measured: the report's ``BenchmarkProtocol``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prunekit.v1 import model_pb2, report_pb2

from ..measure.latency import STABILITY_TOLERANCE, STABILITY_WINDOWS, Latency
from ..measure.quality import QualityRule


def benchmark_protocol(
    latency: Latency,
    *,
    inputs: Iterable[model_pb2.InputSpec],
    cpu_model: str,
    quality_inputs: str,
    execution_provider: str = "",
    thread_spinning: bool = False,
    iterations: int | None = None,
    batch_sizes: Sequence[int] = (),
    max_seconds: float = 0.0,
    stability_rule: str = "",
    stable: bool | None = None,
    memory_method: str = "",
    quality_rule: QualityRule | None = None,
    selection_rule: str = "",
    max_accuracy_drop: float = 0.0,
) -> report_pb2.BenchmarkProtocol:
    """How the numbers were measured, from the primary :class:`Latency` (all share the protocol).

    ``iterations`` is the timed runs per model and window (default: the
    latency's sample count); ``stable`` defaults to the latency's.
    """
    runtime, _, version = latency.runtime.partition(" ")
    protocol = report_pb2.BenchmarkProtocol(
        runtime=runtime,
        runtime_version=version,
        execution_provider=execution_provider or latency.execution_provider,
        device=latency.device,
        cpu_model=cpu_model,
        threads=latency.threads,
        batch_size=latency.batch_size,
        inputs=list(inputs),
        warmup=latency.warmup,
        iterations=latency.iterations if iterations is None else iterations,
        interleaved=latency.interleaved,
        thread_spinning=thread_spinning,
        quality_inputs=quality_inputs,
        batch_sizes=list(batch_sizes) or [latency.batch_size],
        max_seconds=max_seconds,
        stability_rule=stability_rule,
        stable=latency.stable if stable is None else stable,
        memory_method=memory_method,
        selection_rule=selection_rule,
        stability_windows=STABILITY_WINDOWS,
        stability_tolerance=STABILITY_TOLERANCE,
    )
    if quality_rule is not None:
        protocol.quality_rule.CopyFrom(
            report_pb2.QualityRule(
                min_top1_agreement=quality_rule.min_top1_agreement,
                min_cosine_similarity=quality_rule.min_cosine_similarity,
                max_accuracy_drop=max_accuracy_drop,
            )
        )
    return protocol
