"""The prune stage of a job with a latency ``target``: the search (:mod:`..search`) chooses the widths.

It hands the prune stage what ``run_prune`` would (config, result, pruned model) plus the search's
outcome, whose ``quantization`` becomes the job's quantize plan. A search that meets no target fails the
job here when the target is ``required`` (``TARGET_NOT_MET``); the final benchmark judges again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from prunekit.spec.prune_configs import PruneConfig
from prunekit.spec.quantize_configs import QuantizePlan
from prunekit.spec.structured_configs import StructuredConfig
from prunekit.v1 import report_pb2, spec_pb2

from ..errors import Code, ServiceError
from ..measure.accuracy import Accuracy, AccuracyRule
from ..measure.evaluation import Judge
from ..measure.names import PRUNED
from ..measure.quality import compare_models, synthetic_inputs
from ..measure.settings import RunSettings
from ..modelio.ingest import IngestedModel
from ..pruning.base import PruneContext, PruneResult
from ..pruning.structured import channel, neuron
from ..quantization import QuantizeContext, quantize
from ..report.facts import Variant
from ..report.search import meets, within_bound
from ..search.judging import Bound, Judging, Verdict
from ..search.outcome import SearchOutcome
from ..search.run import SearchInputs, search_target
from ..spec_check import prune_config_of, quantize_plan_of, target_config_of
from .job_data import LoadedData
from .variants import SCRATCH_DIR, calibration_context, calibration_samples_needed

_MODES = {
    "static_int8": spec_pb2.QUANTIZE_MODE_STATIC_INT8,
    "dynamic_int8": spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8,
    "fp16": spec_pb2.QUANTIZE_MODE_FP16,
}


def mode_plan(mode: str) -> QuantizePlan:
    """The quantize plan of one search technique ("none": no quantization)."""
    if mode == "none":
        return QuantizePlan(configs=())
    return quantize_plan_of(spec_pb2.QuantizeSpec(mode=_MODES[mode]))


def _structured(spec: spec_pb2.OptimizationSpec, pruning: Sequence[str]) -> StructuredConfig:
    """The structured config the search prunes with: the spec's ``prune`` settings, a method from the
    techniques (CHANNEL unless only NEURON is allowed), a placeholder ratio (the search sets widths)."""
    prune = spec_pb2.PruneSpec()
    prune.CopyFrom(spec.prune)
    if not prune.method:
        only_neuron = "neuron" in pruning and "channel" not in pruning
        prune.method = spec_pb2.PRUNE_METHOD_NEURON if only_neuron else spec_pb2.PRUNE_METHOD_CHANNEL
    prune.ratio = 0.5
    config = prune_config_of(prune)
    assert isinstance(config, StructuredConfig)
    return config


def _quantizer(workdir: Path, calibration: QuantizeContext) -> Callable[[Path, str], Path]:
    def run(model: Path, mode: str) -> Path:
        (config,) = mode_plan(mode).configs
        out = workdir / f"{model.stem}.{mode}.onnx"
        return quantize(model, out, config, calibration).path

    return run


def not_met(outcome: SearchOutcome, reached: float, why: str = "") -> ServiceError:
    """The error of a required target that was not met."""
    return ServiceError(
        Code.FAILED_PRECONDITION,
        "TARGET_NOT_MET",
        f"the target of {outcome.target_speedup:.2f}x (p50 <= {outcome.target_ms:.3g} ms) was not met: "
        f"the best point reached {reached:.2f}x" + (f" ({why})" if why else ""),
        metadata={"target_speedup": f"{outcome.target_speedup:.4g}", "reached_speedup": f"{reached:.4g}"},
    )


def selected_variant(search: SearchOutcome | None, quantized: Sequence[Variant]) -> str:
    """The variant the search chose: ``pruned``, or its quantized form ("" without a search)."""
    if search is None:
        return ""
    if search.quantization == "none":
        return PRUNED
    return next((v.name for v in quantized if v.source == PRUNED), PRUNED)


def check_required(report: report_pb2.OptimizationReport, selected: str, search: SearchOutcome) -> None:
    """``TARGET_NOT_MET`` unless the selected variant met the target's latency and accuracy bound."""
    chosen = next(v for v in report.variants if v.name == selected)
    if not meets(chosen, search):
        raise not_met(search, chosen.latency_speedup, "latency")
    if not within_bound(chosen):
        raise not_met(search, chosen.latency_speedup, "accuracy rule broken after fine-tuning")


def _judge(
    ingested: IngestedModel, loaded: LoadedData, settings: RunSettings
) -> tuple[Judging, Accuracy | None]:
    """How candidates are judged, and the original's accuracy: on the eval split (its first
    ``samples`` x batch samples) when there is one, else on synthetic inputs (no accuracy)."""
    original = ingested.onnx_path
    if loaded.eval is not None and len(loaded.eval) > 0:
        shape = ingested.inputs[0].shape if ingested.inputs else []
        count = settings.samples * max(1, int(shape[0]) if shape else 1)
        judge = Judge(original, loaded.eval.subset(np.arange(min(count, len(loaded.eval)))), settings)

        def on_eval(path: Path) -> Verdict:
            quality, accuracy = judge.judge(path)
            return Verdict(quality, accuracy if isinstance(accuracy, Accuracy) else None)

        return on_eval, judge.baseline if isinstance(judge.baseline, Accuracy) else None
    feeds = synthetic_inputs(list(ingested.inputs), settings.samples, settings.seed)
    return lambda path: Verdict(compare_models(original, path, feeds)), None


def search_prune(
    spec: spec_pb2.OptimizationSpec,
    settings: RunSettings,
    ingested: IngestedModel,
    loaded: LoadedData,
    context: PruneContext,
    workdir: Path,
    tables_dir: Path | None,
    progress: Callable[[str], None],
) -> tuple[PruneConfig, PruneResult, onnx.ModelProto, SearchOutcome]:
    """Search the widths for ``spec.target``: the config, the chosen pruning, its model, the outcome.

    Candidates are compared with the original on the eval split (synthetic inputs without one), judged
    by accuracy there when it has labels, and calibrate static INT8 on the train split (synthetic
    without one).
    """
    target = target_config_of(spec)
    structured = _structured(spec, target.pruning)
    method = neuron.METHOD if structured.method == "neuron" else channel.METHOD
    inputs = list(ingested.inputs)
    scratch = workdir / SCRATCH_DIR / "search"
    scratch.mkdir(parents=True, exist_ok=True)
    needed = calibration_samples_needed(mode_plan("static_int8"))
    calibration, _ = calibration_context(loaded, inputs, needed, settings, workdir)
    judge, baseline = _judge(ingested, loaded, settings)
    tunes = spec.HasField("finetune")
    bound = Bound(
        fidelity=None if tunes else settings.rule,
        accuracy=None if tunes else AccuracyRule(target.max_accuracy_drop),
        baseline=baseline,
        recovers=tunes,
    )
    outcome = search_target(
        SearchInputs(
            model=ingested.onnx_model,
            model_path=ingested.onnx_path,
            structured=structured,
            method=method,
            context=context,
            judge=judge,
            timing_feed=synthetic_inputs(inputs, 1, settings.seed)[0],
            threads=settings.threads,
            device=settings.device,
            batch=settings.batch_size,
            tables_dir=tables_dir,
            scratch=scratch,
            quantize=_quantizer(scratch, calibration),
            bound=bound,
        ),
        target,
        progress,
    )
    chosen = outcome.chosen()
    if chosen is None or outcome.result is None or outcome.model is None:
        raise ServiceError(Code.INTERNAL, "INTERNAL", "the latency-target search chose no candidate")
    if target.required and not outcome.met:
        raise not_met(outcome, chosen.measured_speedup)
    return structured, outcome.result, outcome.model, outcome
