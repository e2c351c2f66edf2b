"""A job's artifacts: only the files its one manifest names are kept once stale ones are discarded."""

from __future__ import annotations

from pathlib import Path

from prunekit_server.hashing import sha256_file
from prunekit_server.jobs.durable.artifact_store import ArtifactStore
from prunekit_server.storage import ObjectStore


def test_files_no_manifest_names_are_discarded_per_start_or_all(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    artifacts = ArtifactStore(object_store)
    path = tmp_path / "pruned.onnx"
    path.write_bytes(b"model bytes")
    digest = sha256_file(path)
    kept = [artifacts.put("job-1", name, path, digest, attempt=2) for name in ("pruned.onnx", "report.json")]
    for attempt in (1, 3):
        artifacts.put("job-1", "pruned.onnx", path, digest, attempt=attempt)
    prefix = "tenants/default/jobs/job-1/attempts/"
    assert artifacts.discard_unlisted("job-1", 3) == 1, "without a manifest, a failed start's files all go"
    assert artifacts.write_manifest("job-1", kept)
    assert artifacts.discard_unlisted("job-1", 2) == 0, "the manifest names them"
    assert artifacts.discard_unlisted("job-1") == 1
    assert object_store.list_keys(prefix) == [prefix + "2/pruned.onnx", prefix + "2/report.json"]
    assert artifacts.discard_unlisted("job-2") == 0
