"""Which layers LOW_RANK can factorize, their matrices and singular values, and the ranks a goal gives.

A layer is a candidate when its weight is a floating-point initializer read by
no other node and it is one of:

* ``Gemm`` with ``transA=0``, ``alpha=1`` and ``beta=1``: ``y = x W^T + b`` (``transB=1``) or ``x W + b``;
* ``MatMul`` whose input 1 is a 2-D initializer, maybe behind ``Identity``/``Transpose`` nodes;
* ``Conv`` with ``group=1``: the weight read as an ``(out, in * prod(kernel))`` matrix.

Each is written as a matrix ``M`` (``out x fan_in``) with ``y = M x`` (the *channel* form: a Conv
becomes a k x k conv to ``r`` channels and a 1 x 1 conv). At rank ``r`` the two factors cost
``r * (fan_in + out)`` multiply-accumulates per output position against ``out * fan_in``: a rank at
or above ``out * fan_in / (fan_in + out)`` saves nothing, and such a layer is skipped.

A 2-D Conv with a kernel of at least 2 x 2 (explicit pads) also has a *spatial* form: its weight
``W[o, i, y, x]`` read as the ``(in * kh) x (out * kw)`` matrix of rows ``(i, y)`` and columns ``(o, x)``
becomes a ``kh x 1`` conv to ``r`` channels then a ``1 x kw`` conv. Its factors cost about
``r * (in * kh * stride_w + out * kw)`` per output position against ``out * in * kh * kw`` (the
first conv runs at the input's width: ``stride_w`` times the output's, for "same"-like padding).
:func:`choose` picks, per layer, the form a goal's energy costs fewest MACs in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..weights import resolve_weight, weight_matrix

CHANNEL = "channel"
SPATIAL = "spatial"
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
    form: str = CHANNEL
    """:data:`CHANNEL` or :data:`SPATIAL` (see the module doc)."""
    stride_w: int = 1

    @property
    def per_rank(self) -> float:
        """The layer's MACs once factorized, per unit of rank, as a fraction of its MACs now."""
        if self.form == SPATIAL:
            o, i, kh, kw = self.weight_shape
            return (i * kh * self.stride_w + o * kw) / (o * i * kh * kw)
        return (self.out + self.fan_in) / (self.out * self.fan_in)

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
        limit = min(int(self.matrix.shape[0]), int(self.matrix.shape[1]))
        return max(0, min(limit, math.ceil(1 / self.per_rank - 1e-9) - 1))

    def macs_at(self, rank: int) -> int:
        """The layer's MACs once factorized at ``rank`` (its MACs unchanged for rank 0)."""
        if rank <= 0:
            return self.macs
        return round(self.macs * rank * self.per_rank)

    def energy_rank(self, energy: float) -> int:
        """The smallest rank whose squared singular values hold ``energy`` of the total (at least 1)."""
        assert self.singular is not None
        power = np.cumsum(self.singular.astype(np.float64) ** 2)
        if power[-1] <= 0:
            return 1
        return int(np.searchsorted(power / power[-1], energy - 1e-12)) + 1


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
            _svd(c)
    return found


def _svd(c: Candidate) -> None:
    u, singular, vt = np.linalg.svd(c.matrix, full_matrices=False)
    c.u, c.singular, c.vt = u, singular, vt


def spatial_twin(c: Candidate) -> Candidate | None:
    """The spatial form of ``c`` (see the module doc), or None when ``c`` has none: not a 2-D Conv with
    a kernel of at least 2 x 2, implicit (``auto_pad``) padding, or no rank that lowers its MACs."""
    if c.skip_reason or c.node.op_type != "Conv" or len(c.weight_shape) != 4:
        return None
    o, i, kh, kw = c.weight_shape
    attrs = {a.name: helper.get_attribute_value(a) for a in c.node.attribute}
    if kh < 2 or kw < 2 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        return None
    strides = list(attrs.get("strides", [1, 1]))
    weight = c.matrix.reshape(o, i, kh, kw)
    matrix = np.ascontiguousarray(weight.transpose(1, 2, 0, 3).reshape(i * kh, o * kw))
    twin = replace(c, matrix=matrix, form=SPATIAL, stride_w=int(strides[1]), u=None, singular=None, vt=None)
    if twin.max_rank < 1:
        return None
    _svd(twin)
    return twin


Options = Mapping[str, Sequence[Candidate]]
"""Layer name -> the forms it may be factorized in (one, or the channel and spatial forms of a Conv)."""


def choose(options: Options, energy: float) -> dict[str, tuple[Candidate, int]]:
    """Per layer, the form and rank keeping ``energy`` of its squared singular values at the fewest
    MACs; rank 0 (the first form) where no form's rank saves MACs."""
    chosen: dict[str, tuple[Candidate, int]] = {}
    for name, forms in options.items():
        best = (forms[0], 0)
        for form in forms:
            rank = form.energy_rank(energy)
            if rank <= form.max_rank and (not best[1] or form.macs_at(rank) < best[0].macs_at(best[1])):
                best = (form, rank)
        chosen[name] = best
    return chosen


def choose_for_saving(options: Options, saving: int) -> tuple[dict[str, tuple[Candidate, int]], bool]:
    """Forms and ranks that remove at least ``saving`` MACs, keeping the most energy one threshold for all
    allows: one kept-energy fraction is bisected for every layer; returns them and whether the saving
    was reached (when not, the choice at the lowest energy)."""

    def saved(choice: dict[str, tuple[Candidate, int]]) -> int:
        return sum(c.macs - c.macs_at(rank) for c, rank in choice.values())

    low, high = 0.0, 1.0
    best = choose(options, 1e-9)
    if saved(best) < saving:
        return best, False
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2
        choice = choose(options, middle)
        if saved(choice) >= saving:
            low, best = middle, choice
        else:
            high = middle
    return best, True
