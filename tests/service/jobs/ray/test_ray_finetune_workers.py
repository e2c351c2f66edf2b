"""``finetune.workers: 2`` through a real local Ray cluster of two one-CPU nodes, so the job's two
gloo ranks run on different nodes: they fine-tune the digits model as one worker does, within the
tolerance of ``tests/service/jobs/worker/test_ranks.py``; a rank killed mid-run costs the job one
start, resumed from its last checkpoint; so does a node lost mid-run, once a new node joins."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.v1 import job_pb2
from prunekit_server.jobs.durable.tenants import Tenants
from prunekit_server.jobs.worker.faults import FAULT_LABEL
from prunekit_server.rpc_status import from_status
from prunekit_server.storage import open_store

from ...api.jobflow import create, wait
from ..execution.finetune_flow import artifact_attempts, finetune_spec, single_manifest
from .conftest import finetune_door, first_checkpoint
from .local_cluster import ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 40
METRIC_TOLERANCE = 0.05


def test_two_workers_fine_tune_as_one_does(ray_address: str, tmp_path: Path) -> None:
    with finetune_door(ray_address, tmp_path) as (storage, stub, model, train):
        spec = finetune_spec(train, steps=STEPS, every=20)
        spec.finetune.workers = 2
        two = wait(stub, create(stub, model, spec).id, 600)[-1]
        spec.finetune.workers = 0
        one = wait(stub, create(stub, model, spec).id, 600)[-1]
    for job in (two, one):
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, from_status(job.error)
        single_manifest(Tenants(open_store(storage), owner="", lease_s=30).stores("default"), job)
    ran_two, ran_one = two.report.finetune.runs[-1], one.report.finetune.runs[-1]
    assert ran_two.steps == ran_one.steps == STEPS
    assert list(ran_two.loss_curve) != list(ran_one.loss_curve)  # the ranks' arithmetic, not one process's
    assert abs(ran_two.final_metric - ran_one.final_metric) <= METRIC_TOLERANCE


def test_a_killed_rank_resumes_the_fine_tune_from_its_checkpoint(ray_address: str, tmp_path: Path) -> None:
    with finetune_door(ray_address, tmp_path) as (storage, stub, model, train):
        spec = finetune_spec(train, steps=100, every=20)
        spec.finetune.workers = 2
        # the worker SIGKILLs its rank 1 right after announcing its first checkpoint (first start)
        job = create(stub, model, spec, labels={FAULT_LABEL: "kill_rank@checkpoint"})
        done = wait(stub, job.id, 600)[-1]
    _resumed_once(done, storage, steps=100)


def test_a_node_lost_mid_fine_tune_costs_one_start_resumed_on_a_new_node(tmp_path: Path) -> None:
    with ray_cluster(cpus=1, nodes=2) as cluster, finetune_door(cluster.address, tmp_path) as door:
        storage, stub, model, train = door
        spec = finetune_spec(train, steps=400, every=20)
        spec.finetune.workers = 2
        job = create(stub, model, spec)
        first_checkpoint(stub, job.id)
        cluster.remove_node()  # one of the job's two ranks (or the job's actor) goes with it
        cluster.add_node()  # the start after it waits until the ranks can be placed again
        done = wait(stub, job.id, 600)[-1]
    _resumed_once(done, storage, steps=400)


def _resumed_once(done: job_pb2.Job, storage: str, steps: int) -> None:
    """``done`` succeeded on its second start, resumed from a checkpoint, its artifacts all that start's."""
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, from_status(done.error)
    assert done.attempt == 2
    assert done.report.finetune.runs[-1].resumed_from_step >= 20
    assert done.report.finetune.runs[-1].steps == steps
    assert artifact_attempts(done) == {"2"}
    single_manifest(Tenants(open_store(storage), owner="", lease_s=30).stores("default"), done)
