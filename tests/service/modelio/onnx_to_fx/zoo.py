"""The converter tests' view of the shared zoo (:mod:`tests.zoo`): the models they export at every opset."""

from __future__ import annotations

from tests.zoo import CONVERTER_MODELS, LEGACY_OPSETS, NEWEST_OPSET, ZooEntry, export
from tests.zoo import ZOO as ALL_MODELS

ZOO: dict[str, ZooEntry] = {name: ALL_MODELS[name] for name in CONVERTER_MODELS}

__all__ = ["LEGACY_OPSETS", "NEWEST_OPSET", "ZOO", "ZooEntry", "export"]
