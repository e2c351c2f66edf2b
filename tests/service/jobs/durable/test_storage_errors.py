"""retrying: storage outages are waited out within a budget; other errors and stops end it at once."""

from __future__ import annotations

import time

import pytest

from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.durable.storage_errors import retrying


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
