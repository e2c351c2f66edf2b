"""A store on a local (or mounted) filesystem: one file per key under a root directory."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from . import _fs
from ._base import (
    ChecksumMismatch,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageUnavailable,
)
from ._keys import (
    RESERVED_PREFIX,
    RootedKeys,
    check_conditions,
    check_limit,
    normalise_sha256,
    validate_key,
    validate_prefix,
)
from ._local import write_atomically

ADOPTED_MODE = 0o644
"""The mode of a file moved into the store: what ``put_file`` gives under the usual umask 022."""
SPOOL_MAX_AGE_S = 24 * 3600.0
"""Files older than this in the spool directory were left by a server that died while receiving them."""


class FileStore(RootedKeys):
    """Objects as files under a root directory: ``<root>/<key>``.

    - Paths are walked one directory at a time from the root with ``O_NOFOLLOW``, so no key,
      and no symbolic link planted inside the root, reaches outside it: a key whose path
      meets a link raises :class:`InvalidKey`.
    - Writes go to a temporary file in the key's directory, are fsynced, then renamed into
      place (hard-linked for ``if_absent``, which fails if the name exists, in any process).
    - Writers of a key serialise on an ``flock`` (striped lock files under
      ``<root>/.prunekit/``), which makes ``if_match`` a compare-and-swap across processes.
    - The sha256 and a random per-write etag live in an extended attribute of the file, set
      before the rename. Where the filesystem has no user xattrs (or ``use_xattrs=False``)
      the sha256 is computed when asked for and the etag is derived from the content.
    - Names starting with ``.prunekit`` are internal and never listed.
    - A key cannot name both an object and a directory of objects (``a`` and ``a/b``): the
      second write raises :class:`InvalidKey`.
    """

    def __init__(self, root: str | os.PathLike[str], *, use_xattrs: bool = True) -> None:
        path = Path(root).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._root = path.resolve(strict=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open store root {str(path)!r}: {exc.strerror}") from exc
        if not self._root.is_dir():
            raise StorageUnavailable(f"store root {str(self._root)!r} is not a directory")
        uri = "file://" + str(self._root)
        self._root_at(uri, uri.rstrip("/") + "/")
        self._xattrs = use_xattrs
        self._spool_swept = False

    def __repr__(self) -> str:
        return f"FileStore({str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The resolved root directory."""
        return self._root

    def key_for_uri(self, uri: str) -> str:
        if uri.startswith("file://localhost/"):
            uri = "file:///" + uri[len("file://localhost/") :]
        return super().key_for_uri(uri)

    def put_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        def fill(out: BinaryIO) -> str:
            out.write(data)
            return hashlib.sha256(data).hexdigest()

        return self._write(key, fill, if_absent=if_absent, if_match=if_match)

    def put_file(
        self, key: str, path: Path, *, sha256: str | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        expected = normalise_sha256(sha256)
        with open(path, "rb") as source:

            def fill(out: BinaryIO) -> str:
                digest = hashlib.sha256()
                while chunk := source.read(_fs.CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                actual = digest.hexdigest()
                if expected is not None and actual != expected:
                    raise ChecksumMismatch(f"{str(path)!r} has sha256 {actual}, expected {expected}")
                return actual

            return self._write(key, fill, if_absent=if_absent, if_match=None)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self._reader(key, _fs.CHUNK))

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        chunks = self._reader(key, _fs.CHUNK)
        try:
            write_atomically(Path(path), chunks)
        finally:
            chunks.close()
        return chunks.info

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self._reader(key, chunk_size)

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        *dirs, name = key.split("/")
        with _fs.translate(self._root, key):
            try:
                dfd = _fs.open_dir(self._root, dirs, create=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                return self._head_in(dfd, name, key)
            finally:
                os.close(dfd)

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        validate_prefix(prefix)
        check_limit(limit)
        if limit == 0:
            return []
        base = prefix.rpartition("/")[0]
        keys: list[str] = []
        with _fs.translate(self._root, prefix):
            try:
                fd = _fs.open_dir(self._root, base.split("/") if base else [], create=False)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return []  # links are never objects, nor lead to any
                raise
            try:
                for key in _fs.walk(fd, base + "/" if base else "", prefix, start_after or ""):
                    keys.append(key)
                    if limit is not None and len(keys) >= limit:
                        break
            finally:
                os.close(fd)
        return keys

    def delete(self, key: str) -> None:
        validate_key(key)
        *dirs, name = key.split("/")
        with _fs.translate(self._root, key), _fs.key_lock(self._root, key):
            try:
                fd = _fs.open_dir(self._root, dirs, create=False)
            except (FileNotFoundError, NotADirectoryError):
                return
            try:
                os.unlink(name, dir_fd=fd)
                os.fsync(fd)
            except (FileNotFoundError, IsADirectoryError):
                return
            finally:
                os.close(fd)

    def _reader(self, key: str, chunk_size: int) -> _fs.FileChunks:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        validate_key(key)
        *dirs, name = key.split("/")
        with _fs.translate(self._root, key):
            try:
                dfd = _fs.open_dir(self._root, dirs, create=False)
            except NotADirectoryError:
                raise ObjectNotFound(key) from None
            try:
                fd = _fs.open_regular(dfd, name)
            finally:
                os.close(dfd)
            if fd is None:
                raise ObjectNotFound(key)
            try:
                info, recorded = _fs.read_info(fd, key)
            except BaseException:
                os.close(fd)
                raise
        return _fs.FileChunks(self._root, fd, info, chunk_size, verify=recorded)

    def _head_in(self, dfd: int, name: str, key: str) -> ObjectInfo | None:
        fd = _fs.open_regular(dfd, name)
        if fd is None:
            return None
        try:
            return _fs.read_info(fd, key)[0]
        finally:
            os.close(fd)

    def _write(
        self, key: str, fill: Callable[[BinaryIO], str], *, if_absent: bool, if_match: str | None
    ) -> ObjectInfo:
        validate_key(key)
        check_conditions(if_absent, if_match)
        *dirs, name = key.split("/")
        with _fs.translate(self._root, key, writing=True):
            dfd = _fs.open_dir(self._root, dirs, create=True)
            if if_absent and _exists(dfd, name):
                os.close(dfd)
                raise PreconditionFailed(f"{key!r} already exists")
            tmp = _fs.TMP_PREFIX + secrets.token_hex(8)
            try:
                with os.fdopen(os.open(tmp, _fs.TMP_FLAGS, 0o666, dir_fd=dfd), "wb") as out:
                    sha256 = fill(out)
                    out.flush()
                    size = os.fstat(out.fileno()).st_size
                    etag = self._record(out.fileno(), sha256)
                    os.fsync(out.fileno())
                self._commit(dfd, tmp, name, key, if_absent=if_absent, if_match=if_match)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
                os.close(dfd)
        return ObjectInfo(key=key, size=size, sha256=sha256, etag=etag)

    def _commit(
        self, dfd: int, tmp: str, name: str, key: str, *, if_absent: bool, if_match: str | None
    ) -> None:
        """Put the finished temporary file ``tmp`` (in directory ``dfd``) in place of ``name``."""
        with _fs.key_lock(self._root, key):
            if if_match is not None:
                current = self._head_in(dfd, name, key)
                if current is None or current.etag != if_match:
                    raise PreconditionFailed(f"{key!r} does not have etag {if_match!r}")
            if if_absent:
                _link_new(dfd, tmp, name, key)
            else:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)

    def spool_dir(self) -> Path:
        spool = self._root / RESERVED_PREFIX / "spool"
        if not self._spool_swept:
            with _fs.translate(self._root, RESERVED_PREFIX + "/spool", writing=True):
                spool.mkdir(parents=True, exist_ok=True)
            _remove_older_than(spool, SPOOL_MAX_AGE_S)
            self._spool_swept = True
        return spool

    def adopt_file(self, key: str, path: Path, *, sha256: str, if_absent: bool = False) -> ObjectInfo:
        expected = normalise_sha256(sha256)
        assert expected is not None
        path = Path(path)
        if path.resolve().parent != self.spool_dir():
            info = self.put_file(key, path, sha256=expected, if_absent=if_absent)
            path.unlink()
            return info
        validate_key(key)
        *dirs, name = key.split("/")
        with _fs.translate(self._root, key, writing=True):
            dfd = _fs.open_dir(self._root, dirs, create=True)
            tmp = _fs.TMP_PREFIX + secrets.token_hex(8)
            try:
                with open(path, "rb+") as source:
                    os.fchmod(source.fileno(), ADOPTED_MODE)  # received as 0600 (mkstemp)
                    size = os.fstat(source.fileno()).st_size
                    etag = self._record(source.fileno(), expected)
                    os.fsync(source.fileno())
                os.replace(path, tmp, dst_dir_fd=dfd)
                self._commit(dfd, tmp, name, key, if_absent=if_absent, if_match=None)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
                os.close(dfd)
        return ObjectInfo(key=key, size=size, sha256=expected, etag=etag)

    def _record(self, fd: int, sha256: str) -> str:
        if self._xattrs:
            etag = _fs.set_meta(fd, sha256)
            if etag is not None:
                return etag
            self._xattrs = False
        return _fs.content_etag(sha256)


def _remove_older_than(directory: Path, seconds: float) -> None:
    """Remove the files of ``directory`` last changed over ``seconds`` ago (left by a crashed server)."""
    cutoff = time.time() - seconds
    for entry in os.scandir(directory):
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)


def _link_new(dfd: int, tmp: str, name: str, key: str) -> None:
    try:
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        if stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name) from None
        raise PreconditionFailed(f"{key!r} already exists") from None


def _exists(dfd: int, name: str) -> bool:
    try:
        mode = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISDIR(mode)
