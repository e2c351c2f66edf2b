"""The DYNAMIC prune stage: build the ``dynamic`` variant and measure it per input against the original.

Heads train on the job's train split and the threshold is calibrated on its eval split; without them,
on synthetic inputs (:data:`SYNTHETIC_TRAIN` and :data:`SYNTHETIC_EVAL` samples, with a
``DYNAMIC_SYNTHETIC_INPUTS`` warning). The calibration rule is the accuracy rule with labels
(``evaluation.max_accuracy_drop``, 1 point when unset), else the top-1 agreement floor. The variant is
timed per input over the same eval inputs as the original, interleaved
(:func:`~..measure.dynamic.measure_per_input`), and over a sub-set of them at several thresholds of the
sweep; the ``DynamicReport`` says it all. A TorchScript input also gets ``dynamic.pt``
(:mod:`~..pruning.dynamic.torchscript`), or a ``TORCHSCRIPT_NOT_WRITTEN`` warning saying why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunekit.spec.dynamic_configs import DynamicConfig
from prunekit.v1 import model_pb2, report_pb2, spec_pb2

from ..measure.dynamic import describe_protocol, measure_per_input
from ..measure.names import DYNAMIC, ORIGINAL
from ..measure.quality import synthetic_inputs
from ..measure.settings import RunSettings, synthetic_description
from ..modelio.ingest import IngestedModel
from ..progress import ProgressFn
from ..pruning.dynamic import (
    CalibrationRule,
    EarlyExit,
    Split,
    TokenSkip,
    early_exit,
    form_unavailable,
    not_applicable,
    token_skip,
    with_keep,
    with_threshold,
)
from ..pruning.dynamic.torchscript import write_early_exit_torchscript, write_traced_torchscript
from ..report.dynamic import dynamic_report, token_report
from ..report.facts import Variant
from ..spec_check import prune_config_of
from ..training.datasets import Dataset
from .job_data import LoadedData
from .stages import HALF, at
from .variants import SCRATCH_DIR, artifact_dir, model_file

__all__ = ["DynamicOutcome", "is_dynamic", "run_dynamic"]

SYNTHETIC_TRAIN = 512
SYNTHETIC_EVAL = 128
MAX_FEEDS = 2000
SWEEP_FEEDS = 200
SWEEP_TIMED = 6
DEFAULT_MAX_DROP = 0.01
BATCH_RULES = {
    "early_exit": "a batch leaves an exit only when every item in it reaches the threshold (batch 1: per "
    "input); outputs keep the original's name, shape and dtype on every path",
    "token_skip": "each item of a batch keeps its own most attended tokens (TopK per row): any batch size; "
    "outputs keep the original's name, shape and dtype",
}


@dataclass
class DynamicOutcome:
    """The ``dynamic`` variant, its report section and its warnings."""

    variant: Variant
    report: report_pb2.DynamicReport
    warnings: list[str]


def is_dynamic(spec: spec_pb2.OptimizationSpec) -> bool:
    """True when the spec prunes with method DYNAMIC."""
    return spec.HasField("prune") and spec.prune.method == spec_pb2.PRUNE_METHOD_DYNAMIC


def _split(
    dataset: Dataset | None, inputs: list[model_pb2.InputSpec], count: int, seed: int
) -> tuple[Split, bool]:
    """The dataset as a :class:`Split`, or ``count`` synthetic samples (True: synthetic)."""
    if dataset is not None and len(dataset):
        return Split(dict(zip(dataset.input_names, dataset.inputs, strict=True)), dataset.label), False
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
    feeds = synthetic_inputs(inputs, max(1, count // max(1, batch)), seed)
    return Split({i.name: np.concatenate([f[i.name] for f in feeds]) for i in inputs}), True


def _feeds(split: Split, inputs: list[model_pb2.InputSpec]) -> list[dict[str, np.ndarray]]:
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
    n = min(len(split), MAX_FEEDS * batch) // batch * batch
    return [{name: a[i : i + batch] for name, a in split.inputs.items()} for i in range(0, n, batch)]


def _rule(spec: spec_pb2.OptimizationSpec, settings: RunSettings, labelled: bool) -> CalibrationRule:
    return CalibrationRule(
        "accuracy" if labelled else "top1_agreement",
        max_drop=spec.evaluation.max_accuracy_drop or DEFAULT_MAX_DROP,
        min_agreement=settings.rule.min_top1_agreement,
    )


def _halves(split: Split) -> tuple[Split, Split]:
    """The calibration half (even positions) and the measurement half (odd positions) of ``split``; one
    sample is both."""
    if len(split) < 2:
        return split, split

    def part(start: int) -> Split:
        labels = split.labels[start::2] if split.labels is not None else None
        return Split({name: a[start::2] for name, a in split.inputs.items()}, labels)

    return part(0), part(1)


@dataclass
class _Built:
    """The built form, the calibration and measurement inputs, whether synthetic, the warnings so far."""

    form: EarlyExit | TokenSkip
    calibration: Split
    measured: Split
    synthetic: bool
    warnings: list[str]


def _build(
    config: DynamicConfig,
    spec: spec_pb2.OptimizationSpec,
    settings: RunSettings,
    ingested: IngestedModel,
    loaded: LoadedData,
    workdir: Path,
    progress: ProgressFn,
) -> _Built:
    """Build the form: trained on the train split, calibrated on one half of the eval split."""
    inputs = list(ingested.inputs)
    evaluation, synthetic = _split(loaded.eval, inputs, SYNTHETIC_EVAL, settings.seed)
    calibration, measured = _halves(evaluation)
    rule = _rule(spec, settings, calibration.labels is not None)
    scratch = workdir / SCRATCH_DIR
    train, synthetic_train = _split(loaded.train, inputs, SYNTHETIC_TRAIN, settings.seed + 1)
    synthetic = synthetic or synthetic_train
    model = ingested.onnx_model
    built: EarlyExit | TokenSkip
    if config.form == "token_skip":
        what = (
            "calibrating" if config.frozen_layers else f"distilling the later layers ({config.steps} steps)"
        )
        progress("prune", at("prune"), f"token skipping: {what}")
        built = token_skip(model, inputs, config, train, calibration, rule, scratch, settings.seed)
    else:
        progress("prune", at("prune"), f"early exit: training exit heads ({config.steps} steps each)")
        built = early_exit(model, inputs, config, train, calibration, rule, scratch, settings.seed)
    warnings = []
    if synthetic:
        warnings.append(
            "DYNAMIC_SYNTHETIC_INPUTS: the gates were trained or calibrated on synthetic inputs (no train or "
            "eval split); give the job data for gates that fit real inputs"
        )
    return _Built(built, calibration, measured, synthetic, warnings + built.warnings)


def run_dynamic(
    spec: spec_pb2.OptimizationSpec,
    settings: RunSettings,
    ingested: IngestedModel,
    loaded: LoadedData,
    workdir: Path,
    progress: ProgressFn,
) -> DynamicOutcome:
    """Build, write and measure the ``dynamic`` variant (see the module docstring)."""
    config = prune_config_of(spec.prune)
    assert isinstance(config, DynamicConfig)
    if config.form not in BATCH_RULES:
        raise form_unavailable(config.form)
    scalars = [spec.name for spec in ingested.inputs if not spec.shape]
    if scalars:
        raise not_applicable(
            f"dynamic models are gated per sample: input(s) {', '.join(scalars)} have no batch dimension"
        )
    built = _build(config, spec, settings, ingested, loaded, workdir, progress)
    variant, more = _write(built.form, ingested, workdir, progress)
    progress("prune", at("prune", HALF), "dynamic: timing the original and the dynamic model per input")
    report = _measure(built, ingested.onnx_path, variant.onnx_path, list(ingested.inputs), settings, workdir)
    return DynamicOutcome(variant, report, built.warnings + more)


def _write(
    built: EarlyExit | TokenSkip, ingested: IngestedModel, workdir: Path, progress: ProgressFn
) -> tuple[Variant, list[str]]:
    """``dynamic.onnx`` (and ``dynamic.pt`` for TorchScript input, when it can be written) as the variant."""
    out = artifact_dir(workdir) / f"{DYNAMIC}.onnx"
    out.write_bytes(built.model.SerializeToString())
    files = [model_file(model_pb2.MODEL_FORMAT_ONNX, out)]
    if ingested.source_format != model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        return Variant(name=DYNAMIC, source=ORIGINAL, onnx_path=out, files=files), []
    progress("prune", at("prune", HALF), "dynamic: writing the TorchScript model")
    script = out.with_suffix(".pt")
    if isinstance(built, EarlyExit) and built.graph is not None and built.output is not None:
        warnings = write_early_exit_torchscript(
            built.graph, built.output, built.points, built.heads, built.model, built.threshold, script
        )
    else:
        warnings = write_traced_torchscript(built.model, list(ingested.inputs), script)
    if warnings:
        return Variant(name=DYNAMIC, source=ORIGINAL, onnx_path=out, files=files), warnings
    files.insert(0, model_file(model_pb2.MODEL_FORMAT_TORCHSCRIPT, script))
    return Variant(name=DYNAMIC, source=ORIGINAL, onnx_path=out, files=files, torchscript_path=script), []


def _sweep_ms(
    built: EarlyExit | TokenSkip, feeds: list[dict[str, np.ndarray]], threads: int, scratch: Path
) -> dict[float, float]:
    """Mean latency (ms) at up to :data:`SWEEP_TIMED` sweep points and the chosen one, by their key
    (threshold, or kept tokens): each timed per input on the first feeds, 2 rounds, one model at a time."""
    if isinstance(built, EarlyExit):
        keys = [p.threshold for p in built.sweep]
        chosen = built.threshold
    else:
        keys = [float(p.keep_tokens) for p in built.sweep]
        chosen = float(built.keep_tokens)
    step = max(1, len(keys) // SWEEP_TIMED)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "sweep.onnx"
    timed = {}
    for key in sorted({*keys[::step], chosen}):  # one at a time: models in turn evict each other's weights
        if isinstance(built, EarlyExit):
            model = with_threshold(built.model, key)
        else:
            model = with_keep(built.model, int(key))
        path.write_bytes(model.SerializeToString())
        alone = measure_per_input(
            {DYNAMIC: path}, feeds[:SWEEP_FEEDS], reference=DYNAMIC, threads=threads, rounds=2
        )
        timed[key] = alone.models[DYNAMIC].mean_ms
    return timed


def _described(built: _Built, inputs: list[model_pb2.InputSpec], samples: int, seed: int) -> tuple[str, str]:
    """The measured inputs and the calibration inputs, in words."""
    same = built.calibration is built.measured
    total = len(built.calibration) + (0 if same else len(built.measured))
    source = synthetic_description(inputs, total, seed) if built.synthetic else "eval split"
    if same:
        return f"{source}, {samples} samples", f"the same {total} sample(s) as measured (too few to split)"
    return (
        f"{source}, measurement half: {samples} samples (odd positions)",
        f"{source}, calibration half: {len(built.calibration)} samples (even positions)",
    )


def _measure(
    built: _Built,
    original: Path,
    dynamic: Path,
    inputs: list[model_pb2.InputSpec],
    settings: RunSettings,
    workdir: Path,
) -> report_pb2.DynamicReport:
    """Time both models per input on the measurement half; the report section."""
    split = built.measured
    feeds = _feeds(split, inputs)
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
    labels = split.labels[: len(feeds) * batch] if split.labels is not None else None
    measured = measure_per_input(
        {ORIGINAL: original, DYNAMIC: dynamic},
        feeds,
        reference=ORIGINAL,
        labels=labels,
        threads=settings.threads,
        max_seconds=settings.max_seconds,
    )
    sweep_ms = _sweep_ms(built.form, feeds, settings.threads, workdir / SCRATCH_DIR / "dynamic_sweep")
    described, calibration = _described(built, inputs, len(feeds) * batch, settings.seed)
    protocol = describe_protocol(len(feeds), batch, settings.threads, measured.rounds)
    protocol += (
        f"; sweep points timed per input one model at a time, 2 rounds, on the first "
        f"{min(len(feeds), SWEEP_FEEDS)} feed(s)"
    )
    form = built.form
    if isinstance(form, EarlyExit):
        report = dynamic_report(form, measured, described, protocol, sweep_ms, BATCH_RULES["early_exit"])
    else:
        report = token_report(form, measured, described, protocol, sweep_ms, BATCH_RULES["token_skip"])
    report.calibration_inputs = calibration
    report.calibration_samples = len(built.calibration) if form.calibrated else 0
    return report
