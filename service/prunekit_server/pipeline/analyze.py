"""The AnalyzeModel pipeline: ingest a model, describe it, and on request measure its sensitivity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prunekit.v1 import model_pb2

from ..errors import ServiceError
from ..measure.analysis import analyze
from ..measure.quality import synthetic_inputs
from ..measure.settings import synthetic_description
from ..model_caps import ModelCaps
from ..modelio.ingest import ingest
from ..pruning.sensitivity import DEFAULT_RATIOS, Sensitivity, model_sensitivity

SENSITIVITY_SAMPLES = 16
"""Synthetic feeds the sensitivity analysis compares outputs on."""
SENSITIVITY_SEED = 0
SENSITIVITY_BUDGET_S = 240.0
"""Groups not started after this long are skipped (the analysis worker's default deadline is 300 s)."""


def run_analysis(
    model_path: Path,
    model_format: int,
    inputs: Sequence[model_pb2.InputSpec],
    workdir: Path,
    *,
    sensitivity: bool = False,
    sensitivity_ratios: Sequence[float] = (),
    caps: ModelCaps | None = None,
) -> model_pb2.ModelAnalysis:
    """Validate the model at ``model_path`` and return its analysis.

    ``size_bytes`` is the upload's size; warnings from intake come before those of
    the analysis. With ``sensitivity``, ``analysis.sensitivity`` gets one entry per
    prunable layer group (see :mod:`~prunekit_server.pruning.sensitivity`), measured
    on synthetic inputs at ``sensitivity_ratios`` (default 0.1, 0.2, 0.3, 0.5, 0.7);
    groups that could not be measured are named in a ``SENSITIVITY_SKIPPED`` warning.
    Raises ServiceError as :func:`~prunekit_server.modelio.ingest.ingest` does (under ``caps``).
    """
    ingested = ingest(model_path, model_format, inputs, workdir, caps=caps)
    analysis = analyze(
        ingested.onnx_model,
        ingested.inputs,
        source_format=model_format,
        size_bytes=model_path.stat().st_size,
    )
    warnings = [*ingested.warnings, *analysis.warnings]
    if sensitivity:
        feeds = synthetic_inputs(ingested.inputs, SENSITIVITY_SAMPLES, SENSITIVITY_SEED)
        try:
            found = model_sensitivity(
                ingested.onnx_model,
                ingested.inputs,
                feeds,
                tuple(sensitivity_ratios) or DEFAULT_RATIOS,
                budget_s=SENSITIVITY_BUDGET_S,
            )
        except ServiceError as exc:  # the model cannot become a GraphModule: the rest of the analysis stands
            warnings.append(f"SENSITIVITY_UNAVAILABLE: {exc.message}")
        else:
            analysis.sensitivity.extend(sensitivity_protos(found))
            described = synthetic_description(ingested.inputs, SENSITIVITY_SAMPLES, SENSITIVITY_SEED)
            warnings += sensitivity_warnings(found, described)
    del analysis.warnings[:]
    analysis.warnings.extend(warnings)
    return analysis


def sensitivity_protos(found: Sensitivity) -> list[model_pb2.LayerSensitivity]:
    """One ``LayerSensitivity`` per curve, in the curves' order."""
    return [
        model_pb2.LayerSensitivity(
            layer=curve.layer,
            ratios=list(curve.ratios),
            cosine_similarity=list(curve.cosine_similarity),
            top1_agreement=list(curve.top1_agreement),
            channels=curve.channels,
        )
        for curve in found.curves
    ]


def sensitivity_warnings(found: Sensitivity, inputs: str) -> list[str]:
    """What the reader of the curves must know: the (synthetic) ``inputs``, and the groups left out."""
    out = [
        f"SENSITIVITY_SYNTHETIC: sensitivity measured on {inputs} as agreement with the original "
        f"model, in {found.seconds:.1f} s"
    ]
    if found.skipped:
        shown = "; ".join(found.skipped[:10]) + (" ..." if len(found.skipped) > 10 else "")
        out.append(f"SENSITIVITY_SKIPPED: {len(found.skipped)} group(s) not measured: {shown}")
    return out
