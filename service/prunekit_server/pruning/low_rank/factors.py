"""Which layers LOW_RANK can factorize, their matrices and singular values, and the ranks a goal gives.

A layer is a candidate when its weight is a floating-point initializer read by
no other node and it is one of:

* ``Gemm`` with ``transA=0``, ``alpha=1`` and ``beta=1``: ``y = x W^T + b`` (``transB=1``) or ``x W + b``;
* ``MatMul`` whose input 1 is a 2-D initializer, maybe behind ``Identity``/``Transpose`` nodes;
* ``Conv`` with ``group=1``: the weight read as an ``(out, in * prod(kernel))`` matrix.

Each is written as a matrix ``M`` (``out x fan_in``) with ``y = M x``. At rank
``r`` the two factors cost ``r * (fan_in + out)`` multiply-accumulates per
output position against ``out * fan_in``: a rank at or above
``out * fan_in / (fan_in + out)`` saves nothing, and such a layer is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..weights import resolve_weight, weight_matrix

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})
_SEARCH_STEPS = 40


@dataclass
class Candidate:
    """One layer and what factorizing it involves.

    ``matrix`` is ``M`` (float64), ``singular`` its singular values (largest
    first), ``u`` and ``vt`` the singular vectors, ``macs`` the layer's MACs in
    the model analysis, ``skip_reason`` why it stays dense ("" when it may not).
    """

    index: int
    name: str
    node: onnx.NodeProto
    weight_name: str
    weight_shape: tuple[int, ...]
    perm: tuple[int, ...]
    matrix: np.ndarray
    macs: int
    skip_reason: str = ""
    singular: np.ndarray | None = None
    u: np.ndarray | None = None
    vt: np.ndarray | None = None

    @property
    def out(self) -> int:
        """Rows of ``M``: the layer's output features (channels)."""
        return int(self.matrix.shape[0])

    @property
    def fan_in(self) -> int:
        """Columns of ``M``: input features times kernel positions."""
        return int(self.matrix.shape[1])

    @property
    def max_rank(self) -> int:
        """The largest rank that still lowers the layer's MACs (0 when none does)."""
        return max(0, math.ceil(self.out * self.fan_in / (self.out + self.fan_in)) - 1)

    def macs_at(self, rank: int) -> int:
        """The layer's MACs once factorized at ``rank`` (its MACs unchanged for rank 0)."""
        if rank <= 0:
            return self.macs
        return round(self.macs * rank * (self.out + self.fan_in) / (self.out * self.fan_in))

    def energy_rank(self, energy: float) -> int:
        """The smallest rank whose squared singular values hold ``energy`` of the total (at least 1)."""
        assert self.singular is not None
        power = np.cumsum(self.singular.astype(np.float64) ** 2)
        if power[-1] <= 0:
            return 1
        return int(np.searchsorted(power / power[-1], energy - 1e-12) + 1)


def candidates(
    model: onnx.ModelProto, macs: dict[str, int], ignore: tuple[str, ...], outputs: set[str]
) -> list[Candidate]:
    """Every Gemm/MatMul/Conv node with a constant weight, in graph order, with its skip reason if any.

    ``macs`` maps node names to the model analysis' MACs; ``outputs`` names the
    output layers to skip (empty when they may be factorized).
    """
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    found: list[Candidate] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in ("Gemm", "MatMul", "Conv") or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.input) < 2:
            continue
        resolved = resolve_weight(node.input[1], inits, producers)
        if resolved is None:
            continue
        source, perm = resolved
        name = node.name or f"{node.op_type}_{index}"
        tensor = inits[source]
        value = numpy_helper.to_array(tensor)
        matrix, reason = (
            (None, "") if tensor.data_type not in FLOAT_TYPES else weight_matrix(node, value, tuple(perm))
        )
        if tensor.data_type not in FLOAT_TYPES:
            reason = "weight is not floating point"
        elif readers.get(source, 0) > 1 or (node.input[1] != source and readers.get(node.input[1], 0) > 1):
            reason = "weight shared with other nodes"
        hit = next((p for p in ignore for n in (name, source) if fnmatchcase(n, p)), None)
        if hit is not None:
            reason = f"matches ignore pattern {hit!r}"
        elif not reason and name in outputs:
            reason = "output layer (set prune_output_layers to include it)"
        shape = tuple(int(d) for d in tensor.dims)
        kept = matrix if matrix is not None else np.zeros((1, 1))
        found.append(
            Candidate(index, name, node, source, shape, tuple(perm), kept, macs.get(name, 0), reason)
        )
    for c in found:
        if not c.skip_reason and c.max_rank < 1:
            c.skip_reason = "no rank lowers its MACs"
        if not c.skip_reason:
            u, s, vt = np.linalg.svd(c.matrix, full_matrices=False)
            c.u, c.singular, c.vt = u, s, vt
    return found


def ranks_for_energy(layers: list[Candidate], energy: float) -> dict[str, int]:
    """Layer name -> rank keeping ``energy`` of its squared singular values; 0 where that saves no MACs."""
    ranks: dict[str, int] = {}
    for c in layers:
        rank = c.energy_rank(energy)
        ranks[c.name] = rank if rank <= c.max_rank else 0
    return ranks


def ranks_for_saving(layers: list[Candidate], saving: int) -> tuple[dict[str, int], bool]:
    """Ranks that remove at least ``saving`` MACs, keeping the most energy one threshold for all allows.

    One kept-energy fraction is bisected for every layer; returns the ranks and
    whether the saving was reached (when not, the ranks at the lowest energy).
    """

    def saved(ranks: dict[str, int]) -> int:
        return sum(c.macs - c.macs_at(ranks[c.name]) for c in layers)

    low, high = 0.0, 1.0
    best = ranks_for_energy(layers, 1e-9)
    if saved(best) < saving:
        return best, False
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2
        ranks = ranks_for_energy(layers, middle)
        if saved(ranks) >= saving:
            low, best = middle, ranks
        else:
            high = middle
    return best, True
