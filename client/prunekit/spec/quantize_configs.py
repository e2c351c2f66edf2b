"""Quantization configs: the base every mode's config extends, each mode's config, and a spec's plan.

Configs are frozen dataclasses whose fields describe themselves (``metadata["description"]``) and
round-trip through JSON with ``to_dict()`` / :meth:`QuantizeConfig.from_dict`. A config class with a
``mode`` name adds itself to :data:`QUANTIZE_CONFIGS` when it is defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .technique import Registry, check_patterns, config_from_dict, config_to_dict, describe_fields
from .values import int_range_problem, percentile_problem, raise_problem

__all__ = [
    "DEFAULT_AWARE_BATCH",
    "DEFAULT_AWARE_LR",
    "DEFAULT_CALIBRATION_SAMPLES",
    "DEFAULT_PERCENTILE",
    "MAX_AWARE_BATCH",
    "MAX_AWARE_STEPS",
    "MAX_CALIBRATION_SAMPLES",
    "QUANTIZE_CONFIGS",
    "AwareTrainingConfig",
    "Calibration",
    "DynamicInt8Config",
    "Fp16Config",
    "QuantizeConfig",
    "QuantizePlan",
    "StaticInt8Config",
    "exclude_field",
]

Calibration = Literal["minmax", "entropy", "percentile"]
DEFAULT_CALIBRATION_SAMPLES = 64
MAX_CALIBRATION_SAMPLES = 1024
DEFAULT_PERCENTILE = 99.999
DEFAULT_AWARE_LR = 1e-4
DEFAULT_AWARE_BATCH = 32
MAX_AWARE_STEPS = 100_000
MAX_AWARE_BATCH = 4096

QUANTIZE_CONFIGS: Registry[str, type[QuantizeConfig]] = Registry()
"""JSON mode name -> config type, for every quantization config defined."""


@dataclass(frozen=True)
class QuantizeConfig:
    """Base of every mode's config. Subclasses set ``mode`` (a stable JSON name) and ``suffix``.

    ``suffix`` names the variant: ``<source>_<suffix>`` (``pruned_int8``).
    """

    mode: ClassVar[str] = ""
    suffix: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("mode"):
            QUANTIZE_CONFIGS.add(cls.mode, cls)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"mode": <name>, <field>: <value>, ...}`` (tuples become lists)."""
        return config_to_dict(self, "mode")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizeConfig:
        """Inverse of :meth:`to_dict`. On the base class ``data["mode"]`` picks the config type.

        Raises ``ValueError`` for an unknown mode, unknown keys or invalid values.
        """
        registry = QUANTIZE_CONFIGS.as_dict()
        return config_from_dict(cls, QuantizeConfig, registry, "mode", "quantization mode", data)

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
class StaticInt8Config(QuantizeConfig):
    """Static QDQ quantization. Invalid values raise ``ValueError``."""

    mode = "static_int8"
    suffix = "int8"

    calibration: Calibration = field(
        default="minmax",
        metadata={"description": "How activation ranges are chosen: 'minmax', 'entropy' or 'percentile'."},
    )
    calibration_samples: int = field(
        default=DEFAULT_CALIBRATION_SAMPLES,
        metadata={"description": f"Calibration feeds used, 1 to {MAX_CALIBRATION_SAMPLES}."},
    )
    percentile: float = field(
        default=DEFAULT_PERCENTILE,
        metadata={"description": "For 'percentile': the percentile of |activation| kept, 90 to 100."},
    )
    per_channel: bool = field(
        default=True, metadata={"description": "One scale per output channel of weights."}
    )
    exclude: tuple[str, ...] = exclude_field()

    def __post_init__(self) -> None:
        if self.calibration not in ("minmax", "entropy", "percentile"):
            raise ValueError(f"calibration must be minmax, entropy or percentile, got {self.calibration!r}")
        samples = int_range_problem(self.calibration_samples, 1, MAX_CALIBRATION_SAMPLES)
        raise_problem("calibration_samples", samples)
        raise_problem("percentile", percentile_problem(self.percentile))
        object.__setattr__(self, "exclude", check_patterns(self.exclude, "exclude"))

    def calibration_samples_needed(self) -> int:
        """``calibration_samples``: static quantization calibrates on that many feeds."""
        return self.calibration_samples


@dataclass(frozen=True)
class DynamicInt8Config(QuantizeConfig):
    """Dynamic quantization. Invalid values raise ``ValueError``."""

    mode = "dynamic_int8"
    suffix = "int8_dynamic"

    per_channel: bool = field(
        default=False, metadata={"description": "One scale per output channel of weights."}
    )
    exclude: tuple[str, ...] = exclude_field()

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, bool):
            raise ValueError("per_channel must be a boolean")
        object.__setattr__(self, "exclude", check_patterns(self.exclude, "exclude"))


@dataclass(frozen=True)
class Fp16Config(QuantizeConfig):
    """Float16 weights and compute. Invalid values raise ``ValueError``."""

    mode = "fp16"
    suffix = "fp16"

    keep_io_types: bool = field(
        default=True, metadata={"description": "Keep float32 graph inputs and outputs (Cast at the edges)."}
    )
    exclude: tuple[str, ...] = exclude_field()

    def __post_init__(self) -> None:
        if not isinstance(self.keep_io_types, bool):
            raise ValueError("keep_io_types must be a boolean")
        object.__setattr__(self, "exclude", check_patterns(self.exclude, "exclude"))


@dataclass(frozen=True)
class AwareTrainingConfig:
    """Fine-tuning with int8 fake quantization before static quantization (``ValueError`` if invalid)."""

    steps: int = field(metadata={"description": f"Optimizer steps, 1 to {MAX_AWARE_STEPS}."})
    lr: float = field(default=DEFAULT_AWARE_LR, metadata={"description": "AdamW peak learning rate, > 0."})
    batch_size: int = field(
        default=DEFAULT_AWARE_BATCH, metadata={"description": f"Samples per step, 1 to {MAX_AWARE_BATCH}."}
    )

    def __post_init__(self) -> None:
        raise_problem("steps", int_range_problem(self.steps, 1, MAX_AWARE_STEPS))
        raise_problem("batch_size", int_range_problem(self.batch_size, 1, MAX_AWARE_BATCH))
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not 0 < self.lr < 1:
            raise ValueError(f"learning_rate must be a number with 0 < x < 1, got {self.lr!r}")


@dataclass(frozen=True)
class QuantizePlan:
    """The configs a ``QuantizeSpec`` asks for; ``auto`` when they are AUTO's candidates.

    ``aware``: also build each STATIC_INT8 variant from a quantization-aware fine-tune (``<name>_qat``).
    """

    configs: tuple[QuantizeConfig, ...]
    auto: bool = False
    aware: AwareTrainingConfig | None = None
