"""Publishing a finished job: artifacts, then the one manifest, then the SUCCEEDED record.

Only the server holding the job's lease publishes. Artifacts go under the
attempt's own prefix; the manifest is a conditional put (``if_absent``), so
of two publishers (one of which lost its lease while publishing) the first
wins and the job ends with exactly one manifest. A publisher that finds a
manifest already written completes the job from it instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from prunekit.v1 import job_pb2, report_pb2

from ...errors import Code, ServiceError
from ...hashing import sha256_file
from . import record
from .job_store import JobStore
from .stores import TenantStores

log = logging.getLogger(__name__)

_MAX_RESULT_BYTES = 64 << 20
REPORT_NAME = "report.json"


def publish(stores: TenantStores, job_id: str, workdir: Path, *, owner: str, attempt: int) -> bool:
    """Store what the worker left in ``workdir/out`` and end the job SUCCEEDED.

    ``report.finetune.attempts`` is set to ``attempt`` when the report has a
    fine-tuning section. Returns False when the lease was lost on the way
    (the job is left to its new owner).
    """
    result = read_json(workdir / "out" / "result.json")
    report = json_format.ParseDict(
        result["report"], report_pb2.OptimizationReport(), ignore_unknown_fields=True
    )
    if report.HasField("finetune"):
        report.finetune.attempts = attempt
    outputs = stores.artifacts
    artifacts: list[job_pb2.Artifact] = []
    for name, entry in sorted(result["artifacts"].items()):
        path = inside(workdir, str(entry["path"]))
        artifacts.append(outputs.put(job_id, artifact_name(name), path, str(entry["sha256"]), attempt))
    by_name = {a.name: a for a in artifacts}
    for variant in report.variants:
        for file in variant.files:
            if file.artifact in by_name:
                file.uri = by_name[file.artifact].uri
                if file.format == variant.format and file.sha256 == variant.sha256:
                    variant.uri = file.uri
    report_path = workdir / "out" / REPORT_NAME
    report_path.write_text(json_format.MessageToJson(report, preserving_proto_field_name=True))
    artifacts.append(outputs.put(job_id, REPORT_NAME, report_path, sha256_file(report_path), attempt))
    if not outputs.write_manifest(job_id, artifacts):
        log.warning("job %s: a manifest exists already; completing the job from it", job_id)
        return complete_from_manifest(stores, job_id, owner=owner)
    return _succeed(stores.jobs, job_id, owner, report, artifacts)


def complete_from_manifest(stores: TenantStores, job_id: str, *, owner: str) -> bool:
    """End a job SUCCEEDED from its stored manifest and report; False when there is no manifest
    or the job is not leased to ``owner``."""
    artifacts = stores.artifacts.manifest(job_id)
    if artifacts is None:
        return False
    stored = next((a for a in artifacts if a.name == REPORT_NAME), None)
    report = report_pb2.OptimizationReport()
    if stored is not None:
        json_format.Parse(stores.artifacts.read(stored), report, ignore_unknown_fields=True)
    return _succeed(stores.jobs, job_id, owner, report, artifacts)


def _succeed(
    jobs: JobStore,
    job_id: str,
    owner: str,
    report: report_pb2.OptimizationReport,
    artifacts: list[job_pb2.Artifact],
) -> bool:
    done = False

    def to_succeeded(job: job_pb2.Job) -> bool:
        nonlocal done
        if job.state != record.RUNNING or job.lease.owner != owner:
            return False
        record.transition(job, record.SUCCEEDED)
        job.report.CopyFrom(report)
        del job.artifacts[:]
        job.artifacts.extend(artifacts)
        job.progress.CopyFrom(job_pb2.JobProgress(stage="done", fraction=1.0, message="succeeded"))
        done = True
        return True

    jobs.mutate(job_id, to_succeeded)
    return done


def read_json(path: Path) -> Any:
    """A JSON file the worker wrote, size-capped; INTERNAL when missing or corrupt."""
    if not path.is_file() or path.stat().st_size > _MAX_RESULT_BYTES:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"the worker left no usable {path.name}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"the worker left a corrupt {path.name}") from exc


def inside(workdir: Path, relative: str) -> Path:
    """A regular file the worker reported, confined to its working directory."""
    root = workdir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file() or (root / relative).is_symlink():
        raise ServiceError(
            Code.INTERNAL, "INTERNAL_ERROR", f"the worker reported an unusable artifact {relative!r}"
        )
    return path


def artifact_name(name: str) -> str:
    """``name`` when it is a safe artifact name, else INTERNAL."""
    if not name or "/" in name or name.startswith(".") or not name.isprintable() or len(name) > 128:
        raise ServiceError(
            Code.INTERNAL, "INTERNAL_ERROR", f"the worker reported a bad artifact name {name!r}"
        )
    return name
