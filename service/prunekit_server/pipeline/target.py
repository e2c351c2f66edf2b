"""The prune stage of a job with a latency ``target``: the search (:mod:`..search`) chooses the widths.

It hands the prune stage what ``run_prune`` would (config, result, pruned model) plus the search's
outcome, whose ``quantization`` becomes the job's quantize plan. A search that meets no target fails the
job here when the target is ``required`` (``TARGET_NOT_MET``); the final benchmark judges again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prunekit.spec.prune_configs import PruneConfig
from prunekit.spec.quantize_configs import QuantizePlan
from prunekit.spec.structured_configs import StructuredConfig
from prunekit.v1 import spec_pb2

from ..errors import Code, ServiceError
from ..measure.quality import synthetic_inputs
from ..measure.settings import RunSettings
from ..modelio.ingest import IngestedModel
from ..pruning.base import PruneContext, PruneResult
from ..pruning.structured import channel, neuron
from ..quantization import QuantizeContext, quantize
from ..search.outcome import SearchOutcome
from ..search.run import SearchInputs, search_target
from ..spec_check import prune_config_of, quantize_plan_of, target_config_of
from .variants import SCRATCH_DIR

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
    prune = spec_pb2.PruneSpec()
    prune.CopyFrom(spec.prune)
    if not prune.method:
        prune.method = spec_pb2.PRUNE_METHOD_CHANNEL if "channel" in pruning else spec_pb2.PRUNE_METHOD_NEURON
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


def not_met(outcome: SearchOutcome, reached: float) -> ServiceError:
    """The error of a required target that was not met."""
    return ServiceError(
        Code.FAILED_PRECONDITION,
        "TARGET_NOT_MET",
        f"the target of {outcome.target_speedup:.2f}x (p50 <= {outcome.target_ms:.3g} ms) was not met: "
        f"the best point reached {reached:.2f}x",
        metadata={"target_speedup": f"{outcome.target_speedup:.4g}", "reached_speedup": f"{reached:.4g}"},
    )


def search_prune(
    spec: spec_pb2.OptimizationSpec,
    settings: RunSettings,
    ingested: IngestedModel,
    context: PruneContext,
    quality_feeds: Sequence[dict[str, np.ndarray]],
    calibration: QuantizeContext,
    workdir: Path,
    tables_dir: Path | None,
    progress: Callable[[str], None],
) -> tuple[PruneConfig, PruneResult, SearchOutcome]:
    """Search the widths for ``spec.target``; the structured config, the chosen pruning and the outcome."""
    target = target_config_of(spec)
    structured = _structured(spec, target.pruning)
    method = channel.METHOD if structured.method == "channel" else neuron.METHOD
    inputs = list(ingested.inputs)
    scratch = workdir / SCRATCH_DIR / "search"
    scratch.mkdir(parents=True, exist_ok=True)
    feeds = list(quality_feeds) or synthetic_inputs(inputs, settings.samples, settings.seed)
    outcome = search_target(
        SearchInputs(
            model=ingested.onnx_model,
            model_path=ingested.onnx_path,
            structured=structured,
            method=method,
            context=context,
            quality_feeds=feeds,
            timing_feed=synthetic_inputs(inputs, 1, settings.seed)[0],
            threads=settings.threads,
            device=settings.device,
            batch=settings.batch_size,
            tables_dir=tables_dir,
            scratch=scratch,
            quantize=_quantizer(scratch, calibration),
            rule=None if spec.HasField("finetune") else settings.rule,
        ),
        target,
        progress,
    )
    chosen = outcome.chosen()
    if target.required and not outcome.met:
        raise not_met(outcome, chosen.measured_speedup if chosen is not None else 1.0)
    assert outcome.result is not None
    return structured, outcome.result, outcome
