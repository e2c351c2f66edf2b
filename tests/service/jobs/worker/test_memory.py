"""A worker's memory: shared out of the pod's or machine's so all fit, and running out is named so."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from prunekit_server.errors import Code, unsupported_model
from prunekit_server.jobs.worker.main import EXIT_OUT_OF_MEMORY, EXIT_SERVICE_ERROR, task_failure
from prunekit_server.jobs.worker.memory import (
    MIN_WORKER_BYTES,
    SERVER_RESERVE_BYTES,
    usable_memory,
    worker_memory,
    worker_memory_limits,
)

GIB = 1 << 30


def _host(tmp_path: Path, files: dict[str, str], proc: str, ram_gib: int = 64) -> tuple[Path, Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(proc)
    (tmp_path / "meminfo").write_text(f"MemTotal:       {ram_gib * 1024 * 1024} kB\nMemFree: 1 kB\n")
    return root, tmp_path / "self-cgroup", tmp_path / "meminfo"


def test_the_tightest_of_ram_and_cgroup_limits(tmp_path: Path) -> None:
    files = {"memory.max": "max\n", "pods/p/memory.max": f"{8 * GIB}\n"}
    assert usable_memory(*_host(tmp_path / "v2", files, "0::/pods/p\n")) == 8 * GIB
    v1 = {"memory/memory.limit_in_bytes": "9223372036854771712\n"}
    assert usable_memory(*_host(tmp_path / "v1", v1, "5:memory:/\n", ram_gib=23)) == 23 * GIB


def test_all_concurrent_workers_fit() -> None:
    share = worker_memory(2, usable=23 * GIB)
    assert share == (23 * GIB - SERVER_RESERVE_BYTES) // 4
    assert 4 * share + SERVER_RESERVE_BYTES <= 23 * GIB
    assert worker_memory(4, usable=8 * GIB) == MIN_WORKER_BYTES


def test_the_setting_wins_and_zero_only_lifts_the_address_limit() -> None:
    assert worker_memory_limits(5 * GIB, 2) == (5 * GIB, 5 * GIB)
    derived, budget = worker_memory_limits(-1, 2)
    assert derived == budget == worker_memory(2)
    assert worker_memory_limits(0, 2) == (0, budget)


def _ort_allocation_failure() -> Exception:
    size = helper.make_tensor("size", TensorProto.INT64, [1], [100_000_000_000])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["size"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [size],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as info:  # noqa: PT011 (ORT's own exception class)
        session.run(None, {})
    return info.value


def test_an_onnx_runtime_allocation_failure_is_out_of_memory() -> None:
    failure = _ort_allocation_failure()
    assert "Failed to allocate memory" in str(failure)
    error, code = task_failure(failure)
    assert (error.code, error.reason, code) == (
        Code.RESOURCE_EXHAUSTED,
        "WORKER_OUT_OF_MEMORY",
        EXIT_OUT_OF_MEMORY,
    )
    assert "Failed to allocate memory for requested buffer of size 400000000000" in error.message
    wrapped = unsupported_model("the runtime could not build the model")
    wrapped.__cause__ = failure
    assert task_failure(wrapped)[0].reason == "WORKER_OUT_OF_MEMORY"
    verdict = unsupported_model("op Foo is not supported")
    assert task_failure(verdict) == (verdict, EXIT_SERVICE_ERROR)
    assert task_failure(RuntimeError("shapes do not match"))[0].reason == "INTERNAL_ERROR"
