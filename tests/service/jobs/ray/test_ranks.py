"""Fine-tuning ranks as Ray actors on the two-node test cluster: ranks that do not fit beside the
others are placed on another node, a group that cannot be placed fails the start RANKS_UNPLACED, a
stop ends the wait, and a lost rank is named by how it ended."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import ray

from prunekit_server.config import Settings
from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.execution.sandbox import StopRequest
from prunekit_server.jobs.ray.ranks import RayRanks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SETTINGS = replace(Settings(), worker_sandbox=False, worker_memory_bytes=0, ray_rank_wait_s=60)
ONE_CPU = {"num_cpus": 1, "num_gpus": 0}


@pytest.fixture
def driver(ray_address: str) -> Iterator[None]:
    ray.init(address=ray_address, namespace="prunekit-tests", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ranks_that_do_not_fit_on_one_node_are_placed_on_another(driver: None) -> None:
    ranks = RayRanks.start(SETTINGS, 3, ONE_CPU, "file:///nowhere", StopRequest())
    assert ranks is not None
    try:
        assert len(ranks.nodes) == 2
        assert len(set(ranks.nodes)) == 2, ranks.nodes  # one CPU per node: one rank on each
        assert ranks.rendezvous["world"] == 3
        assert ranks.rendezvous["port"] > 0
    finally:
        ranks.close()
    again = RayRanks.start(SETTINGS, 3, ONE_CPU, "file:///nowhere", StopRequest())  # the CPUs were given back
    assert again is not None
    again.close()


def test_a_group_that_cannot_be_placed_fails_the_start_with_ranks_unplaced(driver: None) -> None:
    with pytest.raises(ServiceError) as info:
        RayRanks.start(replace(SETTINGS, ray_rank_wait_s=2), 2, {"num_cpus": 4}, "", StopRequest())
    error = info.value
    assert (error.code, error.reason) == (Code.RESOURCE_EXHAUSTED, "RANKS_UNPLACED")
    assert error.metadata["workers"] == "2"
    assert '"CPU": 4.0' in error.metadata["bundle"]
    assert "finetune.workers" in error.message


def test_a_stop_ends_the_wait_for_placement(driver: None) -> None:
    stop = StopRequest()
    stop.stop(ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled"))
    assert RayRanks.start(SETTINGS, 2, {"num_cpus": 4}, "", stop) is None


def test_a_rank_killed_by_a_signal_is_named_and_its_start_retried(driver: None) -> None:
    ranks = RayRanks.start(SETTINGS, 2, ONE_CPU, "", StopRequest())
    assert ranks is not None
    try:
        ranks.kill()
        meta = {"stage": "finetune"}
        lost = ServiceError(Code.INTERNAL, "WORKER_CRASHED", "rank 0 lost its group", metadata=meta)
        error = ranks.explain(lost)
    finally:
        ranks.close()
    assert error is not None
    assert error.metadata["lost_rank"] == "1"
    assert error.metadata["signal"] == "SIGKILL", error
    own = ServiceError(Code.INTERNAL, "WORKER_CRASHED", "worker died", metadata={"signal": "SIGSEGV"})
    assert ranks.explain(own) is own  # the worker's own crash is not a rank's


def test_a_rank_lost_while_rank_0_works_alone_stops_the_start_at_once(driver: None) -> None:
    ranks = RayRanks.start(SETTINGS, 2, ONE_CPU, "", StopRequest())
    assert ranks is not None
    job = StopRequest()
    try:
        with ranks.watched(job) as attempt:
            assert not attempt.is_set()
            ranks.kill()  # rank 0 is in no collective: only Ray can tell
            deadline = time.monotonic() + 60
            while not attempt.is_set() and time.monotonic() < deadline:
                time.sleep(0.1)
        assert attempt.error is not None
        assert attempt.error.metadata["lost_rank"] == "1"
        assert attempt.error.metadata["signal"] == "SIGKILL"
        assert not job.is_set()
    finally:
        ranks.close()


def test_the_jobs_stop_reaches_the_start(driver: None) -> None:
    ranks = RayRanks.start(SETTINGS, 2, ONE_CPU, "", StopRequest())
    assert ranks is not None
    job = StopRequest()
    cancelled = ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled")
    try:
        with ranks.watched(job) as attempt:
            job.stop(cancelled)
            deadline = time.monotonic() + 30
            while not attempt.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        assert attempt.error is cancelled
    finally:
        ranks.close()
