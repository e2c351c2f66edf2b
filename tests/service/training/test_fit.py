"""Fine-tuning and evaluation on models and data off the digits path: fixed batch sizes, token ids,
labels or targets that do not fit the model's output, tiny datasets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pipeline import JobData, StagedShard, run_optimization
from prunekit_server.progress import no_progress
from tests.zoo import cached

from .finetune_cases import variant

pytestmark = pytest.mark.usefixtures("one_torch_thread")


UNSTRUCTURED: dict[str, Any] = {"method": spec_pb2.PRUNE_METHOD_UNSTRUCTURED, "ratio": 0.5}


def _job(
    tmp_path: Path,
    model: Path,
    arrays: Mapping[str, np.ndarray],
    *,
    finetune: spec_pb2.FinetuneSpec | None = None,
    quantize: spec_pb2.QuantizeSpec | None = None,
    eval_fraction: float = 0.0,
) -> report_pb2.OptimizationReport:
    shard = tmp_path / "data" / "train.npz"
    shard.parent.mkdir(parents=True, exist_ok=True)
    np.savez(shard, **dict(arrays))  # type: ignore[arg-type]
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(**UNSTRUCTURED),
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=2, max_seconds=0.1),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
        data=spec_pb2.DataSpec(train=["s3://bucket/data/"], eval_fraction=eval_fraction),
    )
    if finetune is not None:
        spec.finetune.CopyFrom(finetune)
    if quantize is not None:
        spec.quantize.CopyFrom(quantize)
    data = JobData(train=[StagedShard(shard, uri="s3://bucket/data/train.npz")])
    workdir = tmp_path / "work"
    result = run_optimization(
        model,
        model_pb2.MODEL_FORMAT_ONNX,
        spec,
        workdir,
        no_progress,
        data=data,
        checkpoint_dir=workdir / "ck",
    )
    return result.report


def _ids(n: int, classes: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, 40, (n, 16)).astype(np.int64), "label": rng.integers(0, classes, n)}


def _rejected(tmp_path: Path, model: Path, arrays: Mapping[str, np.ndarray]) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        _job(tmp_path, model, arrays, finetune=spec_pb2.FinetuneSpec(steps=2, batch_size=8))
    assert (caught.value.code.name, caught.value.reason) == ("INVALID_ARGUMENT", "INVALID_DATASET")
    return caught.value


def test_a_model_that_runs_only_at_its_batch_size_is_tuned_and_evaluated_in_chunks(tmp_path: Path) -> None:
    model = cached("vit", "dynamo")  # static batch 2, baked into a constant (the class token's expand)
    assert onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    x = np.random.default_rng(0).standard_normal((13, 3, 32, 32)).astype(np.float32)
    finetune = spec_pb2.FinetuneSpec(steps=3, batch_size=5)
    report = _job(tmp_path, model, {"input": x}, finetune=finetune)

    (only,) = report.finetune.runs
    assert (only.steps, only.metric) == (3, "top1_agreement")
    assert report.finetune.quality_before.samples == variant(report).stats.quality.samples == 3


def test_token_ids_train_and_quantized_variants_get_accuracy(tmp_path: Path) -> None:
    finetune = spec_pb2.FinetuneSpec(steps=3, batch_size=8)
    quantize = spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8)
    report = _job(tmp_path, cached("bert", "legacy"), _ids(40), finetune=finetune, quantize=quantize)

    assert report.finetune.runs[0].steps == 3
    assert report.baseline.accuracy.samples == 8
    for name in ("pruned", "pruned_int8_dynamic"):
        assert variant(report, name).stats.accuracy.samples == 8
        assert not variant(report, name).stats.accuracy.HasField("top5")  # 4 classes


def test_labels_out_of_the_models_class_range_are_invalid(tmp_path: Path) -> None:
    arrays = _ids(40, classes=9)
    error = _rejected(tmp_path, cached("bert", "legacy"), arrays)
    fields = {v.field: v.description for v in error.violations}
    assert "out of range for the 4 outputs" in fields["data.train:label"]


def test_labels_for_an_output_without_one_score_per_class(tmp_path: Path) -> None:
    model = cached("unet", "legacy")  # per-pixel output (2, 8, 8)
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.standard_normal((20, 3, 16, 16)).astype(np.float32),
        "label": rng.integers(0, 2, 20),
    }
    error = _rejected(tmp_path / "tuned", model, arrays)
    assert "one score per class" in error.violations[0].description

    report = _job(tmp_path / "plain", model, arrays)
    assert not report.baseline.HasField("accuracy")
    (note,) = [w.message for w in report.warnings if w.code == "ACCURACY_NOT_MEASURED"]
    assert "one score per class" in note


@pytest.mark.parametrize("shape", [(40,), (40, 3)], ids=["one_value", "three_values"])
def test_targets_that_do_not_fit_the_output_are_invalid(tmp_path: Path, shape: tuple[int, ...]) -> None:
    arrays = _ids(40)
    del arrays["label"]
    arrays["target"] = np.zeros(shape, np.float32)
    error = _rejected(tmp_path, cached("bert", "legacy"), arrays)
    assert "does not fit the model's first output" in error.violations[0].description


def test_an_eval_fraction_keeps_a_training_sample_for_calibration(tmp_path: Path) -> None:
    model = cached("resnet", "legacy")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    quantize = spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8)
    report = _job(tmp_path, model, {"image": x}, quantize=quantize, eval_fraction=0.9)

    assert (report.data.train_samples, report.data.eval_samples) == (1, 1)
    assert variant(report, "pruned_int8").stats.quality.samples == 1
