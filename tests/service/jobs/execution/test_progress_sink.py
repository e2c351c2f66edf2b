"""The progress sink: fine-tuning details on the record, checkpoint steps, stage changes."""

from __future__ import annotations

from pathlib import Path

from prunekit_server.jobs.durable import record
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.jobs.execution.progress_sink import ProgressSink
from prunekit_server.jobs.execution.sandbox import StopRequest
from prunekit_server.storage import ObjectStore

from ..conftest import new_job_id


def _running(object_store: ObjectStore, tmp_path: Path) -> tuple[JobStore, str]:
    jobs = JobStore(object_store, owner="server-a", lease_s=30.0)
    job_id = new_job_id(jobs, tmp_path)
    jobs.mutate(job_id, lambda job: record.transition(job, record.RUNNING) or True)
    return jobs, job_id


def test_finetune_details_and_checkpoints_reach_the_record_then_leave_with_the_stage(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    jobs, job_id = _running(object_store, tmp_path)
    queued: list[tuple[str, str]] = []
    sink = ProgressSink(jobs, job_id, StopRequest(), 0.0, "server-a", lambda p, n: queued.append((p, n)))
    step = {
        "phase": "finetune",
        "step": 40,
        "total_steps": 400,
        "epoch": 1,
        "loss": 0.5,
        "metric": "accuracy",
    }
    sink("finetune", 0.3, "step 40", {"finetune": {**step, "eval_metric": 0.9}})
    sink(
        "finetune",
        0.3,
        "checkpoint",
        {"checkpoint": {"phase": "finetune", "name": "ckpt-00000040", "step": 40}},
    )
    assert queued == [("finetune", "ckpt-00000040")]
    sink.checkpoint_uploaded("finetune", 40)
    progress = jobs.get(job_id).progress
    assert (progress.stage, progress.finetune.step, progress.finetune.total_steps) == ("finetune", 40, 400)
    assert progress.finetune.eval_metric == 0.9
    assert progress.finetune.checkpoint_step == 40
    sink("evaluate", 0.4, "comparing", None)
    sink.checkpoint_uploaded("finetune", 400)
    after = jobs.get(job_id).progress
    assert after.stage == "evaluate"
    assert not after.HasField("finetune"), "a late checkpoint upload put fine-tuning on another stage"


def test_a_resumed_start_reports_the_checkpoint_it_was_restored_from(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    jobs, job_id = _running(object_store, tmp_path)
    sink = ProgressSink(
        jobs, job_id, StopRequest(), 0.0, "server-a", lambda p, n: None, restored={"finetune": 20}
    )
    step = {"phase": "finetune", "step": 21, "total_steps": 60, "epoch": 1, "loss": 0.5, "metric": "accuracy"}
    sink("finetune", 0.3, "step 21", {"finetune": step})
    assert jobs.get(job_id).progress.finetune.checkpoint_step == 20
