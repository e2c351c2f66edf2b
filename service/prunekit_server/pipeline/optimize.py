"""One optimization job: ingest, analyse, prune, quantize, evaluate, benchmark, report.

:func:`run_optimization` reads the model and writes its artifacts only under
``workdir``; it knows neither transport nor storage. It composes the
techniques the spec asks for (each knows nothing of the others) and writes
every artifact to ``workdir/artifacts/``: the variants' files (see
:mod:`.variants` for their stable names), ``report.md`` and ``report.html``.
The report's ``uri`` fields stay empty: the server fills them after upload
(and stores ``report.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunekit.v1 import model_pb2, report_pb2, spec_pb2

from ..errors import FieldViolation, invalid_spec
from ..measure.analysis import analyze
from ..measure.latency import execution_providers
from ..measure.quality import Quality, compare_models, synthetic_inputs
from ..modelio.ingest import ingest
from ..quantization import QuantizeContext, QuantizePlan, plan_from_spec
from ..report.render import write_report_files
from .assemble import BASELINE, Facts, assemble_report
from .benchmark import measure_latency
from .data import JobData
from .progress import ProgressFn
from .settings import Settings, settings_from_spec, synthetic_description
from .variants import (
    ORIGINAL,
    PRUNED,
    SCRATCH_DIR,
    Pruned,
    Variant,
    artifact_dir,
    calibration_samples_needed,
    prune_context,
    prune_variant,
    quantized_variants,
)


@dataclass
class OptimizationResult:
    """The report and the files it names (artifact name -> path under the workdir)."""

    report: report_pb2.OptimizationReport
    artifacts: dict[str, Path]


def _check_device(settings: Settings) -> None:
    try:
        execution_providers(settings.device)
    except ValueError as exc:
        raise invalid_spec([FieldViolation("spec.benchmark.device", str(exc))]) from None


def _quantize(
    spec: spec_pb2.OptimizationSpec,
    settings: Settings,
    inputs: list[model_pb2.InputSpec],
    original: Path,
    pruned: Pruned | None,
    workdir: Path,
    progress: ProgressFn,
) -> tuple[list[Variant], list[str], str, bool]:
    """The quantized variants, their warnings, what they calibrated on, and whether it was AUTO."""
    plan = plan_from_spec(spec.quantize) if spec.HasField("quantize") else QuantizePlan(configs=())
    if not plan.configs:
        return [], [], "", False
    sources: list[tuple[str, Path]] = []
    if pruned is not None:
        sources.append((PRUNED, pruned.variant.onnx_path))
    if pruned is None or spec.quantize.include_original:
        sources.append((ORIGINAL, original))
    needed = calibration_samples_needed(plan)
    calibration = synthetic_inputs(inputs, needed, settings.calibration_seed) if needed else []
    described = synthetic_description(inputs, needed, settings.calibration_seed) if needed else ""
    context = QuantizeContext(workdir / SCRATCH_DIR, calibration, described)
    variants, warnings = quantized_variants(sources, plan, context, workdir, progress, start=0.3, end=0.4)
    return variants, warnings, described, plan.auto


def run_optimization(
    model_path: Path,
    model_format: int,
    spec: spec_pb2.OptimizationSpec,
    workdir: Path,
    progress: ProgressFn,
    *,
    data: JobData | None = None,
    checkpoint_dir: Path | None = None,
) -> OptimizationResult:
    """Prune and/or quantize the model at ``model_path`` as ``spec`` says and measure the results.

    Progress is reported per stage (ingest, analyze, prune, quantize,
    evaluate, benchmark, report) with non-decreasing fractions, ending at 1.0.
    Raises ``ServiceError`` (``INVALID_SPEC``, ``INVALID_MODEL``,
    ``UNSUPPORTED_MODEL``) for bad specs and models.
    """
    settings = settings_from_spec(spec, model_format)
    _check_device(settings)

    progress("ingest", 0.0, "reading and validating the model")
    ingested = ingest(model_path, model_format, list(spec.inputs), workdir, batch_size=settings.batch_size)
    inputs = list(ingested.inputs)

    progress("analyze", 0.1, "counting parameters and MACs")
    base_analysis = analyze(
        ingested.onnx_model, inputs, source_format=model_format, size_bytes=model_path.stat().st_size
    )

    variants: list[Variant] = []
    pruned = None
    if spec.HasField("prune"):
        progress("prune", 0.2, "pruning")
        context = prune_context(ingested, settings.samples, settings.seed)
        pruned = prune_variant(ingested, spec.prune, workdir, progress, context)
        variants.append(pruned.variant)
    quantized, quantize_warnings, calibration_inputs, auto = _quantize(
        spec, settings, inputs, ingested.onnx_path, pruned, workdir, progress
    )
    variants += quantized

    progress("evaluate", 0.4, f"comparing {len(variants)} variant(s) on {settings.samples} synthetic samples")
    feeds = synthetic_inputs(inputs, settings.samples, settings.seed)
    qualities: dict[str, Quality] = {
        v.name: compare_models(ingested.onnx_path, v.onnx_path, feeds, threads=settings.threads)
        for v in variants
    }

    progress("benchmark", 0.5, f"timing the baseline and {len(variants)} variant(s), interleaved")
    onnx_models = {BASELINE: ingested.onnx_path, **{v.name: v.onnx_path for v in variants}}
    torchscripts: dict[str, Path] = {}
    if model_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        torchscripts[BASELINE] = ingested.source_path
        torchscripts.update({v.name: v.torchscript_path for v in variants if v.torchscript_path is not None})
    timings = measure_latency(
        onnx_models,
        torchscripts,
        model=ingested.onnx_model,
        inputs=inputs,
        primary_feed=feeds[0],
        settings=settings,
        progress=progress,
        start=0.5,
        end=0.9,
    )

    progress("report", 0.9, "building the report")
    report = assemble_report(
        Facts(
            ingested=ingested,
            base_analysis=base_analysis,
            pruned=pruned,
            variants=variants,
            qualities=qualities,
            timings=timings,
            settings=settings,
            quality_inputs=synthetic_description(inputs, settings.samples, settings.seed),
            calibration_inputs=calibration_inputs,
            quantize_warnings=quantize_warnings,
            auto=auto,
        )
    )
    artifacts: dict[str, Path] = {}
    for variant in variants:
        for file in variant.files:
            artifacts[file.artifact] = artifact_dir(workdir) / file.artifact
    progress("report", 0.95, "rendering report.md and report.html")
    artifacts.update(write_report_files(report, artifact_dir(workdir)))
    progress("report", 1.0, "done")
    return OptimizationResult(report=report, artifacts=artifacts)


__all__ = ["OptimizationResult", "run_optimization"]
