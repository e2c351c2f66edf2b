"""evaluate_models: fidelity and accuracy on eval data, synthetic fidelity without it; real ORT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

from prunekit.v1 import model_pb2
from prunekit_server.measure.evaluation import NO_EVAL_DATA, NO_SUPERVISION, evaluate_models
from prunekit_server.measure.names import BASELINE
from prunekit_server.measure.quality import QualityRule, compare_models, synthetic_inputs
from prunekit_server.measure.settings import RunSettings, synthetic_description
from prunekit_server.training.datasets import Dataset
from tests.service.measure.test_accuracy import linear_model

CLASSES = 8
FEATURES = 16


def settings(batch: int = 4) -> RunSettings:
    return RunSettings(
        batch_sizes=(batch,),
        threads=1,
        warmup=1,
        iterations=3,
        max_seconds=0.2,
        device="cpu",
        samples=3,
        seed=7,
        rule=QualityRule(),
    )


def classifier_models(root: Path, *, noise: float = 1.0) -> dict[str, Path]:
    """The original (static batch 4), a copy with a dynamic batch, a noisy copy, a dynamic-int8 copy."""
    weight = np.random.default_rng(0).standard_normal((FEATURES, CLASSES))
    noisy = weight + noise * np.random.default_rng(1).standard_normal(weight.shape)
    models = {
        "original": linear_model(root / "original.onnx", weight, batch=4),
        "dynamic": linear_model(root / "dynamic.onnx", weight, batch="N"),
        "noisy": linear_model(root / "noisy.onnx", noisy, batch=4),
    }
    quantize_dynamic(str(models["original"]), str(root / "int8.onnx"), weight_type=QuantType.QInt8)
    models["int8"] = root / "int8.onnx"
    return models


def eval_split(samples: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and the original's own predictions as labels (so its accuracy is 1 and a variant's equals its
    top-1 agreement)."""
    x = np.random.default_rng(2).standard_normal((samples, FEATURES)).astype(np.float32)
    weight = np.random.default_rng(0).standard_normal((FEATURES, CLASSES)).astype(np.float32)
    return x, np.argmax(x @ weight, axis=1).astype(np.int64)


def test_accuracy_and_fidelity_on_labelled_eval_data(tmp_path: Path) -> None:
    models = classifier_models(tmp_path)
    x, labels = eval_split()
    variants = {k: v for k, v in models.items() if k != "original"}
    ev = evaluate_models(models["original"], variants, Dataset(["x"], [x], label=labels), [], settings())
    assert not ev.synthetic
    assert ev.quality_inputs == "eval split, 42 samples"
    assert ev.accuracy_note == ""
    assert set(ev.accuracies) == {BASELINE, "dynamic", "noisy", "int8"}
    assert ev.accuracies[BASELINE].top1 == 1.0
    assert ev.accuracies[BASELINE].top5 == 1.0
    assert ev.accuracies[BASELINE].samples == 42
    exact = ev.qualities["dynamic"]
    assert (exact.top1_agreement, exact.max_abs_error, exact.samples) == (1.0, 0.0, 42)
    assert exact.cosine_similarity == pytest.approx(1.0)
    assert ev.accuracies["dynamic"].top1 == 1.0
    noisy = ev.qualities["noisy"]
    assert noisy.top1_agreement < 0.9
    assert ev.accuracies["noisy"].top1 == pytest.approx(noisy.top1_agreement)
    assert ev.accuracies["int8"].top1 == pytest.approx(ev.qualities["int8"].top1_agreement)
    assert 0.0 < ev.qualities["int8"].max_abs_error < 0.5
    assert ev.qualities["int8"].cosine_similarity > 0.99


def test_targets_give_mse_for_every_model(tmp_path: Path) -> None:
    models = classifier_models(tmp_path)
    x, _ = eval_split(10)
    weight = np.random.default_rng(0).standard_normal((FEATURES, CLASSES)).astype(np.float32)
    target = (x @ weight + 1.0).astype(np.float32)
    ev = evaluate_models(
        models["original"], {"noisy": models["noisy"]}, Dataset(["x"], [x], target=target), [], settings()
    )
    assert ev.accuracies[BASELINE].mse == pytest.approx(1.0, rel=1e-4)
    assert ev.accuracies[BASELINE].top1 is None
    noisy_mse = ev.accuracies["noisy"].mse
    assert noisy_mse is not None
    assert noisy_mse > 1.0


def test_unlabelled_eval_data_gives_fidelity_but_no_accuracy(tmp_path: Path) -> None:
    models = classifier_models(tmp_path)
    x, _ = eval_split(9)
    ev = evaluate_models(models["original"], {"noisy": models["noisy"]}, Dataset(["x"], [x]), [], settings())
    assert ev.accuracies == {}
    assert ev.accuracy_note == NO_SUPERVISION
    assert ev.qualities["noisy"].samples == 9
    assert ev.quality_inputs == "eval split, 9 samples"


def test_labels_that_do_not_fit_the_output_say_why(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "total.onnx", np.eye(4), batch=2, total=True)
    rows = np.eye(4, dtype=np.float32)[[0, 1, 2]]
    data = Dataset(["x"], [rows], target=np.zeros((3, 5), np.float32))
    ev = evaluate_models(model, {"same": model}, data, [], settings(batch=2))
    assert ev.accuracies == {}
    assert "does not fit the eval data's targets" in ev.accuracy_note
    assert ev.qualities["same"].top1_agreement == 1.0


def test_without_eval_data_fidelity_is_measured_on_the_synthetic_feeds(tmp_path: Path) -> None:
    models = classifier_models(tmp_path)
    spec = model_pb2.InputSpec(name="x", shape=[4, FEATURES], dtype=model_pb2.DATA_TYPE_FLOAT32)
    feeds = synthetic_inputs([spec], 3, 7)
    ev = evaluate_models(models["original"], {"noisy": models["noisy"]}, None, feeds, settings())
    assert ev.synthetic
    assert ev.accuracies == {}
    assert ev.accuracy_note == NO_EVAL_DATA
    assert ev.quality_inputs == synthetic_description([spec], 3, 7)
    assert ev.qualities["noisy"] == compare_models(models["original"], models["noisy"], feeds)
    with pytest.raises(ValueError, match="no eval data and no synthetic feeds"):
        evaluate_models(models["original"], {"noisy": models["noisy"]}, None, [], settings())
