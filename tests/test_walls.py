"""The walls between rooms, checked on the full import closure of each room in a fresh interpreter.

A room is a package (or a top-level module) of ``prunekit_server`` or one of the shared rooms of ``prunekit``.
Each check imports every module of the room in a new process and fails on any forbidden module found
loaded afterwards, however indirectly it came in. Import circles are found on the sources: every import
statement at any depth, between modules of this repository.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = (ROOT / "service", ROOT / "client")
SERVICE = ROOT / "service" / "prunekit_server"
CLIENT = ROOT / "client" / "prunekit"

TRANSPORT = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "yaml", "boto3", "botocore")
MODELS = ("torch", "onnx", "onnxruntime", "onnxscript", "torch_pruning", "matplotlib", "numpy", "sklearn")
SHARED = ("prunekit.v1", "prunekit.spec", "prunekit.text", "prunekit._version")
"""The rooms of ``prunekit`` that are not the SDK: everything else under ``prunekit.`` is the client."""
SERVER_SIDE = (
    "prunekit_server.api",
    "prunekit_server.jobs",
    "prunekit_server.storage",
    "prunekit_server.server",
)

ENGINES = ("pipeline", "modelio", "pruning", "training", "quantization", "measure", "report")
"""Rooms that touch models: no transport, no storage, no job layer, no SDK."""


def _modules(package: Path, dotted: str) -> list[str]:
    if package.suffix == ".py":
        return [dotted]
    names = []
    for path in sorted(package.rglob("*.py")):
        if "_pb2" in path.name or path.name == "__main__.py":
            continue
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join([dotted, *parts]))
    return names


def _loaded_after_import(modules: list[str]) -> list[str]:
    probe = textwrap.dedent(
        f"""
        import importlib, json, sys
        for name in {modules!r}:
            importlib.import_module(name)
        print(json.dumps(sorted(sys.modules)))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in SOURCE_ROOTS))
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def _is_sdk(name: str) -> bool:
    return name.startswith("prunekit.") and not name.startswith(SHARED)


def _hits(
    loaded: list[str], tops: tuple[str, ...], prefixes: tuple[str, ...] = (), sdk: bool = False
) -> list[str]:
    return [
        m
        for m in loaded
        if m.split(".")[0] in tops or (prefixes and m.startswith(prefixes)) or (sdk and _is_sdk(m))
    ]


@pytest.mark.parametrize("room", ENGINES)
def test_engines_never_load_transport_storage_jobs_or_the_sdk(room: str) -> None:
    loaded = _loaded_after_import(_modules(SERVICE / room, f"prunekit_server.{room}"))
    assert _hits(loaded, TRANSPORT, SERVER_SIDE, sdk=True) == []


def test_shared_rooms_need_protobuf_alone() -> None:
    modules = [m for room in ("v1", "spec", "text") for m in _modules(CLIENT / room, f"prunekit.{room}")]
    loaded = _loaded_after_import(modules)
    assert _hits(loaded, (*TRANSPORT, *MODELS, "prunekit_server"), sdk=True) == []


def test_storage_imports_nothing_of_ours() -> None:
    loaded = _loaded_after_import(_modules(SERVICE / "storage", "prunekit_server.storage"))
    ours = [m for m in loaded if m.split(".")[0] == "prunekit" or m.startswith("prunekit_server.")]
    assert [m for m in ours if not m.startswith("prunekit_server.storage")] == []


def test_the_server_process_loads_no_model_library_and_not_the_sdk() -> None:
    """numpy is allowed: dataset uploads read .npy headers; models and plots are not."""
    modules = ["prunekit_server.server", "prunekit_server.main"]
    modules += _modules(SERVICE / "api", "prunekit_server.api")
    loaded = _loaded_after_import(modules)
    assert _hits(loaded, tuple(m for m in MODELS if m != "numpy"), sdk=True) == []


def test_the_sdk_never_loads_the_server_or_a_model_library() -> None:
    modules = [m for m in _modules(CLIENT, "prunekit") if ".v1." not in m]
    loaded = _loaded_after_import(modules)
    assert _hits(loaded, (*MODELS, "prunekit_server")) == []


def _module_of(path: Path) -> str:
    for root in SOURCE_ROOTS:
        if root in path.parents:
            parts = path.relative_to(root).with_suffix("").parts
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


def _import_graph() -> dict[str, set[str]]:
    files = [p for root in SOURCE_ROOTS for p in root.rglob("*.py") if "_pb2" not in p.name]
    known = {_module_of(p): p for p in files}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert _circles(_import_graph()) == []
