"""Datasets made of ``.npz`` shards, validated against the model's inputs.

A shard holds one array per model input (named after it; a single-input model
may call it ``input``) and optionally ``label`` (integer class ids, 1-D) or
``target`` (a float array), all with the same first (sample) dimension. Every
shard of a dataset holds the same arrays. :func:`load_shards` reads shards
with ``allow_pickle=False`` and checks, per array, presence, sample counts,
per-sample shape (the :class:`InputSpec` shape minus its batch dimension),
dtype and finiteness; every problem found is listed in one
``ServiceError(INVALID_ARGUMENT, "INVALID_DATASET")`` whose violations name
``<shard>:<array>``.

Memory: the whole dataset lives in memory once loaded. :func:`load_shards`
reads every array's ``.npy`` header before decompressing it and refuses a
dataset whose arrays would exceed ``max_bytes`` (default
:data:`MAX_DATASET_BYTES`) in all; peak memory while loading is about twice
the dataset (the shards, then their concatenation). Batches copy
``batch_size`` samples only.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from prunekit.v1 import model_pb2

from ..errors import FieldViolation
from ..npy_headers import Header, invalid_dataset, read_header

MAX_DATASET_BYTES = 2 * 1024**3
"""Default cap on the decoded size of all arrays of a dataset (2 GiB)."""

SINGLE_INPUT_ALIAS = "input"
LABEL = "label"
TARGET = "target"

_DTYPES: dict[int, np.dtype[np.generic]] = {
    model_pb2.DATA_TYPE_UNSPECIFIED: np.dtype(np.float32),
    model_pb2.DATA_TYPE_FLOAT32: np.dtype(np.float32),
    model_pb2.DATA_TYPE_FLOAT16: np.dtype(np.float16),
    model_pb2.DATA_TYPE_FLOAT64: np.dtype(np.float64),
    model_pb2.DATA_TYPE_INT64: np.dtype(np.int64),
    model_pb2.DATA_TYPE_INT32: np.dtype(np.int32),
    model_pb2.DATA_TYPE_INT8: np.dtype(np.int8),
    model_pb2.DATA_TYPE_UINT8: np.dtype(np.uint8),
    model_pb2.DATA_TYPE_BOOL: np.dtype(np.bool_),
}


@dataclass(frozen=True)
class Batch:
    """``batch_size`` samples: one array per model input (in the model's input order), label or target."""

    inputs: tuple[np.ndarray, ...]
    label: np.ndarray | None = None
    target: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])


class Dataset:
    """Samples in memory: arrays per model input, plus optional ``label`` or ``target``.

    ``input_names`` gives the order of ``Batch.inputs`` (the model's input
    order). All arrays share their first dimension, the sample count.
    """

    def __init__(
        self,
        input_names: Sequence[str],
        inputs: Sequence[np.ndarray],
        label: np.ndarray | None = None,
        target: np.ndarray | None = None,
    ) -> None:
        if not inputs or len(inputs) != len(input_names):
            raise ValueError("one array per input name is required")
        if label is not None and target is not None:
            raise ValueError("a dataset has a label or a target, not both")
        counts = {int(a.shape[0]) for a in inputs}
        counts |= {int(a.shape[0]) for a in (label, target) if a is not None}
        if len(counts) != 1:
            raise ValueError(f"arrays disagree on the sample count: {sorted(counts)}")
        self.input_names = tuple(input_names)
        self.inputs = tuple(inputs)
        self.label = label
        self.target = target

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])

    @property
    def nbytes(self) -> int:
        """Decoded size of every array, in bytes."""
        arrays = [*self.inputs, *(a for a in (self.label, self.target) if a is not None)]
        return sum(int(a.nbytes) for a in arrays)

    @property
    def num_classes(self) -> int | None:
        """``max(label) + 1`` when there are labels, else None."""
        if self.label is None or len(self.label) == 0:
            return None
        return int(self.label.max()) + 1

    def subset(self, indices: np.ndarray) -> Dataset:
        """The samples at ``indices``, in that order (copies)."""
        return Dataset(
            self.input_names,
            [a[indices] for a in self.inputs],
            None if self.label is None else self.label[indices],
            None if self.target is None else self.target[indices],
        )

    def split(self, eval_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
        """A seeded random ``(train, eval)`` split; ``eval`` has ``round(n * eval_fraction)`` samples,
        at most ``n - 1``: ``train`` keeps at least one sample when there is one.

        ``eval_fraction`` must be in ``[0, 1)``; an empty eval part is returned as None.
        """
        if not 0.0 <= eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        n_eval = max(0, min(round(len(self) * eval_fraction), len(self) - 1))
        train = self.subset(np.sort(order[n_eval:]))
        return train, (self.subset(np.sort(order[:n_eval])) if n_eval else None)

    def batches_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches :meth:`batches` yields for one pass."""
        if drop_last and len(self) >= batch_size:
            return len(self) // batch_size
        return -(-len(self) // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]:
        """One pass over the data in batches of ``batch_size``.

        With ``shuffle`` the order is a permutation drawn from ``(seed, epoch)``
        only, so a pass is reproducible without any global RNG state;
        ``start`` skips that many batches (resuming mid-epoch). ``drop_last``
        drops a short final batch unless it is the only one.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(self)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for b in range(start, self.batches_per_epoch(batch_size, drop_last)):
            idx = order[b * batch_size : (b + 1) * batch_size]
            yield Batch(
                tuple(a[idx] for a in self.inputs),
                None if self.label is None else self.label[idx],
                None if self.target is None else self.target[idx],
            )


def numpy_dtype(dtype: int) -> np.dtype[np.generic] | None:
    """The numpy dtype of a ``DataType`` value (None for types numpy lacks, e.g. bfloat16)."""
    return _DTYPES.get(dtype)


def _check_input(where: str, array: np.ndarray, spec: model_pb2.InputSpec, bad: list[FieldViolation]) -> None:
    expected = numpy_dtype(spec.dtype)
    if expected is None:
        bad.append(FieldViolation(where, f"input dtype {spec.dtype} cannot be fed from npz"))
    elif array.dtype != expected:
        bad.append(FieldViolation(where, f"dtype {array.dtype} does not match the model's {expected}"))
    want = tuple(int(d) for d in spec.shape[1:])
    if spec.shape and tuple(array.shape[1:]) != want:
        bad.append(
            FieldViolation(
                where, f"per-sample shape {tuple(array.shape[1:])} does not match the model's {want}"
            )
        )
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        bad.append(FieldViolation(where, "contains NaN or infinite values"))


def _check_extra(where: str, name: str, array: np.ndarray, bad: list[FieldViolation]) -> None:
    if name == LABEL:
        if array.ndim != 1:
            bad.append(FieldViolation(where, f"label must be 1-D, got shape {array.shape}"))
        if array.dtype.kind not in "iu":
            bad.append(FieldViolation(where, f"label must hold integer class ids, got {array.dtype}"))
        elif array.size and int(array.min()) < 0:
            bad.append(FieldViolation(where, "label holds negative class ids"))
    else:
        if array.dtype.kind != "f":
            bad.append(FieldViolation(where, f"target must be a float array, got {array.dtype}"))
        elif not np.isfinite(array).all():
            bad.append(FieldViolation(where, "contains NaN or infinite values"))


def load_shards(
    paths: Sequence[str | os.PathLike[str]],
    inputs: Sequence[model_pb2.InputSpec],
    max_bytes: int = MAX_DATASET_BYTES,
) -> Dataset:
    """Read and validate ``.npz`` shards against the model ``inputs``; concatenate them.

    Raises ``ServiceError(INVALID_ARGUMENT, "INVALID_DATASET")`` listing every
    problem found (violation field ``<shard file name>:<array>``), and the
    same error when the arrays exceed ``max_bytes`` in all.
    """
    if not paths:
        raise invalid_dataset([FieldViolation("dataset", "no shards given")])
    if not inputs:
        raise invalid_dataset([FieldViolation("dataset", "the model declares no inputs")])
    names = [spec.name for spec in inputs]
    bad: list[FieldViolation] = []
    parts: list[dict[str, np.ndarray]] = []
    total = 0
    for path in paths:
        shard = os.path.basename(os.fspath(path))
        read = _read_shard(path, shard, bad, max_bytes - total)
        if read is None:
            continue
        arrays, size = read
        total += size
        if len(inputs) == 1 and SINGLE_INPUT_ALIAS in arrays and names[0] != SINGLE_INPUT_ALIAS:
            if names[0] in arrays:
                bad.append(FieldViolation(f"{shard}:{SINGLE_INPUT_ALIAS}", f"both 'input' and {names[0]!r}"))
            else:
                arrays[names[0]] = arrays.pop(SINGLE_INPUT_ALIAS)
        for extra in sorted(set(arrays) - {*names, LABEL, TARGET}):
            bad.append(
                FieldViolation(f"{shard}:{extra}", f"unknown array; expected {names} and label/target")
            )
        if LABEL in arrays and TARGET in arrays:
            bad.append(FieldViolation(f"{shard}:{TARGET}", "a shard holds label or target, not both"))
        for spec in inputs:
            if spec.name not in arrays:
                bad.append(FieldViolation(f"{shard}:{spec.name}", "missing array for model input"))
            else:
                _check_input(f"{shard}:{spec.name}", arrays[spec.name], spec, bad)
        for extra in (LABEL, TARGET):
            if extra in arrays:
                _check_extra(f"{shard}:{extra}", extra, arrays[extra], bad)
        counts = {name: int(a.shape[0]) if a.ndim else -1 for name, a in arrays.items()}
        if len(set(counts.values())) > 1:
            for name, count in sorted(counts.items()):
                bad.append(
                    FieldViolation(f"{shard}:{name}", f"sample count mismatch: {counts}; this has {count}")
                )
        if parts and {LABEL, TARGET} & set(parts[0]) != {LABEL, TARGET} & set(arrays):
            bad.append(FieldViolation(shard, "every shard must hold the same label/target arrays"))
        parts.append(arrays)
    if bad:
        raise invalid_dataset(bad)
    label = np.concatenate([p[LABEL] for p in parts]).astype(np.int64) if LABEL in parts[0] else None
    target = np.concatenate([p[TARGET] for p in parts]) if TARGET in parts[0] else None
    arrays_in = [np.ascontiguousarray(np.concatenate([p[n] for p in parts])) for n in names]
    return Dataset(names, arrays_in, label, target)


def _read_shard(
    path: str | os.PathLike[str], shard: str, bad: list[FieldViolation], budget: int
) -> tuple[dict[str, np.ndarray], int] | None:
    """The shard's arrays and their decoded size, reading each array's header first.

    Nothing is decompressed when the headers say the shard holds Python
    objects or would exceed ``budget`` bytes (a compressed npz can be small
    on disk and huge in memory).
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        bad.append(FieldViolation(shard, f"not a readable npz file: {exc}"))
        return None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        bad.append(FieldViolation(shard, "not an npz archive"))
        return None
    arrays: dict[str, np.ndarray] = {}
    with loaded as npz:
        archive = npz.zip
        assert archive is not None  # open until the with block ends
        headers: dict[str, Header] = {}
        for name in npz.files:
            try:
                headers[name] = _header(archive, name)
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                bad.append(FieldViolation(f"{shard}:{name}", f"corrupt array: {exc}"))
        size = 0
        for name, (shape, dtype) in headers.items():
            size += math.prod(shape) * dtype.itemsize
            if dtype.hasobject:
                bad.append(FieldViolation(f"{shard}:{name}", "holds Python objects (needs pickle): refused"))
        if size > budget:
            bad.append(FieldViolation(shard, f"dataset exceeds the {budget}-byte memory cap left for it"))
            return None
        for name, (_, dtype) in headers.items():
            if dtype.hasobject:
                continue
            try:
                arrays[name] = npz[name]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                bad.append(FieldViolation(f"{shard}:{name}", f"corrupt array: {exc}"))
    return arrays, size


def shard_samples(path: str | os.PathLike[str]) -> int:
    """The sample count of a shard :func:`load_shards` accepted (its first array's first dimension).

    Reads one ``.npy`` header only; ``ValueError`` for an empty or unreadable shard.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile) or not npz.files or npz.zip is None:
                raise ValueError(f"{os.fspath(path)}: not an npz archive with arrays")
            shape, _ = _header(npz.zip, npz.files[0])
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from exc
    return int(shape[0]) if shape else 0


def _header(archive: zipfile.ZipFile, name: str) -> Header:
    return read_header(archive, name if name in archive.namelist() else f"{name}.npy")
