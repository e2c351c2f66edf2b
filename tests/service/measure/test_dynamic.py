"""Per-input latency of two real models over the same feeds, interleaved, with accuracy and agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from prunekit_server.measure.dynamic import describe_protocol, measure_per_input


def _linear(path: Path, weight: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_every_model_is_timed_on_every_feed_with_its_top1(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 4))
    models = {"a": _linear(tmp_path / "a.onnx", weight), "b": _linear(tmp_path / "b.onnx", -weight)}
    feeds = [{"x": rng.normal(size=(1, 4)).astype(np.float32)} for _ in range(12)]
    labels = np.array([int(np.argmax(weight @ f["x"][0])) for f in feeds])
    measured = measure_per_input(models, feeds, reference="a", labels=labels, rounds=2, max_seconds=60)
    assert measured.rounds == 2
    a, b = measured.models["a"], measured.models["b"]
    assert len(a.latencies_ms) == len(b.latencies_ms) == 12
    assert 0 < a.p50_ms <= a.p90_ms <= a.p99_ms
    assert a.mean_ms > 0
    assert (a.accuracy, a.top1_agreement) == (1.0, 1.0)
    assert b.top1_agreement == b.accuracy
    assert b.top1_agreement < 1.0
    assert "12 feed(s) of batch 1" in describe_protocol(12, 1, 1, 2)
