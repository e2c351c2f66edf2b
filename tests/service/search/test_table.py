"""Latency tables: keyed by node kind, reused while fresh, merged newest-first, bad files ignored."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from prunekit_server.search.table import MAX_AGE_S, NodeKind, load_table, merge_tables, parse_entries

KIND = NodeKind("onnxruntime 1.0", "CPUExecutionProvider", "cpu", "Some CPU", threads=1, batch=1)


def test_the_key_changes_with_every_field_of_the_node_kind() -> None:
    others = [
        replace(KIND, runtime="onnxruntime 2.0"),
        replace(KIND, provider="CUDAExecutionProvider"),
        replace(KIND, cpu="Other CPU"),
        replace(KIND, threads=2),
        replace(KIND, batch=8),
        replace(KIND, format=2),
    ]
    keys = {KIND.key, *(k.key for k in others)}
    assert len(keys) == 1 + len(others)
    assert KIND.key == NodeKind(**{**KIND.__dict__}).key


def test_a_saved_table_is_reused_and_only_missing_or_stale_entries_are_timed(tmp_path: Path) -> None:
    table = load_table(tmp_path, KIND)
    assert not table.reused
    assert table.lookup("conv|a", lambda: 2.0) == 2.0
    table.entries["conv|old"] = (5.0, time.time() - MAX_AGE_S - 1)
    table.save(tmp_path)

    again = load_table(tmp_path, KIND)
    assert again.reused
    assert again.lookup("conv|a", lambda: 99.0) == 2.0
    assert again.lookup("conv|old", lambda: 7.0) == 7.0
    assert again.lookup("conv|b", lambda: 3.0) == 3.0
    assert again.timed == {"conv|old", "conv|b"}
    assert again.used == {"conv|a", "conv|old", "conv|b"}


def test_another_kind_or_a_broken_file_starts_an_empty_table(tmp_path: Path) -> None:
    table = load_table(tmp_path, KIND)
    table.lookup("x", lambda: 1.0)
    path = table.save(tmp_path)
    other = replace(KIND, threads=4)
    (tmp_path / f"{other.key}.json").write_text(path.read_text())
    assert not load_table(tmp_path, other).reused
    path.write_text("{not json")
    assert not load_table(tmp_path, KIND).reused
    assert not load_table(None, KIND).reused


def test_merging_keeps_the_newer_entry_of_each_signature(tmp_path: Path) -> None:
    old = load_table(tmp_path, KIND)
    old.entries = {"a": (1.0, 100.0), "b": (2.0, 300.0)}
    new = load_table(tmp_path, KIND)
    new.entries = {"a": (1.5, 200.0), "c": (3.0, 200.0)}
    merged = merge_tables(old.to_json(), new.to_json(), KIND.key)
    assert merged is not None
    entries = {k: v["p50_ms"] for k, v in merged["entries"].items()}
    assert entries == {"a": 1.5, "b": 2.0, "c": 3.0}
    assert merge_tables(old.to_json(), {"format": 99}, KIND.key) is None
    foreign = json.loads(json.dumps(old.to_json()))
    foreign["kind"]["threads"] = 8
    merged = merge_tables(foreign, new.to_json(), KIND.key)
    assert merged is not None
    assert set(merged["entries"]) == {"a", "c"}


def test_a_table_is_only_merged_under_its_own_kinds_key(tmp_path: Path) -> None:
    fresh = load_table(tmp_path, KIND)
    fresh.entries = {"a": (1.0, 100.0)}
    other = replace(KIND, threads=8)
    assert merge_tables(None, fresh.to_json(), other.key) is None


def test_entries_from_the_future_infinite_or_odd_are_clamped_or_dropped(tmp_path: Path) -> None:
    table = load_table(tmp_path, KIND).to_json()
    table["entries"] = {
        "conv|ok": {"p50_ms": 1.0, "at": 100.0},
        "conv|future": {"p50_ms": 1.0, "at": time.time() + 10 * MAX_AGE_S},
        "conv|inf": {"p50_ms": float("inf"), "at": 100.0},
        "conv|bool": {"p50_ms": True, "at": 100.0},
        "conv|negative": {"p50_ms": -1.0, "at": 100.0},
        "../../etc/passwd": {"p50_ms": 1.0, "at": 100.0},
        "x" * 500: {"p50_ms": 1.0, "at": 100.0},
    }
    entries = parse_entries(json.loads(json.dumps(table)), KIND)
    assert entries is not None
    assert set(entries) == {"conv|ok", "conv|future"}
    assert entries["conv|future"][1] <= time.time()
