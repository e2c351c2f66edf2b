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
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from prunekit.spec.quantize_configs import StaticInt8Config

from .base import (
    QuantizationDetails,
    QuantizeContext,
    QuantizeResult,
    matching_nodes,
    register_quantizer,
)
from .preprocess import preprocessed, quiet


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
