"""The synchronous client of ``prunekit.v1.OptimizerService``."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import grpc
from google.protobuf.message import Message

from prunekit import _datasets, _transfer
from prunekit._auth import ENV_SERVER, ChannelSecurity, from_env
from prunekit._coerce import InputsLike, ModelLike, ProgressCallback, SpecLike, as_spec, input_specs
from prunekit._datasets import DatasetLike
from prunekit._errors import PrunekitError
from prunekit._model_format import infer_format
from prunekit._retry import RetryPolicy
from prunekit._version import __version__
from prunekit._watch import TERMINAL_STATES, is_terminal, watch
from prunekit.v1 import job_pb2, model_pb2, optimizer_service_pb2_grpc
from prunekit.v1 import optimizer_service_pb2 as pb

__all__ = ["TERMINAL_STATES", "Client", "is_terminal"]


class Client:
    """A connection to a prunekit server.

    Every call has a deadline: ``timeout`` seconds (each method takes ``timeout=`` to override it), except
    uploads and downloads, which get ``transfer_timeout``, and each WatchJob subscription, which gets
    ``watch_timeout`` (the watch re-subscribes when it expires, so waiting for a job is not bounded by it).
    Deadlines apply per attempt.

    Calls that are safe to repeat (all of them: uploads are content-addressed, CreateJob carries a
    ``request_id``, CancelJob of a cancelled job is recognised) are retried up to ``retries`` times on
    ``UNAVAILABLE`` and on ``RESOURCE_EXHAUSTED`` with reason ``QUEUE_FULL`` or ``TOO_MANY_STREAMS``, with
    exponential backoff from ``backoff`` seconds (capped at 10 s) and jitter, or the server's RetryInfo
    delay when longer. Failures raise :class:`PrunekitError`. A watch that the server ends (it bounds
    each stream's length) is re-opened.

    Security: ``ca_file`` (a PEM bundle) makes the channel TLS, trusting that CA; ``cert_file`` and
    ``key_file`` add a client certificate (mTLS); ``credentials`` gives channel credentials of your own
    instead. ``token`` is sent as ``authorization: Bearer <token>`` on every call.

    Like the CLI, each of these that is not given (None) is read from the environment: ``target`` from
    ``PRUNEKIT_SERVER`` (else ``localhost:50051``), ``token`` from ``PRUNEKIT_TOKEN``, ``ca_file``,
    ``cert_file`` and ``key_file`` from ``PRUNEKIT_CA_FILE``, ``PRUNEKIT_CERT_FILE`` and
    ``PRUNEKIT_KEY_FILE`` (the three only when ``credentials`` is not given). Pass ``""`` to use none
    even when the variable is set.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        transfer_timeout: float = 600.0,
        watch_timeout: float = 300.0,
        backoff: float = 0.25,
        token: str | None = None,
        ca_file: str | PathLike[str] | None = None,
        cert_file: str | PathLike[str] | None = None,
        key_file: str | PathLike[str] | None = None,
    ) -> None:
        if timeout <= 0 or transfer_timeout <= 0 or watch_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.target = from_env(target, ENV_SERVER) or "localhost:50051"
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout
        self.watch_timeout = watch_timeout
        self._retry = RetryPolicy(retries=retries, backoff=backoff)
        options = [("grpc.primary_user_agent", f"prunekit-python/{__version__}"), *(channel_options or ())]
        security = ChannelSecurity(token, ca_file, cert_file, key_file, credentials)
        self._channel = security.channel(self.target, options)
        self._stub = optimizer_service_pb2_grpc.OptimizerServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def ping(self, timeout: float = 5.0) -> None:
        """Check, once and without retries, that the server answers (its ``grpc.health.v1`` check,
        which needs no credential); :class:`PrunekitError` ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED``
        when it cannot be reached. A server that answers anything else (even an error) is reachable."""
        health = "/grpc.health.v1.Health/Check"
        check = self._channel.unary_unary(health, request_serializer=bytes, response_deserializer=bytes)
        try:
            check(b"", timeout=timeout)
        except grpc.RpcError as exc:
            err = PrunekitError.from_rpc_error(exc)
            if err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise err from exc

    def _unary(self, method: Any, request: Message, timeout: float | None) -> Any:
        deadline = self.timeout if timeout is None else timeout
        return self._retry.call(lambda _attempt: method(request, timeout=deadline))

    def upload_model(
        self,
        path: str | PathLike[str],
        *,
        format: model_pb2.ModelFormat.ValueType | None = None,
        filename: str | None = None,
        timeout: float | None = None,
        on_sent: Callable[[int, int], None] | None = None,
    ) -> model_pb2.ModelRef:
        """Uploads a model file and returns its reference.

        The format comes from the suffix unless given (``ValueError`` when it cannot be told). The file is
        streamed as a metadata message and chunks of at most 1 MiB, hashed as it is read (one pass; it is
        never read whole into memory); the server computes the digest too, and a stored ref whose sha256
        differs raises ``DATA_LOSS`` / ``CHECKSUM_MISMATCH``. Retried from the start on transient errors
        (the store is content-addressed). ``on_sent(bytes, total)`` follows the stream. Raises ``OSError``
        when the file cannot be read.
        """
        file = Path(path)
        model_format = infer_format(file) if format is None else format
        streamed = _transfer.StreamedFile(file, on_sent)
        metadata = pb.UploadMetadata(
            filename=filename or file.name, format=model_format, size_bytes=streamed.size_bytes
        )
        requests = functools.partial(_transfer.upload_requests, streamed, metadata)
        deadline = self.transfer_timeout if timeout is None else timeout
        method = self._stub.UploadModel
        response = _transfer.upload(method, requests, streamed, metadata, self._retry, deadline)
        model = cast(pb.UploadModelResponse, response).model
        streamed.check(model.sha256)
        return model

    def upload_dataset(
        self, source: DatasetLike, filename: str | None = None, *, timeout: float | None = None
    ) -> model_pb2.DatasetRef:
        """Uploads one dataset shard and returns its reference: put its ``uri`` in a spec's ``data``.

        ``source`` is the path of an ``.npz`` file, or a mapping of array name to array-like, such as
        ``{"input": x, "label": y}``, written to a temporary ``.npz`` first (only this needs numpy).
        ``filename`` names the shard in its ref and in errors (default: the file's name, or
        ``dataset.npz``). Streamed and retried like :meth:`upload_model`. A malformed shard raises
        ``INVALID_ARGUMENT`` / ``INVALID_DATASET`` whose violations name ``<filename>:<array>``.
        """
        with _datasets.dataset_file(source, filename) as (file, name):
            streamed = _transfer.StreamedFile(file)
            metadata = pb.DatasetMetadata(filename=name, size_bytes=streamed.size_bytes)
            requests = functools.partial(_transfer.dataset_requests, streamed, metadata)
            deadline = self.transfer_timeout if timeout is None else timeout
            method = self._stub.UploadDataset
            response = _transfer.upload(method, requests, streamed, metadata, self._retry, deadline)
        dataset = cast(pb.UploadDatasetResponse, response).dataset
        streamed.check(dataset.sha256)
        return dataset

    def _model_ref(self, model: ModelLike) -> model_pb2.ModelRef:
        if isinstance(model, model_pb2.ModelRef):
            return model
        return self.upload_model(model)

    def analyze(
        self,
        model: ModelLike,
        inputs: InputsLike = None,
        *,
        sensitivity: bool = False,
        sensitivity_ratios: Sequence[float] = (),
        timeout: float | None = None,
    ) -> model_pb2.ModelAnalysis:
        """Analyses a stored model (a path is uploaded first).

        ``inputs`` declares concrete shapes, as ``{"x": [1, 3, 224, 224]}`` or ``InputSpec`` messages;
        required for TorchScript, optional for ONNX. ``sensitivity`` adds a sensitivity analysis
        (``analysis.sensitivity``: per layer group, output fidelity after pruning it alone at
        ``sensitivity_ratios``, default 0.1 to 0.7); it takes longer, so its deadline is at least
        ``watch_timeout`` unless ``timeout`` is given.
        """
        request = pb.AnalyzeModelRequest(
            model=self._model_ref(model),
            inputs=input_specs(inputs),
            sensitivity=sensitivity,
            sensitivity_ratios=list(sensitivity_ratios),
        )
        if timeout is None and sensitivity:
            timeout = max(self.timeout, self.watch_timeout)
        return cast(pb.AnalyzeModelResponse, self._unary(self._stub.AnalyzeModel, request, timeout)).analysis

    def create_job(
        self,
        model: ModelLike,
        spec: SpecLike,
        *,
        request_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> job_pb2.Job:
        """Starts a job and returns it (``PENDING``).

        ``spec`` is read before ``model`` (a path) is uploaded, so a bad spec file fails fast with
        :class:`SpecError`. ``request_id`` (a new UUID when None) is sent unchanged on every retry, so a retry
        after a lost response returns the job the first attempt created.
        """
        spec_message = as_spec(spec)
        request = pb.CreateJobRequest(
            model=self._model_ref(model),
            spec=spec_message,
            request_id=request_id or str(uuid.uuid4()),
            labels=dict(labels or {}),
        )
        return cast(pb.CreateJobResponse, self._unary(self._stub.CreateJob, request, timeout)).job

    def optimize(
        self,
        model: ModelLike,
        spec: SpecLike,
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        poll_timeout: float | None = None,
    ) -> job_pb2.Job:
        """Uploads the model when given a path, starts a job and, with ``wait``, follows it to its end.

        ``spec`` is an ``OptimizationSpec``, a spec-file mapping or the path of a YAML/JSON spec file.
        ``on_progress`` gets every update; ``poll_timeout`` is the deadline of each WatchJob subscription
        (``watch_timeout`` when None). Returns the job (with its ``report`` when it succeeded); raises
        :class:`PrunekitError` carrying ``.job`` when it ends ``FAILED`` or ``CANCELLED``.
        """
        job = self.create_job(model, spec, request_id=request_id, labels=labels)
        if not wait:
            return job
        return self.wait(job.id, on_progress=on_progress, poll_timeout=poll_timeout)

    def wait(
        self, job_id: str, *, on_progress: ProgressCallback | None = None, poll_timeout: float | None = None
    ) -> job_pb2.Job:
        """Follows a job until it ends; like :meth:`optimize` with ``wait`` for a job already created."""
        final: job_pb2.Job | None = None
        for job in self.watch_job(job_id, poll_timeout=poll_timeout):
            if on_progress is not None:
                on_progress(job)
            final = job
        if final is None or final.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise PrunekitError.from_job(final or job_pb2.Job(id=job_id))
        return final

    def get_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """The job's current record."""
        request = pb.GetJobRequest(job_id=job_id)
        return cast(pb.GetJobResponse, self._unary(self._stub.GetJob, request, timeout)).job

    def list_jobs(
        self,
        page_size: int = 50,
        page_token: str = "",
        *,
        states: Sequence[job_pb2.JobState.ValueType] = (),
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[list[job_pb2.Job], str]:
        """One page of jobs, newest first, and the token of the next page (``""`` on the last); only those
        in one of ``states`` and carrying every one of ``labels`` when given (a filtered page may hold
        fewer jobs than ``page_size`` and still have a next one)."""
        request = pb.ListJobsRequest(
            page_size=page_size, page_token=page_token, states=states, labels=labels or {}
        )
        response = cast(pb.ListJobsResponse, self._unary(self._stub.ListJobs, request, timeout))
        return list(response.jobs), response.next_page_token

    def iter_jobs(
        self,
        page_size: int = 50,
        *,
        states: Sequence[job_pb2.JobState.ValueType] = (),
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[job_pb2.Job]:
        """Every job (in ``states``, with ``labels``), newest first, fetching pages as it goes."""
        token = ""
        while True:
            jobs, token = self.list_jobs(page_size, token, states=states, labels=labels)
            yield from jobs
            if not token:
                return

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Cancels a job and returns its record.

        A job that already ended is ``FAILED_PRECONDITION`` / ``JOB_ALREADY_FINISHED`` — except when an
        earlier attempt of this same call was lost in transit and the job is now ``CANCELLED``: then that
        job is returned.
        """
        request = pb.CancelJobRequest(job_id=job_id)
        deadline = self.timeout if timeout is None else timeout
        retried = False

        def attempt(retry: int) -> pb.CancelJobResponse:
            nonlocal retried
            retried = retry > 0
            return cast(pb.CancelJobResponse, self._stub.CancelJob(request, timeout=deadline))

        try:
            return self._retry.call(attempt).job
        except PrunekitError as err:
            if retried and err.reason == "JOB_ALREADY_FINISHED":
                job = self.get_job(job_id, timeout=timeout)
                if job.state == job_pb2.JOB_STATE_CANCELLED:
                    return job
            raise

    def delete_job(self, job_id: str, *, cancel: bool = False, timeout: float | None = None) -> bool:
        """Deletes an ended job: its record, artifacts and checkpoints. Returns whether this call removed it
        (False: it was not there, e.g. deleted already; so a retried delete is not an error).

        A ``PENDING`` or ``RUNNING`` job raises ``FAILED_PRECONDITION`` / ``JOB_ACTIVE``; with ``cancel``
        it is cancelled first and deleted once it has ended.
        """
        if cancel:
            try:
                self.cancel_job(job_id, timeout=timeout)
                for _ in self.watch_job(job_id):
                    pass
            except PrunekitError as err:
                if err.reason not in ("JOB_ALREADY_FINISHED", "JOB_NOT_FOUND"):
                    raise
        request = pb.DeleteJobRequest(job_id=job_id)
        return cast(pb.DeleteJobResponse, self._unary(self._stub.DeleteJob, request, timeout)).deleted

    def watch_job(self, job_id: str, *, poll_timeout: float | None = None) -> Iterator[job_pb2.Job]:
        """Yields the job now and at every change until it ends (the last item is terminal).

        A subscription that breaks (``UNAVAILABLE``, a closed stream, its ``poll_timeout`` deadline) is
        re-opened and updates already seen are not yielded twice. Subscriptions that fail before sending
        anything count against ``retries``; one that delivers resets the count.
        """
        deadline = self.watch_timeout if poll_timeout is None else poll_timeout
        return watch(self._stub, job_id, deadline, self._retry)

    def download_artifact(
        self,
        job_id: str,
        name: str,
        dest: str | PathLike[str],
        *,
        timeout: float | None = None,
        on_received: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Downloads one artifact to ``dest`` (or to ``dest/name`` when ``dest`` is a directory).

        The bytes go to a temporary file that replaces ``dest`` only when their size and SHA-256 match the
        stream's first (``info``) message; a mismatch raises ``DATA_LOSS``. Restarted on transient errors.
        ``on_received(bytes, total)`` follows the stream (from 0 again when it restarts).
        """
        target = Path(dest)
        if target.is_dir() or str(dest).endswith(("/", os.sep)):
            target = _transfer.artifact_path(target, name)
        request = pb.DownloadArtifactRequest(job_id=job_id, name=name)
        deadline = self.transfer_timeout if timeout is None else timeout
        _transfer.download(self._stub.DownloadArtifact, request, target, self._retry, deadline, on_received)
        return target

    def download_artifacts(
        self,
        job: job_pb2.Job | str,
        directory: str | PathLike[str],
        *,
        timeout: float | None = None,
        on_received: Callable[[str, int, int], None] | None = None,
    ) -> list[Path]:
        """Downloads every artifact in the job's manifest into ``directory`` (created when missing).

        ``job`` is a Job or a job id (fetched). A job that has not succeeded raises ``FAILED_PRECONDITION`` /
        ``JOB_NOT_SUCCEEDED``. Artifact names that would land outside ``directory`` are refused.
        ``on_received(name, bytes, total)`` follows each artifact's stream.
        """
        record = _transfer.require_succeeded(self.get_job(job) if isinstance(job, str) else job)
        root = Path(directory)
        targets = [(a.name, _transfer.artifact_path(root, a.name)) for a in record.artifacts]
        for name, target in targets:
            follow = None if on_received is None else functools.partial(on_received, name)
            self.download_artifact(record.id, name, target, timeout=timeout, on_received=follow)
        return [target for _, target in targets]
