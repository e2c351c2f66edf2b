"""The server's log lines: plain text or one JSON object per line, each naming what it is about.

The fields of :func:`log_context` (``job_id``, ``tenant``, ``request_id``, ``attempt``, ``method``...) are
added to every line logged inside it, in this thread or context: a job's dispatcher binds the job's,
an RPC its own. Text lines end with them as ``key=value``; JSON lines carry them as keys.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

FORMATS = ("text", "json")
_FIELDS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "prunekit_log_fields", default=()
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` (None values skipped) to every line logged inside the block."""
    merged = {**dict(_FIELDS.get()), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _FIELDS.set(tuple(merged.items()))
    try:
        yield
    finally:
        _FIELDS.reset(token)


def context_fields() -> dict[str, str]:
    """The fields :func:`log_context` bound here now."""
    return dict(_FIELDS.get())


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = context_fields()
        if not fields:
            return line
        first, sep, rest = line.partition("\n")
        return first + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + sep + rest


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the context
    fields, and ``exception`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(context_fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Log at ``level`` (DEBUG, INFO...) in ``fmt`` (``text`` or ``json``) to ``stream`` (stderr).
    ValueError for an unknown level or format."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
