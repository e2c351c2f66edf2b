"""The benchmark stage's measuring: every model of the job timed side by side at every batch size.

Per batch size (the primary one first), two groups, each under
:func:`.benchmark.benchmark`'s protocol with its own time budget:

1. ONNX Runtime: the baseline and every variant's ONNX file, interleaved.
2. torch: the TorchScript files (the upload and ``pruned.pt``), interleaved
   among themselves, when the input was TorchScript.

Batch sizes other than the primary one need a symbolic first dimension on
every input that has one; otherwise they are skipped with a
``BATCH_SIZE_NOT_MEASURED`` warning, as is a batch size a model fails to run
at. ONNX Runtime at the primary batch size must run; torch failing is a
``TORCH_LATENCY_NOT_MEASURED`` warning. Each model's measurements are kept in
measuring order, so its first is ONNX Runtime at the primary batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from prunekit.v1 import model_pb2

from ..modelio.ingest import graph_inputs
from ..modelio.torchscript import load_torchscript
from ..progress import ProgressFn
from .benchmark import BenchmarkResult, Factory, benchmark, onnx_factory, torch_factory
from .latency import Latency
from .quality import synthetic_inputs
from .settings import RunSettings


@dataclass
class Timings:
    """Every model's measurements (primary ONNX Runtime one first) and how memory was measured."""

    by_model: dict[str, list[Latency]] = field(default_factory=dict)
    memory_method: str = ""
    warnings: list[str] = field(default_factory=list)

    def primary(self, name: str) -> Latency:
        """The model's ONNX Runtime measurement at the primary batch size."""
        return self.by_model[name][0]

    def add(self, result: BenchmarkResult) -> None:
        for name, latency in result.latencies.items():
            self.by_model.setdefault(name, []).append(latency)
        self.memory_method = self.memory_method or result.memory_method


def batchable(model: onnx.ModelProto) -> bool:
    """True when every input of rank >= 1 has a symbolic first dimension (so any batch size runs)."""
    ranked = [v for v in graph_inputs(model) if v.type.tensor_type.shape.dim]
    return bool(ranked) and all(
        not (
            v.type.tensor_type.shape.dim[0].HasField("dim_value")
            and v.type.tensor_type.shape.dim[0].dim_value > 0
        )
        for v in ranked
    )


def with_batch(inputs: Sequence[model_pb2.InputSpec], batch: int) -> list[model_pb2.InputSpec]:
    """``inputs`` with their first dimension set to ``batch`` (scalars unchanged)."""
    out = []
    for spec in inputs:
        shape = list(spec.shape)
        if shape:
            shape[0] = batch
        copy = model_pb2.InputSpec()
        copy.CopyFrom(spec)
        copy.shape[:] = shape
        out.append(copy)
    return out


def measure_latency(
    onnx_models: Mapping[str, Path],
    torchscripts: Mapping[str, Path],
    *,
    model: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    primary_feed: Mapping[str, np.ndarray],
    settings: RunSettings,
    progress: ProgressFn,
    start: float,
    end: float,
) -> Timings:
    """Time ``onnx_models`` (baseline first) and ``torchscripts`` at every batch size of ``settings``."""
    timings = Timings()
    sizes = list(settings.batch_sizes)
    can_batch = batchable(model)
    groups = 1 + (1 if torchscripts else 0)
    step = (end - start) / (len(sizes) * groups)
    at = start
    for batch in sizes:
        primary = batch == settings.batch_size
        if not primary and not can_batch:
            timings.warnings.append(
                f"BATCH_SIZE_NOT_MEASURED: batch size {batch} was not measured: the model's inputs have a "
                "fixed first dimension"
            )
            continue
        feed = (
            dict(primary_feed)
            if primary
            else synthetic_inputs(with_batch(inputs, batch), 1, settings.seed)[0]
        )
        factories: dict[str, Factory] = {
            name: onnx_factory(path, feed, threads=settings.threads, device=settings.device)
            for name, path in onnx_models.items()
        }
        args = [feed[spec.name] for spec in inputs]
        torch_factories: dict[str, Factory] = {
            name: torch_factory(_loader(path), args, threads=settings.threads, device=settings.device)
            for name, path in torchscripts.items()
        }
        for runtime, group in (("onnxruntime", factories), ("torch", torch_factories)):
            if not group:
                continue
            progress("benchmark", at, f"batch {batch}, {runtime}: {len(group)} models interleaved")
            code = "BATCH_SIZE_NOT_MEASURED" if runtime == "onnxruntime" else "TORCH_LATENCY_NOT_MEASURED"
            fatal = primary and runtime == "onnxruntime"
            result = _run(group, batch, settings, timings, code=code, fatal=fatal)
            if result is not None:
                timings.add(result)
            at += step
    return timings


def _loader(path: Path) -> Callable[[], Any]:
    return lambda: load_torchscript(path)


def _run(
    group: Mapping[str, Factory],
    batch: int,
    settings: RunSettings,
    timings: Timings,
    *,
    code: str,
    fatal: bool,
) -> BenchmarkResult | None:
    try:
        return benchmark(
            group,
            batch_size=batch,
            threads=settings.threads,
            warmup=settings.warmup,
            iterations=settings.iterations,
            max_seconds=settings.max_seconds,
        )
    except Exception as exc:  # a runtime's own errors (ORT Fail, torch RuntimeError...)
        if fatal:
            raise
        text = str(exc).strip().splitlines()
        timings.warnings.append(
            f"{code}: batch size {batch} failed to run ({type(exc).__name__}: "
            f"{(text[0] if text else '')[:200]}); its numbers are missing"
        )
        return None
