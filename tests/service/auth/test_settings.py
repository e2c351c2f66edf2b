"""Authentication and TLS settings that do not hold together stop the server before it listens; the
tokens file is re-read when it changes; tenants are listed from storage."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from prunekit_server.auth.authenticator import Authenticator
from prunekit_server.auth.identity import Identity
from prunekit_server.auth.tokens import StaticTokens
from prunekit_server.config import Settings
from prunekit_server.jobs.durable.tenants import Tenants
from prunekit_server.server import start_server
from prunekit_server.storage import open_store

from .material import write_tokens_file


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "no credential is configured"),
        ({"auth": "off"}, "auth must be"),
        ({"auth_jwks_file": "{jwks}"}, "auth_jwt_issuer and auth_jwt_audience"),
        ({"auth_tokens_file": "{bad_tokens}"}, "tokens[0].sha256"),
        ({"auth_tokens_file": "{bad_quota}"}, "tokens[0]: quota_active_jobs must be an integer >= 0"),
        ({"auth": "none", "tls_cert_file": "{jwks}"}, "both tls_cert_file and tls_key_file"),
        ({"auth": "none", "tls_client_ca_file": "{jwks}"}, "needs tls_cert_file"),
    ],
)
def test_inconsistent_settings_stop_the_start(tmp_path: Path, fields: dict[str, str], says: str) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    (tmp_path / "bad.yaml").write_text("tokens: [{sha256: abc, tenant: a}]")
    (tmp_path / "quota.yaml").write_text(
        f"tokens: [{{sha256: {'ab' * 32}, tenant: a, quota_active_jobs: -1}}]"
    )
    paths = {
        "jwks": tmp_path / "jwks.json",
        "bad_tokens": tmp_path / "bad.yaml",
        "bad_quota": tmp_path / "quota.yaml",
    }
    values = {k: v.format(**paths) for k, v in fields.items()}
    settings = replace(Settings(storage=str(tmp_path / "store"), port=0), **values)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape(says)):
        start_server(settings)
    assert not (tmp_path / "store").exists(), "storage was opened before the settings were checked"


def test_auth_none_is_explicit_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    assert Authenticator.from_settings(Settings(auth="none")) is None
    assert "AUTHENTICATION IS OFF" in caplog.text


def test_the_tokens_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = write_tokens_file(tmp_path / "tokens.yaml", {"first": ("team-a", "admin")})
    tokens = StaticTokens(path)
    assert tokens.identify("first") == Identity("team-a", "admin")
    assert tokens.identify("second") is None
    write_tokens_file(path, {"second": ("team-b", "user")})
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert tokens.identify("second") == Identity("team-b", "user")
    assert tokens.identify("first") is None
    path.write_text("tokens: [{sha256: nothex, tenant: x}]")  # a broken edit keeps the last good table
    assert tokens.identify("second") == Identity("team-b", "user")


def test_tenants_are_listed_from_storage(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    for name in ("a", "a.b", "a-b", "ab", "a0"):
        store.put_bytes(f"tenants/{name}/jobs/x/job.json", b"{}")
        store.put_bytes(f"tenants/{name}/models/y/model", b"m")
    assert Tenants(store, owner="s", lease_s=1).names() == ["a", "a-b", "a.b", "a0", "ab"]
