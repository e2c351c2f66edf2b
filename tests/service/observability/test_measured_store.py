"""The measured store: every call timed by operation, failures counted, expected answers not."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from prunekit_server.observability.measured_store import MeasuredStore
from prunekit_server.observability.metrics import REGISTRY
from prunekit_server.storage import ObjectNotFound, StorageError, open_store


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_calls_are_timed_and_a_missing_key_is_no_error(tmp_path: Path) -> None:
    store = MeasuredStore(open_store(f"file://{tmp_path}"))
    puts = sample("prunekit_storage_operation_duration_seconds_count", operation="put")
    gets = sample("prunekit_storage_operation_duration_seconds_count", operation="get")
    errors = sample("prunekit_storage_errors_total", operation="get", error="ObjectNotFound")
    store.put_bytes("a/b.json", b"{}")
    assert store.get_bytes("a/b.json") == b"{}"
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a/missing.json")
    assert store.list_keys("a/") == ["a/b.json"]
    assert sample("prunekit_storage_operation_duration_seconds_count", operation="put") == puts + 1
    assert sample("prunekit_storage_operation_duration_seconds_count", operation="get") == gets + 2
    assert sample("prunekit_storage_errors_total", operation="get", error="ObjectNotFound") == errors


def test_an_unreachable_bucket_counts_errors(s3_endpoint: str) -> None:
    store = MeasuredStore(open_store(f"s3://missing-{uuid.uuid4().hex[:12]}/p", max_attempts=1))
    before = sum(
        sample("prunekit_storage_errors_total", operation="list", error=kind)
        for kind in ("StorageUnavailable", "StorageError")
    )
    with pytest.raises(StorageError) as failure:
        store.list_keys("health/", limit=1)
    kind = type(failure.value).__name__
    assert sample("prunekit_storage_errors_total", operation="list", error=kind) >= 1
    after = sum(
        sample("prunekit_storage_errors_total", operation="list", error=k)
        for k in ("StorageUnavailable", "StorageError")
    )
    assert after == before + 1
