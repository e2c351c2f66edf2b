"""Per-layer latency tables: what one layer of a given shape costs on one kind of node, measured there.

A table belongs to a *node kind* (:class:`NodeKind`: runtime and version, execution provider, device, CPU
model, threads, batch size, table format); its file name is the kind's key, the first 16 hex digits of the
sha256 of those fields, so a table is reused only where every one of them matches and a new runtime version,
CPU model or setting starts a new table. Entries are keyed by the layer's signature
(:meth:`~.layers.LayerShape.signature`) and hold the measured p50 and when it was measured; an entry older
than :data:`MAX_AGE_S` is measured again. Files are JSON, at most :data:`MAX_ENTRIES` entries (the oldest
dropped first); a file that does not parse or is of another kind or format is ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TABLE_FORMAT = 1
MAX_AGE_S = 30 * 86_400.0
MAX_ENTRIES = 20_000
MAX_FILE_BYTES = 8 << 20
MAX_P50_MS = 3_600_000.0
FILE_NAME = re.compile(r"^[0-9a-f]{16}\.json$")
"""A table file's name: its node kind's key."""
SIGNATURE = re.compile(r"^[a-z0-9|>x.\-]{1,200}$")
"""What a layer signature may contain (see :meth:`~.layers.LayerShape.signature`)."""


@dataclass(frozen=True)
class NodeKind:
    """Everything a layer's latency depends on besides its shape."""

    runtime: str
    provider: str
    device: str
    cpu: str
    threads: int
    batch: int
    format: int = TABLE_FORMAT

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (
            f"{self.runtime}, {self.provider}, {self.device} ({self.cpu}), {self.threads} thread(s), "
            f"batch {self.batch}"
        )


@dataclass
class LatencyTable:
    """One node kind's entries (signature -> (p50 ms, unix time measured)) and how this job used them."""

    kind: NodeKind
    entries: dict[str, tuple[float, float]] = field(default_factory=dict)
    reused: bool = False
    used: set[str] = field(default_factory=set)
    timed: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def lookup(self, signature: str, measure: Callable[[], float]) -> float:
        """The p50 of ``signature``; measured now (``measure``) when missing or too old."""
        self.used.add(signature)
        found = self.entries.get(signature)
        if found is not None and time.time() - found[1] < MAX_AGE_S:
            return found[0]
        started = time.monotonic()
        value = float(measure())
        self.seconds += time.monotonic() - started
        self.entries[signature] = (value, time.time())
        self.timed.add(signature)
        return value

    def to_json(self) -> dict[str, Any]:
        newest = sorted(self.entries.items(), key=lambda item: -item[1][1])[:MAX_ENTRIES]
        return {
            "format": TABLE_FORMAT,
            "kind": asdict(self.kind),
            "entries": {k: {"p50_ms": v[0], "at": v[1]} for k, v in sorted(newest)},
        }

    def save(self, directory: Path) -> Path:
        """Write the table as ``directory/<key>.json`` (replacing it atomically)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.kind.key}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.to_json(), separators=(",", ":")), encoding="utf-8")
        partial.replace(path)
        return path


def kind_of(data: object) -> NodeKind | None:
    """The node kind a parsed table file names, when it is one."""
    raw = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        kind = NodeKind(**raw)
    except TypeError:
        return None
    fields_ok = all(isinstance(getattr(kind, f), str) for f in ("runtime", "provider", "device", "cpu"))
    numbers_ok = all(type(getattr(kind, f)) is int for f in ("threads", "batch", "format"))
    return kind if fields_ok and numbers_ok else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def parse_entries(data: object, kind: NodeKind | None = None) -> dict[str, tuple[float, float]] | None:
    """The valid entries of a parsed table file; None when it is malformed, of another format or kind.

    An entry needs a signature of :data:`SIGNATURE`'s form, a finite p50 in (0, 1 h] and a finite time
    of measurement, clamped to now (a table cannot claim entries from the future).
    """
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT or kind_of(data) is None:
        return None
    if kind is not None and kind_of(data) != kind:
        return None
    raw = data.get("entries")
    if not isinstance(raw, dict):
        return None
    now = time.time()
    entries: dict[str, tuple[float, float]] = {}
    for signature, value in list(raw.items())[:MAX_ENTRIES]:
        if not isinstance(value, dict) or not SIGNATURE.match(str(signature)):
            continue
        p50, at = _number(value.get("p50_ms")), _number(value.get("at"))
        if p50 is not None and at is not None and 0 < p50 <= MAX_P50_MS:
            entries[str(signature)] = (p50, min(at, now))
    return entries


def load_table(directory: Path | None, kind: NodeKind) -> LatencyTable:
    """The table of ``kind`` from ``directory`` (staged from storage), or an empty one."""
    path = directory / f"{kind.key}.json" if directory is not None else None
    if path is None or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        return LatencyTable(kind)
    try:
        entries = parse_entries(json.loads(path.read_text(encoding="utf-8")), kind)
    except (OSError, ValueError):
        entries = None
    if not entries:
        return LatencyTable(kind)
    return LatencyTable(kind, entries=entries, reused=True)


def merge_tables(stored: object, fresh: object, key: str) -> dict[str, Any] | None:
    """``fresh`` (a table file's JSON) plus ``stored``'s newer entries, as the table ``key``.

    None when ``fresh`` is bad or is not the table of the kind ``key`` names; a ``stored`` table that
    is bad or of another kind counts as empty.
    """
    kind = kind_of(fresh)
    fresh_entries = parse_entries(fresh)
    if kind is None or fresh_entries is None or kind.key != key:
        return None
    merged = dict(parse_entries(stored, kind) or {})
    for signature, value in fresh_entries.items():
        if signature not in merged or merged[signature][1] < value[1]:
            merged[signature] = value
    return LatencyTable(kind, entries=merged).to_json()
