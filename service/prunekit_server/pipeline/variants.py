"""Making a job's variants: the pruned model, then each quantization of each source model.

Variant names are stable (pipelines key on them): ``pruned`` for the pruned
model (``dynamic`` for prune method DYNAMIC, made by :mod:`.dynamic`); ``<source>_<suffix>``
for a quantization of ``pruned`` or ``original`` (``pruned_int8``, ``pruned_int8_dynamic``,
``pruned_fp16``, ``original_int8``...), the suffix coming from the quantization config's type.
Every file is written under ``workdir/artifacts``; scratch files under ``workdir/scratch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from prunekit.v1 import model_pb2, report_pb2, spec_pb2

from ..hashing import sha256_file
from ..measure.names import PRUNED
from ..measure.quality import synthetic_inputs
from ..measure.settings import RunSettings, synthetic_description
from ..modelio.ingest import IngestedModel
from ..modelio.pruned_torchscript import write_pruned_torchscript
from ..modelio.torchscript import write_torchscript_with_weights
from ..progress import ProgressFn
from ..pruning import (
    BatchNormRefresh,
    PruneConfig,
    PruneContext,
    PruneResult,
    apply_tensors,
    prune,
)
from ..quantization import QuantizeContext, QuantizePlan, quantize
from ..report import stats as rs
from ..report.facts import Pruned, Variant
from ..spec_check import prune_config_of
from .job_data import LoadedData, data_feeds, describe_feeds

ARTIFACT_DIR = "artifacts"
SCRATCH_DIR = "scratch"
MAX_PRUNE_FEEDS = 16
"""At most this many synthetic feeds rank channels (data-driven importance) and refresh BatchNorms."""


def model_file(fmt: model_pb2.ModelFormat.ValueType, path: Path) -> report_pb2.ModelFile:
    """The report entry of one written file (its URI is filled by the server)."""
    return rs.model_file(fmt, path.name, sha256_file(path), path.stat().st_size)


def artifact_dir(workdir: Path) -> Path:
    """``workdir/artifacts``, created."""
    out = workdir / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    return out


def prune_context(
    ingested: IngestedModel,
    samples: int,
    seed: int,
    *,
    data_feeds: Sequence[dict[str, np.ndarray]] = (),
    recover: Callable[[Any], None] | None = None,
) -> PruneContext:
    """What a pruning method may use: the inputs, feeds and the recovery hook between iterative rounds.

    Feeds are ``data_feeds`` (from the job's train split, ``synthetic=False``)
    when given, else synthetic ones (the evaluation's first
    :data:`MAX_PRUNE_FEEDS`). ``recover`` defaults to a BatchNorm statistics
    refresh on the feeds.
    """
    inputs = tuple(ingested.inputs)
    synthetic = not data_feeds
    feeds = (
        tuple(data_feeds)
        if data_feeds
        else tuple(synthetic_inputs(inputs, min(samples, MAX_PRUNE_FEEDS), seed))
    )
    hook = recover if recover is not None else BatchNormRefresh(inputs, feeds)
    return PruneContext(inputs=inputs, feeds=feeds, synthetic=synthetic, recover=hook)


def run_prune(
    ingested: IngestedModel, prune_spec: spec_pb2.PruneSpec, context: PruneContext
) -> tuple[PruneConfig, PruneResult, onnx.ModelProto]:
    """Prune the ingested model: the config, the method's result and the pruned model (nothing written).

    A method that changes shapes returns the whole new model (``result.model``)
    and its GraphModule (``result.module``); one that only changes values
    returns new tensors, applied here.
    """
    config = prune_config_of(prune_spec)
    result = prune(ingested.onnx_model, config, context)
    model = result.model if result.model is not None else apply_tensors(ingested.onnx_model, result.tensors)
    return config, result, model


def write_pruned(
    ingested: IngestedModel,
    config: PruneConfig,
    result: PruneResult,
    model: onnx.ModelProto,
    workdir: Path,
    progress: ProgressFn,
    *,
    fraction: float = 0.25,
) -> Pruned:
    """Write ``model`` as ``pruned.onnx`` (and ``pruned.pt`` for TorchScript input).

    For TorchScript input, value changes (``result.tensors``) are
    written into the user's module; shape changes go through
    :func:`~prunekit_server.modelio.pruned_torchscript.write_pruned_torchscript`
    (the user's module when it takes the new shapes, else a trace, with a
    ``TORCHSCRIPT_OUTPUT`` warning saying which). A method that returns a new
    model without its GraphModule gets a ``TORCHSCRIPT_NOT_WRITTEN`` warning.
    """
    out_dir = artifact_dir(workdir)
    onnx_out = out_dir / f"{PRUNED}.onnx"
    onnx_out.write_bytes(model.SerializeToString())
    files = [model_file(model_pb2.MODEL_FORMAT_ONNX, onnx_out)]
    warnings: list[str] = []
    ts_out: Path | None = None
    if ingested.source_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT and result.module is not None:
        progress("prune", fraction, "writing the TorchScript model")
        ts_out = out_dir / f"{PRUNED}.pt"
        warnings += write_pruned_torchscript(
            ingested.source_path, result.module, ingested.onnx_model, model, ingested.inputs, ts_out
        )
        files.insert(0, model_file(model_pb2.MODEL_FORMAT_TORCHSCRIPT, ts_out))
    elif ingested.source_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT and result.model is not None:
        warnings.append(
            "TORCHSCRIPT_NOT_WRITTEN: the pruning method changed shapes, which TorchScript weight write-back "
            "cannot express; the pruned model is delivered as ONNX"
        )
    elif ingested.source_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        progress("prune", fraction, "writing the TorchScript model")
        ts_out = out_dir / f"{PRUNED}.pt"
        unmapped = write_torchscript_with_weights(
            ingested.source_path, result.tensors, ts_out, original_onnx=ingested.onnx_model
        )
        warnings += unmapped
        files.insert(0, model_file(model_pb2.MODEL_FORMAT_TORCHSCRIPT, ts_out))
    variant = Variant(name=PRUNED, source=PRUNED, onnx_path=onnx_out, files=files, torchscript_path=ts_out)
    return Pruned(variant=variant, model=model, result=result, config=config, warnings=warnings)


def calibration_samples_needed(plan: QuantizePlan) -> int:
    """The most calibration feeds any config of the plan uses (0 when none calibrates)."""
    return max((config.calibration_samples_needed() for config in plan.configs), default=0)


def quantized_variants(
    sources: Sequence[tuple[str, Path]],
    plan: QuantizePlan,
    context: QuantizeContext,
    workdir: Path,
    progress: ProgressFn,
    *,
    start: float,
    end: float,
) -> tuple[list[Variant], list[str]]:
    """Quantize every source model with every config of ``plan``: the variants and the warnings.

    ``sources`` are ``(source name, ONNX path)`` pairs. Progress moves from
    ``start`` to ``end``. Warnings repeated by several variants are kept once.
    """
    out_dir = artifact_dir(workdir)
    jobs = [(source, path, config) for source, path in sources for config in plan.configs]
    variants: list[Variant] = []
    warnings: list[str] = []
    for index, (source, path, config) in enumerate(jobs):
        name = f"{source}_{config.suffix}"
        progress("quantize", start + (end - start) * index / len(jobs), f"{name}: {config.mode}")
        output = out_dir / f"{name}.onnx"
        result = quantize(path, output, config, context)
        warnings += [w for w in result.warnings if w not in warnings]
        variants.append(
            Variant(
                name=name,
                source=source,
                onnx_path=result.path,
                files=[model_file(model_pb2.MODEL_FORMAT_ONNX, result.path)],
                quantization=result.details,
                auto_candidate=plan.auto,
            )
        )
    return variants, warnings


def calibration_context(
    loaded: LoadedData, inputs: list[model_pb2.InputSpec], needed: int, settings: RunSettings, workdir: Path
) -> tuple[QuantizeContext, str]:
    """The calibration context (``needed`` feeds of the train split, else synthetic ones) and, when
    synthetic, what they are in words ("" for the train split or when nothing calibrates)."""
    if needed and loaded.train is not None and len(loaded.train):
        calibration = data_feeds(loaded.train, inputs, needed)
        return QuantizeContext(workdir / SCRATCH_DIR, calibration, describe_feeds(calibration, "train")), ""
    feeds = synthetic_inputs(inputs, needed, settings.calibration_seed) if needed else []
    synthetic = synthetic_description(inputs, needed, settings.calibration_seed) if needed else ""
    return QuantizeContext(workdir / SCRATCH_DIR, feeds, synthetic), synthetic
