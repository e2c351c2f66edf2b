"""Each server's scratch directory of its own, and the removal of those whose server is gone.

Under the scratch root (``scratch_dir``, else the system temp directory) a server works in
``prunekit-server-<pid>-<random>/``: its jobs', analyses' and zygote's directories and the upload spool
of a store without one. The directory holds ``.owner.lock``, on which the server keeps an exclusive
``flock`` for as long as it (or a worker it forked) lives; the kernel drops the lock when the last
holder dies, however it dies. At start a server removes every such directory whose lock it can take:
that is proof its owner is gone, also for servers of other containers sharing the host's scratch
directory (one kernel), and a live owner's directory is never touched. The directory is made under a
temporary name, locked, then renamed, so no scan sees it unlocked. (``.owner`` records pid, process
start time and host, for people; the lock alone decides.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

__all__ = ["PREFIX", "ServerScratch", "remove_dead"]

log = logging.getLogger(__name__)

PREFIX = "prunekit-server-"
LOCK = ".owner.lock"
OWNER = ".owner"


def _locked(lock: Path) -> int | None:
    """An fd holding the exclusive lock on ``lock``, or None when another process holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_dead(root: Path) -> list[Path]:
    """Remove the directories of servers that are gone under ``root``; the ones removed."""
    removed = []
    for path in sorted(root.glob(f"{PREFIX}*")):
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = _locked(path / LOCK)
        except OSError as exc:
            log.warning("scratch: cannot check %s: %s", path.name, exc.strerror)
            continue
        if fd is None:
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        if not path.exists():
            removed.append(path)
    if removed:
        log.info("scratch: removed %d directory(ies) of servers that are gone", len(removed))
    return removed


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or ""."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class ServerScratch:
    """This server's directory under ``root``, locked from :meth:`claim` to :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def claim(cls, root: Path) -> ServerScratch:
        """Remove the directories of servers that are gone, then make and lock this server's."""
        root.mkdir(parents=True, exist_ok=True)
        remove_dead(root)
        pid = os.getpid()
        staging = Path(tempfile.mkdtemp(prefix=".prunekit-claiming-", dir=root))
        fd = _locked(staging / LOCK)
        if fd is None:  # pragma: no cover - nobody else knows the fresh name
            raise RuntimeError(f"could not lock {staging}")
        owner = {"pid": pid, "start_time": _start_time(pid), "host": socket.gethostname()}
        (staging / OWNER).write_text(json.dumps(owner))
        path = root / f"{PREFIX}{pid}-{staging.name.rsplit('-', 1)[-1]}"
        staging.rename(path)
        return cls(path, fd)

    def release(self) -> None:
        """Remove the directory and drop the lock (safe to call more than once)."""
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
