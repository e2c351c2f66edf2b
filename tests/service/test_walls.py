"""The walls between rooms: what each package may import, checked on the sources and in a live process."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service" / "prunekit_server"
MODEL_ROOMS = ("pipeline", "quantization", "measure", "report", "pruning", "training", "modelio")
"""Rooms that touch models: transport-free and storage-free."""


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = path.relative_to(SERVICE.parent).parent.parts
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names.append(module)
    return names


def test_model_rooms_never_import_transport_or_storage() -> None:
    offenders = []
    for room in MODEL_ROOMS:
        for path in sorted((SERVICE / room).rglob("*.py")):
            for name in _imports(path):
                top = name.split(".")
                if top[0] in ("grpc", "grpc_status", "grpc_health", "boto3") or name.startswith(
                    "prunekit_server.storage"
                ):
                    offenders.append(f"{path.relative_to(SERVICE)}: {name}")
    assert offenders == [], textwrap.indent("\n".join(offenders), "  ")


def test_quantization_modes_do_not_know_each_other() -> None:
    modes = ("static_int8", "dynamic_int8", "fp16")
    for mode in modes:
        imported = _imports(SERVICE / "quantization" / f"{mode}.py")
        others = [n for n in imported for other in modes if other != mode and n.endswith(other)]
        assert others == [], f"{mode} imports {others}"


PROBE = """
import sys
import prunekit_server.server
import prunekit_server.api.servicer
import prunekit_server.jobs.executor
import prunekit_server.spec_rules
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime", "matplotlib"))
print(heavy)
"""


def test_the_server_process_loads_no_model_or_plotting_library() -> None:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(SERVICE.parent), str(SERVICE.parents[1] / "client")])
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
