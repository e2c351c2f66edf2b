"""The server's side of the spec room: every broken rule raised as one INVALID_SPEC error."""

from __future__ import annotations

import pytest

from prunekit.spec import FieldViolation
from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server import errors
from prunekit_server.errors import ServiceError
from prunekit_server.spec_check import check_runtime, check_spec, prune_config_of, quantize_plan_of

ONNX = model_pb2.MODEL_FORMAT_ONNX


def test_the_server_reports_the_spec_rooms_violations() -> None:
    assert errors.FieldViolation is FieldViolation
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(calibration_samples=5000, exclude=[""]),
        benchmark=spec_pb2.BenchmarkSpec(threads=-1),
    )
    with pytest.raises(ServiceError) as err:
        check_spec(spec, ONNX, prefix="request.spec")
    assert err.value.code == errors.Code.INVALID_ARGUMENT
    assert err.value.reason == "INVALID_SPEC"
    assert [v.field for v in err.value.violations] == [
        "request.spec.quantize.mode",
        "request.spec.quantize.calibration_samples",
        "request.spec.quantize.exclude[0]",
        "request.spec.benchmark.threads",
    ]
    assert err.value.message.startswith("invalid spec: request.spec.quantize.mode: required")
    check_spec(
        spec_pb2.OptimizationSpec(
            prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5)
        ),
        ONNX,
    )


def test_translations_fail_with_invalid_spec() -> None:
    with pytest.raises(ServiceError) as err:
        prune_config_of(spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL))
    assert err.value.reason == "INVALID_SPEC"
    assert [v.field for v in err.value.violations] == ["spec.prune.ratio"]
    with pytest.raises(ServiceError) as err:
        quantize_plan_of(spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8, percentile=50.0))
    assert err.value.reason == "INVALID_SPEC"
    assert [v.field for v in err.value.violations] == ["spec.quantize"]


def test_a_device_without_its_runtime_on_this_node_is_refused_before_any_worker() -> None:
    cuda = spec_pb2.OptimizationSpec(
        target=spec_pb2.TargetSpec(latency_speedup=2.0),
        benchmark=spec_pb2.BenchmarkSpec(device=spec_pb2.DEVICE_CUDA),
    )
    with pytest.raises(ServiceError) as err:
        check_runtime(cuda, providers=["CPUExecutionProvider"])
    assert err.value.code == errors.Code.FAILED_PRECONDITION
    assert err.value.reason == "RUNTIME_UNAVAILABLE"
    assert [v.field for v in err.value.violations] == ["spec.benchmark.device"]
    check_runtime(cuda, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    check_runtime(spec_pb2.OptimizationSpec(target=spec_pb2.TargetSpec(latency_speedup=2.0)), providers=[])
