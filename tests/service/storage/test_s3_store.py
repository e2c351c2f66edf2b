"""S3Store specifics, against a real moto server over HTTP: errors, addressing, multipart, checksums."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from prunekit_server.storage import (
    ChecksumMismatch,
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    S3Store,
    StorageUnavailable,
    open_store,
)

MIB = 1 << 20


@pytest.fixture
def store(s3_bucket_uri: str) -> S3Store:
    opened = open_store(s3_bucket_uri)
    assert isinstance(opened, S3Store)
    return opened


class Requests:
    """Every HTTP request a store's client sends: (operation, method, url, headers)."""

    def __init__(self, store: S3Store) -> None:
        self.sent: list[tuple[str, str, str, dict[str, str]]] = []
        store.client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, **kwargs: Any) -> None:
        operation = kwargs["event_name"].rsplit(".", 1)[-1]
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self.sent.append((operation, request.method, request.url, headers))

    def operations(self) -> list[str]:
        return [op for op, *_ in self.sent]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_uri_and_prefix(store: S3Store, s3_bucket_uri: str) -> None:
    assert store.uri == s3_bucket_uri
    assert store.uri_for("a/b") == f"{s3_bucket_uri}/a/b"
    assert store.object_name("a/b") == "prefix/a/b"
    assert open_store(f"s3://{store.bucket}/").uri == f"s3://{store.bucket}"
    assert open_store(f"s3://{store.bucket}//deep/er/").uri == f"s3://{store.bucket}/deep/er"
    bare = open_store(f"s3://{store.bucket}")
    assert bare.uri_for("k") == f"s3://{store.bucket}/k"
    assert bare.key_for_uri(f"s3://{store.bucket}/prefix/k") == "prefix/k"
    with pytest.raises(InvalidKey):
        open_store(f"s3://{store.bucket}/a/../b")


def test_keys_outside_the_prefix_or_invalid_are_not_listed(store: S3Store, s3_admin: Any) -> None:
    store.put_bytes("mine", b"x")
    for name in ["other/k", "prefixed", "prefix//double", "prefix/.prunekit/x", "prefix/back\\slash"]:
        s3_admin.put_object(Bucket=store.bucket, Key=name, Body=b"x")
    assert store.list_keys("") == ["mine"]


def test_path_style_addressing(store: S3Store, s3_endpoint: str) -> None:
    requests = Requests(store)
    store.put_bytes("k", b"x")
    store.list_keys("")
    assert requests.sent
    for _, _, url, _ in requests.sent:
        assert url.split("?")[0].rstrip("/").startswith(f"{s3_endpoint}/{store.bucket}")
    assert store.client.meta.config.s3["addressing_style"] == "path"


def test_addressing_style_options(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> None:
    monkeypatch.setenv("PRUNEKIT_S3_PATH_STYLE", "0")
    assert S3Store("some-bucket").client.meta.config.s3["addressing_style"] == "auto"
    assert S3Store("some-bucket", path_style=True).client.meta.config.s3["addressing_style"] == "path"
    monkeypatch.delenv("PRUNEKIT_S3_PATH_STYLE")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert S3Store("some-bucket").client.meta.config.s3["addressing_style"] == "auto"
    monkeypatch.setenv("PRUNEKIT_S3_PATH_STYLE", "1")
    assert S3Store("some-bucket").client.meta.config.s3["addressing_style"] == "path"
    explicit = S3Store("some-bucket", endpoint_url=s3_endpoint, region="eu-west-1")
    assert explicit.client.meta.endpoint_url == s3_endpoint
    assert explicit.client.meta.region_name == "eu-west-1"
    retries = explicit.client.meta.config.retries
    assert (retries["mode"], retries["total_max_attempts"]) == ("standard", 5)


def test_unreachable_endpoint_is_unavailable_quickly() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = open_store("s3://some-bucket/p", endpoint_url=endpoint, max_attempts=2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="unreachable") as caught:
        store.put_bytes("k", b"x")
    assert endpoint in str(caught.value)
    for call in (lambda: store.head("k"), lambda: store.get_bytes("k"), lambda: store.list_keys("")):
        with pytest.raises(StorageUnavailable):
            call()
    assert time.monotonic() - started < 15


def test_missing_bucket_is_a_clear_error(s3_endpoint: str) -> None:
    store = S3Store(f"no-such-bucket-{uuid.uuid4().hex[:8]}", "p")
    with pytest.raises(StorageUnavailable, match="NoSuchBucket") as caught:
        store.put_bytes("k", b"x")
    assert store.bucket in str(caught.value)
    for call in (lambda: store.head("k"), lambda: store.get_bytes("k"), lambda: store.list_keys("")):
        with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
            call()


def test_malformed_bucket_names_and_options() -> None:
    for uri in ["s3://", "s3://UpperCase", "s3://ab", "s3://bad_name/x", "s3://a..b"]:
        with pytest.raises(ValueError, match="bucket"):
            open_store(uri)
    with pytest.raises(ValueError, match="unknown store options: colour"):
        open_store("s3://some-bucket", colour="red")
    with pytest.raises(ValueError, match="max_attempts"):
        open_store("s3://some-bucket", max_attempts="5")
    with pytest.raises(ValueError, match="part_size"):
        open_store("s3://some-bucket", part_size=MIB)


def test_single_put_sends_a_sha256_checksum(store: S3Store, s3_admin: Any) -> None:
    requests = Requests(store)
    data = b"checked content"
    digest = hashlib.sha256(data).digest()
    store.put_bytes("k", data)
    (put,) = [headers for op, _, _, headers in requests.sent if op == "PutObject"]
    assert put["x-amz-checksum-sha256"] == base64.b64encode(digest).decode()
    assert put["x-amz-meta-sha256"] == digest.hex()
    assert not [h for h in put if h.startswith("x-amz-checksum-") and h != "x-amz-checksum-sha256"]
    head = s3_admin.head_object(Bucket=store.bucket, Key="prefix/k", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    assert head["Metadata"]["sha256"] == digest.hex()


def test_multipart_upload_with_sha256_checksums(store: S3Store, s3_admin: Any, tmp_path: Path) -> None:
    size = 2 * 8 * MIB + 1000
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(size))
    content = source.read_bytes()
    parts = [content[i : i + 8 * MIB] for i in range(0, size, 8 * MIB)]
    requests = Requests(store)
    info = store.put_file("big", source)
    assert requests.operations() == [
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
        "HeadObject",  # moto's CompleteMultipartUpload omits the checksum; the store asks for it
    ]
    sent = [headers for op, _, _, headers in requests.sent if op == "UploadPart"]
    for part, headers in zip(parts, sent, strict=True):
        assert headers["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(part).digest()).decode()
    head = s3_admin.head_object(Bucket=store.bucket, Key="prefix/big", ChecksumMode="ENABLED")
    composite = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
    assert head["ChecksumSHA256"].split("-")[0] == composite.decode()
    assert head["ETag"].endswith('-3"')
    assert head["Metadata"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert info.etag == head["ETag"]
    assert store.get_bytes("big") == content


def test_multipart_if_absent_lost_at_completion_aborts_the_upload(
    store: S3Store, s3_admin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(9 * MIB))
    store.put_bytes("big", b"first")
    monkeypatch.setattr(store, "head", lambda key: None)  # skip the early check: S3 must refuse
    with pytest.raises(PreconditionFailed):
        store.put_file("big", source, if_absent=True)
    assert store.get_bytes("big") == b"first"
    assert s3_admin.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []


def test_corrupt_or_foreign_objects(store: S3Store, s3_admin: Any) -> None:
    s3_admin.put_object(Bucket=store.bucket, Key="prefix/bad", Body=b"data", Metadata={"sha256": "0" * 64})
    with pytest.raises(ChecksumMismatch):
        store.get_bytes("bad")
    with pytest.raises(ChecksumMismatch):
        list(store.iter_chunks("bad"))
    s3_admin.put_object(Bucket=store.bucket, Key="prefix/foreign", Body=b"data")
    info = store.head("foreign")
    assert info is not None
    assert (info.size, info.sha256) == (4, None)
    assert store.get_bytes("foreign") == b"data"
    with pytest.raises(ObjectNotFound):
        store.get_bytes("absent")


def test_list_keys_follows_continuation_pages(store: S3Store, s3_admin: Any) -> None:
    """Skipped (invalid) names leave a page short of ``limit``, so the next page is fetched."""
    for name in ["prefix/a//skipped", "prefix/b", "prefix/c", "prefix/c//skipped", "prefix/d"]:
        s3_admin.put_object(Bucket=store.bucket, Key=name)
    requests = Requests(store)
    assert store.list_keys("", limit=3) == ["b", "c", "d"]
    assert requests.operations() == ["ListObjectsV2"] * 3
    assert store.list_keys("", start_after="b", limit=1) == ["c"]
    assert store.list_keys("") == ["b", "c", "d"]


def test_aws_max_attempts_sets_the_tries_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def tries() -> int:
        return int(open_store("s3://some-bucket/p").client.meta.config.retries["total_max_attempts"])

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    assert tries() == 2
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "many")
    assert tries() == 5
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    assert tries() == 5
