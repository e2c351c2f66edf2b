"""AnalyzeModel runs in a worker and answers with the model's structure."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from prunekit.v1 import model_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc

from .conftest import assert_serving, status_error, upload, upload_requests


def test_analyze_onnx(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> None:
    model = upload(stub, models["cnn.onnx"])
    analysis = stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model), timeout=120).analysis
    assert analysis.format == model_pb2.MODEL_FORMAT_ONNX
    assert [i.name for i in analysis.inputs] == ["input"]
    assert analysis.inputs[0].shape[0].symbol == "batch"
    assert list(analysis.analyzed_inputs[0].shape) == [1, 3, 32, 32]
    assert analysis.parameters > 0
    assert analysis.macs > 0
    assert analysis.opset == 17
    assert {layer.op_type for layer in analysis.layers} >= {"Conv", "Gemm"}
    assert sum(layer.macs for layer in analysis.layers) == analysis.macs


def test_analyze_torchscript_needs_inputs(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.pt"])
    with pytest.raises(grpc.RpcError) as caught:
        stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model), timeout=120)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    shaped = pb.AnalyzeModelRequest(
        model=model, inputs=[model_pb2.InputSpec(name="input", shape=[2, 3, 32, 32])]
    )
    analysis = stub.AnalyzeModel(shaped, timeout=120).analysis
    assert analysis.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    assert list(analysis.analyzed_inputs[0].shape) == [2, 3, 32, 32]
    assert_serving(channel)


def test_truncated_onnx_is_invalid_model(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    data = models["cnn.onnx"].read_bytes()
    model = stub.UploadModel(upload_requests(data[: len(data) // 2]), timeout=30).model
    with pytest.raises(grpc.RpcError) as caught:
        stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model), timeout=120)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_error(caught.value).reason == "INVALID_MODEL"
    assert_serving(channel)
