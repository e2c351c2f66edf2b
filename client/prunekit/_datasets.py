"""Dataset shards from the caller's side: an ``.npz`` path, or arrays written to a temporary ``.npz``.

numpy is imported only when arrays are given, so uploading a file works
without it (the SDK depends on grpcio and protobuf alone).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

__all__ = ["DEFAULT_FILENAME", "DatasetLike", "dataset_file"]

DatasetLike: TypeAlias = "str | PathLike[str] | Mapping[str, Any]"
DEFAULT_FILENAME = "dataset.npz"


@contextmanager
def dataset_file(source: DatasetLike, filename: str | None = None) -> Iterator[tuple[Path, str]]:
    """The shard file to upload and the name to upload it under.

    A path is used as it is (``filename`` defaults to its name). A mapping of
    array name to array-like (``{"input": x, "label": y}``) is written as a
    compressed ``.npz`` (what ``numpy.savez_compressed`` writes, any array name
    allowed) to a temporary file, removed on exit; ``ValueError``
    for an empty mapping, a name that is not a non-empty string, or an array
    that holds Python objects (the server refuses pickled arrays). ``ImportError``
    when numpy is missing.
    """
    if not isinstance(source, Mapping):
        path = Path(source)
        yield path, filename or path.name
        return
    import numpy as np

    if not source:
        raise ValueError("a dataset needs at least one array")
    arrays: dict[str, Any] = {}
    for name, value in source.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"array names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects; give numbers (bool, int or float)")
        arrays[name] = array
    name = filename or DEFAULT_FILENAME
    with tempfile.TemporaryDirectory(prefix="prunekit-dataset-") as directory:
        path = Path(directory) / Path(name).name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, array in arrays.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        yield path, name
