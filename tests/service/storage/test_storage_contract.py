"""The ObjectStore contract, run against both real backends: a directory and a moto S3 server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from prunekit_server.storage import (
    ChecksumMismatch,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    open_store,
)

MIB = 1 << 20


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return open_store(request.getfixturevalue("s3_bucket_uri"))
    return open_store(str(tmp_path / "store"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        while size > 0:
            chunk = os.urandom(min(MIB, size))
            digest.update(chunk)
            out.write(chunk)
            size -= len(chunk)
    return digest.hexdigest()


def test_bytes_round_trip(store: ObjectStore) -> None:
    data = b"hello, storage"
    info = store.put_bytes("jobs/j1/record.json", data)
    assert (info.key, info.size, info.sha256) == ("jobs/j1/record.json", len(data), sha(data))
    assert info.etag
    assert store.get_bytes("jobs/j1/record.json") == data
    assert store.head("jobs/j1/record.json") == info


def test_empty_and_unicode_keys(store: ObjectStore) -> None:
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""
    head = store.head("empty")
    assert head is not None
    assert (head.size, head.sha256) == (0, sha(b""))
    key = "tenants/é ü/model (1).onnx"
    store.put_bytes(key, b"x")
    assert store.get_bytes(key) == b"x"
    assert store.list_keys("tenants/") == [key]


def test_longest_key(store: ObjectStore) -> None:
    key = "/".join(["k" * 255] * 4)
    assert len(key.encode()) == 1023
    store.put_bytes(key, b"long")
    assert store.get_bytes(key) == b"long"
    assert store.list_keys("k") == [key]


def test_head_of_missing_key_is_none(store: ObjectStore) -> None:
    assert store.head("nope") is None
    assert store.head("no/such/dir/key") is None


def test_etag_changes_when_content_changes(store: ObjectStore) -> None:
    first = store.put_bytes("k", b"one")
    second = store.put_bytes("k", b"two")
    assert first.etag != second.etag
    assert store.head("k") == second
    assert store.get_bytes("k") == b"two"


def test_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    digest = write_random(source, 300_000)
    info = store.put_file("models/in.bin", source, sha256=digest.upper())
    assert (info.size, info.sha256) == (300_000, digest)
    dest = tmp_path / "out" / "copy.bin"
    got = store.get_file("models/in.bin", dest)
    assert got.sha256 == digest
    assert got.size == 300_000
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(os.listdir(dest.parent)) == ["copy.bin"]


def test_large_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    size = 2 * 8 * MIB + 12345  # three parts of 8 MiB for S3
    source = tmp_path / "big.bin"
    digest = write_random(source, size)
    info = store.put_file("big/model.bin", source, sha256=digest)
    assert (info.size, info.sha256) == (size, digest)
    head = store.head("big/model.bin")
    assert head is not None
    assert (head.size, head.sha256, head.etag) == (size, digest, info.etag)
    dest = tmp_path / "big.out"
    store.get_file("big/model.bin", dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest


def test_put_file_with_wrong_sha256_writes_nothing(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"payload")
    with pytest.raises(ChecksumMismatch):
        store.put_file("k", source, sha256="0" * 64)
    assert store.head("k") is None
    with pytest.raises(ValueError, match="64 hex"):
        store.put_file("k", source, sha256="abc")


def test_if_absent_keeps_the_first_write(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("jobs/j1", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("jobs/j1", b"second", if_absent=True)
    source = tmp_path / "third"
    source.write_bytes(b"third")
    with pytest.raises(PreconditionFailed):
        store.put_file("jobs/j1", source, if_absent=True)
    assert store.get_bytes("jobs/j1") == b"first"
    store.put_file("jobs/j2", source, if_absent=True)
    assert store.get_bytes("jobs/j2") == b"third"


def test_if_match_is_compare_and_swap(store: ObjectStore) -> None:
    first = store.put_bytes("state", b"v1")
    second = store.put_bytes("state", b"v2", if_match=first.etag)
    assert store.get_bytes("state") == b"v2"
    with pytest.raises(PreconditionFailed):
        store.put_bytes("state", b"v3", if_match=first.etag)
    assert store.get_bytes("state") == b"v2"
    third = store.put_bytes("state", b"v3", if_match=second.etag)
    assert store.head("state") == third
    with pytest.raises(PreconditionFailed):
        store.put_bytes("absent", b"x", if_match=first.etag)
    assert store.head("absent") is None
    with pytest.raises(ValueError, match="exclusive"):
        store.put_bytes("state", b"x", if_absent=True, if_match=third.etag)


def test_list_keys_order_paging_and_prefixes(store: ObjectStore) -> None:
    keys = ["a/1", "a/10", "a/2", "a/Z", "a/b/c", "a/b/d/e", "a/é", "a-b", "ab", "b/1", "a.txt"]
    for key in keys:
        store.put_bytes(key, key.encode())
    under_a = sorted(k for k in keys if k.startswith("a/"))
    assert under_a == sorted(under_a, key=lambda k: k.encode())
    assert store.list_keys("a/") == under_a
    assert store.list_keys("") == sorted(keys, key=lambda k: k.encode())
    assert store.list_keys("a/1") == ["a/1", "a/10"]
    assert store.list_keys("a/b/") == ["a/b/c", "a/b/d/e"]
    assert store.list_keys("a") == sorted(k for k in keys if k.startswith("a"))
    assert store.list_keys("zzz/") == []
    assert store.list_keys("a/", limit=2) == under_a[:2]
    assert store.list_keys("a/", start_after="a/2") == under_a[3:]
    assert store.list_keys("a/", start_after="a/b") == ["a/b/c", "a/b/d/e", "a/é"]
    assert store.list_keys("a/", start_after="a/b/c", limit=1) == ["a/b/d/e"]
    assert store.list_keys("a/", limit=0) == []
    paged: list[str] = []
    while page := store.list_keys("a/", start_after=paged[-1] if paged else None, limit=3):
        paged += page
    assert paged == under_a


def test_iter_chunks(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    store.put_bytes("blob", data)
    chunks = list(store.iter_chunks("blob", chunk_size=4096))
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= 4096 for c in chunks)
    assert len(chunks) >= 3
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("missing")  # raised by the call itself, before any chunk
    with pytest.raises(ValueError, match="chunk_size"):
        store.iter_chunks("blob", chunk_size=0)


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("d/k", b"x")
    store.delete("d/k")
    assert store.head("d/k") is None
    assert store.list_keys("d/") == []
    store.delete("d/k")
    store.delete("never/was")
    store.put_bytes("d/k", b"again", if_absent=True)
    assert store.get_bytes("d/k") == b"again"


def test_missing_objects(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        store.get_bytes("missing/key")
    assert caught.value.key == "missing/key"
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ObjectNotFound):
        store.get_file("missing/key", dest)
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path).count("dest.bin") == 1
    assert [p for p in os.listdir(tmp_path) if p.endswith(".part")] == []


BAD_KEYS = [
    "",
    "/abs",
    "trailing/",
    "a//b",
    ".",
    "..",
    "../up",
    "a/../b",
    "a/./b",
    "back\\slash",
    "nul\x00byte",
    "new\nline",
    "del\x7f",
    "c1\x85",
    "x" * 1025,
    "é" * 513,
    "s" * 256,
    ".prunekit/locks",
    "a/.prunekit-tmp-0123",
    "surrogate\ud800",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k)[:24])
def test_invalid_keys_are_rejected(store: ObjectStore, key: str, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_file(key, source),
        lambda: store.get_bytes(key),
        lambda: store.get_file(key, tmp_path / "out"),
        lambda: store.iter_chunks(key),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.uri_for(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert store.list_keys("") == []


@pytest.mark.parametrize("prefix", ["/a", "a//", "../", "a/../", "a\\b/", "x\x00", ".prunekit/"])
def test_invalid_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        store.list_keys(prefix)


def test_uris(store: ObjectStore) -> None:
    key = "tenants/t1/model.onnx"
    uri = store.uri_for(key)
    assert uri == store.uri + "/" + key
    assert store.key_for_uri(uri) == key
    reopened = open_store(store.uri)
    assert reopened.uri == store.uri
    store.put_bytes(key, b"shared")
    assert reopened.get_bytes(key) == b"shared"
    scheme = store.uri.split("://")[0]
    outside = [
        store.uri,
        store.uri + "/",
        store.uri + "x/" + key,
        store.uri + "/../" + key,
        store.uri + "/a//b",
        f"{scheme}://elsewhere/{key}",
        "http://example.com/" + key,
        key,
    ]
    for bad in outside:
        with pytest.raises(InvalidKey):
            store.key_for_uri(bad)


@pytest.mark.parametrize("in_spool", [True, False])
def test_adopt_file_takes_the_file_with_the_callers_digest(
    store: ObjectStore, tmp_path: Path, in_spool: bool
) -> None:
    spool = store.spool_dir()
    folder = spool if in_spool and spool is not None else tmp_path
    path = folder / "incoming"
    digest = write_random(path, 2 * MIB + 3)
    data = path.read_bytes()
    info = store.adopt_file("a/adopted", path, sha256=digest)
    assert not path.exists()
    assert info.sha256 == digest
    assert info.size == len(data)
    assert store.get_bytes("a/adopted") == data
    assert store.head("a/adopted") == info
    assert "a/adopted" in store.list_keys("a/")
    again = folder / "again"
    again.write_bytes(b"other")
    with pytest.raises(PreconditionFailed):
        store.adopt_file("a/adopted", again, sha256=sha(b"other"), if_absent=True)
    assert store.get_bytes("a/adopted") == data


def test_spool_dir_is_not_listed(store: ObjectStore) -> None:
    spool = store.spool_dir()
    if spool is not None:
        (spool / "left-over").write_bytes(b"x")
    store.put_bytes("k", b"v")
    assert store.list_keys("") == ["k"]
