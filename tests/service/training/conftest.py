"""One torch thread per test process: with ``-n 2`` several workers share the CPUs, and oversubscribed
intra-op threads make small convolutions orders of magnitude slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
