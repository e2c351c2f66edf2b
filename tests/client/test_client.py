"""Client behaviour over a real channel: uploads, watching, waiting, downloads, paging."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import grpc
import pytest

from prunekit import Client, PrunekitError, SpecError, is_terminal
from prunekit._transfer import CHUNK_SIZE, artifact_path
from prunekit.v1 import job_pb2, model_pb2, spec_pb2

from .conftest import FakeService, make_status, unavailable

SPEC = {"prune": {"method": "unstructured", "ratio": 0.5}}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.onnx"
    path.write_bytes(bytes(range(256)) * (CHUNK_SIZE * 2 // 256 + 100))
    return path


def test_upload_streams_metadata_then_bounded_chunks(
    service: FakeService, client: Client, model_file: Path
) -> None:
    ref = client.upload_model(model_file)
    data = model_file.read_bytes()
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size_bytes == len(data)
    assert ref.format == model_pb2.MODEL_FORMAT_ONNX
    messages = service.uploads[-1]
    assert messages[0].WhichOneof("payload") == "metadata"
    assert messages[0].metadata.filename == "net.onnx"
    assert messages[0].metadata.sha256 == ""  # hashed while streaming: the server computes it too
    assert messages[0].metadata.size_bytes == len(data)
    chunks = messages[1:]
    assert len(chunks) == 3
    assert all(m.WhichOneof("payload") == "chunk" and 0 < len(m.chunk) <= CHUNK_SIZE for m in chunks)


def test_upload_to_a_server_that_needs_the_digest_first_declares_it(
    service: FakeService, client: Client, model_file: Path
) -> None:
    service.require_sha256 = True
    ref = client.upload_model(model_file)
    assert ref.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    first, second = service.uploads[-2:]
    assert first[0].metadata.sha256 == ""
    assert second[0].metadata.sha256 == ref.sha256


def test_upload_refuses_a_stored_digest_that_differs_from_the_bytes_sent(
    service: FakeService, client: Client, model_file: Path
) -> None:
    service.bad_digest = True
    with pytest.raises(PrunekitError) as caught:
        client.upload_model(model_file)
    assert caught.value.code == grpc.StatusCode.DATA_LOSS
    assert caught.value.reason == "CHECKSUM_MISMATCH"


def test_upload_restarts_after_a_broken_stream(
    service: FakeService, client: Client, model_file: Path
) -> None:
    service.upload_break_after = 1
    ref = client.upload_model(model_file, filename="renamed.onnx")
    assert ref.filename == "renamed.onnx"
    assert len(service.uploads) == 2
    assert len(service.uploads[-1]) == 4


def test_upload_format_from_suffix(client: Client, tmp_path: Path) -> None:
    script = tmp_path / "net.TS"
    script.write_bytes(b"pk")
    assert client.upload_model(script).format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    unknown = tmp_path / "net.bin"
    unknown.write_bytes(b"?")
    with pytest.raises(ValueError, match="format"):
        client.upload_model(unknown)
    assert (
        client.upload_model(unknown, format=model_pb2.MODEL_FORMAT_ONNX).format == model_pb2.MODEL_FORMAT_ONNX
    )


def test_analyze_uploads_a_path_and_sends_inputs(
    service: FakeService, client: Client, model_file: Path
) -> None:
    analysis = client.analyze(str(model_file), {"x": [1, 3, 32, 32]})
    assert analysis.layers[0].name == "conv1"
    request = service.requests["AnalyzeModel"][0]
    assert request.model.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert [(i.name, list(i.shape)) for i in request.inputs] == [("x", [1, 3, 32, 32])]


def test_optimize_waits_and_reports_progress(service: FakeService, client: Client, model_file: Path) -> None:
    seen: list[job_pb2.Job] = []
    job = client.optimize(model_file, SPEC, on_progress=seen.append, labels={"a": "b"})
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.report.variants[0].name == "pruned"
    assert [j.state for j in seen] == [
        job_pb2.JOB_STATE_PENDING,
        job_pb2.JOB_STATE_RUNNING,
        job_pb2.JOB_STATE_SUCCEEDED,
    ]
    sent = service.requests["CreateJob"][0]
    assert sent.spec.prune.method == spec_pb2.PRUNE_METHOD_UNSTRUCTURED
    assert dict(sent.labels) == {"a": "b"}


def test_optimize_no_wait_returns_the_created_job(client: Client, model_file: Path, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("prune:\n  method: unstructured\n  ratio: 0.3\n")
    job = client.optimize(model_file, spec_file, wait=False)
    assert job.state == job_pb2.JOB_STATE_PENDING


def test_failed_job_raises_with_the_job(service: FakeService, client: Client, model_file: Path) -> None:
    service.outcome = "failed"
    with pytest.raises(PrunekitError) as info:
        client.optimize(model_file, SPEC)
    err = info.value
    assert err.code_name == "FAILED_PRECONDITION"
    assert err.reason == "UNSUPPORTED_MODEL"
    assert err.job is not None
    assert err.job.state == job_pb2.JOB_STATE_FAILED


def test_watch_resubscribes_after_a_break_without_repeats(service: FakeService, client: Client) -> None:
    job = client.create_job(model_pb2.ModelRef(uri="mem://m"), SPEC)
    pending, running, done = service.watch_scripts[job.id][0]
    service.watch_scripts[job.id] = [[pending, running, unavailable()], [running, done]]
    states = [j.state for j in client.watch_job(job.id)]
    assert states == [job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED]
    assert len(service.requests["WatchJob"]) == 2
    assert is_terminal(states[-1])


def test_watch_resubscribes_when_a_stream_ends_early(service: FakeService, client: Client) -> None:
    job = client.create_job(model_pb2.ModelRef(uri="mem://m"), SPEC)
    pending, running, done = service.watch_scripts[job.id][0]
    service.watch_scripts[job.id] = [[pending], [pending, running], [done]]
    assert [j.state for j in client.watch_job(job.id)][-1] == job_pb2.JOB_STATE_SUCCEEDED
    assert len(service.requests["WatchJob"]) == 3


def test_watch_gives_up_after_retries(service: FakeService, target: str) -> None:
    service.watch_scripts["job-x"] = [[unavailable()]]
    with Client(target, retries=2, backoff=0.01) as c, pytest.raises(PrunekitError) as info:
        list(c.watch_job("job-x"))
    assert info.value.code_name == "UNAVAILABLE"
    assert len(service.requests["WatchJob"]) == 3


def test_watch_of_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(PrunekitError) as info:
        list(client.watch_job("nope"))
    assert (info.value.code_name, info.value.reason) == ("NOT_FOUND", "JOB_NOT_FOUND")


def test_download_artifacts_verifies_and_writes(
    service: FakeService, client: Client, model_file: Path, tmp_path: Path
) -> None:
    job = client.optimize(model_file, SPEC)
    paths = client.download_artifacts(job.id, tmp_path / "out")
    assert [p.name for p in paths] == ["pruned.onnx", "report.md"]
    assert paths[0].read_bytes() == service.artifacts[(job.id, "pruned.onnx")]
    assert not list((tmp_path / "out").glob(".*.part"))


def test_download_progress_follows_each_stream(
    service: FakeService, client: Client, model_file: Path, tmp_path: Path
) -> None:
    job = client.optimize(model_file, SPEC)
    seen: list[tuple[str, int, int]] = []
    paths = client.download_artifacts(job, tmp_path, on_received=lambda *event: seen.append(event))
    assert paths
    for path in paths:
        total = len(path.read_bytes())
        events = [(got, of) for name, got, of in seen if name == path.name]
        assert events[0] == (0, total)
        assert events[-1] == (total, total)
        assert [got for got, _ in events] == sorted(got for got, _ in events)


def test_download_retries_a_broken_stream(
    service: FakeService, client: Client, model_file: Path, tmp_path: Path
) -> None:
    job = client.optimize(model_file, SPEC)
    service.fail["DownloadArtifact"] = [unavailable()]
    path = client.download_artifact(job.id, "report.md", tmp_path)
    assert path == tmp_path / "report.md"
    assert path.read_bytes() == b"# report\n"


def test_download_checksum_mismatch_leaves_nothing(
    service: FakeService, client: Client, model_file: Path, tmp_path: Path
) -> None:
    job = client.optimize(model_file, SPEC)
    service.bad_digest = True
    with pytest.raises(PrunekitError) as info:
        client.download_artifact(job.id, "pruned.onnx", tmp_path / "x.onnx")
    assert (info.value.code_name, info.value.reason) == ("DATA_LOSS", "CHECKSUM_MISMATCH")
    assert list(tmp_path.iterdir()) == [model_file]
    assert len(service.requests["DownloadArtifact"]) == 1


def test_download_artifacts_of_an_unfinished_job_is_refused(client: Client) -> None:
    job = client.create_job(model_pb2.ModelRef(uri="mem://m"), SPEC)
    with pytest.raises(PrunekitError) as info:
        client.download_artifacts(job, "unused")
    assert (info.value.code_name, info.value.reason) == ("FAILED_PRECONDITION", "JOB_NOT_SUCCEEDED")


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", "", "..\\x"])
def test_artifact_names_cannot_escape(name: str, tmp_path: Path) -> None:
    with pytest.raises(PrunekitError):
        artifact_path(tmp_path, name)


def test_artifact_names_may_have_subdirectories(tmp_path: Path) -> None:
    assert artifact_path(tmp_path, "onnx/pruned.onnx") == tmp_path / "onnx" / "pruned.onnx"


def test_list_and_iter_jobs_page_through(client: Client) -> None:
    for _ in range(5):
        client.create_job(model_pb2.ModelRef(uri="mem://m"), SPEC)
    jobs, token = client.list_jobs(page_size=2)
    assert [j.id for j in jobs] == ["job-5", "job-4"]
    assert token
    assert [j.id for j in client.iter_jobs(page_size=2)] == [f"job-{n}" for n in (5, 4, 3, 2, 1)]


def test_job_error_without_status_gets_a_default() -> None:
    cancelled = PrunekitError.from_job(job_pb2.Job(id="j", state=job_pb2.JOB_STATE_CANCELLED))
    assert (cancelled.code, cancelled.reason) == (grpc.StatusCode.CANCELLED, "JOB_CANCELLED")
    status = make_status(grpc.StatusCode.INTERNAL, "worker died", "WORKER_CRASHED")
    failed = PrunekitError.from_job(job_pb2.Job(id="j", state=job_pb2.JOB_STATE_FAILED, error=status))
    assert (failed.code_name, failed.reason, failed.message) == ("INTERNAL", "WORKER_CRASHED", "worker died")


def test_errors_survive_pickling() -> None:
    err = PrunekitError(grpc.StatusCode.NOT_FOUND, "gone", reason="JOB_NOT_FOUND", violations=[("a", "b")])
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.code, copy.message, copy.reason, copy.violations) == (
        err.code,
        "gone",
        "JOB_NOT_FOUND",
        [("a", "b")],
    )
    spec_err = SpecError([("prune.ratio", "bad")], source="s.yaml")
    spec_copy = pickle.loads(pickle.dumps(spec_err))
    assert (spec_copy.problems, spec_copy.source) == ([("prune.ratio", "bad")], "s.yaml")


def test_bad_spec_fails_before_uploading(service: FakeService, client: Client, model_file: Path) -> None:
    with pytest.raises(SpecError):
        client.optimize(model_file, {"prune": {"ratoi": 0.5}})
    assert service.uploads == []


def test_ping_tells_a_reachable_server_from_an_unreachable_one(client: Client) -> None:
    client.ping(timeout=10)
    with Client("127.0.0.1:1", token="", ca_file="") as nowhere, pytest.raises(PrunekitError) as info:
        nowhere.ping(timeout=5)
    assert info.value.code_name in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
