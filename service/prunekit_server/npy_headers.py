"""Reading ``.npy`` headers inside ``.npz`` archives without decompressing the arrays.

Shared by the server's upload check (no torch there) and the worker's dataset
loader: both learn each array's shape and dtype first, and refuse what is
malformed or too large before any data is expanded. Also the one
``INVALID_DATASET`` error both raise.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .errors import Code, FieldViolation, ServiceError

Header = tuple[tuple[int, ...], np.dtype[Any]]
"""An array's shape and dtype."""

MAX_HEADER_BYTES = 1 << 16
"""The most of a member decompressed to read its header (magic, length and header text)."""


def read_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo | str) -> Header:
    """The shape and dtype of one ``.npy`` member.

    At most :data:`MAX_HEADER_BYTES` of the member are decompressed, whatever
    header length it declares. ``ValueError`` for an encrypted member, an
    unknown format version, a header longer than that, or a negative dimension
    (which would make the array's size, computed from its shape, understate it).
    """
    info = member if isinstance(member, zipfile.ZipInfo) else archive.getinfo(member)
    if info.flag_bits & 0x1:
        raise ValueError("the member is encrypted")
    with archive.open(info) as fp:
        head = io.BytesIO(fp.read(MAX_HEADER_BYTES))
    try:
        shape, dtype = _parse(head)
    except ValueError:
        raise
    except Exception as exc:  # numpy's parser of untrusted text: tokenizer, syntax, recursion, dtype errors
        raise ValueError(f"malformed .npy header ({type(exc).__name__})") from exc
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {tuple(shape)}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _parse(head: io.BytesIO) -> tuple[tuple[int, ...], Any]:
    version = npy_format.read_magic(head)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(head)
    elif version == (2, 0):
        shape, _, dtype = npy_format.read_array_header_2_0(head)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype


def invalid_dataset(violations: list[FieldViolation]) -> ServiceError:
    """INVALID_ARGUMENT / INVALID_DATASET listing every violation (fields ``<shard>:<array>``)."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(Code.INVALID_ARGUMENT, "INVALID_DATASET", f"invalid dataset: {summary}", violations)
