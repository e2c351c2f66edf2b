"""Two real ``gloo`` ranks in spawned processes, for tests of data-parallel code."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

from prunekit_server.jobs.worker.ranks import host


def run_two_ranks(target: Callable[..., None], *args: Any, timeout: float = 600) -> dict[int, Any]:
    """Run ``target(rank, port, *args, results)`` as ranks 0 and 1 of a group whose store listens on
    ``port``; each rank puts ``(rank, value)`` on ``results``. The values by rank, once both ranks
    exited cleanly."""
    store = host(2)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    ranks = [context.Process(target=target, args=(r, store.port, *args, results)) for r in range(2)]
    for process in ranks:
        process.start()
    got = dict(results.get(timeout=timeout) for _ in ranks)
    for process in ranks:
        process.join(timeout=60)
        assert process.exitcode == 0
    return got
