"""The fleet-wide latency tables in storage: staged into a job's working directory, merged back after it.

Tables live outside every tenant, under ``latency-tables/<node-kind key>.json`` (see
:mod:`...search.table` for the key and the file), since a layer's latency on a kind of node is the same
for every team; they hold layer shapes and timings, never weights or data. A job with a ``target`` gets
at most :data:`MAX_STAGED` of them in ``latency-tables/``; afterwards each table the job wrote there is
merged with the stored one (newer entries win) and written back with a compare-and-swap, merged again
when another job wrote first. A table that fails to stage or save is logged and skipped: the search then
times the layers again.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from ...search.table import FILE_NAME, MAX_FILE_BYTES, merge_tables
from ...storage import ChecksumMismatch, ObjectStore, PreconditionFailed, StorageError

PREFIX = "latency-tables/"
LOCAL_DIR = "latency-tables"
MAX_STAGED = 64
MAX_SAVED = 2

log = logging.getLogger(__name__)


def stage_tables(store: ObjectStore, workdir: Path) -> str:
    """Copy the stored tables into ``workdir/latency-tables``; the directory relative to ``workdir``."""
    local = workdir / LOCAL_DIR
    local.mkdir(exist_ok=True)
    try:
        for key in store.list_keys(PREFIX, limit=MAX_STAGED):
            name = key.removeprefix(PREFIX)
            info = store.head(key) if FILE_NAME.match(name) else None
            if info is not None and info.size <= MAX_FILE_BYTES:
                store.get_file(key, local / name)
    except StorageError as exc:
        log.warning("latency tables not staged (the search times layers again): %s", exc)
    return LOCAL_DIR


def _read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (not a link) of at most MAX_FILE_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(MAX_FILE_BYTES + 1)
    return data if len(data) <= MAX_FILE_BYTES else None


def save_tables(store: ObjectStore, workdir: Path) -> int:
    """Merge the tables the job wrote into the stored ones; how many were written.

    The worker's directory is untrusted: only regular files named like a table key are read (at most
    :data:`MAX_SAVED` of them, each size-capped), and each must be the table of the kind its name is
    the key of (see :func:`~...search.table.merge_tables`).
    """
    local = workdir / LOCAL_DIR
    if local.is_symlink() or not local.is_dir():
        return 0
    names = sorted(p.name for p in local.iterdir() if FILE_NAME.match(p.name))[:MAX_SAVED]
    written = 0
    for name in names:
        data = _read_regular(local / name)
        try:
            fresh = json.loads(data) if data is not None else None
            written += _merge_into(store, PREFIX + name, fresh, name.removesuffix(".json"))
        except (ValueError, StorageError) as exc:
            log.warning("latency table %s not saved: %s", name, exc)
    return written


def _stored(store: ObjectStore, key: str) -> tuple[object, str | None]:
    """The stored table (None when absent or unreadable) and its etag (None when absent)."""
    info = store.head(key)
    if info is None:
        return None, None
    try:
        return json.loads(store.get_bytes(key)), info.etag
    except (ValueError, ChecksumMismatch):
        return None, info.etag


def _merge_into(store: ObjectStore, key: str, fresh: object, kind_key: str, tries: int = 3) -> int:
    for _ in range(tries):
        stored, etag = _stored(store, key)
        merged = merge_tables(stored, fresh, kind_key)
        if merged is None or merged == stored:
            return 0
        data = json.dumps(merged, separators=(",", ":")).encode()
        try:
            if etag is None:
                store.put_bytes(key, data, if_absent=True)
            else:
                store.put_bytes(key, data, if_match=etag)
            return 1
        except PreconditionFailed:
            continue
    return 0
