"""Filesystem primitives for :class:`FileStore`: link-free path walks, locks, metadata, errors."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from ._base import (
    ChecksumMismatch,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from ._keys import RESERVED_PREFIX, is_sha256_hex, validate_key

CHUNK = 1 << 20
TMP_PREFIX = RESERVED_PREFIX + "-tmp-"
XATTR = "user.prunekit.v1"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNAVAILABLE = frozenset(
    {
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.EFBIG,
        errno.EMFILE,
        errno.ENFILE,
        errno.ESTALE,
    }
)
_NO_XATTR = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.ENOSYS, errno.E2BIG})


def content_etag(sha256: str) -> str:
    """The etag of an object without recorded metadata: derived from its content."""
    return "sha256-" + sha256[:32]


def open_dir(root: Path, parts: list[str], *, create: bool) -> int:
    """Open ``root/parts...`` one component at a time with ``O_NOFOLLOW``; the caller closes it.

    Raises ``OSError``: ``ELOOP`` on a link, ``ENOTDIR`` on a file, ``ENOENT`` if absent and
    not ``create``.
    """
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                    os.fsync(fd)  # the new entry survives a crash, like the files below it
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(dfd: int, name: str) -> int | None:
    """An fd for reading the regular file ``name`` in ``dfd``, or ``None`` if there is none."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def set_meta(fd: int, sha256: str) -> str | None:
    """Record sha256 and a fresh random etag on an open file; ``None`` if xattrs are unsupported."""
    etag = secrets.token_hex(16)
    try:
        os.setxattr(fd, XATTR, f"{sha256} {etag}".encode())
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise
        return None
    return etag


def read_info(fd: int, key: str) -> tuple[ObjectInfo, bool]:
    """The info of an open object file, and whether its sha256 was recorded at write time.

    Without a record the content is hashed (and the etag is :func:`content_etag`).
    """
    size = os.fstat(fd).st_size
    try:
        sha256, _, etag = os.getxattr(fd, XATTR).decode("ascii", "replace").partition(" ")
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise
    else:
        if is_sha256_hex(sha256) and etag:
            return ObjectInfo(key=key, size=size, sha256=sha256, etag=etag), True
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    sha256 = digest.hexdigest()
    return ObjectInfo(key=key, size=offset, sha256=sha256, etag=content_etag(sha256)), False


def walk(fd: int, rel: str, prefix: str, after: str) -> Iterator[str]:
    """Keys under the open directory ``fd`` (whose key prefix is ``rel``), ascending.

    Only keys starting with ``prefix`` and greater than ``after`` are yielded; subtrees that
    cannot hold one are not entered. Links, internal names and names that are not valid key
    segments are skipped.
    """
    entries: list[tuple[str, bool]] = []
    with os.scandir(fd) as it:
        for entry in it:
            if not _plain_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                entries.append((entry.name + "/", True))
            elif entry.is_file(follow_symlinks=False):
                entries.append((entry.name, False))
    entries.sort()
    for name, is_dir in entries:
        full = rel + name
        if not is_dir:
            if full.startswith(prefix) and full > after:
                yield full
            continue
        if not (full.startswith(prefix) or prefix.startswith(full)):
            continue
        if full <= after and not after.startswith(full):
            continue
        try:
            child = os.open(name[:-1], DIR_FLAGS, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            yield from walk(child, full, prefix, after)
        finally:
            os.close(child)


def _plain_name(name: str) -> bool:
    try:
        validate_key(name)
    except InvalidKey:
        return False
    return True


@contextlib.contextmanager
def key_lock(root: Path, key: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` serialising writers of ``key`` (256 striped lock files)."""
    lock_dir = root / RESERVED_PREFIX / "locks"
    path = lock_dir / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:2]}.lock"
    try:
        fd = os.open(path, _LOCK_FLAGS, 0o666)
    except FileNotFoundError:
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _LOCK_FLAGS, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def translate(root: Path, key: str, *, writing: bool = False) -> Iterator[None]:
    """Turn an ``OSError`` on the store's paths into the matching :class:`StorageError`."""
    try:
        yield
    except OSError as exc:
        raise _map_os_error(exc, root, key, writing=writing) from exc


def _map_os_error(exc: OSError, root: Path, key: str, *, writing: bool) -> StorageError:
    code = exc.errno
    if code == errno.ELOOP:
        return InvalidKey(f"the path of {key!r} meets a symbolic link; links are never followed")
    if code == errno.ENAMETOOLONG:
        return InvalidKey(f"{key!r} is too long for the filesystem")
    if code in (errno.ENOTDIR, errno.EISDIR):
        if writing:
            return InvalidKey(f"{key!r} collides with an existing object or directory in {str(root)!r}")
        return ObjectNotFound(key)
    if code == errno.ENOENT and not writing:
        return ObjectNotFound(key)
    if code in _FULL:
        return StorageFull(f"file store {str(root)!r} has no space left for {key!r}: {exc.strerror}")
    if code in _UNAVAILABLE:
        return StorageUnavailable(f"file store {str(root)!r} unavailable for {key!r}: {exc.strerror}")
    return StorageError(f"file store {str(root)!r} failed on {key!r}: {exc}")


class FileChunks(Iterator[bytes]):
    """Chunks of an open object file; checks a recorded sha256 after the last one."""

    def __init__(self, root: Path, fd: int, info: ObjectInfo, chunk_size: int, *, verify: bool) -> None:
        self.info = info
        self._root = root
        self._fd: int | None = fd
        self._chunk_size = chunk_size
        self._verify = verify
        self._digest = hashlib.sha256()

    def __iter__(self) -> FileChunks:
        return self

    def __next__(self) -> bytes:
        if self._fd is None:
            raise StopIteration
        with translate(self._root, self.info.key):
            chunk = os.read(self._fd, self._chunk_size)
        if chunk:
            self._digest.update(chunk)
            return chunk
        self.close()
        actual = self._digest.hexdigest()
        if self._verify and actual != self.info.sha256:
            raise ChecksumMismatch(f"{self.info.key!r} has sha256 {actual}, recorded {self.info.sha256}")
        raise StopIteration

    def close(self) -> None:
        """Release the file; further iteration ends at once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()
