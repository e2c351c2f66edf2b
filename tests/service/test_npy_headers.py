"""The ``.npy`` header reader both dataset checks share: headers that lie are refused, cheaply.

Real archives written with ``zipfile`` (a few crafted byte-for-byte), checked by the
server's upload check (:func:`inspect_shard`) and the worker's loader (:func:`load_shards`).
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.jobs.durable.shard_format import inspect_shard
from prunekit_server.npy_headers import MAX_HEADER_BYTES
from prunekit_server.training.datasets import load_shards

INPUTS = [model_pb2.InputSpec(name="input", shape=[1, 4])]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip of these members, written as they are (a name ending in ``/`` is a directory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    path.write_bytes(npz_bytes(members))
    return path


def huge_header_member(length: int) -> bytes:
    """A version 2.0 ``.npy`` whose header claims (and holds) ``length`` blank bytes: compresses ~1000:1."""
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", length) + b" " * length


def encrypt(archive: bytes) -> bytes:
    """The archive with every member flagged as encrypted (bit 0 of the flags, local and central headers)."""
    data = bytearray(archive)
    at = data.find(b"PK\x03\x04")
    while at >= 0:
        data[at + 6] |= 1
        at = data.find(b"PK\x03\x04", at + 4)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + 8] |= 1
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ServiceError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def violations(call: Callable[[], object]) -> dict[str, str]:
    with pytest.raises(ServiceError) as caught:
        call()
    assert (caught.value.code.name, caught.value.reason) == ("INVALID_ARGUMENT", "INVALID_DATASET")
    return {v.field: v.description for v in caught.value.violations}


def test_a_header_that_claims_megabytes_is_refused_after_reading_its_start(tmp_path: Path) -> None:
    """64 KiB on disk, 64 MiB of header once expanded: neither check may expand it."""
    path = write_npz(tmp_path / "bomb.npz", {"input.npy": huge_header_member(64 << 20)})
    assert path.stat().st_size < 256 << 10
    for check in (lambda: inspect_shard(path, "bomb.npz"), lambda: load_shards([path], INPUTS)):
        assert peak_bytes(check) < 8 * MAX_HEADER_BYTES
        assert "bomb.npz:input" in violations(check)


def test_negative_dimensions_are_refused_and_cannot_hide_a_large_array(tmp_path: Path) -> None:
    """A negative dimension made the worker's size sum understate a shard: the big array was expanded."""
    negative = npy(np.zeros((4, 4), np.float32)).replace(b"(4, 4)", b"(-4, 4)")
    path = write_npz(tmp_path / "neg.npz", {"input.npy": negative})
    assert "neg.npz:input" in violations(lambda: inspect_shard(path, "neg.npz"))
    hidden = tmp_path / "hidden.npz"
    big = np.zeros((1 << 16, 4), np.float32)  # 1 MiB decoded, a few KiB compressed
    offset = npy(np.zeros((1, 1 << 20), np.float32)).replace(b"(1, 1048576)", b"(-1, 1048576)")
    write_npz(hidden, {"input.npy": npy(big), "target.npy": offset})
    found = violations(lambda: load_shards([hidden], INPUTS, max_bytes=64 << 10))
    assert "hidden.npz:target" in found
    assert peak_bytes(lambda: load_shards([hidden], INPUTS, max_bytes=64 << 10)) < big.nbytes // 2


def test_encrypted_members_are_invalid_datasets_not_crashes(tmp_path: Path) -> None:
    path = tmp_path / "locked.npz"
    path.write_bytes(encrypt(npz_bytes({"input.npy": npy(np.zeros((2, 4), np.float32))})))
    assert "encrypted" in violations(lambda: inspect_shard(path, "locked.npz"))["locked.npz:input"]
    assert "locked.npz:input" in violations(lambda: load_shards([path], INPUTS))


def test_directory_entries_are_refused_on_upload_as_the_worker_refuses_them(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "dirs.npz", {"extra/": b"", "input.npy": npy(np.zeros((2, 4), np.float32))})
    assert "dirs.npz:extra/" in violations(lambda: load_shards([path], INPUTS))
    assert "dirs.npz:extra/" in violations(lambda: inspect_shard(path, "dirs.npz"))


def test_valid_headers_of_both_versions_still_read(tmp_path: Path) -> None:
    v1 = npy(np.zeros((3, 4), np.float32))
    v2 = io.BytesIO()
    np.lib.format.write_array(v2, np.zeros((3, 4), np.float32), version=(2, 0))
    for name, member in (("v1.npz", v1), ("v2.npz", v2.getvalue())):
        path = write_npz(tmp_path / name, {"input.npy": member})
        assert inspect_shard(path, name).samples == 3
        assert len(load_shards([path], INPUTS)) == 3
