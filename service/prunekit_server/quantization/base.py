"""The quantization verb, its handler registry and what every mode shares.

One verb, :func:`quantize`, takes an ONNX file, an output path, a config and
a :class:`QuantizeContext`; the config's type picks the handler (registered
with :func:`register_quantizer`). The configs live in the spec room
(:mod:`prunekit.spec.quantize_configs`); a mode registers its handler; nothing
here knows which modes exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from prunekit.spec.quantize_configs import QUANTIZE_CONFIGS, QuantizeConfig, exclude_field
from prunekit.spec.technique import Registry

__all__ = [
    "QuantizationDetails",
    "QuantizeConfig",
    "QuantizeContext",
    "QuantizeResult",
    "exclude_field",
    "matching_nodes",
    "quantize",
    "register_quantizer",
    "registered_modes",
]


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

_HANDLERS: Registry[type[QuantizeConfig], Handler] = Registry()


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
        _HANDLERS.add(config_type, fn)
        return fn

    return decorate


def registered_modes() -> dict[str, type[QuantizeConfig]]:
    """JSON mode name -> config type, for every mode with a handler."""
    return {name: kind for name, kind in QUANTIZE_CONFIGS.as_dict().items() if kind in _HANDLERS}


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


def matching_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> tuple[str, ...]:
    """Names of main-graph nodes matching any glob in ``patterns``, in graph order."""
    if not patterns:
        return ()
    return tuple(
        node.name
        for node in model.graph.node
        if node.name and any(fnmatchcase(node.name, p) for p in patterns)
    )
