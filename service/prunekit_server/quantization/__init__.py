"""Quantization modes: one verb (:func:`quantize`) and one config dataclass per mode.

Importing this package registers every mode shipped with it: static INT8
(QDQ), dynamic INT8 and float16. AUTO is a plan over them
(:func:`prunekit.spec.translate.quantize_plan`) plus a choice once they are measured
(:func:`select_fastest`). Variant names are ``<source>_<suffix>``, the suffix
from the config type (``int8``, ``int8_dynamic``, ``fp16``).
"""

from __future__ import annotations

from prunekit.spec.quantize_configs import DynamicInt8Config, Fp16Config, StaticInt8Config

from . import dynamic_int8, fp16, static_int8  # noqa: F401  (each registers its handler)
from .auto import SELECTION_RULE, Candidate, QuantizePlan, select_fastest
from .base import (
    QuantizationDetails,
    QuantizeConfig,
    QuantizeContext,
    QuantizeResult,
    quantize,
    register_quantizer,
    registered_modes,
)

__all__ = [
    "SELECTION_RULE",
    "Candidate",
    "DynamicInt8Config",
    "Fp16Config",
    "QuantizationDetails",
    "QuantizeConfig",
    "QuantizeContext",
    "QuantizePlan",
    "QuantizeResult",
    "StaticInt8Config",
    "quantize",
    "register_quantizer",
    "registered_modes",
    "select_fastest",
]
