"""Server locations kept out of what clients read: the storage root, its bucket and the scratch root.

Clients name stored objects by tenant-relative ``prunekit://`` URIs (:mod:`.jobs.durable.uris`); this is
the net under that rule for free text. A server registers its locations at start (:func:`hide`), and every
error turned into a ``google.rpc.Status`` (an RPC's error, a job's ``error``) passes through
:func:`redact`: each occurrence becomes a placeholder (``<storage>``, ``<scratch>``). The registry is
process-wide; several servers in one process (tests) hide the union of their locations.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

__all__ = ["MIN_BARE_BUCKET", "forget_all", "hidden", "hide", "hide_store", "redact"]

MIN_BARE_BUCKET = 8
"""A bucket name this long or longer is also hidden where it stands alone (shorter ones could be words)."""

_lock = threading.Lock()
_hidden: dict[str, str] = {}
_pattern: re.Pattern[str] | None = None


def hide(text: str, placeholder: str) -> None:
    """Replace ``text`` (a path, a URI) by ``placeholder`` in everything :func:`redact` sees from now on."""
    global _pattern
    text = text.rstrip("/") if len(text) > 1 else text
    if not text or text == "/":
        return
    with _lock:
        _hidden[text] = placeholder
        ordered = sorted(_hidden, key=len, reverse=True)
        _pattern = re.compile("|".join(_token(t) for t in ordered))


def _token(text: str) -> str:
    """A pattern for ``text``; a bare name only where it is not part of a longer name."""
    if "/" in text or ":" in text:
        return rf"{re.escape(text)}(?![\w.-])"
    return rf"(?<![\w.-]){re.escape(text)}(?![\w-])"


def hide_store(uri: str, endpoint: str = "") -> None:
    """Hide an object store's base URI: a ``file://`` store's directory in both spellings, an ``s3://``
    store's bucket (and the bare bucket name when at least :data:`MIN_BARE_BUCKET` long) and
    ``endpoint`` (an S3-compatible server's address) when given."""
    if uri.startswith("file://"):
        hide(uri, "<storage>")
        hide(uri[len("file://") :], "<storage>")
    elif uri.startswith("s3://"):
        bucket = uri[len("s3://") :].split("/", 1)[0]
        hide(uri, "<storage>")
        hide(f"s3://{bucket}", "<storage>")
        if len(bucket) >= MIN_BARE_BUCKET:
            hide(bucket, "<bucket>")
    else:
        hide(uri, "<storage>")
    if endpoint:
        hide(endpoint, "<storage-endpoint>")
        host = urlsplit(endpoint).netloc
        if host:
            hide(host, "<storage-endpoint>")


def redact(text: str) -> str:
    """``text`` with every hidden location replaced by its placeholder."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(lambda match: _placeholder(match.group(0)), text)


def _placeholder(found: str) -> str:
    with _lock:
        return _hidden.get(found.rstrip("/"), "<hidden>")


def hidden() -> dict[str, str]:
    """What is hidden now: text -> placeholder."""
    with _lock:
        return dict(_hidden)


def forget_all() -> None:
    """Hide nothing any more (for tests of this module)."""
    global _pattern
    with _lock:
        _hidden.clear()
        _pattern = None
