"""One optimization job: ingest, analyse, prune, evaluate, benchmark, report.

:func:`run_optimization` reads the model and writes its artifacts only under
``workdir``; it knows neither transport nor storage. Artifacts are named
``pruned.onnx`` (always) and ``pruned.pt`` (TorchScript input) and written to
``workdir/artifacts/``, apart from the staged input and the ingest's files. The report's
``uri`` fields stay empty: the server fills them after upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunekit.v1 import model_pb2, report_pb2, spec_pb2

from ..errors import FieldViolation, invalid_spec
from ..hashing import sha256_file
from ..measure.analysis import analyze, count_parameters
from ..measure.latency import benchmark_onnx, cpu_model
from ..measure.quality import SYNTHETIC_INT_HIGH, compare_models, synthetic_inputs
from ..measure.size import compressed_size, serialized_size
from ..modelio.ingest import ingest
from ..modelio.torchscript import write_torchscript_with_weights
from ..pruning import UnstructuredConfig, apply_tensors, config_from_spec, prune
from ..report import build as rb
from .progress import ProgressFn

VARIANT = "pruned"
ARTIFACT_DIR = "artifacts"
DEFAULT_BATCH = 1
DEFAULT_THREADS = 1
DEFAULT_WARMUP = 10
DEFAULT_ITERATIONS = 50
DEFAULT_SAMPLES = 32
_FLOATS = frozenset(
    {
        model_pb2.DATA_TYPE_UNSPECIFIED,
        model_pb2.DATA_TYPE_FLOAT32,
        model_pb2.DATA_TYPE_FLOAT16,
        model_pb2.DATA_TYPE_FLOAT64,
    }
)


@dataclass
class OptimizationResult:
    """The report and the files it names (artifact name -> path under the workdir)."""

    report: report_pb2.OptimizationReport
    artifacts: dict[str, Path]


@dataclass(frozen=True)
class _Settings:
    batch_size: int
    threads: int
    warmup: int
    iterations: int
    samples: int
    seed: int


def _settings(spec: spec_pb2.OptimizationSpec) -> _Settings:
    """Spec values with their defaults applied; ``INVALID_SPEC`` for impossible ones."""
    bench, evaluation = spec.benchmark, spec.evaluation
    violations = [
        FieldViolation(f"spec.benchmark.{name}", f"must be >= 0, got {getattr(bench, name)}")
        for name in ("batch_size", "threads", "warmup", "iterations")
        if getattr(bench, name) < 0
    ]
    if evaluation.samples < 0:
        violations.append(
            FieldViolation("spec.evaluation.samples", f"must be >= 0, got {evaluation.samples}")
        )
    for name in ("finetune", "quantize"):
        if spec.HasField(name):
            violations.append(FieldViolation(f"spec.{name}", "not supported by this server version"))
    if not spec.HasField("prune"):
        violations.append(FieldViolation("spec.prune", "required"))
    if violations:
        raise invalid_spec(violations)
    return _Settings(
        batch_size=bench.batch_size or DEFAULT_BATCH,
        threads=bench.threads or DEFAULT_THREADS,
        warmup=bench.warmup or DEFAULT_WARMUP,
        iterations=bench.iterations or DEFAULT_ITERATIONS,
        samples=evaluation.samples or DEFAULT_SAMPLES,
        seed=evaluation.seed,
    )


def _file(fmt: model_pb2.ModelFormat.ValueType, path: Path) -> report_pb2.ModelFile:
    return rb.model_file(fmt, path.name, sha256_file(path), path.stat().st_size)


def _quality_inputs(inputs: list[model_pb2.InputSpec], samples: int, seed: int) -> str:
    text = f"{samples} synthetic samples, normal(0, 1), seed {seed}"
    if any(i.dtype not in _FLOATS for i in inputs):
        text += f"; integer inputs uniform in [0, {SYNTHETIC_INT_HIGH})"
    return text


def _layer_macs(analysis: model_pb2.ModelAnalysis) -> dict[str, int]:
    return {layer.name: int(layer.macs) for layer in analysis.layers}


def run_optimization(
    model_path: Path,
    model_format: int,
    spec: spec_pb2.OptimizationSpec,
    workdir: Path,
    progress: ProgressFn,
) -> OptimizationResult:
    """Prune the model at ``model_path`` as ``spec`` says and measure the result against it.

    Progress is reported per stage (ingest, analyze, prune, evaluate,
    benchmark, report) with non-decreasing fractions, ending at 1.0.
    Raises ``ServiceError`` (``INVALID_SPEC``, ``INVALID_MODEL``,
    ``UNSUPPORTED_MODEL``) for bad specs and models.
    """
    settings = _settings(spec)
    fmt = model_pb2.ModelFormat.ValueType(model_format)

    progress("ingest", 0.0, "reading and validating the model")
    ingested = ingest(model_path, model_format, list(spec.inputs), workdir, batch_size=settings.batch_size)
    inputs = list(ingested.inputs)

    progress("analyze", 0.1, "counting parameters and MACs")
    base_bytes = ingested.onnx_model.SerializeToString()
    base_analysis = analyze(
        ingested.onnx_model, inputs, source_format=model_format, size_bytes=model_path.stat().st_size
    )
    base_params, base_nonzero = count_parameters(ingested.onnx_model)

    progress("prune", 0.2, "pruning")
    config = config_from_spec(spec.prune)
    result = prune(ingested.onnx_model, config)
    pruned = apply_tensors(ingested.onnx_model, result.tensors)
    pruned_bytes = pruned.SerializeToString()
    out_dir = workdir / ARTIFACT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_out = out_dir / f"{VARIANT}.onnx"
    onnx_out.write_bytes(pruned_bytes)
    artifacts = {onnx_out.name: onnx_out}
    files = [_file(model_pb2.MODEL_FORMAT_ONNX, onnx_out)]
    export_warnings: list[str] = []
    if fmt == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        progress("prune", 0.3, "writing the TorchScript model")
        ts_out = out_dir / f"{VARIANT}.pt"
        export_warnings = write_torchscript_with_weights(
            ingested.source_path, result.tensors, ts_out, original_onnx=ingested.onnx_model
        )
        artifacts[ts_out.name] = ts_out
        files.insert(0, _file(model_pb2.MODEL_FORMAT_TORCHSCRIPT, ts_out))

    progress("evaluate", 0.35, f"comparing outputs on {settings.samples} synthetic samples")
    feeds = synthetic_inputs(inputs, settings.samples, settings.seed)
    quality = compare_models(ingested.onnx_path, onnx_out, feeds, threads=settings.threads)

    progress("benchmark", 0.5, f"timing baseline and {VARIANT}, {settings.iterations} runs each, interleaved")
    latencies = benchmark_onnx(
        {"baseline": ingested.onnx_path, VARIANT: onnx_out},
        feeds[0],
        batch_size=settings.batch_size,
        threads=settings.threads,
        warmup=settings.warmup,
        iterations=settings.iterations,
    )

    progress("report", 0.95, "building the report")
    pruned_analysis = analyze(pruned, inputs, source_format=model_format, size_bytes=len(pruned_bytes))
    params, nonzero = count_parameters(pruned)
    baseline = rb.model_stats(
        parameters=base_params,
        nonzero_parameters=base_nonzero,
        macs=base_analysis.macs,
        size_bytes=serialized_size(ingested.onnx_model),
        compressed_size_bytes=compressed_size(base_bytes),
        latency=latencies["baseline"],
    )
    stats = rb.model_stats(
        parameters=params,
        nonzero_parameters=nonzero,
        macs=pruned_analysis.macs,
        size_bytes=serialized_size(pruned),
        compressed_size_bytes=compressed_size(pruned_bytes),
        latency=latencies[VARIANT],
        quality=quality,
    )
    variant = rb.model_variant(VARIANT, stats, files, baseline)
    description = _quality_inputs(inputs, settings.samples, settings.seed)
    warnings = [
        *rb.upstream_warnings(ingested.warnings, "MODEL_INGEST"),
        *rb.upstream_warnings(result.warnings, "PRUNE"),
        *rb.upstream_warnings(export_warnings, "TORCHSCRIPT_WEIGHTS_UNMAPPED"),
    ]
    if isinstance(config, UnstructuredConfig):
        warnings.append(rb.unstructured_no_speedup(VARIANT))
    warnings.append(rb.synthetic_inputs_warning(description))
    report = rb.build_report(
        input_format=fmt,
        baseline=baseline,
        variants=[variant],
        layers=rb.layer_changes(result.layers, _layer_macs(base_analysis), _layer_macs(pruned_analysis)),
        protocol=rb.benchmark_protocol(
            latencies["baseline"], inputs=inputs, cpu_model=cpu_model(), quality_inputs=description
        ),
        warnings=warnings,
    )
    progress("report", 1.0, "done")
    return OptimizationResult(report=report, artifacts=artifacts)


__all__ = ["OptimizationResult", "run_optimization"]
