"""Quantization modes: one verb (:func:`quantize`) and one config dataclass per mode.

Importing this package registers every mode shipped with it: static INT8
(QDQ), dynamic INT8 and float16. AUTO is a plan over them
(:func:`plan_from_spec`) plus a choice once they are measured
(:func:`select_fastest`). Variant names are ``<source>_<suffix>``, the suffix
from the config type (``int8``, ``int8_dynamic``, ``fp16``).
"""

from __future__ import annotations

from .auto import SELECTION_RULE, Candidate, QuantizePlan, plan_from_spec, select_fastest
from .base import (
    QuantizationDetails,
    QuantizeConfig,
    QuantizeContext,
    QuantizeResult,
    config_for_mode,
    quantize,
    register_quantizer,
    register_spec_mode,
    registered_modes,
    spec_modes,
)
from .dynamic_int8 import DynamicInt8Config
from .fp16 import Fp16Config
from .static_int8 import StaticInt8Config

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
    "config_for_mode",
    "plan_from_spec",
    "quantize",
    "register_quantizer",
    "register_spec_mode",
    "registered_modes",
    "select_fastest",
    "spec_modes",
]
