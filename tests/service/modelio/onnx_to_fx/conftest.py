"""Exported zoo models, cached on disk and shared by the test workers of one run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from .zoo import ZOO, export


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Tiny models: threads only contend with the other test worker (see ``one_torch_thread``)."""


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root
    path = shared / "onnx_to_fx_zoo"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def exported(zoo_cache: Path) -> Callable[..., onnx.ModelProto]:
    """``exported(name, exporter, opset=17, training=False)``: the zoo model as ONNX (cached)."""
    cache: dict[tuple[str, str, int, bool], onnx.ModelProto] = {}

    def get(name: str, exporter: str, opset: int = 17, training: bool = False) -> onnx.ModelProto:
        key = (name, exporter, opset, training)
        if key not in cache:
            suffix = "-train" if training else ""
            path = zoo_cache / f"{name}-{exporter}-{opset}{suffix}.onnx"
            if not path.exists():
                entry = ZOO[name]
                model = entry.build()
                if training:
                    model.train()
                export(model, entry, path, exporter, opset, training=training)
            cache[key] = onnx.load(str(path))
        return cache[key]

    return get
