"""The rules of a spec's ``data`` and of its accuracy rule (``evaluation.max_accuracy_drop``).

* ``data``: at least one of ``train``/``eval``; each entry a URI (``scheme://...``) of at most 2048
  printable characters, not listed twice in its split; at most ``max_shards`` entries in all (prefix
  entries are expanded and counted again when the job is created); ``eval_fraction`` 0 or in (0, 1).
* ``evaluation.max_accuracy_drop``: 0 (no rule) or 0 < x <= 1, and only with data.
"""

from __future__ import annotations

import math

from prunekit.v1 import spec_pb2

from .violation import FieldViolation

__all__ = ["MAX_DATA_SHARDS", "MAX_URI_LENGTH", "accuracy_rule_violations", "data_violations"]

MAX_DATA_SHARDS = 1000
MAX_URI_LENGTH = 2048


def data_violations(
    data: spec_pb2.DataSpec, path: str, found: list[FieldViolation], *, max_shards: int = MAX_DATA_SHARDS
) -> None:
    """Rules of ``spec.data`` (see the module docstring)."""
    if not data.train and not data.eval:
        found.append(FieldViolation(path, "name train or eval shards, or leave data out"))
    for split in ("train", "eval"):
        seen: set[str] = set()
        for i, entry in enumerate(getattr(data, split)):
            where = f"{path}.{split}[{i}]"
            if not entry.strip() or len(entry) > MAX_URI_LENGTH or not entry.isprintable():
                found.append(FieldViolation(where, f"a URI of 1 to {MAX_URI_LENGTH} printable characters"))
            elif "://" not in entry:
                found.append(
                    FieldViolation(where, f"{entry!r} is not a URI: use the uri UploadDataset returned")
                )
            elif entry in seen:
                found.append(FieldViolation(where, f"{entry!r} is listed twice"))
            seen.add(entry)
    if len(data.train) + len(data.eval) > max_shards:
        found.append(FieldViolation(path, f"at most {max_shards} train and eval entries in all"))
    fraction = data.eval_fraction
    if not math.isfinite(fraction) or not (fraction == 0.0 or 0.0 < fraction < 1.0):
        found.append(FieldViolation(f"{path}.eval_fraction", "must be 0 (default 0.2) or 0 < value < 1"))


def accuracy_rule_violations(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    """``evaluation.max_accuracy_drop``: 0, or 0 < x <= 1 with data to judge it on."""
    drop = spec.evaluation.max_accuracy_drop
    if not math.isfinite(drop) or not 0.0 <= drop <= 1.0:
        found.append(
            FieldViolation(f"{path}.max_accuracy_drop", "must be 0 (no rule) or 0 < value <= 1 (a fraction)")
        )
    elif drop and not (spec.data.train or spec.data.eval):
        found.append(
            FieldViolation(f"{path}.max_accuracy_drop", "needs data: labelled eval (or train) shards")
        )
