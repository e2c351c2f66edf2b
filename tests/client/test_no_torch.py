"""The SDK and CLI never need torch, onnx, onnxruntime, numpy, matplotlib or the server package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
BANNED = ("torch", "onnx", "onnxruntime", "numpy", "matplotlib", "PIL", "prunekit_server")

BLOCKER = f"""
import importlib.abc
import sys

BANNED = {BANNED!r}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            raise ImportError(f"{{name}} is blocked for this test")
        return None


sys.meta_path.insert(0, _Blocker())
"""

BLOCKER_CHECK = """
try:
    import numpy
except ImportError:
    pass
else:
    raise SystemExit("the blocker is not active")
"""

PROBE = f"""
import sys
import prunekit
import prunekit.cli
import prunekit.text.markdown
from prunekit import Client, load_spec, spec_from_dict
from prunekit.v1 import report_pb2

spec_from_dict({{"prune": {{"method": "unstructured", "ratio": 0.5}}}})
with Client("127.0.0.1:1", timeout=1.0) as client:
    pass
prunekit.cli.build_parser()
prunekit.text.markdown.render_markdown(report_pb2.OptimizationReport())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BANNED!r})
if loaded:
    raise SystemExit(f"imported: {{loaded}}")
print("ok")
"""


@pytest.fixture
def blocked_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(CLIENT_DIR)])
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_import_and_client_without_heavy_modules(blocked_env: dict[str, str]) -> None:
    result = _run(["-c", BLOCKER_CHECK + PROBE], blocked_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_nothing_heavy_is_imported_even_when_available() -> None:
    env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR))
    result = _run(["-c", PROBE], env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["prunekit.cli", "prunekit"])
def test_help_runs(blocked_env: dict[str, str], module: str) -> None:
    result = _run(["-m", module, "--help"], blocked_env)
    assert result.returncode == 0, result.stderr
    assert "usage: prunekit" in result.stdout
    for command in ("analyze", "optimize", "jobs", "download", "report"):
        assert command in result.stdout


LAZY_ALLOWED = ("numpy",)
"""Imported only inside a function, where the caller asked for it (``upload_dataset`` from arrays)."""


def _imports(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    return []


def test_sources_do_not_import_heavy_modules() -> None:
    offenders = []
    for path in sorted((CLIENT_DIR / "prunekit").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        lazy = {
            id(node)
            for func in ast.walk(tree)
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(func)
        }
        for node in ast.walk(tree):
            for name in _imports(node):
                root = name.split(".")[0]
                if root in BANNED and not (id(node) in lazy and root in LAZY_ALLOWED):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == [], textwrap.indent("\n".join(offenders), "  ")


def test_uploading_a_dataset_file_needs_no_numpy(blocked_env: dict[str, str], tmp_path: Path) -> None:
    """The path case of upload_dataset runs its preparation without importing numpy."""
    shard = tmp_path / "shard.npz"
    empty_zip = b"PK\x05\x06" + bytes(18)
    shard.write_bytes(empty_zip)
    probe = f"""
import sys
from prunekit import _datasets, _transfer
from prunekit.v1.optimizer_service_pb2 import DatasetMetadata
with _datasets.dataset_file({str(shard)!r}) as (path, name):
    streamed = _transfer.StreamedFile(path)
    meta = DatasetMetadata(filename=name, size_bytes=streamed.size_bytes)
    requests = list(_transfer.dataset_requests(streamed, meta))
assert len(requests) == 2 and requests[1].chunk == {empty_zip!r}
assert name == "shard.npz" and streamed.size_bytes == 22, (name, streamed.size_bytes)
assert len(streamed.sha256) == 64
assert "numpy" not in sys.modules
print("ok")
"""
    result = _run(["-c", BLOCKER_CHECK + probe], blocked_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
