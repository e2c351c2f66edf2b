"""Key rules shared by every backend, so a key valid in one store is valid in all."""

from __future__ import annotations

import re

from ._base import InvalidKey

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
RESERVED_PREFIX = ".prunekit"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _check_text(value: str, what: str) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"{what} {value!r} is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is {size} bytes of UTF-8, more than {MAX_KEY_BYTES}")
    if "\\" in value:
        raise InvalidKey(f"{what} {value!r} contains a backslash")
    if any(_is_control(ch) for ch in value):
        raise InvalidKey(f"{what} {value!r} contains a control character")
    if value.startswith("/"):
        raise InvalidKey(f"{what} {value!r} starts with '/'")


def _check_segment(segment: str, value: str, what: str) -> None:
    if not segment:
        raise InvalidKey(f"{what} {value!r} has an empty segment")
    if segment in (".", ".."):
        raise InvalidKey(f"{what} {value!r} has a {segment!r} segment")
    if segment.startswith(RESERVED_PREFIX):
        raise InvalidKey(f"{what} {value!r}: segments starting with {RESERVED_PREFIX!r} are reserved")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise InvalidKey(f"{what} {value!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key, else raise :class:`InvalidKey`.

    A key is relative and ``/``-separated: non-empty segments, none ``.`` or ``..`` or
    starting with ``.prunekit`` (reserved for store internals), each at most 255 bytes;
    no backslash or control character; at most 1024 bytes of UTF-8 in all.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("key is empty")
    _check_text(key, "key")
    for segment in key.split("/"):
        _check_segment(segment, key, "key")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it can prefix a valid key, else raise :class:`InvalidKey`.

    ``""`` is valid; otherwise every segment before the last ``/`` follows the key rules
    and the last (possibly empty, possibly partial) one contains no forbidden character.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a str, not {type(prefix).__name__}")
    if not prefix:
        return prefix
    _check_text(prefix, "prefix")
    for segment in prefix.split("/")[:-1]:
        _check_segment(segment, prefix, "prefix")
    return prefix


def check_limit(limit: int | None) -> None:
    """Reject a negative ``limit`` (``None`` means unlimited)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")


def check_conditions(if_absent: bool, if_match: str | None) -> None:
    """``if_absent`` and ``if_match`` are mutually exclusive; ``if_match`` must be non-empty."""
    if if_absent and if_match is not None:
        raise ValueError("if_absent and if_match are mutually exclusive")
    if if_match is not None and not if_match:
        raise ValueError("if_match must be a non-empty etag")


def normalise_sha256(sha256: str | None) -> str | None:
    """Lower-case a hex sha256; ``ValueError`` if it is not 64 hex digits."""
    if sha256 is None:
        return None
    value = sha256.lower()
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError(f"sha256 must be 64 hex digits, not {sha256!r}")
    return value


def is_sha256_hex(value: str) -> bool:
    """True if ``value`` is 64 lower-case hex digits."""
    return _SHA256_HEX.fullmatch(value) is not None


class RootedKeys:
    """The URIs of a store whose every key sits under one base URI (``<base>/<key>``)."""

    _uri: str
    _base: str

    def _root_at(self, uri: str, base: str) -> None:
        self._uri = uri
        self._base = base

    @property
    def uri(self) -> str:
        return self._uri

    def uri_for(self, key: str) -> str:
        return self._base + validate_key(key)

    def key_for_uri(self, uri: str) -> str:
        if not uri.startswith(self._base):
            raise InvalidKey(f"{uri!r} is not inside {self._uri!r}")
        return validate_key(uri[len(self._base) :])
