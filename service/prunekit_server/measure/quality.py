"""Fidelity of a candidate model to a reference model on the same inputs.

Both models run in real ONNX Runtime CPU sessions (the latency protocol's
session options, spinning off). Outputs are compared item by item, an item
being every output of one feed (:func:`compare_models`) or of one sample of
real data (:func:`compare_outputs`, used by the evaluation on eval data):

- top-1: arg-max over the last axis of the first output, compared per row
  (every leading index, batch rows included); the agreement is matching rows
  over all rows of all items. A 0-d output is one row of one element.
- cosine: similarity of the flattened first outputs, averaged over items
  (1 when both are all zero, 0 when only one is).
- max abs error: the largest ``|reference - candidate|`` over every output of
  every item; NaN in both at the same place counts as equal, NaN in one as inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunekit.v1 import model_pb2

from ..errors import unsupported_model
from .latency import cpu_session

SYNTHETIC_INT_HIGH = 10
"""Integer inputs are drawn uniformly from ``[0, SYNTHETIC_INT_HIGH)``: valid indices for most embeddings."""

_FLOAT_DTYPES: dict[int, type[np.floating]] = {
    model_pb2.DATA_TYPE_UNSPECIFIED: np.float32,
    model_pb2.DATA_TYPE_FLOAT32: np.float32,
    model_pb2.DATA_TYPE_FLOAT16: np.float16,
    model_pb2.DATA_TYPE_FLOAT64: np.float64,
}
_INT_DTYPES: dict[int, type[np.integer]] = {
    model_pb2.DATA_TYPE_INT64: np.int64,
    model_pb2.DATA_TYPE_INT32: np.int32,
    model_pb2.DATA_TYPE_INT8: np.int8,
    model_pb2.DATA_TYPE_UINT8: np.uint8,
}


@dataclass(frozen=True)
class Quality:
    """A candidate's outputs against the reference's (see the module docstring)."""

    top1_agreement: float
    cosine_similarity: float
    max_abs_error: float
    samples: int


DEFAULT_MIN_TOP1_AGREEMENT = 0.99
DEFAULT_MIN_COSINE_SIMILARITY = 0.99


@dataclass(frozen=True)
class QualityRule:
    """The floors a candidate's :class:`Quality` must reach to count as faithful to the reference."""

    min_top1_agreement: float = DEFAULT_MIN_TOP1_AGREEMENT
    min_cosine_similarity: float = DEFAULT_MIN_COSINE_SIMILARITY

    def met_by(self, quality: Quality) -> bool:
        """True when both of ``quality``'s numbers reach their floors."""
        return (
            quality.top1_agreement >= self.min_top1_agreement
            and quality.cosine_similarity >= self.min_cosine_similarity
        )

    def describe(self) -> str:
        """The rule in words."""
        return (
            f"top-1 agreement >= {self.min_top1_agreement:g} and cosine similarity >= "
            f"{self.min_cosine_similarity:g} against the original's outputs"
        )


def synthetic_inputs(
    inputs: Sequence[model_pb2.InputSpec], samples: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """``samples`` feeds for ``inputs``, the same for the same arguments.

    Floating inputs are drawn from normal(0, 1); integer inputs uniformly from
    ``[0, SYNTHETIC_INT_HIGH)``; bool inputs uniformly; an input with a fixed ``value``
    is that value everywhere (and draws nothing). One generator seeded
    with ``seed`` draws feed after feed, input after input. Raises
    ``UNSUPPORTED_MODEL`` for an element type that cannot be fed (bfloat16).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    feeds: list[dict[str, np.ndarray]] = []
    for _ in range(samples):
        feed: dict[str, np.ndarray] = {}
        for spec in inputs:
            shape = tuple(int(d) for d in spec.shape)
            fixed = spec.HasField("value") and spec.dtype in {**_FLOAT_DTYPES, **_INT_DTYPES}
            if fixed:
                feed[spec.name] = np.full(shape, spec.value, dtype=np.float64).astype(
                    {**_FLOAT_DTYPES, **_INT_DTYPES}[spec.dtype]
                )
            elif spec.dtype in _FLOAT_DTYPES:
                feed[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(
                    _FLOAT_DTYPES[spec.dtype]
                )
            elif spec.dtype in _INT_DTYPES:
                feed[spec.name] = rng.integers(0, SYNTHETIC_INT_HIGH, size=shape).astype(
                    _INT_DTYPES[spec.dtype]
                )
            elif spec.dtype == model_pb2.DATA_TYPE_BOOL:
                feed[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            else:
                name = (
                    model_pb2.DataType.Name(spec.dtype) if spec.dtype in model_pb2.DataType.values() else "?"
                )
                raise unsupported_model(f"input {spec.name!r}: cannot make synthetic inputs of type {name}")
        feeds.append(feed)
    return feeds


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flat vectors: 1 when both are all zero, 0 when only one is (or not finite)."""
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0 or not (math.isfinite(na) and math.isfinite(nb)):
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """The largest ``|a - b|``; NaN in both at one place counts as equal, NaN in one as inf."""
    if a.size == 0:
        return 0.0
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    diff[np.isnan(diff)] = np.inf
    return float(diff.max())


def top1_matches(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(rows whose arg-max over the last axis agrees, rows); a 0-d or empty last axis agrees on every row."""
    if a.ndim == 0 or a.shape[-1] == 0:
        rows = 1 if a.ndim == 0 else int(np.prod(a.shape[:-1], dtype=np.int64))
        return rows, rows
    ra = np.argmax(a.reshape(-1, a.shape[-1]), axis=-1)
    rb = np.argmax(b.reshape(-1, b.shape[-1]), axis=-1)
    return int(np.count_nonzero(ra == rb)), int(ra.size)


def compare_outputs(
    reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]], *, samples: int
) -> Quality:
    """Compare two models' outputs item by item (an item: every output of one feed or one sample).

    ``samples`` is what the :class:`Quality` reports as its sample count.
    Raises ``ValueError`` when there are no items or the outputs differ in
    number or shape.
    """
    if not reference:
        raise ValueError("no feeds to compare on")
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference items, {len(candidate)} candidate items")
    matched = rows = 0
    cosines: list[float] = []
    worst = 0.0
    for index, (ref_out, cand_out) in enumerate(zip(reference, candidate, strict=True)):
        if len(ref_out) != len(cand_out):
            raise ValueError(f"reference has {len(ref_out)} outputs, candidate {len(cand_out)}")
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for position, (r, c) in enumerate(zip(ref_out, cand_out, strict=True)):
            ra = np.asarray(r, dtype=np.float64)
            ca = np.asarray(c, dtype=np.float64)
            if ra.shape != ca.shape:
                raise ValueError(f"feed {index}, output {position}: shapes {ra.shape} and {ca.shape} differ")
            pairs.append((ra, ca))
        if not pairs:
            raise ValueError("the models have no outputs")
        first_ref, first_cand = pairs[0]
        good, count = top1_matches(first_ref, first_cand)
        matched += good
        rows += count
        cosines.append(cosine(first_ref.reshape(-1), first_cand.reshape(-1)))
        worst = max([worst, *(max_abs(r, c) for r, c in pairs)])
    return Quality(
        top1_agreement=matched / rows if rows else 1.0,
        cosine_similarity=float(np.mean(cosines)),
        max_abs_error=worst,
        samples=samples,
    )


def run_feeds(
    model: Path, feeds: Sequence[dict[str, np.ndarray]], *, threads: int = 1
) -> list[list[np.ndarray]]:
    """Every output of ``model`` for each feed, in one CPU session."""
    session = cpu_session(model, threads=threads)
    return [list(session.run(None, feed)) for feed in feeds]


def compare_models(
    reference: Path, candidate: Path, feeds: Sequence[dict[str, np.ndarray]], *, threads: int = 1
) -> Quality:
    """Run both models on every feed and compare their outputs (one item per feed).

    Raises ``ValueError`` when there are no feeds or the models' outputs differ
    in number or shape.
    """
    if not feeds:
        raise ValueError("no feeds to compare on")
    return compare_outputs(
        run_feeds(reference, feeds, threads=threads),
        run_feeds(candidate, feeds, threads=threads),
        samples=len(feeds),
    )
