"""The job's data, loaded against the ingested model's inputs, and the feeds drawn from it.

:func:`load_job_data` reads the staged ``train`` and ``eval`` shards with
:func:`~prunekit_server.training.datasets.load_shards` (every problem is one
``INVALID_DATASET`` error whose violations name ``<shard uri>:<array>``),
holds out ``eval_fraction`` of ``train`` (seeded) when no eval shards were
given, and describes it all in a ``DataReport``. :func:`data_feeds` cuts a
split into feeds of the model's batch size (first samples first), which
replace synthetic inputs for data-driven importance, BatchNorm refreshes and
quantization calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prunekit.v1 import model_pb2, report_pb2

from ..errors import Code, FieldViolation, ServiceError
from ..hashing import sha256_file
from ..training.datasets import Dataset, load_shards, shard_samples
from .data import JobData, StagedShard

DEFAULT_EVAL_FRACTION = 0.2
"""Share of ``train`` held out for evaluation when the spec gives no eval shards and no fraction."""


@dataclass(frozen=True)
class LoadedData:
    """The job's splits (None where absent) and their ``DataReport``."""

    train: Dataset | None
    eval: Dataset | None
    report: report_pb2.DataReport

    @property
    def empty(self) -> bool:
        """True when the job has no data at all."""
        return self.train is None and self.eval is None


def _renamed(error: ServiceError, split: str, shards: Sequence[StagedShard]) -> ServiceError:
    """``error`` with each ``<file name>`` in its violations replaced by the shard's URI."""
    names = {shard.path.name: shard.uri or f"data.{split}/{shard.path.name}" for shard in shards}

    def rename(text: str) -> str:
        head, sep, tail = text.partition(":")
        return f"{names[head]}{sep}{tail}" if head in names else text

    violations = [FieldViolation(rename(v.field), v.description) for v in error.violations]
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(error.code, error.reason, f"invalid {split} data: {summary}", violations)


def _load(split: str, shards: Sequence[StagedShard], inputs: Sequence[model_pb2.InputSpec]) -> Dataset:
    try:
        return load_shards([shard.path for shard in shards], inputs)
    except ServiceError as exc:
        raise _renamed(exc, split, shards) from None


def _shard_entries(shards: Sequence[StagedShard]) -> list[report_pb2.DatasetShard]:
    return [
        report_pb2.DatasetShard(
            uri=shard.uri, sha256=shard.sha256 or sha256_file(shard.path), samples=shard_samples(shard.path)
        )
        for shard in shards
    ]


def _supervision(dataset: Dataset | None) -> str:
    if dataset is None:
        return "none"
    if dataset.label is not None:
        return "label"
    return "target" if dataset.target is not None else "none"


def load_job_data(
    data: JobData, inputs: Sequence[model_pb2.InputSpec], eval_fraction: float, seed: int
) -> LoadedData:
    """Load and validate the job's shards; split ``train`` when there are no eval shards.

    ``eval_fraction`` 0 means :data:`DEFAULT_EVAL_FRACTION`; the report's
    ``eval_fraction`` is the share held out, 0 when eval shards were given.
    Unlabelled train data with labelled eval data is the distillation setup
    (learn from the original, be judged on labels); train and eval that both
    have supervision must agree on its kind (labels, or targets): otherwise
    ``INVALID_DATASET``. The report's ``supervision`` is the train split's
    (the eval split's when there is no train data).
    """
    if data.empty:
        return LoadedData(None, None, report_pb2.DataReport())
    train = _load("train", data.train, inputs) if data.train else None
    held_out = _load("eval", data.eval, inputs) if data.eval else None
    fraction = 0.0
    if train is not None and held_out is None:
        fraction = eval_fraction or DEFAULT_EVAL_FRACTION
        train, held_out = train.split(fraction, seed=seed)
    kinds = {_supervision(d) for d in (train, held_out) if d is not None} - {"none"}
    if train is not None and held_out is not None and len(kinds) > 1:
        what = f"eval has {_supervision(held_out)} supervision, train has {_supervision(train)}"
        where = data.eval[0].uri or "data.eval"
        bad = [FieldViolation(where, what)]
        raise ServiceError(Code.INVALID_ARGUMENT, "INVALID_DATASET", f"invalid eval data: {what}", bad)
    classes = [d.num_classes for d in (train, held_out) if d is not None and d.num_classes is not None]
    report = report_pb2.DataReport(
        train=_shard_entries(data.train),
        eval=_shard_entries(data.eval),
        train_samples=len(train) if train is not None else 0,
        eval_samples=len(held_out) if held_out is not None else 0,
        eval_fraction=fraction,
        supervision=_supervision(train if train is not None else held_out),
        num_classes=max(classes, default=0),
    )
    return LoadedData(train, held_out, report)


def data_feeds(
    dataset: Dataset, inputs: Sequence[model_pb2.InputSpec], count: int
) -> list[dict[str, np.ndarray]]:
    """Up to ``count`` feeds (input name -> array) of the model's batch size, in sample order.

    Feed ``k`` holds samples ``k*b .. k*b+b-1`` (``b``: the inputs' first
    dimension); a dataset smaller than one batch wraps around to fill it.
    At least one feed is returned when ``count`` > 0.
    """
    if count < 1 or len(dataset) == 0:
        return []
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1
    n = len(dataset)
    feeds = []
    for k in range(max(1, min(count, n // batch))):
        index = np.arange(k * batch, (k + 1) * batch) % n
        feeds.append(
            {
                name: np.ascontiguousarray(array[index])
                for name, array in zip(dataset.input_names, dataset.inputs, strict=True)
            }
        )
    return feeds


def describe_feeds(feeds: Sequence[dict[str, np.ndarray]], split: str) -> str:
    """In words: how many feeds of how many samples, from which split."""
    if not feeds:
        return ""
    samples = int(next(iter(feeds[0].values())).shape[0])
    return f"{len(feeds)} feed(s) of {samples} sample(s) from the {split} split"
