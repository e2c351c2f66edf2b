"""``prunekit.v1.OptimizerService``: converts requests to calls of the job store and executor.

Every call works on the stores of the caller's tenant (:func:`..auth.identity.current`), never on a
tenant named by the request: another tenant's jobs, models and datasets are NOT_FOUND, request ids and
content addresses are per tenant. The admin role has no reach beyond its own tenant in this API."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc

from prunekit.spec.inputs import input_violations
from prunekit.spec.limits import SpecLimits
from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc

from ..auth import identity
from ..config import Settings
from ..errors import Code, FieldViolation, ServiceError
from ..jobs.durable import record
from ..jobs.durable.dataset_store import DatasetStore
from ..jobs.durable.deletion import delete_job
from ..jobs.durable.storage_errors import storage_errors
from ..jobs.durable.stores import TenantStores
from ..jobs.durable.tenants import Tenants
from ..jobs.durable.usage import Quotas
from ..jobs.execution.seam import Executor
from ..observability.metrics import DOWNLOADED_BYTES, JOBS_CREATED
from ..spec_check import check_runtime, check_spec
from .admission import Paced, StreamCap
from .quotas import active_jobs_admission, tenant_quotas
from .status import streaming, unary
from .upload import receive_dataset, receive_upload

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_LABELS = 64
MAX_REQUEST_ID = 128
DOWNLOAD_CHUNK = 1 << 20
MAX_SENSITIVITY_RATIOS = 16

T = TypeVar("T")


def _invalid(message: str, **violations: str) -> ServiceError:
    return ServiceError(
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        message,
        [FieldViolation(k, v) for k, v in violations.items()],
    )


def _require_job_id(job_id: str) -> str:
    if not job_id:
        raise _invalid("job_id is required", job_id="required")
    return job_id


def _sensitivity_violations(request: pb.AnalyzeModelRequest) -> list[FieldViolation]:
    ratios = list(request.sensitivity_ratios)
    if ratios and not request.sensitivity:
        return [FieldViolation("sensitivity_ratios", "only with sensitivity")]
    found = []
    if len(ratios) > MAX_SENSITIVITY_RATIOS:
        found.append(FieldViolation("sensitivity_ratios", f"at most {MAX_SENSITIVITY_RATIOS} ratios"))
    if len(set(ratios)) != len(ratios):
        found.append(FieldViolation("sensitivity_ratios", "no ratio may repeat"))
    for i, ratio in enumerate(ratios):
        if not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
            message = f"must satisfy 0 < ratio < 1, got {ratio!r}"
            found.append(FieldViolation(f"sensitivity_ratios[{i}]", message))
    return found


def _list_filter(request: pb.ListJobsRequest) -> Callable[[job_pb2.Job], bool] | None:
    """ListJobs' filters as one predicate (None without filters); INVALID_REQUEST for an unknown state."""
    states = set(request.states)
    wanted = dict(request.labels)
    known = set(job_pb2.JobState.values()) - {job_pb2.JOB_STATE_UNSPECIFIED}
    bad = {f"states[{i}]": "a job state" for i, state in enumerate(request.states) if state not in known}
    if bad:
        raise _invalid("states names an unknown job state", **bad)
    if len(wanted) > MAX_LABELS:
        raise _invalid(f"at most {MAX_LABELS} labels", labels=f"at most {MAX_LABELS}")
    if not states and not wanted:
        return None

    def match(job: job_pb2.Job) -> bool:
        if states and job.state not in states:
            return False
        return all(job.labels.get(key) == value for key, value in wanted.items())

    return match


class OptimizerServicer(pb_grpc.OptimizerServiceServicer):
    """Thin: validates requests, then delegates to the caller's stores and its :class:`Executor`."""

    def __init__(self, tenants: Tenants, executor: Executor, settings: Settings) -> None:
        self._tenants = tenants
        self._executor = executor
        self._settings = settings
        self._uploads = StreamCap("uploads", "max_concurrent_uploads", settings.max_concurrent_uploads)
        self._watches = StreamCap("watches", "max_concurrent_watches", settings.max_concurrent_watches)
        self._downloads = StreamCap(
            "downloads", "max_concurrent_downloads", settings.max_concurrent_downloads
        )
        self._spec_limits = SpecLimits(
            max_data_shards=settings.max_job_data_shards,
            max_input_bytes=executor.model_caps.max_input_bytes,
            max_finetune_epochs=settings.max_finetune_epochs,
            max_finetune_steps=settings.max_finetune_steps,
            max_finetune_seconds=settings.max_finetune_seconds,
            max_finetune_workers=settings.max_finetune_workers if settings.executor == "ray" else 1,
            max_timeout_seconds=settings.job_timeout_s,
        )

    def _stores(self) -> TenantStores:
        """The stores of the caller's tenant."""
        return self._tenants.stores(identity.current().tenant)

    def _quotas(self) -> Quotas:
        return tenant_quotas(self._settings, identity.current())

    def _datasets(self) -> DatasetStore:
        return DatasetStore.for_tenant(self._stores(), self._settings)

    def _spool_dir(self) -> Path | None:
        """Where uploads are received: beside the stored objects when the store can move them in."""
        with storage_errors():
            return self._tenants.store.spool_dir() or self._settings.scratch_path()

    def _paced(self, requests: Iterator[T]) -> Paced[T]:
        settings = self._settings
        return Paced(requests, settings.upload_chunk_timeout_s, settings.upload_timeout_s)

    @unary
    def UploadModel(  # noqa: N802
        self, request_iterator: Iterator[pb.UploadModelRequest], context: grpc.ServicerContext
    ) -> pb.UploadModelResponse:
        spool, cap = self._spool_dir(), self._settings.max_upload_bytes
        stores, quota = self._stores(), self._quotas().stored_bytes
        with (
            self._uploads.hold(),
            self._paced(request_iterator) as requests,
            receive_upload(requests, spool, cap, self._executor.model_caps) as (path, ref),
        ):
            stored, deduplicated = stores.models.put(path, ref, quota_bytes=quota)
        return pb.UploadModelResponse(model=stored, deduplicated=deduplicated)

    @unary
    def UploadDataset(  # noqa: N802
        self, request_iterator: Iterator[pb.UploadDatasetRequest], context: grpc.ServicerContext
    ) -> pb.UploadDatasetResponse:
        spool, cap = self._spool_dir(), self._settings.max_dataset_upload_bytes
        datasets, quota = self._datasets(), self._quotas().stored_bytes
        with (
            self._uploads.hold(),
            self._paced(request_iterator) as requests,
            receive_dataset(requests, spool, cap) as (path, ref),
        ):
            stored, deduplicated = datasets.put(path, ref, quota_bytes=quota)
        return pb.UploadDatasetResponse(dataset=stored, deduplicated=deduplicated)

    @unary
    def AnalyzeModel(  # noqa: N802
        self, request: pb.AnalyzeModelRequest, context: grpc.ServicerContext
    ) -> pb.AnalyzeModelResponse:
        max_bytes = self._spec_limits.max_input_bytes
        violations = input_violations(request.inputs, "inputs", max_bytes=max_bytes)
        violations += _sensitivity_violations(request)
        if violations:
            raise ServiceError(
                Code.INVALID_ARGUMENT, "INVALID_REQUEST", "invalid analysis request", violations
            )
        models = self._stores().models
        model = models.resolve(request.model)
        remaining = context.time_remaining()
        timeout = self._settings.analysis_timeout_s if remaining is None else min(remaining, 1e9)
        analysis = self._executor.analyze(
            models,
            model,
            request.inputs,
            timeout,
            sensitivity=request.sensitivity,
            sensitivity_ratios=list(request.sensitivity_ratios),
        )
        return pb.AnalyzeModelResponse(analysis=analysis)

    @unary
    def CreateJob(self, request: pb.CreateJobRequest, context: grpc.ServicerContext) -> pb.CreateJobResponse:  # noqa: N802
        self._check_create(request)
        stores = self._stores()
        model = stores.models.resolve(request.model)
        stores.models.in_use(model.sha256)
        check_spec(request.spec, model.format, limits=self._spec_limits)
        check_runtime(request.spec)
        if request.spec.HasField("data"):
            DatasetStore.for_tenant(stores, self._settings).resolve(request.spec.data)
        quotas = self._quotas()
        stores.usage.check_room(0, quotas.stored_bytes)
        admit = active_jobs_admission(stores.jobs, quotas.active_jobs)
        request_id = request.request_id or uuid.uuid4().hex
        self._executor.reserve()
        try:
            labels = dict(request.labels)
            job, created = stores.jobs.create(model, request.spec, request_id, labels, admit=admit)
        except BaseException:
            self._executor.release()
            raise
        if created:
            JOBS_CREATED.inc()
            self._executor.submit(job.id, stores.jobs.tenant)
        else:
            self._executor.release()
        return pb.CreateJobResponse(job=job)

    @staticmethod
    def _check_create(request: pb.CreateJobRequest) -> None:
        violations: dict[str, str] = {}
        if not request.HasField("model"):
            violations["model"] = "required: the ModelRef UploadModel returned"
        if not request.HasField("spec"):
            violations["spec"] = "required"
        if len(request.request_id) > MAX_REQUEST_ID or not request.request_id.isprintable():
            violations["request_id"] = f"at most {MAX_REQUEST_ID} printable characters"
        if len(request.labels) > MAX_LABELS:
            violations["labels"] = f"at most {MAX_LABELS} labels"
        for key, value in request.labels.items():
            if not key or len(key) > 128 or len(value) > 256 or not (key + value).isprintable():
                violations[f"labels[{key}]"] = (
                    "keys of 1 to 128 and values of at most 256 printable characters"
                )
        if violations:
            raise _invalid("invalid CreateJobRequest", **violations)

    @unary
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:  # noqa: N802
        return pb.GetJobResponse(job=self._stores().jobs.get(_require_job_id(request.job_id)))

    @unary
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:  # noqa: N802
        if request.page_size < 0:
            raise _invalid("page_size must not be negative", page_size=">= 0")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        match = _list_filter(request)
        jobs, token = self._stores().jobs.list_jobs(size, request.page_token, match)
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    @unary
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:  # noqa: N802
        job_id = _require_job_id(request.job_id)
        return pb.CancelJobResponse(job=self._executor.cancel(job_id, identity.current().tenant))

    @unary
    def DeleteJob(self, request: pb.DeleteJobRequest, context: grpc.ServicerContext) -> pb.DeleteJobResponse:  # noqa: N802
        deleted = delete_job(self._stores(), _require_job_id(request.job_id))
        return pb.DeleteJobResponse(deleted=deleted)

    @streaming
    def WatchJob(  # noqa: N802
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchJobResponse]:
        job_id = _require_job_id(request.job_id)
        with self._watches.hold():
            yield from self._watch(job_id, context)

    def _watch(self, job_id: str, context: grpc.ServicerContext) -> Iterator[pb.WatchJobResponse]:
        """Every change of the job until it ends or ``watch_max_s`` passed (the client subscribes again)."""
        last = b""
        jobs = self._stores().jobs
        ends = time.monotonic() + self._settings.watch_max_s
        while context.is_active():
            job = jobs.get(job_id)
            data = job.SerializeToString(deterministic=True)
            if data != last:
                last = data
                yield pb.WatchJobResponse(job=job)
            left = ends - time.monotonic()
            if record.is_terminal(job.state) or left <= 0:
                return
            jobs.wait_for_change(min(self._settings.watch_poll_s, left))

    @streaming
    def DownloadArtifact(  # noqa: N802
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse]:
        if not request.name:
            raise _invalid("name is required", name="an artifact name from the job's manifest")
        with self._downloads.hold():
            yield from self._download(request, context)

    def _download(
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse]:
        stores = self._stores()
        job = stores.jobs.get(_require_job_id(request.job_id))
        artifact, chunks = stores.artifacts.open(job, request.name)
        yield pb.DownloadArtifactResponse(info=artifact)
        for chunk in chunks:
            if not context.is_active():
                return
            for start in range(0, len(chunk), DOWNLOAD_CHUNK):
                piece = chunk[start : start + DOWNLOAD_CHUNK]
                DOWNLOADED_BYTES.inc(len(piece))
                yield pb.DownloadArtifactResponse(chunk=piece)
