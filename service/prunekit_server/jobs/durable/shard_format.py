"""The structure of a dataset shard, read from its ``.npy`` headers only (no torch, no pickle).

A shard is an ``.npz``: a zip archive whose members are ``.npy`` arrays. This
module checks what can be checked without a model: every member (directory
entries too) is an ``.npy`` array of booleans, integers or floats (never
Python objects); every array has a first (sample) dimension and all agree on
it; ``label``, when present, is 1-D integer class ids and ``target`` a float
array, not both.
Only each member's header is decompressed, so a small archive that would
expand to gigabytes costs nothing here. Whether the arrays fit a model is
checked in the worker (:func:`prunekit_server.training.datasets.load_shards`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import FieldViolation
from ...npy_headers import Header, invalid_dataset, read_header

LABEL = "label"
TARGET = "target"
_KINDS = "biuf"


@dataclass(frozen=True)
class ShardSummary:
    """What a valid shard holds: its sample count and its arrays' names, sorted."""

    samples: int
    arrays: list[str]


def _headers(path: Path, shard: str, bad: list[FieldViolation]) -> dict[str, Header]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        bad.append(FieldViolation(shard, f"not an .npz file (a zip archive of .npy arrays): {exc}"))
        return {}
    headers: dict[str, Header] = {}
    with archive:
        members = archive.infolist()  # directory entries too: numpy lists them as arrays
        if not members:
            bad.append(FieldViolation(shard, "holds no arrays"))
        for info in members:
            if not info.filename.endswith(".npy"):
                bad.append(FieldViolation(f"{shard}:{info.filename}", "not an .npy array member"))
                continue
            name = info.filename[: -len(".npy")]
            if name in headers:
                bad.append(FieldViolation(f"{shard}:{name}", "stored twice"))
                continue
            try:
                headers[name] = read_header(archive, info)
            except (
                OSError,
                ValueError,
                SyntaxError,
                zipfile.BadZipFile,
                EOFError,
                NotImplementedError,
            ) as exc:
                bad.append(FieldViolation(f"{shard}:{name}", f"corrupt .npy header: {exc}"))
    return headers


def _array_violations(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> list[str]:
    found = []
    if dtype.hasobject:
        found.append("holds Python objects (needs pickle): refused")
    elif dtype.kind not in _KINDS:
        found.append(f"dtype {dtype} is not a boolean, integer or float type")
    if not shape:
        found.append("is a scalar; every array needs a first (sample) dimension")
    if name == LABEL:
        if len(shape) != 1:
            found.append(f"label must be 1-D, got shape {shape}")
        if dtype.kind not in "iu":
            found.append(f"label must hold integer class ids, got {dtype}")
    if name == TARGET and dtype.kind != "f":
        found.append(f"target must be a float array, got {dtype}")
    return found


def inspect_shard(path: Path, shard: str) -> ShardSummary:
    """The shard's sample count and arrays, or INVALID_DATASET naming every bad ``<shard>:<array>``.

    ``shard`` is the name violations use (the uploaded file name).
    """
    bad: list[FieldViolation] = []
    headers = _headers(path, shard, bad)
    for name, (shape, dtype) in sorted(headers.items()):
        where = f"{shard}:{name}"
        bad += [FieldViolation(where, text) for text in _array_violations(name, shape, dtype)]
    if LABEL in headers and TARGET in headers:
        bad.append(FieldViolation(f"{shard}:{TARGET}", "a shard holds label or target, not both"))
    counts = {name: shape[0] for name, (shape, _) in headers.items() if shape}
    if len(set(counts.values())) > 1:
        for name, count in sorted(counts.items()):
            bad.append(
                FieldViolation(f"{shard}:{name}", f"sample count mismatch: {counts}; this has {count}")
            )
    elif headers and counts and not any(counts.values()):
        bad.append(FieldViolation(shard, "holds no samples"))
    if bad:
        raise invalid_dataset(bad)
    return ShardSummary(samples=next(iter(counts.values()), 0), arrays=sorted(headers))
