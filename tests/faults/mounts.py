"""Real mounts for fault tests: a directory made read-only in place, a small tmpfs that fills up.

Both need ``mount`` (root, or a user namespace that allows it); :func:`require_mounts` skips a test,
saying why, where mounting is not permitted. ``chmod`` would not do: root writes through it.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)


def _umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:  # busy: detach it now, it goes once the last file is closed
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@functools.cache
def _why_not() -> str:
    """Why mounts cannot be made here ("" when they can), tried once with a real tmpfs."""
    if shutil.which("mount") is None:
        return "no mount command"
    with tempfile.TemporaryDirectory() as probe:
        done = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", probe)
        if done.returncode != 0:
            return f"mount is not permitted here: {done.stderr.strip() or done.returncode}"
        _umount(Path(probe))
    return ""


def require_mounts() -> None:
    """Skip the calling test, with the reason, where mounts cannot be made."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted on ``path`` (created) until the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path))
    assert done.returncode == 0, done.stderr
    try:
        yield path
    finally:
        _umount(path)


class ReadOnly:
    """``path`` bound onto itself, so that it can be turned read-only and writable again in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_only = False

    def set(self, read_only: bool) -> None:
        mode = "ro" if read_only else "rw"
        done = _mount("-o", f"remount,{mode},bind", str(self.path))
        assert done.returncode == 0, done.stderr
        self.read_only = read_only


@contextlib.contextmanager
def bound(path: Path) -> Iterator[ReadOnly]:
    """A bind mount of ``path`` onto itself (writable) until the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("--bind", str(path), str(path))
    assert done.returncode == 0, done.stderr
    try:
        yield ReadOnly(path)
    finally:
        _umount(path)
