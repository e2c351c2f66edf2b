"""``prunekit.v1.OptimizerService``: converts requests to calls of the job store and executor."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc

from prunekit.spec.inputs import input_violations
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc

from ..config import Settings
from ..errors import Code, FieldViolation, ServiceError
from ..jobs.durable import record
from ..jobs.durable.dataset_store import DatasetStore
from ..jobs.durable.storage_errors import storage_errors
from ..jobs.durable.stores import TenantStores
from ..jobs.execution.executor import JobExecutor
from ..spec_check import check_spec
from .status import streaming, unary
from .upload import receive_dataset, receive_upload

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_LABELS = 64
MAX_REQUEST_ID = 128
DOWNLOAD_CHUNK = 1 << 20
MAX_SENSITIVITY_RATIOS = 16


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


class OptimizerServicer(pb_grpc.OptimizerServiceServicer):
    """Thin: validates requests, then delegates to the tenant's stores and the :class:`JobExecutor`."""

    def __init__(self, stores: TenantStores, executor: JobExecutor, settings: Settings) -> None:
        self._models = stores.models
        self._jobs = stores.jobs
        self._artifacts = stores.artifacts
        self._executor = executor
        self._settings = settings
        self._datasets = DatasetStore.for_tenant(stores, settings)

    def _spool_dir(self) -> Path | None:
        """Where uploads are received: beside the stored objects when the store can move them in."""
        with storage_errors():
            return self._models.store.spool_dir() or self._settings.scratch_path()

    @unary
    def UploadModel(  # noqa: N802
        self, request_iterator: Iterator[pb.UploadModelRequest], context: grpc.ServicerContext
    ) -> pb.UploadModelResponse:
        spool, cap = self._spool_dir(), self._settings.max_upload_bytes
        with receive_upload(request_iterator, spool, cap) as (path, ref):
            stored, deduplicated = self._models.put(path, ref)
        return pb.UploadModelResponse(model=stored, deduplicated=deduplicated)

    @unary
    def UploadDataset(  # noqa: N802
        self, request_iterator: Iterator[pb.UploadDatasetRequest], context: grpc.ServicerContext
    ) -> pb.UploadDatasetResponse:
        spool, cap = self._spool_dir(), self._settings.max_dataset_upload_bytes
        with receive_dataset(request_iterator, spool, cap) as (path, ref):
            stored, deduplicated = self._datasets.put(path, ref)
        return pb.UploadDatasetResponse(dataset=stored, deduplicated=deduplicated)

    @unary
    def AnalyzeModel(  # noqa: N802
        self, request: pb.AnalyzeModelRequest, context: grpc.ServicerContext
    ) -> pb.AnalyzeModelResponse:
        violations = input_violations(request.inputs, "inputs") + _sensitivity_violations(request)
        if violations:
            raise ServiceError(
                Code.INVALID_ARGUMENT, "INVALID_REQUEST", "invalid analysis request", violations
            )
        model = self._models.resolve(request.model)
        remaining = context.time_remaining()
        timeout = self._settings.analysis_timeout_s if remaining is None else min(remaining, 1e9)
        analysis = self._executor.analyze(
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
        model = self._models.resolve(request.model)
        check_spec(request.spec, model.format, max_data_shards=self._settings.max_job_data_shards)
        if request.spec.HasField("data"):
            self._datasets.resolve(request.spec.data)
        request_id = request.request_id or uuid.uuid4().hex
        self._executor.reserve()
        try:
            job, created = self._jobs.create(model, request.spec, request_id, dict(request.labels))
        except BaseException:
            self._executor.release()
            raise
        if created:
            self._executor.submit(job.id)
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
        return pb.GetJobResponse(job=self._jobs.get(_require_job_id(request.job_id)))

    @unary
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:  # noqa: N802
        if request.page_size < 0:
            raise _invalid("page_size must not be negative", page_size=">= 0")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        jobs, token = self._jobs.list_jobs(size, request.page_token)
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    @unary
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:  # noqa: N802
        return pb.CancelJobResponse(job=self._executor.cancel(_require_job_id(request.job_id)))

    @streaming
    def WatchJob(  # noqa: N802
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchJobResponse]:
        job_id = _require_job_id(request.job_id)
        last = b""
        while context.is_active():
            job = self._jobs.get(job_id)
            data = job.SerializeToString(deterministic=True)
            if data != last:
                last = data
                yield pb.WatchJobResponse(job=job)
            if record.is_terminal(job.state):
                return
            self._jobs.wait_for_change(self._settings.watch_poll_s)

    @streaming
    def DownloadArtifact(  # noqa: N802
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse]:
        if not request.name:
            raise _invalid("name is required", name="an artifact name from the job's manifest")
        job = self._jobs.get(_require_job_id(request.job_id))
        artifact, chunks = self._artifacts.open(job, request.name)
        yield pb.DownloadArtifactResponse(info=artifact)
        for chunk in chunks:
            if not context.is_active():
                return
            for start in range(0, len(chunk), DOWNLOAD_CHUNK):
                yield pb.DownloadArtifactResponse(chunk=chunk[start : start + DOWNLOAD_CHUNK])
