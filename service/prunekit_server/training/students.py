"""Students: the converted model's layers by ONNX node name, and a trainable student for values-only pruning.

:func:`module_named` finds the submodule converted from an ONNX node (feature
matching names layers so). :class:`ValueStudent` serves pruning methods that
only change tensor values (unstructured, N:M).

The pruned ONNX model is converted with
:func:`~prunekit_server.modelio.onnx_to_fx.onnx_to_fx`; each of its tensors is
paired with the ONNX initializer it came from (``gm.meta["prunekit_onnx_names"]``:
a module's weight, bias and BatchNorm statistics in that order, or a free
tensor's own record) and with its layout there, found by value: as is, or
transposed (a MatMul weight becomes a Linear's). Parameters with no such pair
are frozen, so everything training changes can be written back into the
pruned model's initializers (:meth:`ValueStudent.tensors`), leaving its graph
as it was. Pruned weights (the zeros of the initializers pruning changed)
are masked (:class:`~prunekit_server.training.masks.SparsityMasks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from prunekit.v1 import model_pb2

from ..modelio.onnx_to_fx import onnx_to_fx
from .masks import SparsityMasks

_ORDER = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class _Pairing:
    path: str
    """The tensor's ``state_dict`` key in the GraphModule."""
    transposed: bool


def _records(gm: fx.GraphModule) -> Iterable[tuple[str, str]]:
    """(``state_dict`` key, ONNX initializer name) for every tensor the converter recorded."""
    for path, record in gm.meta.get("prunekit_onnx_names", {}).items():
        if not isinstance(record, dict):
            continue
        if "initializer" in record:
            yield path, str(record["initializer"])
            continue
        try:
            module = gm.get_submodule(path)
        except AttributeError:
            continue
        names = [n for n in _ORDER if isinstance(getattr(module, n, None), torch.Tensor)]
        for attr, initializer in zip(names, record.get("initializers", []), strict=False):
            yield f"{path}.{attr}", str(initializer)


def _layout(value: np.ndarray, current: np.ndarray) -> bool | None:
    """False when ``current`` is ``value`` as is, True when transposed, None when neither."""
    if current.shape == value.shape and np.array_equal(current, value):
        return False
    if current.ndim == 2 and current.T.shape == value.shape and np.array_equal(current.T, value):
        return True
    return None


def module_named(gm: fx.GraphModule, node: str) -> nn.Module | None:
    """The submodule converted from the ONNX node ``node`` (or from a node fused into it)."""
    for path, record in gm.meta.get("prunekit_onnx_names", {}).items():
        if not isinstance(record, dict) or "initializer" in record:
            continue
        if record.get("node") == node or node in record.get("nodes", []):
            try:
                return gm.get_submodule(path)
            except AttributeError:
                return None
    return None


class ValueStudent:
    """The converted pruned model, its pairings with the initializers, and the masks of pruned weights."""

    def __init__(
        self, pruned: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], pruned_names: Iterable[str]
    ) -> None:
        self.model = pruned
        self.module = onnx_to_fx(pruned, inputs=list(inputs))
        state = self.module.state_dict(keep_vars=True)
        values = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
        self.pairings: dict[str, _Pairing] = {}
        for path, initializer in _records(self.module):
            tensor = state.get(path)
            if tensor is None or initializer not in values or initializer in self.pairings:
                continue
            current = tensor.detach().cpu().numpy()
            transposed = _layout(values[initializer], current)
            if transposed is not None:
                self.pairings[initializer] = _Pairing(path, transposed)
        paired = {p.path for p in self.pairings.values()}
        for name, param in self.module.named_parameters():
            if name not in paired:
                param.requires_grad_(False)
        params = dict(self.module.named_parameters())
        masked = [
            self.pairings[n].path
            for n in pruned_names
            if n in self.pairings and self.pairings[n].path in params
        ]
        self.masks = SparsityMasks.from_zeros(self.module, masked) if masked else None
        self.frozen = sorted(name for name, p in params.items() if not p.requires_grad)

    def tensors(self) -> dict[str, np.ndarray]:
        """ONNX initializer name -> the module's current value, in the initializer's layout."""
        state = self.module.state_dict()
        found: dict[str, np.ndarray] = {}
        for initializer, pairing in self.pairings.items():
            value = state[pairing.path].detach().cpu().numpy()
            found[initializer] = np.ascontiguousarray(value.T if pairing.transposed else value)
        return found
