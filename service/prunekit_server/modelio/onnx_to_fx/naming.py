"""Names for the modules and tensors of the GraphModule, from the ONNX names.

A module is named after its weight's initializer (``layer1.conv1.weight`` ->
``layer1.conv1``) when that name is a dotted ``state_dict`` key; otherwise after
the scope the exporter recorded on the node (the dynamo exporter's
``pkg.torch.onnx.name_scopes``, the legacy exporter's ``/layer1/layer1.0/conv1/Conv``
node names); otherwise after the op type. Every part is sanitised and every name
is unique: a taken name gets ``_1``, ``_2``... and a name that would nest under an
existing leaf is flattened. Names may be anything an exporter wrote (``0``, ``1``...
as older exporters name tensors, Python keywords, ``self``): path components are
reached through ``getattr`` (digits are fine) and never a keyword; graph inputs
become identifiers (:func:`identifier`).
"""

from __future__ import annotations

import ast
import keyword
import re

import onnx
from torch import fx

_INVALID = re.compile(r"[^0-9A-Za-z_]+")
_RESERVED = frozenset(dir(fx.GraphModule)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)
_NOT_ARGUMENTS = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"self", "torch"}
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def sanitize_part(part: str) -> str:
    """One path component: letters, digits and ``_`` only, never a GraphModule attribute."""
    cleaned = _INVALID.sub("_", part).strip("_") or "_"
    return cleaned + "_" if cleaned in _RESERVED else cleaned


def identifier(name: str, fallback: str = "input") -> str:
    """A Python identifier for ``name`` that may name a ``forward`` argument.

    ``0`` -> ``input_0``, ``in.put`` -> ``in_put``, ``class`` -> ``class_``, ``self`` -> ``self_``.
    """
    cleaned = _INVALID.sub("_", name).strip("_") or fallback
    if cleaned[0].isdigit():
        cleaned = f"{fallback}_{cleaned}"
    return cleaned + "_" if cleaned in _NOT_ARGUMENTS else cleaned


def sanitize_path(name: str) -> str:
    """A dotted path of sanitised components (empty components dropped)."""
    return ".".join(sanitize_part(part) for part in name.split(".") if part.strip("_:/ "))


def weight_scope(initializer: str | None) -> str | None:
    """``layer1.conv1`` for ``layer1.conv1.weight``; None for names that are not state_dict keys."""
    if not initializer or "." not in initializer or "::" in initializer or "/" in initializer:
        return None
    return initializer.rsplit(".", 1)[0]


def node_scope(node: onnx.NodeProto) -> str | None:
    """The module path an exporter recorded for ``node``, or None."""
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            parts = [str(s) for s in scopes[1:-1] if str(s)] if isinstance(scopes, list) else []
            return ".".join(parts) or None
    if node.name.startswith("/") and node.name.count("/") > 1:
        collapsed: list[str] = []
        for part in node.name.strip("/").split("/")[:-1]:
            if collapsed and part.startswith(collapsed[-1] + "."):
                collapsed[-1] = part
            elif part:
                collapsed.append(part)
        return ".".join(collapsed) or None
    return None


class Namespace:
    """Hands out unique dotted paths; a path's prefixes become containers."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}

    def claim(self, wanted: str, fallback: str = "module") -> str:
        path = sanitize_path(wanted) or sanitize_path(fallback) or "module"
        if not self._nestable(path):
            path = path.replace(".", "_")
        candidate, counter = path, 0
        while not self._free(candidate):
            counter += 1
            candidate = f"{path}_{counter}"
        parts = candidate.split(".")
        for k in range(1, len(parts)):
            self._kinds[".".join(parts[:k])] = "container"
        self._kinds[candidate] = "leaf"
        return candidate

    def _nestable(self, path: str) -> bool:
        parts = path.split(".")
        return all(self._kinds.get(".".join(parts[:k])) != "leaf" for k in range(1, len(parts)))

    def _free(self, path: str) -> bool:
        return path not in self._kinds and self._nestable(path)
