"""Fidelity of a candidate to a reference, in real ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure.quality import SYNTHETIC_INT_HIGH, compare_models, synthetic_inputs
from tests.samples import write_sample_model


def _scale_model(path: Path, scale: list[float], *, out_shape: list[int] | None = None) -> Path:
    """y = x * scale (and a second output y2 = x), x of shape [2, len(scale)]."""
    n = len(scale)
    nodes = [helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("Identity", ["x"], ["y2"])]
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s")]
    if out_shape is not None:
        inits.append(numpy_helper.from_array(np.array(out_shape, np.int64), "shape"))
        nodes[0] = helper.make_node("Mul", ["x", "s"], ["m"])
        nodes.append(helper.make_node("Reshape", ["m", "shape"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, n])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, None),
        ],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    write_sample_model(path, "onnx", "mlp")
    return path


def _inputs(
    shape: list[int], dtype: model_pb2.DataType.ValueType = model_pb2.DATA_TYPE_FLOAT32, name: str = "input"
) -> model_pb2.InputSpec:
    return model_pb2.InputSpec(name=name, shape=shape, dtype=dtype)


def test_identical_models_agree_exactly(mlp: Path) -> None:
    feeds = synthetic_inputs([_inputs([4, 64])], samples=5, seed=0)
    quality = compare_models(mlp, mlp, feeds)
    assert quality.top1_agreement == 1.0
    assert quality.cosine_similarity == pytest.approx(1.0, abs=1e-12)
    assert quality.max_abs_error == 0.0
    assert quality.samples == 5


def test_perturbed_model_scores_lower(mlp: Path, tmp_path: Path) -> None:
    model = onnx.load(str(mlp))
    rng = np.random.default_rng(3)
    for tensor in model.graph.initializer:
        value = numpy_helper.to_array(tensor)
        noisy = value + rng.standard_normal(value.shape).astype(np.float32) * 0.5
        tensor.CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    onnx.save(model, str(tmp_path / "noisy.onnx"))
    feeds = synthetic_inputs([_inputs([8, 64])], samples=4, seed=1)
    quality = compare_models(mlp, tmp_path / "noisy.onnx", feeds)
    assert quality.cosine_similarity < 0.99
    assert quality.top1_agreement < 1.0
    assert quality.max_abs_error > 0.1


def test_top1_is_compared_per_row_and_error_covers_all_outputs(tmp_path: Path) -> None:
    ref = _scale_model(tmp_path / "ref.onnx", [1, 1, 1])
    cand = _scale_model(tmp_path / "cand.onnx", [1, 1, 10])
    feeds = [{"x": np.array([[3, 2, 1], [1, 2, 3]], np.float32)}]
    quality = compare_models(ref, cand, feeds)
    assert quality.top1_agreement == 0.5
    assert quality.max_abs_error == pytest.approx(27.0)
    expected = (9 + 4 + 10 + 1 + 4 + 90) / (np.sqrt(28) * np.sqrt(9 + 4 + 100 + 1 + 4 + 900))
    assert quality.cosine_similarity == pytest.approx(expected)


def test_different_output_shapes_are_an_error(tmp_path: Path) -> None:
    ref = _scale_model(tmp_path / "ref.onnx", [1, 1, 1, 1])
    cand = _scale_model(tmp_path / "cand.onnx", [1, 1, 1, 1], out_shape=[4, 2])
    with pytest.raises(ValueError, match="shapes"):
        compare_models(ref, cand, [{"x": np.ones((2, 4), np.float32)}])
    with pytest.raises(ValueError, match="no feeds"):
        compare_models(ref, ref, [])


def test_synthetic_inputs_are_deterministic_and_typed() -> None:
    specs = [
        _inputs([2, 3]),
        _inputs([2, 5], model_pb2.DATA_TYPE_INT64, "ids"),
        _inputs([4], model_pb2.DATA_TYPE_FLOAT16, "half"),
        _inputs([3], model_pb2.DATA_TYPE_BOOL, "mask"),
        _inputs([1, 2], model_pb2.DATA_TYPE_UNSPECIFIED, "plain"),
    ]
    first = synthetic_inputs(specs, samples=3, seed=7)
    again = synthetic_inputs(specs, samples=3, seed=7)
    other = synthetic_inputs(specs, samples=3, seed=8)
    assert len(first) == 3
    for a, b in zip(first, again, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(first[0]["input"], other[0]["input"])
    feed = first[0]
    assert feed["input"].dtype == np.float32
    assert feed["input"].shape == (2, 3)
    assert feed["ids"].dtype == np.int64
    assert all(0 <= v < SYNTHETIC_INT_HIGH for f in first for v in f["ids"].ravel())
    assert feed["half"].dtype == np.float16
    assert feed["mask"].dtype == np.bool_
    assert feed["plain"].dtype == np.float32
    big = synthetic_inputs([_inputs([10000])], samples=1, seed=0)[0]["input"]
    assert abs(float(big.mean())) < 0.05
    assert abs(float(big.std()) - 1.0) < 0.05


def test_synthetic_inputs_reject_unfeedable_types() -> None:
    with pytest.raises(ServiceError) as err:
        synthetic_inputs([_inputs([2], model_pb2.DATA_TYPE_BFLOAT16)], samples=1, seed=0)
    assert err.value.reason == "UNSUPPORTED_MODEL"
    with pytest.raises(ValueError, match="samples"):
        synthetic_inputs([_inputs([2])], samples=0, seed=0)


def test_fixed_values_and_scalars_in_synthetic_inputs() -> None:
    inputs = [
        model_pb2.InputSpec(name="audio", shape=[2, 8]),
        model_pb2.InputSpec(name="sr", shape=[], dtype=model_pb2.DATA_TYPE_INT64, value=16000),
        model_pb2.InputSpec(name="gain", shape=[2], dtype=model_pb2.DATA_TYPE_FLOAT16, value=0.5),
        model_pb2.InputSpec(name="step", shape=[], dtype=model_pb2.DATA_TYPE_INT32),
    ]
    feeds = synthetic_inputs(inputs, 3, seed=0)
    for feed in feeds:
        assert feed["sr"].shape == ()
        assert feed["sr"].dtype == np.int64
        assert int(feed["sr"]) == 16000
        np.testing.assert_array_equal(feed["gain"], np.full(2, 0.5, dtype=np.float16))
        assert feed["step"].shape == ()
        assert feed["step"].dtype == np.int32
    # a fixed input draws nothing: the random ones are those of the inputs without it
    plain = synthetic_inputs([inputs[0], inputs[3]], 3, seed=0)
    for fixed, unfixed in zip(feeds, plain, strict=True):
        np.testing.assert_array_equal(fixed["audio"], unfixed["audio"])
