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
from pathlib import Path

from ...search.table import MAX_FILE_BYTES, merge_tables
from ...storage import ObjectStore, PreconditionFailed, StorageError

PREFIX = "latency-tables/"
LOCAL_DIR = "latency-tables"
MAX_STAGED = 64

log = logging.getLogger(__name__)


def stage_tables(store: ObjectStore, workdir: Path) -> str:
    """Copy the stored tables into ``workdir/latency-tables``; the directory relative to ``workdir``."""
    local = workdir / LOCAL_DIR
    local.mkdir(exist_ok=True)
    try:
        for key in store.list_keys(PREFIX, limit=MAX_STAGED):
            info = store.head(key)
            name = key.removeprefix(PREFIX)
            if (
                info is not None
                and info.size <= MAX_FILE_BYTES
                and "/" not in name
                and name.endswith(".json")
            ):
                store.get_file(key, local / name)
    except StorageError as exc:
        log.warning("latency tables not staged (the search times layers again): %s", exc)
    return LOCAL_DIR


def save_tables(store: ObjectStore, workdir: Path) -> int:
    """Merge the tables the job wrote into the stored ones; how many were written."""
    local = workdir / LOCAL_DIR
    written = 0
    for path in sorted(local.glob("*.json")) if local.is_dir() else []:
        key = PREFIX + path.name
        try:
            if path.stat().st_size <= MAX_FILE_BYTES:
                written += _merge_into(store, key, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, StorageError) as exc:
            log.warning("latency table %s not saved: %s", path.name, exc)
    return written


def _merge_into(store: ObjectStore, key: str, fresh: object, tries: int = 3) -> int:
    for _ in range(tries):
        info = store.head(key)
        stored = json.loads(store.get_bytes(key)) if info is not None else None
        merged = merge_tables(stored, fresh)
        if merged is None or merged == stored:
            return 0
        data = json.dumps(merged, separators=(",", ":")).encode()
        try:
            if info is None:
                store.put_bytes(key, data, if_absent=True)
            else:
                store.put_bytes(key, data, if_match=info.etag)
            return 1
        except PreconditionFailed:
            continue
    return 0
