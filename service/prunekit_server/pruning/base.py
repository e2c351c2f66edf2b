"""The pruning verb, its handler registry and the ONNX helpers every method shares.

One verb, :func:`prune`, takes a model and a config; the config's type picks
the handler (registered with :func:`register_pruner`). The configs live in the
spec room (:mod:`prunekit.spec.prune_configs`, :mod:`prunekit.spec.structured_configs`);
a method registers its handler; nothing here knows which methods exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import numpy_helper

from prunekit.spec.prune_configs import PRUNE_CONFIGS, PruneConfig
from prunekit.spec.technique import Registry
from prunekit.v1 import model_pb2

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
"""Op types whose input 1 is the weight a pruning method may change."""


@dataclass(frozen=True)
class LayerPruneInfo:
    """What happened to one eligible layer's weight.

    ``name`` is the ONNX node name (the weight name when the node has none);
    ``shared_with`` names the other nodes reading the same weight, which is
    pruned once and reported once. ``skipped`` layers were left untouched,
    ``skip_reason`` says why. Parameter counts cover the weight only (never the bias).
    A layer split in two (LOW_RANK) has its ``rank``, the nodes it became in ``split_into``
    (their MACs are its MACs after), ``shape_after`` the first factor's shape and
    ``parameters_after`` both factors' elements.
    """

    name: str
    op_type: str
    weight_name: str
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...]
    parameters_before: int
    parameters_after: int
    nonzero_before: int
    nonzero_after: int
    skipped: bool = False
    skip_reason: str = ""
    shared_with: tuple[str, ...] = ()
    rank: int = 0
    split_into: tuple[str, ...] = ()

    @classmethod
    def zeroed(
        cls,
        uses: Sequence[tuple[str, str]],
        weight_name: str,
        shape: tuple[int, ...],
        nonzero: tuple[int, int],
        skip_reason: str = "",
    ) -> LayerPruneInfo:
        """A weight that keeps its shape and had zeros written in: ``uses`` are its nodes' (name, op type),
        the first one named, the others shared; ``nonzero`` is the count before and after."""
        params = math.prod(shape)
        return cls(
            name=uses[0][0],
            op_type=uses[0][1],
            weight_name=weight_name,
            shape_before=shape,
            shape_after=shape,
            parameters_before=params,
            parameters_after=params,
            nonzero_before=nonzero[0],
            nonzero_after=nonzero[1],
            skipped=bool(skip_reason),
            skip_reason=skip_reason,
            shared_with=tuple(name for name, _ in uses[1:]),
        )

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights after pruning (0 for an empty weight)."""
        if self.parameters_after == 0:
            return 0.0
        return 1.0 - self.nonzero_after / self.parameters_after


@dataclass(frozen=True)
class PruneContext:
    """What a method may use besides the model and its config.

    ``inputs`` are the model's concrete inputs; ``feeds`` sample inputs for
    data-driven criteria (TAYLOR, ACTIVATION, sensitivity), from the job's
    data or synthetic (``synthetic`` says which, so a method can warn);
    ``recover`` is called on the pruned ``torch.fx.GraphModule`` between the
    rounds of an iterative schedule (fine-tuning when the job fine-tunes, else
    a BatchNorm statistics refresh), or is None. A hook that raises is
    reported as a ``RECOVERY_FAILED`` warning and pruning goes on, unless the
    hook has a true ``fatal`` attribute: then the exception propagates.
    """

    inputs: tuple[model_pb2.InputSpec, ...] = ()
    feeds: tuple[dict[str, np.ndarray], ...] = ()
    synthetic: bool = True
    recover: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class MetricCurve:
    """How one metric of the outputs moved when one layer (group) alone was pruned harder.

    What a sensitivity analysis a method ran measured; the report shows it.
    ``metric`` is e.g. ``cosine_similarity`` or ``top1_agreement``.
    """

    layer: str
    metric: str
    ratios: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class ScheduleStep:
    """The model after one round of an iterative schedule (and its recovery step).

    ``ratio`` is the cumulative fraction of the schedule done, ``macs`` the
    model's MACs then, ``value`` the ``metric`` of its outputs against the
    original's on the context's feeds (e.g. ``cosine_similarity``).
    """

    step: int
    ratio: float
    macs: int
    metric: str
    value: float


@dataclass
class PruneResult:
    """A method's output: new initializer values (changed ones only), per-layer facts, warnings.

    Methods that change shapes (structured ones) leave ``tensors`` empty and
    return the whole new ``model`` instead, plus the pruned
    ``torch.fx.GraphModule`` as ``module`` (TorchScript output is made from it).

    Warnings are ``"CODE: message"`` strings with a stable upper-case code.
    ``sensitivity`` holds the curves of a sensitivity analysis the method ran (empty otherwise);
    ``schedule`` one entry per round of an iterative schedule (empty for one-shot runs).
    """

    tensors: dict[str, np.ndarray]
    layers: list[LayerPruneInfo]
    warnings: list[str] = field(default_factory=list)
    model: onnx.ModelProto | None = None
    module: Any = None
    sensitivity: list[MetricCurve] = field(default_factory=list)
    schedule: list[ScheduleStep] = field(default_factory=list)


@dataclass(frozen=True)
class WeightedLayer:
    """A Conv/ConvTranspose/Gemm/MatMul node whose input 1 is an initializer (maybe behind Identity)."""

    name: str
    op_type: str
    node: onnx.NodeProto
    weight_name: str


__all__ = [
    "WEIGHTED_OPS",
    "LayerPruneInfo",
    "MetricCurve",
    "PruneConfig",
    "PruneContext",
    "PruneResult",
    "ScheduleStep",
    "WeightedLayer",
    "apply_tensors",
    "initializers",
    "prune",
    "register_pruner",
    "registered_methods",
    "weighted_layers",
]

C = TypeVar("C", bound=PruneConfig)
Handler = Callable[[onnx.ModelProto, Any, PruneContext], PruneResult]

_HANDLERS: Registry[type[PruneConfig], Handler] = Registry()


def register_pruner(
    config_type: type[C],
) -> Callable[
    [Callable[[onnx.ModelProto, C, PruneContext], PruneResult]],
    Callable[[onnx.ModelProto, C, PruneContext], PruneResult],
]:
    """Decorator: make the function the handler :func:`prune` calls for ``config_type``."""
    if not config_type.method:
        raise ValueError(f"{config_type.__name__} must set a non-empty `method`")

    def decorate(
        fn: Callable[[onnx.ModelProto, C, PruneContext], PruneResult],
    ) -> Callable[[onnx.ModelProto, C, PruneContext], PruneResult]:
        _HANDLERS.add(config_type, fn)
        return fn

    return decorate


def registered_methods() -> dict[str, type[PruneConfig]]:
    """JSON method name -> config type, for every method with a handler."""
    return {name: kind for name, kind in PRUNE_CONFIGS.as_dict().items() if kind in _HANDLERS}


def prune(model: onnx.ModelProto, config: PruneConfig, context: PruneContext | None = None) -> PruneResult:
    """Run the handler registered for ``type(config)``. The model is never mutated.

    Raises ``TypeError`` when no handler is registered for the config's type.
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise TypeError(f"no pruner registered for {type(config).__name__}")
    return handler(model, config, context or PruneContext())


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializer name -> tensor of the main graph."""
    return {t.name: t for t in model.graph.initializer}


def weighted_layers(model: onnx.ModelProto) -> Iterator[WeightedLayer]:
    """Every main-graph node of :data:`WEIGHTED_OPS` whose input 1 is an initializer, in graph order.

    The weight may be reached through a chain of ``Identity`` nodes (what the
    legacy exporter emits for deduplicated tensors) and ``Transpose`` nodes
    (its form of a Linear on 3-D inputs): the layout is not followed, so
    methods that care about axes must resolve it themselves.
    """
    inits = initializers(model)
    identity_of = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type in ("Identity", "Transpose") and n.input and n.output and n.domain in ("", "ai.onnx")
    }
    for index, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        source = node.input[1]
        seen: set[str] = set()
        while source not in inits and source in identity_of and source not in seen:
            seen.add(source)
            source = identity_of[source]
        if source in inits:
            yield WeightedLayer(node.name or source or f"{node.op_type}_{index}", node.op_type, node, source)


def apply_tensors(model: onnx.ModelProto, tensors: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers named in ``tensors`` hold the new values.

    Each new value keeps the initializer's ONNX element type. Raises
    ``KeyError`` for a name that is not an initializer of the main graph.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    positions = {t.name: i for i, t in enumerate(out.graph.initializer)}
    missing = sorted(set(tensors) - set(positions))
    if missing:
        raise KeyError(f"not initializers of the model: {', '.join(missing)}")
    for name, value in tensors.items():
        old = out.graph.initializer[positions[name]]
        target = onnx.helper.tensor_dtype_to_np_dtype(old.data_type)
        new = numpy_helper.from_array(np.asarray(value).astype(target, copy=False), name)
        if new.data_type != old.data_type:
            raise ValueError(f"{name}: element type {new.data_type} does not match {old.data_type}")
        out.graph.initializer[positions[name]].CopyFrom(new)
    return out
