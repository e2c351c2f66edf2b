"""Fleet-wide latency tables in a real store: staged, merged back, and a hostile worker's files refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from prunekit_server.jobs.durable.latency_tables import LOCAL_DIR, PREFIX, save_tables, stage_tables
from prunekit_server.search.table import LatencyTable, NodeKind, load_table
from prunekit_server.storage import ObjectStore, open_store

KIND = NodeKind("onnxruntime 1.0", "CPUExecutionProvider", "cpu", "Some CPU", threads=1, batch=1)


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(f"file://{tmp_path / 'store'}")


def _job_dir(tmp_path: Path, name: str) -> Path:
    workdir = tmp_path / name
    (workdir / LOCAL_DIR).mkdir(parents=True)
    return workdir


def _table(entries: dict[str, float]) -> LatencyTable:
    return LatencyTable(KIND, entries={k: (v, time.time()) for k, v in entries.items()})


def test_a_table_goes_to_storage_and_comes_back_to_the_next_job(store: ObjectStore, tmp_path: Path) -> None:
    first = _job_dir(tmp_path, "a")
    _table({"conv|a": 1.0}).save(first / LOCAL_DIR)
    assert save_tables(store, first) == 1
    assert save_tables(store, first) == 0  # nothing new

    second = _job_dir(tmp_path, "b")
    stage_tables(store, second)
    staged = load_table(second / LOCAL_DIR, KIND)
    assert staged.reused
    assert staged.entries["conv|a"][0] == 1.0
    staged.lookup("conv|b", lambda: 2.0)
    staged.save(second / LOCAL_DIR)
    assert save_tables(store, second) == 1
    stored = json.loads(store.get_bytes(PREFIX + f"{KIND.key}.json"))
    assert set(stored["entries"]) == {"conv|a", "conv|b"}


def test_links_fifos_and_misnamed_tables_from_the_worker_are_ignored(
    store: ObjectStore, tmp_path: Path
) -> None:
    workdir = _job_dir(tmp_path, "w")
    local = workdir / LOCAL_DIR
    (local / "0123456789abcdef.json").symlink_to("/dev/zero")
    os.mkfifo(local / "fedcba9876543210.json")
    other = NodeKind("onnxruntime 9", "CPUExecutionProvider", "cpu", "x", threads=1, batch=1)
    table = _table({"conv|a": 1.0}).to_json()
    (local / f"{other.key}.json").write_text(json.dumps(table))  # another kind's key: would wipe it
    (local / "notes.json").write_text(json.dumps(table))
    started = time.monotonic()
    assert save_tables(store, workdir) == 0
    assert time.monotonic() - started < 5
    assert store.list_keys(PREFIX) == []


def test_a_corrupt_stored_table_is_replaced_not_kept_forever(store: ObjectStore, tmp_path: Path) -> None:
    key = PREFIX + f"{KIND.key}.json"
    store.put_bytes(key, b"{not json")
    workdir = _job_dir(tmp_path, "w")
    _table({"conv|a": 1.0}).save(workdir / LOCAL_DIR)
    assert save_tables(store, workdir) == 1
    assert set(json.loads(store.get_bytes(key))["entries"]) == {"conv|a"}
