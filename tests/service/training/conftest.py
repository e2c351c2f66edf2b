"""One torch thread per test process: with ``-n 2`` several workers share the CPUs, and oversubscribed
intra-op threads make small convolutions orders of magnitude slower."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here runs with one torch thread (see ``one_torch_thread``)."""
