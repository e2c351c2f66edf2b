"""One optimization job: ingest, analyse, prune, fine-tune, quantize, evaluate, benchmark, report.

:func:`run_optimization` reads the model (and the job's staged data) and
writes its artifacts only under ``workdir`` (checkpoints under
``checkpoint_dir``); it knows neither transport nor storage. With data, the
train split feeds data-driven importance, BatchNorm refreshes and
quantization calibration (synthetic inputs otherwise), and the eval split
measures fidelity and accuracy. It composes the
techniques the spec asks for (each knows nothing of the others; prune method
DYNAMIC makes the ``dynamic`` variant instead, see :mod:`.dynamic`) and writes
every artifact to ``workdir/artifacts/``: the variants' files (see
:mod:`.variants` for their stable names), ``report.md`` and ``report.html``.
The report's ``uri`` fields stay empty: the server fills them after upload
(and stores ``report.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from prunekit.v1 import model_pb2, report_pb2, spec_pb2

from ..errors import FieldViolation, invalid_spec
from ..measure.analysis import analyze
from ..measure.evaluation import Evaluation, evaluate_models
from ..measure.latency import execution_providers
from ..measure.names import BASELINE, ORIGINAL, PRUNED
from ..measure.quality import synthetic_inputs
from ..measure.settings import RunSettings
from ..measure.timings import Timings, batchable, measure_latency, with_batch
from ..model_caps import ModelCaps
from ..modelio.ingest import IngestedModel, check_input_bytes, ingest
from ..modelio.onnx_to_fx import onnx_to_fx
from ..progress import ProgressFn
from ..quantization import QuantizePlan
from ..report.build import assemble_report
from ..report.facts import Facts, Pruned, Variant
from ..report.render import write_report_files
from ..search.outcome import SearchOutcome
from ..spec_check import finetune_plan_of, prune_config_of, quantize_plan_of
from ..training.replicas import Replicas
from ..training.stage import RoundRecovery, Tuner, finetune_pruned
from .aware import aware_variants
from .data import JobData
from .dynamic import is_dynamic, run_dynamic
from .from_spec import settings_from_spec
from .job_data import LoadedData, data_feeds, describe_feeds, load_job_data
from .provenance import begin as begin_provenance
from .provenance import finish as finish_provenance
from .stages import HALF, at, reweighted, span
from .target import check_required, mode_plan, search_prune, selected_variant
from .variants import (
    MAX_PRUNE_FEEDS,
    artifact_dir,
    calibration_context,
    calibration_samples_needed,
    prune_context,
    quantized_variants,
    run_prune,
    write_pruned,
)


@dataclass
class OptimizationResult:
    """The report and the files it names (artifact name -> path under the workdir)."""

    report: report_pb2.OptimizationReport
    artifacts: dict[str, Path]


def _check_device(settings: RunSettings) -> None:
    try:
        execution_providers(settings.device)
    except ValueError as exc:
        raise invalid_spec([FieldViolation("spec.benchmark.device", str(exc))]) from None


def _quantize(
    spec: spec_pb2.OptimizationSpec,
    plan: QuantizePlan,
    settings: RunSettings,
    inputs: list[model_pb2.InputSpec],
    original: Path,
    pruned: Pruned | None,
    workdir: Path,
    progress: ProgressFn,
    loaded: LoadedData,
) -> tuple[list[Variant], list[str], str, bool]:
    """The quantized variants, their warnings, what synthetic inputs they calibrated on ("" for the
    job's train split, or when nothing calibrates), and whether it was AUTO."""
    if not plan.configs:
        return [], [], "", False
    sources: list[tuple[str, Path]] = []
    if pruned is not None:
        sources.append((PRUNED, pruned.variant.onnx_path))
    if pruned is None or spec.quantize.include_original:
        sources.append((ORIGINAL, original))
    context, synthetic = calibration_context(
        loaded, inputs, calibration_samples_needed(plan), settings, workdir
    )
    start, end = span("quantize")
    variants, warnings = quantized_variants(sources, plan, context, workdir, progress, start=start, end=end)
    variants += aware_variants(sources, plan, context, loaded, inputs, workdir, progress, at=end)
    return variants, warnings, synthetic, plan.auto


@dataclass
class _PruneOutcome:
    pruned: Pruned
    finetune: report_pb2.FinetuneReport | None
    warnings: list[str]
    search: SearchOutcome | None = None


def _prune_and_finetune(
    spec: spec_pb2.OptimizationSpec,
    settings: RunSettings,
    ingested: IngestedModel,
    loaded: LoadedData,
    workdir: Path,
    checkpoint_dir: Path,
    progress: ProgressFn,
    tables_dir: Path | None,
    replicas: Replicas | None = None,
) -> _PruneOutcome:
    """Prune (fine-tuning between iterative rounds when asked), fine-tune, write ``pruned.*``.

    Progress: prune at the prune stage's start, fine-tuning phases across its span, the write at its end.
    """
    inputs = list(ingested.inputs)
    feeds = data_feeds(loaded.train, inputs, MAX_PRUNE_FEEDS) if loaded.train is not None else []
    progress("prune", at("prune"), "pruning" + (f" ({describe_feeds(feeds, 'train')})" if feeds else ""))
    tuner = hook = None
    targets = spec.HasField("target")
    rounds = 1 if targets else int(getattr(prune_config_of(spec.prune), "steps", 1))
    if spec.HasField("finetune"):
        if loaded.train is None or len(loaded.train) == 0:
            raise invalid_spec([FieldViolation("spec.data.train", "fine-tuning needs training samples")])
        teacher = onnx_to_fx(ingested.onnx_model, inputs=inputs)
        plan = finetune_plan_of(spec.finetune)
        batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
        tuner = Tuner(
            plan,
            loaded.train,
            loaded.eval,
            teacher,
            checkpoint_dir,
            progress,
            model_batch=batch,
            replicas=replicas,
        )
        hook = RoundRecovery(tuner, rounds, span("prune")) if rounds > 1 else None
    context = prune_context(ingested, settings.samples, settings.seed, data_feeds=feeds, recover=hook)
    search = None
    if targets:
        config, result, model, search = search_prune(
            spec,
            settings,
            ingested,
            loaded,
            context,
            workdir,
            tables_dir,
            lambda message: progress("prune", at("prune"), f"latency target: {message}"),
        )
    else:
        config, result, model = run_prune(ingested, spec.prune, context)
    report = None
    if tuner is not None:
        final = span("prune", Fraction(rounds - 1, rounds))
        tuned = finetune_pruned(ingested.onnx_model, model, result, context, tuner, rounds=rounds, span=final)
        model, result, report = tuned.model, tuned.result, tuned.report
    pruned = write_pruned(ingested, config, result, model, workdir, progress, fraction=at("prune", 1))
    return _PruneOutcome(pruned, report, tuner.warnings if tuner is not None else [], search)


def _intake(
    model_path: Path,
    model_format: int,
    spec: spec_pb2.OptimizationSpec,
    workdir: Path,
    progress: ProgressFn,
    job_data: JobData,
    caps: ModelCaps | None,
) -> tuple[RunSettings, IngestedModel, model_pb2.ModelAnalysis, LoadedData]:
    """The ingest and analyze stages: settings, the checked model, its analysis, the job's data."""
    settings = settings_from_spec(spec, model_format)
    _check_device(settings)
    progress("ingest", at("ingest"), "reading and validating the model")
    ingested = ingest(
        model_path, model_format, list(spec.inputs), workdir, batch_size=settings.batch_size, caps=caps
    )
    inputs = list(ingested.inputs)
    if batchable(ingested.onnx_model):  # the benchmark's largest batch is within the input cap too
        check_input_bytes(with_batch(inputs, max(settings.batch_sizes)), caps or ModelCaps())
    progress("analyze", at("analyze"), "counting parameters and MACs")
    base_analysis = analyze(
        ingested.onnx_model, inputs, source_format=model_format, size_bytes=model_path.stat().st_size
    )
    if not job_data.empty:
        progress("analyze", at("analyze", HALF), "loading and checking the job's data")
    loaded = load_job_data(job_data, inputs, spec.data.eval_fraction, settings.seed)
    return settings, ingested, base_analysis, loaded


def _finetuned(variants: list[Variant], outcome: _PruneOutcome | None) -> frozenset[str]:
    """The variants made from a fine-tuned pruned model."""
    tuned = outcome is not None and outcome.finetune is not None
    return frozenset(v.name for v in variants if tuned and v.source == PRUNED)


def _plan(spec: spec_pb2.OptimizationSpec, search: SearchOutcome | None) -> QuantizePlan:
    """What to quantize: the mode the search chose, else the spec's ``quantize``, else nothing."""
    if search is not None:
        return mode_plan(search.quantization)
    return quantize_plan_of(spec.quantize) if spec.HasField("quantize") else QuantizePlan(configs=())


def run_optimization(
    model_path: Path,
    model_format: int,
    spec: spec_pb2.OptimizationSpec,
    workdir: Path,
    progress: ProgressFn,
    *,
    data: JobData | None = None,
    checkpoint_dir: Path | None = None,
    latency_tables: Path | None = None,
    caps: ModelCaps | None = None,
    provenance: report_pb2.Provenance | None = None,
    replicas: Replicas | None = None,
) -> OptimizationResult:
    """Prune and/or quantize the model at ``model_path`` as ``spec`` says and measure the results.

    Progress is reported per stage (ingest, analyze, prune, finetune,
    quantize, evaluate, benchmark, report; fractions from :mod:`.stages`)
    non-decreasing and ending at 1.0; fine-tuning adds structured details (see
    :mod:`~prunekit_server.training.stage`). ``data`` holds the staged shards (none: synthetic
    inputs); ``checkpoint_dir`` (default ``workdir/checkpoints``) holds the
    fine-tuning checkpoints, and a phase whose checkpoint is there resumes
    from it. Raises ``ServiceError`` (``INVALID_SPEC``, ``INVALID_MODEL``,
    ``UNSUPPORTED_MODEL``, ``INVALID_DATASET``) for bad specs, models and data, and
    ``MODEL_TOO_LARGE`` for a model over the worker's ``caps``. ``provenance`` (job id, model name and
    digest, attempt) goes into the report's with the spec, times and versions filled in. ``replicas``: this
    worker is rank 0 of a data-parallel group that fine-tunes with it (``finetune.workers``).
    """
    made = begin_provenance(provenance, spec)
    progress = reweighted(progress, finetunes=spec.HasField("finetune"), searches=spec.HasField("target"))
    settings, ingested, base_analysis, loaded = _intake(
        model_path, model_format, spec, workdir, progress, data or JobData(), caps
    )
    inputs = list(ingested.inputs)
    variants: list[Variant] = []
    outcome = None
    dynamic = run_dynamic(spec, settings, ingested, loaded, workdir, progress) if is_dynamic(spec) else None
    if dynamic is not None:
        variants.append(dynamic.variant)
    elif spec.HasField("prune") or spec.HasField("target"):
        checkpoints = checkpoint_dir if checkpoint_dir is not None else workdir / "checkpoints"
        outcome = _prune_and_finetune(
            spec, settings, ingested, loaded, workdir, checkpoints, progress, latency_tables, replicas
        )
        variants.append(outcome.pruned.variant)
    pruned, search = (outcome.pruned, outcome.search) if outcome is not None else (None, None)
    quantized, quantize_warnings, calibration_inputs, auto = _quantize(
        spec, _plan(spec, search), settings, inputs, ingested.onnx_path, pruned, workdir, progress, loaded
    )
    variants += quantized
    evaluation, feeds = _evaluate(ingested, variants, loaded, settings, progress)
    timings = _benchmark(ingested, model_format, variants, feeds[0], settings, progress)

    progress("report", at("report"), "building the report")
    facts = Facts(
        ingested=ingested,
        base_analysis=base_analysis,
        pruned=pruned,
        variants=variants,
        timings=timings,
        settings=settings,
        calibration_inputs=calibration_inputs,
        quantize_warnings=quantize_warnings,
        auto=auto,
        evaluation=evaluation,
        data=None if loaded.empty else loaded.report,
        finetune=outcome.finetune if outcome is not None else None,
        finetuned=_finetuned(variants, outcome),
        max_accuracy_drop=spec.target.max_accuracy_drop or spec.evaluation.max_accuracy_drop,
        extra_warnings=outcome.warnings if outcome is not None else dynamic.warnings if dynamic else (),
        search=search,
        selected=selected_variant(search, quantized),
    )
    report = assemble_report(facts)
    report.provenance.CopyFrom(finish_provenance(made, settings))
    if dynamic is not None:
        report.dynamic.CopyFrom(dynamic.report)
    if search is not None and spec.target.required:
        check_required(report, facts.selected, search)
    return OptimizationResult(report=report, artifacts=_write_artifacts(report, variants, workdir, progress))


def _evaluate(
    ingested: IngestedModel,
    variants: list[Variant],
    loaded: LoadedData,
    settings: RunSettings,
    progress: ProgressFn,
) -> tuple[Evaluation, list[dict[str, np.ndarray]]]:
    """The evaluate stage: every variant against the original, on the eval split or synthetic feeds.

    The synthetic feeds are returned too: the benchmark times on the first.
    """
    on = (
        f"the eval split ({len(loaded.eval)} samples)"
        if loaded.eval
        else f"{settings.samples} synthetic samples"
    )
    progress("evaluate", at("evaluate"), f"comparing {len(variants)} variant(s) on {on}")
    feeds = synthetic_inputs(list(ingested.inputs), settings.samples, settings.seed)
    models = {v.name: v.onnx_path for v in variants}
    return evaluate_models(ingested.onnx_path, models, loaded.eval, feeds, settings), feeds


def _benchmark(
    ingested: IngestedModel,
    model_format: int,
    variants: list[Variant],
    primary_feed: dict[str, np.ndarray],
    settings: RunSettings,
    progress: ProgressFn,
) -> Timings:
    """The benchmark stage: the baseline and every variant (and their TorchScript files) timed."""
    progress("benchmark", at("benchmark"), f"timing the baseline and {len(variants)} variant(s), interleaved")
    onnx_models = {BASELINE: ingested.onnx_path, **{v.name: v.onnx_path for v in variants}}
    torchscripts: dict[str, Path] = {}
    if model_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        torchscripts[BASELINE] = ingested.source_path
        torchscripts.update({v.name: v.torchscript_path for v in variants if v.torchscript_path is not None})
    start, end = span("benchmark")
    return measure_latency(
        onnx_models,
        torchscripts,
        model=ingested.onnx_model,
        inputs=list(ingested.inputs),
        primary_feed=primary_feed,
        settings=settings,
        progress=progress,
        start=start,
        end=end,
    )


def _write_artifacts(
    report: report_pb2.OptimizationReport, variants: list[Variant], workdir: Path, progress: ProgressFn
) -> dict[str, Path]:
    """Every variant's files and the rendered report, by artifact name."""
    artifacts: dict[str, Path] = {}
    for variant in variants:
        for file in variant.files:
            artifacts[file.artifact] = artifact_dir(workdir) / file.artifact
    progress("report", at("report", HALF), "rendering report.md and report.html")
    artifacts.update(write_report_files(report, artifact_dir(workdir)))
    progress("report", at("report", 1), "done")
    return artifacts


__all__ = ["OptimizationResult", "run_optimization"]
