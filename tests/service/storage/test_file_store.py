"""FileStore specifics: root confinement, atomicity, cross-process conditions, disk errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import prunekit_server.storage
from prunekit_server.storage import (
    ChecksumMismatch,
    FileStore,
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    StorageUnavailable,
    open_store,
)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "root")


def test_open_store_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_uri = open_store(f"file://{tmp_path}/a/b")
    assert isinstance(by_uri, FileStore)
    assert by_uri.uri == f"file://{tmp_path}/a/b"
    assert (tmp_path / "a" / "b").is_dir()
    assert open_store(f"file://localhost{tmp_path}/a/b").uri == by_uri.uri
    assert open_store(str(tmp_path / "c")).uri == f"file://{tmp_path}/c"
    monkeypatch.chdir(tmp_path)
    assert open_store("./rel/dir").uri == f"file://{tmp_path}/rel/dir"
    assert open_store("rel2").uri == f"file://{tmp_path}/rel2"
    assert open_store(f"file://{tmp_path}/x/../c").uri == f"file://{tmp_path}/c"
    for bad in ["file://relative/path", "ftp://host/x", ""]:
        with pytest.raises(ValueError):  # noqa: PT011 (message varies)
            open_store(bad)
    with pytest.raises(ValueError, match="unknown store options"):
        open_store(str(tmp_path), endpoint_url="http://x")
    with pytest.raises(ValueError, match="use_xattrs"):
        open_store(str(tmp_path), use_xattrs="no")


def test_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        open_store(str(tmp_path / "file"))
    with pytest.raises(StorageUnavailable):
        open_store(str(tmp_path / "file" / "sub"))


def test_objects_are_plain_files_under_the_root(store: FileStore) -> None:
    store.put_bytes("a/b/c.txt", b"hello")
    assert (store.root / "a" / "b" / "c.txt").read_bytes() == b"hello"
    assert store.uri_for("a/b/c.txt") == f"file://{store.root}/a/b/c.txt"


def test_symlinked_directory_inside_root_cannot_escape(store: FileStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey, match="symbolic link"):
        store.get_bytes("link/secret")
    with pytest.raises(InvalidKey):
        store.put_bytes("link/new", b"x")
    with pytest.raises(InvalidKey):
        store.head("link/secret")
    with pytest.raises(InvalidKey):
        store.delete("link/secret")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    assert store.list_keys("") == []
    assert store.list_keys("link/") == []


def test_symlinked_file_inside_root_is_never_followed(store: FileStore, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"outside")
    (store.root / "f").symlink_to(target)
    with pytest.raises(InvalidKey):
        store.get_bytes("f")
    with pytest.raises(PreconditionFailed):
        store.put_bytes("f", b"new", if_absent=True)
    store.put_bytes("f", b"new")  # replaces the link itself
    assert target.read_bytes() == b"outside"
    assert store.get_bytes("f") == b"new"


def test_dot_dot_cannot_escape(store: FileStore, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s")
    for key in ["../secret", "a/../../secret", "..", "a/.."]:
        with pytest.raises(InvalidKey):
            store.get_bytes(key)
        with pytest.raises(InvalidKey):
            store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.key_for_uri(f"file://{store.root}/../secret")
    assert (tmp_path / "secret").read_bytes() == b"s"


def test_object_and_directory_names_cannot_collide(store: FileStore) -> None:
    store.put_bytes("a", b"file")
    with pytest.raises(InvalidKey, match="collides"):
        store.put_bytes("a/b", b"x")
    store.put_bytes("d/e", b"x")
    with pytest.raises(InvalidKey, match="collides"):
        store.put_bytes("d", b"x")
    with pytest.raises(InvalidKey, match="collides"):
        store.put_bytes("d", b"x", if_absent=True)
    assert store.head("a/b") is None
    assert store.head("d") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("d")
    store.delete("d")
    assert store.list_keys("") == ["a", "d/e"]


def test_internal_and_temporary_files_are_never_listed(store: FileStore) -> None:
    for i in range(5):
        store.put_bytes("dir/k", str(i).encode())
        store.put_bytes(f"dir/n{i}", b"x", if_absent=True)
    store.put_bytes("dir/k", b"cas", if_match=store.put_bytes("dir/k", b"v").etag)
    assert sorted(os.listdir(store.root / "dir")) == ["k", "n0", "n1", "n2", "n3", "n4"]
    assert (store.root / ".prunekit" / "locks").is_dir()
    (store.root / "dir" / ".prunekit-tmp-deadbeef").write_bytes(b"crash leftover")
    (store.root / "dir" / "bad\\name").write_bytes(b"not a key")
    os.mkfifo(store.root / "dir" / "fifo")
    assert store.list_keys("") == ["dir/k", "dir/n0", "dir/n1", "dir/n2", "dir/n3", "dir/n4"]
    assert store.head("dir/fifo") is None


def test_files_written_by_others_get_a_computed_sha256(store: FileStore) -> None:
    (store.root / "ext").mkdir()
    (store.root / "ext" / "file").write_bytes(b"external")
    info = store.head("ext/file")
    assert info is not None
    assert info.sha256 == hashlib.sha256(b"external").hexdigest()
    assert store.get_bytes("ext/file") == b"external"
    updated = store.put_bytes("ext/file", b"mine", if_match=info.etag)
    assert updated.sha256 == hashlib.sha256(b"mine").hexdigest()


def test_without_xattrs_etags_follow_content(tmp_path: Path) -> None:
    store = open_store(str(tmp_path), use_xattrs=False)
    first = store.put_bytes("k", b"one")
    assert first == store.head("k")
    assert first.sha256 == hashlib.sha256(b"one").hexdigest()
    second = store.put_bytes("k", b"two", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("k", b"three", if_match=first.etag)
    assert store.head("k") == second
    assert os.listxattr(tmp_path / "k") == []


def test_corruption_is_detected_on_read(store: FileStore, tmp_path: Path) -> None:
    store.put_bytes("k", b"original")
    with open(store.root / "k", "r+b") as f:  # in place: the recorded sha256 stays
        f.write(b"tampered")
    with pytest.raises(ChecksumMismatch):
        store.get_bytes("k")
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumMismatch):
        store.get_file("k", dest)
    assert not dest.exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".part")] == []


def test_readers_see_whole_objects_only(store: FileStore) -> None:
    versions = [b"a" * 100_000, b"b" * 3]
    store.put_bytes("k", versions[0])
    stop = threading.Event()
    seen: set[bytes] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(store.get_bytes("k"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            store.put_bytes("k", versions[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= set(versions)


def _create_if_absent(root: str, key: str, n: int) -> bool:
    try:
        FileStore(root).put_bytes(key, f"writer {n}".encode(), if_absent=True)
    except PreconditionFailed:
        return False
    return True


def _increment(root: str, times: int) -> None:
    store = FileStore(root)
    for _ in range(times):
        while True:
            current = store.head("counter")
            assert current is not None
            value = int(store.get_bytes("counter"))  # newer than current? then the swap fails
            try:
                store.put_bytes("counter", str(value + 1).encode(), if_match=current.etag)
                break
            except PreconditionFailed:
                continue


def test_if_absent_race_across_processes(store: FileStore) -> None:
    with ProcessPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(_create_if_absent, [str(store.root)] * 12, ["race"] * 12, range(12)))
    assert results.count(True) == 1
    assert store.get_bytes("race") == f"writer {results.index(True)}".encode()
    assert store.list_keys("") == ["race"]


def test_if_absent_race_across_threads(store: FileStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_create_if_absent, [str(store.root)] * 16, ["race"] * 16, range(16)))
    assert results.count(True) == 1


def test_if_match_is_atomic_across_processes(store: FileStore) -> None:
    """Compare-and-swap increments from several processes lose no update."""
    store.put_bytes("counter", b"0")
    with ProcessPoolExecutor(max_workers=4) as pool:
        list(pool.map(_increment, [str(store.root)] * 4, [15] * 4))
    assert store.get_bytes("counter") == b"60"


def test_file_size_limit_is_storage_unavailable(tmp_path: Path) -> None:
    """A write that hits RLIMIT_FSIZE (EFBIG, like a full disk) fails cleanly, leaving no temp file."""
    service_dir = Path(prunekit_server.storage.__file__).parents[2]
    script = textwrap.dedent(
        f"""
        import os, resource
        from prunekit_server.storage import StorageUnavailable, open_store
        store = open_store({str(tmp_path / "root")!r})
        store.put_bytes("small", b"ok")
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            store.put_bytes("big", b"x" * (2 << 20))
        except StorageUnavailable as exc:
            print("unavailable:", exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(service_dir), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "unavailable:" in done.stdout
    assert "File too large" in done.stdout
    assert sorted(os.listdir(tmp_path / "root")) == [".prunekit", "small"]
