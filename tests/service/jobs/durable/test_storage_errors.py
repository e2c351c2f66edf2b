"""retrying: storage outages are waited out within a budget; other errors and stops end it at once.
Outages are logged once; a full store is RESOURCE_EXHAUSTED."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.durable.storage_errors import OUTAGES, Outages, pause, retrying, storage_errors
from prunekit_server.storage import FileStore, StorageFull, StorageUnavailable


def _unavailable() -> ServiceError:
    return ServiceError(Code.UNAVAILABLE, "STORAGE_UNAVAILABLE", "object storage failed: connection refused")


def _failing(times: int, error: ServiceError) -> tuple[list[float], object]:
    calls: list[float] = []

    def action() -> str:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        return "done"

    return calls, action


def test_an_outage_shorter_than_the_budget_is_waited_out() -> None:
    calls, action = _failing(3, _unavailable())
    assert retrying(action, budget_s=10.0, first_wait_s=0.05) == "done"  # type: ignore[arg-type]
    assert len(calls) == 4
    assert calls[-1] - calls[0] >= 0.05 + 0.1 + 0.2  # waits of 0.05 s, doubling


def test_an_outage_longer_than_the_budget_raises_its_error() -> None:
    calls, action = _failing(1000, _unavailable())
    started = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        retrying(action, budget_s=0.5, first_wait_s=0.05)  # type: ignore[arg-type]
    assert caught.value.reason == "STORAGE_UNAVAILABLE"
    assert 0.5 <= time.monotonic() - started < 3.0
    assert len(calls) >= 3


def test_other_errors_and_a_stop_end_it_at_once() -> None:
    other = ServiceError(Code.INTERNAL, "INTERNAL_ERROR", "object storage: corrupt")
    calls, action = _failing(5, other)
    with pytest.raises(ServiceError):
        retrying(action, budget_s=10.0)  # type: ignore[arg-type]
    assert len(calls) == 1
    calls, action = _failing(5, _unavailable())
    with pytest.raises(ServiceError):
        retrying(action, budget_s=10.0, stopped=lambda: True)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_an_outage_is_logged_once_and_ends_only_with_a_write(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    with caplog.at_level(logging.INFO, logger="prunekit_server.jobs.durable.storage_errors"):
        for _ in range(50):
            outages.failed(StorageUnavailable("connection refused"))
        assert outages.down
        outages.answered()
        outages.answered()
        outages.failed(StorageUnavailable("read-only file system"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("object storage unavailable: connection refused")
    assert "answers again" in lines[1]
    assert "(50 calls failed)" in lines[1]
    assert lines[2].startswith("object storage unavailable: read-only file system")


def test_a_failing_read_starts_an_outage_and_only_a_successful_write_ends_it(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    with storage_errors(writing=True):  # ends whatever outage an earlier test of this process left
        store.put_bytes("k", b"v")
    assert not OUTAGES.down
    with pytest.raises(ServiceError) as caught, storage_errors():
        raise StorageUnavailable("file store unavailable for 'k': Read-only file system")
    assert (caught.value.code, caught.value.reason) == (Code.UNAVAILABLE, "STORAGE_UNAVAILABLE")
    assert OUTAGES.down
    with storage_errors():
        assert store.get_bytes("k") == b"v"
    assert OUTAGES.down, "a read-only store still answers reads: the outage goes on"
    with storage_errors(writing=True):
        store.put_bytes("k", b"w")
    assert not OUTAGES.down


def test_a_full_store_is_resource_exhausted_not_an_outage() -> None:
    down = OUTAGES.down
    with pytest.raises(ServiceError) as caught, storage_errors(writing=True):
        raise StorageFull("file store '/s' has no space left for 'k': No space left on device")
    assert (caught.value.code, caught.value.reason) == (Code.RESOURCE_EXHAUSTED, "STORAGE_FULL")
    assert caught.value.metadata == {"space": "store"}
    assert OUTAGES.down == down


def test_a_pause_is_cut_short_by_a_stop() -> None:
    started = time.monotonic()
    assert pause(0.2, lambda: False) is True
    assert time.monotonic() - started >= 0.2
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()
    started = time.monotonic()
    assert pause(30.0, flag.is_set) is False
    assert time.monotonic() - started < 5.0
