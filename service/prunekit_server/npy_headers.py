"""Reading ``.npy`` headers inside ``.npz`` archives without decompressing the arrays.

Shared by the server's upload check (no torch there) and the worker's dataset
loader: both learn each array's shape and dtype first, and refuse what is
malformed or too large before any data is expanded. Also the one
``INVALID_DATASET`` error both raise.
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .errors import Code, FieldViolation, ServiceError

Header = tuple[tuple[int, ...], np.dtype[Any]]
"""An array's shape and dtype."""


def read_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo | str) -> Header:
    """The shape and dtype of one ``.npy`` member; ``ValueError`` for an unknown format version.

    Only the header is read (a few hundred bytes at most are decompressed).
    """
    with archive.open(member) as fp:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def invalid_dataset(violations: list[FieldViolation]) -> ServiceError:
    """INVALID_ARGUMENT / INVALID_DATASET listing every violation (fields ``<shard>:<array>``)."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(Code.INVALID_ARGUMENT, "INVALID_DATASET", f"invalid dataset: {summary}", violations)
