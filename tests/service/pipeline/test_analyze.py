"""run_analysis end to end: real exports at several opsets, both upload formats."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pipeline import ProgressFn, run_analysis
from tests.samples import sample_module, write_sample_model

WIDTH, SIZE = 8, 16


def _cnn_macs(w: int = WIDTH, size: int = SIZE) -> int:
    s1, s2, s3 = size * size, (size // 2) ** 2, (size // 4) ** 2
    stem = s1 * w * 27
    layer1 = 2 * s1 * w * w * 9
    layer2 = s2 * (2 * w * w * 9 + 4 * w * w * 9 + 2 * w * w)
    layer3 = s3 * (8 * w * w * 9 + 16 * w * w * 9 + 8 * w * w)
    return stem + layer1 + layer2 + layer3 + 4 * w * 10


@pytest.mark.parametrize("opset", range(11, 18))
def test_legacy_exports_at_each_opset(tmp_path: Path, opset: int) -> None:
    path = tmp_path / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=WIDTH, image_size=SIZE, opset=opset)
    analysis = run_analysis(path, model_pb2.MODEL_FORMAT_ONNX, [], tmp_path / "work")
    assert analysis.opset == opset
    assert analysis.macs == _cnn_macs()
    assert len(analysis.layers) == 10
    assert list(analysis.warnings) == []
    assert analysis.size_bytes == path.stat().st_size
    assert list(analysis.analyzed_inputs[0].shape) == [1, 3, SIZE, SIZE]


def test_torchscript_and_onnx_agree(tmp_path: Path) -> None:
    onnx_path, ts_path = tmp_path / "cnn.onnx", tmp_path / "cnn.pt"
    write_sample_model(onnx_path, "onnx", "cnn", width=WIDTH, image_size=SIZE)
    write_sample_model(ts_path, "torchscript", "cnn", width=WIDTH, image_size=SIZE)
    inputs = [model_pb2.InputSpec(name="input", shape=[2, 3, SIZE, SIZE])]
    from_onnx = run_analysis(onnx_path, model_pb2.MODEL_FORMAT_ONNX, inputs, tmp_path / "a")
    from_ts = run_analysis(ts_path, model_pb2.MODEL_FORMAT_TORCHSCRIPT, inputs, tmp_path / "b")
    assert from_onnx.macs == from_ts.macs == 2 * _cnn_macs()
    assert [layer.macs for layer in from_onnx.layers] == [layer.macs for layer in from_ts.layers]
    assert from_ts.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    assert from_ts.size_bytes == ts_path.stat().st_size
    assert from_ts.layers[0].weight_name == "stem.0.weight"
    module = sample_module("cnn", width=WIDTH)
    exported = sum(t.numel() for k, t in module.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert from_ts.parameters == exported
    assert (tmp_path / "b" / "model.onnx").is_file()


def test_bad_upload_raises_service_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ServiceError) as info:
        run_analysis(path, model_pb2.MODEL_FORMAT_ONNX, [], tmp_path / "work")
    assert info.value.reason == "INVALID_MODEL"


def test_progress_type_is_exported() -> None:
    calls: list[tuple[str, float, str, object]] = []

    def record(stage: str, fraction: float, message: str, details: object = None) -> None:
        calls.append((stage, fraction, message, details))

    progress: ProgressFn = record
    progress("analyze", 0.5, "half")
    progress("finetune", 0.6, "step 1", {"finetune": {"step": 1}})
    assert calls == [("analyze", 0.5, "half", None), ("finetune", 0.6, "step 1", {"finetune": {"step": 1}})]


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None,
    reason="the dynamo exporter (torch.onnx.export(dynamo=True)) needs onnxscript, which is not installed",
)
def test_dynamo_export(tmp_path: Path) -> None:
    path = tmp_path / "cnn_dynamo.onnx"
    module = sample_module("cnn", width=WIDTH)
    torch.onnx.export(module, (torch.randn(1, 3, SIZE, SIZE),), str(path), dynamo=True, external_data=False)
    analysis = run_analysis(path, model_pb2.MODEL_FORMAT_ONNX, [], tmp_path / "work")
    assert analysis.macs == _cnn_macs()
    assert analysis.opset >= 18
