"""Static INT8 quantization with ONNX Runtime: QDQ format, per-channel int8 weights, uint8 activations.

The model is pre-processed (:mod:`.preprocess`), then every activation's
range is calibrated on the context's calibration feeds with the configured
method (MinMax, Entropy or Percentile) and ``QuantizeLinear``/
``DequantizeLinear`` pairs are inserted around the quantizable ops; ONNX
Runtime fuses them into integer kernels when it loads the model. On x86 CPUs
with VNNI this is the fast path (the QOperator format and dynamic
quantization often are not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from prunekit.v1 import spec_pb2

from ..technique_config import check_patterns
from .base import (
    QuantizationDetails,
    QuantizeConfig,
    QuantizeContext,
    QuantizeResult,
    config_for_spec,
    exclude_field,
    matching_nodes,
    register_quantizer,
    register_spec_mode,
)
from .preprocess import preprocessed, quiet

Calibration = Literal["minmax", "entropy", "percentile"]
DEFAULT_CALIBRATION_SAMPLES = 64
MAX_CALIBRATION_SAMPLES = 1024
DEFAULT_PERCENTILE = 99.999
_SPEC_CALIBRATION: dict[int, Calibration] = {
    spec_pb2.CALIBRATION_METHOD_UNSPECIFIED: "minmax",
    spec_pb2.CALIBRATION_METHOD_MINMAX: "minmax",
    spec_pb2.CALIBRATION_METHOD_ENTROPY: "entropy",
    spec_pb2.CALIBRATION_METHOD_PERCENTILE: "percentile",
}


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
        samples = self.calibration_samples
        if (
            isinstance(samples, bool)
            or not isinstance(samples, int)
            or not 1 <= samples <= MAX_CALIBRATION_SAMPLES
        ):
            raise ValueError(f"calibration_samples must be an integer from 1 to {MAX_CALIBRATION_SAMPLES}")
        if not isinstance(self.percentile, int | float) or not 90.0 <= float(self.percentile) <= 100.0:
            raise ValueError(f"percentile must be between 90 and 100, got {self.percentile!r}")
        object.__setattr__(self, "exclude", check_patterns(self.exclude, "exclude"))

    def calibration_samples_needed(self) -> int:
        """``calibration_samples``: static quantization calibrates on that many feeds."""
        return self.calibration_samples


@register_spec_mode(spec_pb2.QUANTIZE_MODE_STATIC_INT8)
def static_from_spec(q: spec_pb2.QuantizeSpec) -> StaticInt8Config:
    """The config for a STATIC_INT8 (or AUTO candidate) ``QuantizeSpec``; ``INVALID_SPEC`` for bad values."""
    return config_for_spec(
        lambda: StaticInt8Config(
            calibration=_SPEC_CALIBRATION.get(q.calibration, "minmax"),
            calibration_samples=q.calibration_samples or DEFAULT_CALIBRATION_SAMPLES,
            percentile=q.percentile or DEFAULT_PERCENTILE,
            exclude=tuple(q.exclude),
        )
    )


def _reader(feeds: list[Mapping[str, np.ndarray]]) -> Any:
    """An ONNX Runtime ``CalibrationDataReader`` handing out ``feeds`` once each."""
    from onnxruntime.quantization import CalibrationDataReader

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._feeds, None)
            return None if feed is None else dict(feed)

    return Feeds()


@register_quantizer(StaticInt8Config)
def quantize_static_int8(
    model: Path, output: Path, config: StaticInt8Config, context: QuantizeContext
) -> QuantizeResult:
    """Calibrate on the first ``calibration_samples`` feeds and write the QDQ model.

    Raises ``ValueError`` when the context has no calibration feeds.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    feeds = list(context.calibration[: config.calibration_samples])
    if not feeds:
        raise ValueError("static quantization needs calibration feeds")
    source, warnings = preprocessed(model, context)
    excluded = matching_nodes(onnx.load(str(source), load_external_data=False), config.exclude)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    extra = {"CalibPercentile": float(config.percentile)} if config.calibration == "percentile" else {}
    with quiet():
        quantize_static(
            str(source),
            str(output),
            _reader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(excluded),
            calibrate_method=methods[config.calibration],
            calibration_providers=["CPUExecutionProvider"],
            extra_options=extra,
        )
    details = QuantizationDetails(
        mode=config.mode,
        format="QDQ",
        tool=f"onnxruntime {ort.__version__}",
        activation_type="uint8",
        weight_type="int8",
        per_channel=config.per_channel,
        calibration=config.calibration,
        calibration_samples=len(feeds),
        calibration_inputs=context.calibration_inputs,
        percentile=float(config.percentile) if config.calibration == "percentile" else 0.0,
        excluded_nodes=excluded,
    )
    return QuantizeResult(path=output, details=details, warnings=warnings)
