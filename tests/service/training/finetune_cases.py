"""The digits task as pipeline jobs: a trained CNN as ONNX, its data as staged shards, small specs."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from scripts.digits import export_onnx, train_digits_cnn, write_shards

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.pipeline import JobData, OptimizationResult, StagedShard, run_optimization
from prunekit_server.progress import ProgressFn, no_progress


@functools.cache
def _model_bytes() -> bytes:
    model = train_digits_cnn(epochs=0, steps=300)
    with tempfile.TemporaryDirectory(prefix="prunekit-digits-") as tmp:
        return export_onnx(model, Path(tmp) / "digits.onnx").read_bytes()


def digits_model(directory: Path) -> Path:
    """The trained digits CNN (trained once per process) written to ``directory/digits.onnx``."""
    path = directory / "digits.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_model_bytes())
    return path


def digits_data(
    directory: Path, *, labels: bool = True, arrays: Mapping[str, np.ndarray] | None = None
) -> JobData:
    """The digits as two staged train shards (with ``label`` when ``labels``), or one holding ``arrays``."""
    if arrays:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "custom.npz"
        np.savez(path, **dict(arrays))  # type: ignore[arg-type]
        paths = [path]
    else:
        paths = write_shards(directory, shards=2, labels=labels)
    return JobData(train=[StagedShard(p, uri=f"s3://bucket/data/{p.name}") for p in paths])


def spec(
    prune: Mapping[str, Any], finetune: spec_pb2.FinetuneSpec | None = None
) -> spec_pb2.OptimizationSpec:
    """A quick spec: the given prune, ``finetune`` when given, train data, a short benchmark."""
    out = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(**prune),
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.2),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
        data=spec_pb2.DataSpec(train=["s3://bucket/data/"]),
    )
    if finetune is not None:
        out.finetune.CopyFrom(finetune)
    return out


CHANNEL: dict[str, Any] = {
    "method": spec_pb2.PRUNE_METHOD_CHANNEL,
    "target_macs_reduction": 2.0,
    "round_to": 1,
}


def run(
    model: Path,
    job_spec: spec_pb2.OptimizationSpec,
    workdir: Path,
    data: JobData,
    progress: ProgressFn = no_progress,
) -> OptimizationResult:
    """``run_optimization`` of the digits ONNX model with checkpoints under ``workdir/checkpoints``."""
    return run_optimization(
        model,
        model_pb2.MODEL_FORMAT_ONNX,
        job_spec,
        workdir,
        progress,
        data=data,
        checkpoint_dir=workdir / "checkpoints",
    )


def variant(report: report_pb2.OptimizationReport, name: str = "pruned") -> report_pb2.ModelVariant:
    """The variant called ``name``."""
    return next(v for v in report.variants if v.name == name)


def initializers(path: Path) -> Mapping[str, np.ndarray]:
    """Initializer name -> value of the ONNX model at ``path``."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
