"""Static bearer tokens: a YAML file of token digests, each naming a tenant and a role.

``tokens: [{sha256: <hex sha256 of the token>, tenant: team-a, role: user}]``, each entry optionally
with ``quota_active_jobs`` and ``quota_stored_bytes`` (integers >= 0, 0 = none) replacing the server's
quotas for calls made with that token. The file holds only digests; a presented token's digest is
compared with every entry in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from pathlib import Path

import yaml

from .identity import USER, Identity, make_identity
from .watched import Watched

TokenTable = tuple[tuple[bytes, Identity], ...]


def parse_tokens(paths: tuple[Path, ...]) -> TokenTable:
    """The entries of a tokens file; ValueError naming the first bad entry."""
    (path,) = paths
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a mapping with a 'tokens' list")
    table = []
    for i, entry in enumerate(entries):
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"{path}: tokens[{i}].sha256 must be 64 hex digits")
        try:
            raw = bytes.fromhex(digest)
            identity = make_identity(entry.get("tenant"), entry.get("role", USER))
            identity = replace(
                identity,
                quota_active_jobs=_quota(entry, "quota_active_jobs"),
                quota_stored_bytes=_quota(entry, "quota_stored_bytes"),
            )
        except ValueError as exc:
            raise ValueError(f"{path}: tokens[{i}]: {exc}") from exc
        table.append((raw, identity))
    return tuple(table)


def _quota(entry: dict[str, object], name: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0")
    return value


class StaticTokens:
    """The tokens of a file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self._table = Watched((path,), parse_tokens)

    def identify(self, token: str) -> Identity | None:
        """The identity whose digest matches ``token``, or None. Every entry is compared."""
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, identity in self._table.get():
            if hmac.compare_digest(presented, digest):
                found = identity
        return found
