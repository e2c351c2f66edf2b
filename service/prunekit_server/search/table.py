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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TABLE_FORMAT = 1
MAX_AGE_S = 30 * 86_400.0
MAX_ENTRIES = 20_000
MAX_FILE_BYTES = 8 << 20


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


def parse_entries(data: object, kind: NodeKind | None = None) -> dict[str, tuple[float, float]] | None:
    """The entries of a parsed table file; None when it is malformed, of another format or of another kind."""
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        return None
    if kind is not None and data.get("kind") != asdict(kind):
        return None
    raw = data.get("entries")
    if not isinstance(raw, dict):
        return None
    entries: dict[str, tuple[float, float]] = {}
    for signature, value in raw.items():
        if not isinstance(value, dict):
            continue
        p50, at = value.get("p50_ms"), value.get("at")
        if isinstance(p50, int | float) and isinstance(at, int | float) and p50 > 0:
            entries[str(signature)] = (float(p50), float(at))
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


def merge_tables(stored: object, fresh: object) -> dict[str, Any] | None:
    """``fresh`` (a table file's JSON) plus ``stored``'s newer entries; None when ``fresh`` is bad."""
    if parse_entries(fresh) is None or not isinstance(fresh, dict):
        return None
    kind = fresh.get("kind")
    merged = (
        dict(parse_entries(stored) or {}) if isinstance(stored, dict) and stored.get("kind") == kind else {}
    )
    for signature, value in (parse_entries(fresh) or {}).items():
        if signature not in merged or merged[signature][1] < value[1]:
            merged[signature] = value
    newest = sorted(merged.items(), key=lambda item: -item[1][1])[:MAX_ENTRIES]
    return {
        "format": TABLE_FORMAT,
        "kind": kind,
        "entries": {k: {"p50_ms": v[0], "at": v[1]} for k, v in sorted(newest)},
    }
