"""Cost caps: the bombs of issue 11 are refused before the work they would cause, naming the cap."""

from __future__ import annotations

import time
from pathlib import Path

import onnx
import pytest
from onnx import helper

from prunekit.v1 import model_pb2
from prunekit_server.errors import Code, ServiceError
from prunekit_server.model_caps import ModelCaps
from prunekit_server.modelio import OnnxLimits, ingest, load_onnx_checked
from prunekit_server.modelio.onnx_calls import inlined_node_count
from tests.bombs import huge_input_model, inlining_bomb, write_deflate_bomb

ONNX = model_pb2.MODEL_FORMAT_ONNX
TORCHSCRIPT = model_pb2.MODEL_FORMAT_TORCHSCRIPT


def _refusal(call: object, *args: object, **kwargs: object) -> tuple[ServiceError, float]:
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    seconds = time.monotonic() - started
    assert (info.value.code, info.value.reason) == (Code.RESOURCE_EXHAUSTED, "MODEL_TOO_LARGE"), info.value
    return info.value, seconds


def test_the_inlining_bomb_is_counted_not_inlined(tmp_path: Path) -> None:
    model = inlining_bomb(31)
    assert inlined_node_count(model, 1 << 40) == 1 << 30
    path = tmp_path / "bomb.onnx"
    path.write_bytes(model.SerializeToString())
    assert path.stat().st_size < 4096
    error, seconds = _refusal(ingest, path, ONNX, [], tmp_path / "work")
    assert seconds < 5
    assert error.metadata["max_nodes"] == "200000"
    assert "inlined" in error.message
    assert not (tmp_path / "work").exists()


def test_functions_under_the_cap_still_load(tmp_path: Path) -> None:
    path = tmp_path / "small.onnx"
    path.write_bytes(inlining_bomb(4).SerializeToString())
    load_onnx_checked(path, OnnxLimits(caps=ModelCaps(max_nodes=8)))
    _refusal(load_onnx_checked, path, OnnxLimits(caps=ModelCaps(max_nodes=7)))


def test_functions_calling_themselves_are_invalid(tmp_path: Path) -> None:
    model = inlining_bomb(3)
    model.functions[2].node[0].CopyFrom(helper.make_node("f0", ["x"], ["y"], domain="bomb"))
    path = tmp_path / "cycle.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ServiceError) as info:
        load_onnx_checked(path)
    assert (info.value.reason, "calls itself" in info.value.message) == ("INVALID_MODEL", True)


def test_a_huge_static_input_is_refused_before_allocation(tmp_path: Path) -> None:
    path = tmp_path / "wide.onnx"
    onnx.save(huge_input_model(10**9), str(path))
    assert path.stat().st_size < 200
    caps = ModelCaps(memory_bytes=16 << 30)
    error, seconds = _refusal(ingest, path, ONNX, [], tmp_path, caps=caps)
    assert seconds < 5
    assert error.metadata["max_input_bytes"] == str(1 << 30)
    assert error.metadata["worker_memory_bytes"] == str(16 << 30)
    assert "4000000000 bytes" in error.message
    ingest(path, ONNX, [], tmp_path, caps=ModelCaps(memory_bytes=64 << 30))


def test_the_deflate_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    path = write_deflate_bomb(tmp_path / "bomb.pt")
    assert path.stat().st_size < 8 << 20
    inputs = [model_pb2.InputSpec(name="x", shape=[1, 4])]
    error, seconds = _refusal(
        ingest, path, TORCHSCRIPT, inputs, tmp_path, caps=ModelCaps(memory_bytes=16 << 30)
    )
    assert seconds < 5
    assert error.metadata["max_tensor_bytes"] == str(4 << 30)
    assert "8053063680 bytes" in error.message


def test_declared_torchscript_inputs_are_checked_before_the_archive_is_loaded(tmp_path: Path) -> None:
    path = write_deflate_bomb(tmp_path / "bomb.pt", size=64 << 20)
    inputs = [model_pb2.InputSpec(name="x", shape=[1, 10**9])]
    error, _ = _refusal(ingest, path, TORCHSCRIPT, inputs, tmp_path, caps=ModelCaps(memory_bytes=16 << 30))
    assert "max_input_bytes" in error.metadata
