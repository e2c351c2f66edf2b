"""Accuracy and batched outputs of tiny ONNX models whose answers are known by hand, in real ORT sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunekit_server.measure.accuracy import (
    Accuracy,
    AccuracyRule,
    accuracy_of,
    measure_accuracy,
    run_batched,
    static_batch,
)
from prunekit_server.measure.latency import cpu_session


def linear_model(
    path: Path, weight: np.ndarray, *, batch: int | str = "N", total: bool = False, bias: float = 0.0
) -> Path:
    """``logits = x @ weight + bias`` on ``x`` ``[batch, in]``; ``total`` adds a 0-d sum of the logits."""
    features, classes = weight.shape
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])]
    if total:
        nodes.append(helper.make_node("ReduceSum", ["logits"], ["total"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, []))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        outputs,
        [
            numpy_helper.from_array(weight.astype(np.float32), "w"),
            numpy_helper.from_array(np.full(classes, bias, np.float32), "b"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _hand_data() -> tuple[np.ndarray, np.ndarray]:
    """Ten one-hot rows over 4 classes (identity model: the prediction is the hot index), 7 labels right."""
    hot = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    x = np.eye(4, dtype=np.float32)[hot]
    labels = hot.copy()
    labels[[1, 4, 8]] = [0, 3, 2]
    return x, labels.astype(np.int64)


@pytest.mark.parametrize("batch", [4, "N"])
def test_top1_of_a_known_model_on_known_data(tmp_path: Path, batch: int | str) -> None:
    model = linear_model(tmp_path / "m.onnx", np.eye(4), batch=batch)
    x, labels = _hand_data()
    out = run_batched(cpu_session(model), {"x": x}, batch_size=3)
    acc = measure_accuracy(out, label=labels)
    assert acc == Accuracy(top1=0.7, top5=None, mse=None, samples=10)


def test_top5_only_above_five_classes() -> None:
    labels = np.array([0, 1, 2])
    five = np.array([[5, 4, 3, 2, 1], [5, 4, 3, 2, 1], [1, 2, 3, 4, 5]], dtype=np.float64)
    assert accuracy_of(five, labels).top5 is None
    assert accuracy_of(five, labels).top1 == pytest.approx(1 / 3)
    six = np.array(
        [
            [6, 5, 4, 3, 2, 1],  # label 0: top-1
            [1, 2, 3, 4, 5, 6],  # label 1: 5th highest, in the top-5
            [6, 5, 1, 4, 3, 2],  # label 2: lowest, outside
        ],
        dtype=np.float64,
    )
    acc = accuracy_of(six, labels)
    assert acc.top1 == pytest.approx(1 / 3)
    assert acc.top5 == pytest.approx(2 / 3)


def test_mse_on_targets(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "double.onnx", 2 * np.eye(3), batch="N")
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    target = (2 * x + 0.5).reshape(5, 3, 1)
    out = run_batched(cpu_session(model), {"x": x}, batch_size=2)
    acc = measure_accuracy(out, target=target)
    assert acc.mse == pytest.approx(0.25)
    assert (acc.top1, acc.top5, acc.samples) == (None, None, 5)
    with pytest.raises(ValueError, match="do not fit"):
        measure_accuracy(out, target=np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="labels or targets"):
        measure_accuracy(out)


def test_static_and_dynamic_batches_agree_with_a_partial_last_batch(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).standard_normal((6, 5))
    x = np.random.default_rng(1).standard_normal((10, 6)).astype(np.float32)
    expected = x.astype(np.float64) @ weight.astype(np.float32).astype(np.float64)
    static = cpu_session(linear_model(tmp_path / "static.onnx", weight, batch=4))
    dynamic = cpu_session(linear_model(tmp_path / "dynamic.onnx", weight, batch="N"))
    assert static_batch(static) == 4
    assert static_batch(dynamic) is None
    for session in (static, dynamic):
        out = run_batched(session, {"x": x}, batch_size=4)
        assert out.samples == 10
        assert out.first is not None
        assert out.first.shape == (10, 5)
        np.testing.assert_allclose(out.first, expected, rtol=1e-5, atol=1e-5)
        assert len(out.items) == 10
        assert all(item[0].shape == (1, 5) for item in out.items)


def test_outputs_without_a_batch_dimension_are_kept_per_run(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "total.onnx", np.eye(4), batch=4, total=True)
    x, labels = _hand_data()
    out = run_batched(cpu_session(model), {"x": x}, batch_size=4)
    assert len(out.items) == 3  # 4 + 4 + 2 (padded to 4) samples
    assert out.items[2][0].shape == (2, 4)
    assert out.items[2][1].shape == ()
    assert measure_accuracy(out, label=labels).top1 == pytest.approx(0.7)


def test_labels_must_fit_one_score_per_class(tmp_path: Path) -> None:
    x, labels = _hand_data()
    with pytest.raises(ValueError, match="class id 4 is out of range for 4 classes"):
        accuracy_of(x.astype(np.float64), np.where(labels == 3, 4, labels))
    column = run_batched(cpu_session(linear_model(tmp_path / "m.onnx", np.eye(4))), {"x": x}, batch_size=4)
    assert column.first_shape == (4,)
    grid = type(column)(column.items, column.first, column.samples, first_shape=(2, 2))
    with pytest.raises(ValueError, match="one score per class"):
        measure_accuracy(grid, label=labels)


def test_missing_input_array_is_an_error(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "m.onnx", np.eye(4))
    with pytest.raises(ValueError, match="no array for model input 'x'"):
        run_batched(cpu_session(model), {"input": np.zeros((2, 4), np.float32)}, batch_size=2)


def test_accuracy_rule() -> None:
    base = Accuracy(0.90, None, None, 100)
    rule = AccuracyRule(max_drop=0.02)
    assert rule.met_by(Accuracy(0.88, None, None, 100), base) is True
    assert rule.met_by(Accuracy(0.87, None, None, 100), base) is False
    assert rule.met_by(Accuracy(0.95, None, None, 100), base) is True
    assert AccuracyRule().met_by(Accuracy(0.1, None, None, 100), base) is None
    assert rule.met_by(Accuracy(None, None, 0.5, 100), Accuracy(None, None, 0.1, 100)) is None
    assert rule.met_by(None, base) is None
    assert rule.judges(base)
    assert not rule.judges(None)
    assert "2 points" in rule.describe()
