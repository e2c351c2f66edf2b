"""The quantization verb, its registries and what every mode shares.

One verb, :func:`quantize`, takes an ONNX file, an output path, a config and
a :class:`QuantizeContext`; the config's type picks the handler (registered
with :func:`register_quantizer`). Configs are frozen dataclasses whose fields
describe themselves (``metadata["description"]``) and round-trip through JSON
with ``to_dict()`` / :meth:`QuantizeConfig.from_dict`. A mode registers
itself; nothing here knows which modes exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import onnx

from prunekit.v1 import spec_pb2

from ..errors import FieldViolation, invalid_spec
from ..technique_config import config_from_dict, config_to_dict, describe_fields


@dataclass(frozen=True)
class QuantizeConfig:
    """Base of every mode's config. Subclasses set ``mode`` (a stable JSON name) and ``suffix``.

    ``suffix`` names the variant: ``<source>_<suffix>`` (``pruned_int8``).
    """

    mode: ClassVar[str] = ""
    suffix: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"mode": <name>, <field>: <value>, ...}`` (tuples become lists)."""
        return config_to_dict(self, "mode")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizeConfig:
        """Inverse of :meth:`to_dict`. On the base class ``data["mode"]`` picks the config type.

        Raises ``ValueError`` for an unknown mode, unknown keys or invalid values.
        """
        return config_from_dict(cls, QuantizeConfig, _CONFIG_TYPES, "mode", "quantization mode", data)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> human description, from each field's metadata."""
        return describe_fields(cls)

    def calibration_samples_needed(self) -> int:
        """How many calibration feeds the handler reads from its context (0: it needs none)."""
        return 0


def exclude_field() -> Any:
    """The ``exclude`` field every mode has: node-name globs left in float."""
    return field(
        default=(),
        metadata={"description": "fnmatch globs on ONNX node names; matching nodes stay in float."},
    )


@dataclass(frozen=True)
class QuantizeContext:
    """What a handler may use besides the model: a scratch directory and calibration inputs.

    ``calibration`` holds input feeds (name -> array) drawn from the job's data;
    ``calibration_inputs`` says in words what they are.
    """

    workdir: Path
    calibration: Sequence[Mapping[str, np.ndarray]] = ()
    calibration_inputs: str = ""


@dataclass(frozen=True)
class QuantizationDetails:
    """How a model was quantized, for the report (``QuantizationInfo``)."""

    mode: str
    format: str
    tool: str
    activation_type: str = ""
    weight_type: str = ""
    per_channel: bool = False
    calibration: str = ""
    calibration_samples: int = 0
    calibration_inputs: str = ""
    percentile: float = 0.0
    excluded_nodes: tuple[str, ...] = ()


@dataclass
class QuantizeResult:
    """A handler's output: the written model, how it was made and ``"CODE: message"`` warnings."""

    path: Path
    details: QuantizationDetails
    warnings: list[str] = field(default_factory=list)


C = TypeVar("C", bound=QuantizeConfig)
Handler = Callable[[Path, Path, Any, QuantizeContext], QuantizeResult]
SpecFactory = Callable[[spec_pb2.QuantizeSpec], QuantizeConfig]

_HANDLERS: dict[type[QuantizeConfig], Handler] = {}
_CONFIG_TYPES: dict[str, type[QuantizeConfig]] = {}
_SPEC_FACTORIES: dict[int, SpecFactory] = {}


def register_quantizer(
    config_type: type[C],
) -> Callable[
    [Callable[[Path, Path, C, QuantizeContext], QuantizeResult]],
    Callable[[Path, Path, C, QuantizeContext], QuantizeResult],
]:
    """Decorator: make the function the handler :func:`quantize` calls for ``config_type``."""
    if not config_type.mode or not config_type.suffix:
        raise ValueError(f"{config_type.__name__} must set a non-empty `mode` and `suffix`")

    def decorate(
        fn: Callable[[Path, Path, C, QuantizeContext], QuantizeResult],
    ) -> Callable[[Path, Path, C, QuantizeContext], QuantizeResult]:
        _HANDLERS[config_type] = fn
        _CONFIG_TYPES[config_type.mode] = config_type
        return fn

    return decorate


def register_spec_mode(mode: int) -> Callable[[SpecFactory], SpecFactory]:
    """Decorator: the function turns a ``QuantizeSpec`` into this ``QuantizeMode``'s config."""

    def decorate(fn: SpecFactory) -> SpecFactory:
        _SPEC_FACTORIES[mode] = fn
        return fn

    return decorate


def registered_modes() -> dict[str, type[QuantizeConfig]]:
    """JSON mode name -> config type, for every registered mode."""
    return dict(_CONFIG_TYPES)


def spec_modes() -> list[int]:
    """The ``QuantizeMode`` values with a registered spec factory, in enum order."""
    return sorted(_SPEC_FACTORIES)


def quantize(model: Path, output: Path, config: QuantizeConfig, context: QuantizeContext) -> QuantizeResult:
    """Write ``model`` quantized as ``config`` says to ``output``. ``model`` is never changed.

    Raises ``TypeError`` when no handler is registered for the config's type.
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise TypeError(f"no quantizer registered for {type(config).__name__}")
    output.parent.mkdir(parents=True, exist_ok=True)
    context.workdir.mkdir(parents=True, exist_ok=True)
    return handler(model, output, config, context)


def config_for_mode(
    quantize_spec: spec_pb2.QuantizeSpec, mode: int, *, path: str = "spec.quantize"
) -> QuantizeConfig:
    """The config of ``mode`` with the spec's options. ``INVALID_SPEC`` for a mode nobody registered."""
    factory = _SPEC_FACTORIES.get(mode)
    if factory is None:
        raise invalid_spec([FieldViolation(f"{path}.mode", f"quantization mode {mode} is not implemented")])
    return factory(quantize_spec)


def matching_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> tuple[str, ...]:
    """Names of main-graph nodes matching any glob in ``patterns``, in graph order."""
    if not patterns:
        return ()
    return tuple(
        node.name
        for node in model.graph.node
        if node.name and any(fnmatchcase(node.name, p) for p in patterns)
    )


def config_for_spec(build: Callable[[], C]) -> C:
    """``build()``, with a config's ``ValueError`` turned into ``INVALID_SPEC`` on ``spec.quantize``."""
    try:
        return build()
    except ValueError as exc:
        raise invalid_spec([FieldViolation("spec.quantize", str(exc))]) from None
