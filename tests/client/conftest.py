# ruff: noqa: N802 - servicer methods carry the RPC names
"""A scriptable in-process OptimizerService on a real port: a transport double for client behaviour.

It is not the real server; it only answers the way the API says, and lets tests inject failures.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from prunekit import Client, cli
from prunekit.v1 import (
    job_pb2,
    model_pb2,
    optimizer_service_pb2_grpc,
    report_pb2,
)
from prunekit.v1 import (
    optimizer_service_pb2 as pb,
)

DOMAIN = "prunekit.dev"


def make_status(
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    violations: list[tuple[str, str]] | None = None,
    retry_delay: float | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with one ErrorInfo (when ``reason``), a BadRequest and a RetryInfo as asked."""
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason:
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata={"k": "v"})
        )
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
        status.details.add().Pack(bad)
    if retry_delay is not None:
        delay = duration_pb2.Duration(seconds=int(retry_delay), nanos=int(retry_delay % 1 * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def abort(context: Any, status: status_pb2.Status) -> NoReturn:
    """Ends the call with a rich status (``abort_with_status`` raises; this says so to the type checker)."""
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")


def unavailable() -> status_pb2.Status:
    return make_status(grpc.StatusCode.UNAVAILABLE, "try again", "SERVER_SHUTTING_DOWN")


def sample_report() -> report_pb2.OptimizationReport:
    """A hand-built report with a baseline, one variant, two layers, a warning and a protocol."""
    latency = report_pb2.LatencyStats(
        p50_ms=12.5, p90_ms=13.25, p99_ms=15.75, throughput_per_s=80.0, batch_size=1
    )
    baseline = report_pb2.ModelStats(
        parameters=1_234_567,
        nonzero_parameters=1_234_000,
        macs=987_654_321,
        size_bytes=4_938_000,
        compressed_size_bytes=4_500_000,
        latency=latency,
    )
    pruned_stats = report_pb2.ModelStats(
        parameters=1_234_567,
        nonzero_parameters=617_283,
        macs=987_654_321,
        size_bytes=4_938_000,
        compressed_size_bytes=2_600_000,
        latency=report_pb2.LatencyStats(p50_ms=12.25, p90_ms=13.0, p99_ms=14.5, throughput_per_s=81.63),
        quality=report_pb2.QualityStats(
            top1_agreement=0.96875, cosine_similarity=0.998765, max_abs_error=0.0123, samples=32
        ),
    )
    variant = report_pb2.ModelVariant(
        name="pruned",
        format=model_pb2.MODEL_FORMAT_ONNX,
        stats=pruned_stats,
        latency_speedup=1.02,
        compression_ratio=1.73,
        macs_reduction=1.0,
    )
    layers = [
        report_pb2.LayerChange(
            name="conv1",
            op_type="Conv",
            shape_before=[32, 3, 3, 3],
            shape_after=[32, 3, 3, 3],
            nonzero_before=864,
            nonzero_after=432,
            sparsity=0.5,
            macs_before=884736,
            macs_after=884736,
        ),
        report_pb2.LayerChange(name="fc", op_type="Gemm", shape_before=[10, 128], skipped=True),
    ]
    protocol = report_pb2.BenchmarkProtocol(
        runtime="onnxruntime",
        runtime_version="1.20.1",
        execution_provider="CPUExecutionProvider",
        device="cpu",
        threads=1,
        batch_size=1,
        inputs=[model_pb2.InputSpec(name="x", shape=[1, 3, 32, 32])],
        warmup=10,
        iterations=50,
        interleaved=True,
        quality_inputs="32 synthetic samples, normal(0, 1), seed 0",
    )
    return report_pb2.OptimizationReport(
        baseline=baseline,
        variants=[variant],
        layers=layers,
        warnings=[report_pb2.ReportWarning(code="UNSTRUCTURED_NO_SPEEDUP", message="zeros do not speed up")],
        protocol=protocol,
        input_format=model_pb2.MODEL_FORMAT_ONNX,
    )


class FakeService(optimizer_service_pb2_grpc.OptimizerServiceServicer):
    """Answers like the API says.

    ``fail[method]`` holds rich statuses (or plain ``(code, message)``) to fail calls with, one per call,
    before answering; ``delay[method]`` makes every call of the method sleep first.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail: dict[str, list[status_pb2.Status | tuple[grpc.StatusCode, str]]] = defaultdict(list)
        self.delay: dict[str, float] = {}
        self.requests: dict[str, list[Any]] = defaultdict(list)
        self.deadlines: dict[str, list[float | None]] = defaultdict(list)
        self.uploads: list[list[pb.UploadModelRequest]] = []
        self.upload_break_after: int | None = None
        self.jobs: dict[str, job_pb2.Job] = {}
        self.by_request_id: dict[str, str] = {}
        self.watch_scripts: dict[str, list[list[job_pb2.Job | status_pb2.Status]]] = {}
        self.artifacts: dict[tuple[str, str], bytes] = {}
        self.bad_digest = False
        #: Behave like a server older than optional upload digests: refuse an empty metadata.sha256.
        self.require_sha256 = False
        self.outcome = "succeeded"
        #: Flags added to the succeeded report's variant.
        self.flags: list[report_pb2.VariantFlag.ValueType] = []
        self.lose_cancel_response = False

    def _enter(self, method: str, request: Any, context: Any) -> None:
        with self.lock:
            self.requests[method].append(request)
            self.deadlines[method].append(context.time_remaining())
            pending = self.fail[method].pop(0) if self.fail[method] else None
        if method in self.delay:
            time.sleep(self.delay[method])
        if isinstance(pending, tuple):
            context.abort(*pending)
        elif pending is not None:
            abort(context, pending)

    def UploadModel(
        self, request_iterator: Iterator[pb.UploadModelRequest], context: Any
    ) -> pb.UploadModelResponse:
        messages: list[pb.UploadModelRequest] = []
        self.uploads.append(messages)
        self._enter("UploadModel", None, context)
        for message in request_iterator:
            messages.append(message)
            if self.upload_break_after is not None and len(messages) > self.upload_break_after:
                self.upload_break_after = None
                abort(context, unavailable())
        meta = messages[0].metadata
        if self.require_sha256 and not meta.sha256:
            violation = [("metadata.sha256", "64 hex digits")]
            abort(
                context,
                make_status(grpc.StatusCode.INVALID_ARGUMENT, "bad metadata", "INVALID_REQUEST", violation),
            )
        data = b"".join(m.chunk for m in messages[1:])
        digest = hashlib.sha256(data).hexdigest()
        if (meta.sha256 and digest != meta.sha256) or len(data) != meta.size_bytes:
            abort(context, make_status(grpc.StatusCode.INVALID_ARGUMENT, "bad digest", "CHECKSUM_MISMATCH"))
        ref = model_pb2.ModelRef(
            uri=f"mem://models/{digest}",
            sha256="0" * 64 if self.bad_digest else digest,
            size_bytes=len(data),
            format=meta.format,
            filename=meta.filename,
        )
        return pb.UploadModelResponse(model=ref)

    def AnalyzeModel(self, request: pb.AnalyzeModelRequest, context: Any) -> pb.AnalyzeModelResponse:
        self._enter("AnalyzeModel", request, context)
        layer = model_pb2.LayerInfo(
            name="conv1", op_type="Conv", weight_shape=[32, 3, 3, 3], parameters=864, macs=884736
        )
        analysis = model_pb2.ModelAnalysis(
            format=request.model.format,
            opset=17,
            parameters=864,
            macs=884736,
            size_bytes=4096,
            node_count=3,
            layers=[layer],
            analyzed_inputs=list(request.inputs),
        )
        return pb.AnalyzeModelResponse(analysis=analysis)

    def _final(self, job: job_pb2.Job) -> job_pb2.Job:
        done = job_pb2.Job()
        done.CopyFrom(job)
        done.progress.CopyFrom(job_pb2.JobProgress(stage="report", fraction=1.0, message="done"))
        if self.outcome == "succeeded":
            done.state = job_pb2.JOB_STATE_SUCCEEDED
            done.report.CopyFrom(sample_report())
            done.report.variants[0].flags.extend(self.flags)
            for name, data in (("pruned.onnx", b"onnx-bytes" * 1000), ("report.md", b"# report\n")):
                self.artifacts[(job.id, name)] = data
                done.artifacts.add(name=name, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        else:
            done.state = job_pb2.JOB_STATE_FAILED
            status = make_status(
                grpc.StatusCode.FAILED_PRECONDITION, "op NonZero is not supported", "UNSUPPORTED_MODEL"
            )
            done.error.CopyFrom(status)
        return done

    def CreateJob(self, request: pb.CreateJobRequest, context: Any) -> pb.CreateJobResponse:
        self._enter("CreateJob", request, context)
        with self.lock:
            if request.request_id in self.by_request_id:
                return pb.CreateJobResponse(job=self.jobs[self.by_request_id[request.request_id]])
            job_id = f"job-{len(self.jobs) + 1}"
            job = job_pb2.Job(
                id=job_id,
                state=job_pb2.JOB_STATE_PENDING,
                model=request.model,
                spec=request.spec,
                request_id=request.request_id,
                labels=dict(request.labels),
                progress=job_pb2.JobProgress(stage="queued"),
            )
            job.create_time.FromSeconds(1_700_000_000)
            self.jobs[job_id] = job
            self.by_request_id[request.request_id] = job_id
            running = job_pb2.Job()
            running.CopyFrom(job)
            running.state = job_pb2.JOB_STATE_RUNNING
            running.progress.CopyFrom(job_pb2.JobProgress(stage="prune", fraction=0.5, message="layer 3/6"))
            self.watch_scripts.setdefault(job_id, [[job, running, self._final(job)]])
        return pb.CreateJobResponse(job=job)

    def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        self._enter("GetJob", request, context)
        job = self.jobs.get(request.job_id)
        if job is None:
            abort(context, make_status(grpc.StatusCode.NOT_FOUND, "no such job", "JOB_NOT_FOUND"))
        return pb.GetJobResponse(job=job)

    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        self._enter("ListJobs", request, context)
        ordered = sorted(self.jobs.values(), key=lambda j: int(j.id.split("-")[1]), reverse=True)
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = ordered[start : start + size]
        token = str(start + size) if start + size < len(ordered) else ""
        return pb.ListJobsResponse(jobs=page, next_page_token=token)

    def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.CancelJobResponse:
        self._enter("CancelJob", request, context)
        job = self.jobs[request.job_id]
        if job.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
            status = make_status(
                grpc.StatusCode.FAILED_PRECONDITION, "job already ended", "JOB_ALREADY_FINISHED"
            )
            abort(context, status)
        job.state = job_pb2.JOB_STATE_CANCELLED
        job.error.CopyFrom(make_status(grpc.StatusCode.CANCELLED, "cancelled by request", "JOB_CANCELLED"))
        if self.lose_cancel_response:
            self.lose_cancel_response = False
            abort(context, unavailable())
        return pb.CancelJobResponse(job=job)

    def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> Iterator[pb.WatchJobResponse]:
        self._enter("WatchJob", request, context)
        with self.lock:
            scripts = self.watch_scripts.get(request.job_id)
            script = scripts.pop(0) if scripts and len(scripts) > 1 else (scripts[0] if scripts else None)
        if script is None:
            abort(context, make_status(grpc.StatusCode.NOT_FOUND, "no such job", "JOB_NOT_FOUND"))
        for item in script:
            if isinstance(item, status_pb2.Status):
                abort(context, item)
            with self.lock:
                self.jobs[item.id] = item
            yield pb.WatchJobResponse(job=item)

    def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: Any
    ) -> Iterator[pb.DownloadArtifactResponse]:
        self._enter("DownloadArtifact", request, context)
        data = self.artifacts.get((request.job_id, request.name))
        if data is None:
            status = make_status(grpc.StatusCode.NOT_FOUND, "no such artifact", "ARTIFACT_NOT_FOUND")
            abort(context, status)
        digest = "0" * 64 if self.bad_digest else hashlib.sha256(data).hexdigest()
        yield pb.DownloadArtifactResponse(
            info=job_pb2.Artifact(name=request.name, sha256=digest, size_bytes=len(data))
        )
        for start in range(0, len(data), 4096):
            yield pb.DownloadArtifactResponse(chunk=data[start : start + 4096])


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def target(service: FakeService) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    optimizer_service_pb2_grpc.add_OptimizerServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target, timeout=5.0, backoff=0.01) as c:
        yield c


@pytest.fixture
def report() -> report_pb2.OptimizationReport:
    return sample_report()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A small file named like an ONNX model (the fake service never parses it)."""
    path = tmp_path / "net.onnx"
    path.write_bytes(b"\x08\x07" * 5000)
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    """A valid spec file: unstructured pruning at 50%."""
    path = tmp_path / "spec.yaml"
    path.write_text("prune:\n  method: unstructured\n  ratio: 0.5\n")
    return path


def run(target: str, *args: str) -> int:
    """The CLI's exit code for ``args`` against ``target`` with a 5 s deadline."""
    return cli.main(["--server", target, "--timeout", "5", *args])
