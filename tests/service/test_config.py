"""Every server setting is read from the environment and documented in the README's settings table."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from prunekit_server.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _table_rows() -> list[str]:
    return [line for line in README.read_text().splitlines() if line.startswith("| `PRUNEKIT_")]


def _documented(variable: str, rows: list[str]) -> bool:
    """``PRUNEKIT_X_Y`` in a row, or ``..._Y`` in a row whose first variable starts with ``PRUNEKIT_X_``."""
    for row in rows:
        names = re.findall(r"`((?:PRUNEKIT|\.\.\.)_[A-Z0-9_]+)`", row.split("|")[1])
        if variable in names:
            return True
        for name in names:
            suffix = name[3:]
            prefix = variable[: -len(suffix)] + "_"
            if name.startswith("...") and variable.endswith(suffix) and names[0].startswith(prefix):
                return True
    return False


def test_every_setting_is_in_the_readme_table() -> None:
    rows = _table_rows()
    missing = [f.name for f in fields(Settings) if not _documented(f"PRUNEKIT_{f.name.upper()}", rows)]
    assert missing == []


def test_every_setting_is_read_from_the_environment() -> None:
    defaults = Settings()
    changed = {
        "host": "0.0.0.0",
        "storage": "s3://b/p",
        "auth": "none",
        "log_format": "json",
        "log_level": "DEBUG",
        "scratch_dir": "/tmp/x",
        "server_id": "s1",
    }
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            env[f"PRUNEKIT_{f.name.upper()}"] = "0" if value else "1"
        elif isinstance(value, int | float):
            env[f"PRUNEKIT_{f.name.upper()}"] = str(value + 7)
        else:
            env[f"PRUNEKIT_{f.name.upper()}"] = changed.get(f.name, "/etc/x")
    settings = Settings.from_env(env)
    for f in fields(Settings):
        assert getattr(settings, f.name) != getattr(defaults, f.name), f.name


def test_a_value_that_does_not_parse_names_the_variable() -> None:
    with pytest.raises(ValueError, match="PRUNEKIT_METRICS_PORT"):
        Settings.from_env({"PRUNEKIT_METRICS_PORT": "ninety"})
