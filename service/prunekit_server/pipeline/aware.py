"""The quantization-aware variants: each quantized source fine-tuned under fake quantization first.

For every source model (``pruned``, and ``original`` when it is quantized too) and every static INT8
config of the plan, :func:`~prunekit_server.training.aware.aware_training` trains the source on the
job's train split (ranges from the calibration feeds), the float result is written to the scratch
directory and quantized by the same config as the post-training variant: ``<source>_<suffix>_qat``
(``pruned_int8_qat`` beside ``pruned_int8``), so the report holds PTQ and QAT side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from prunekit.spec.quantize_configs import StaticInt8Config
from prunekit.v1 import model_pb2

from ..progress import ProgressFn
from ..quantization import QuantizeContext, QuantizePlan, quantize
from ..report.facts import Variant
from ..training.aware import aware_training
from .job_data import LoadedData
from .variants import SCRATCH_DIR, artifact_dir, model_file

QAT_SUFFIX = "qat"
"""Appended to a post-training variant's name for its quantization-aware twin."""


def aware_variants(
    sources: Sequence[tuple[str, Path]],
    plan: QuantizePlan,
    context: QuantizeContext,
    loaded: LoadedData,
    inputs: Sequence[model_pb2.InputSpec],
    workdir: Path,
    progress: ProgressFn,
    *,
    at: float,
) -> list[Variant]:
    """The QAT variants of the module docstring; none without ``plan.aware`` or train data."""
    statics = [c for c in plan.configs if isinstance(c, StaticInt8Config)]
    if plan.aware is None or loaded.train is None or not len(loaded.train) or not statics:
        return []
    out_dir, scratch = artifact_dir(workdir), workdir / SCRATCH_DIR
    scratch.mkdir(parents=True, exist_ok=True)
    feeds = [dict(feed) for feed in context.calibration]
    variants: list[Variant] = []
    for source, path in sources:
        progress("quantize", at, f"{source}: quantization-aware training, {plan.aware.steps} steps")
        trained = aware_training(onnx.load(str(path)), inputs, loaded.train, loaded.eval, plan.aware, feeds)
        float_path = scratch / f"{source}_{QAT_SUFFIX}_float.onnx"
        onnx.save(trained, str(float_path))
        for config in statics:
            name = f"{source}_{config.suffix}_{QAT_SUFFIX}"
            result = quantize(float_path, out_dir / f"{name}.onnx", config, context)
            files = [model_file(model_pb2.MODEL_FORMAT_ONNX, result.path)]
            variants.append(Variant(name, source, result.path, files, quantization=result.details))
    return variants
