"""The report's warnings (stable codes clients key on) and a variant's ``QuantizationInfo``.

Warning codes (stable):

- ``UNSTRUCTURED_NO_SPEEDUP``: zeroed weights do not make dense kernels faster.
- ``SYNTHETIC_INPUTS``: quality was measured on synthetic inputs (no eval data).
- codes carried by upstream ``"CODE: message"`` strings (e.g. ``TORCHSCRIPT_WEIGHTS_UNMAPPED``).
- ``SLOWER_THAN_BASELINE``, ``QUALITY_DROP``: see :mod:`.flags`; the accuracy codes: see :mod:`.accuracy`.

- ``SYNTHETIC_CALIBRATION``: static quantization calibrated on synthetic inputs.
- ``AUTO_KEPT_UNQUANTIZED``: AUTO found no quantized candidate faster than the
  unquantized model while meeting the quality rule.
- ``AUTO_NO_CANDIDATE``: no candidate of a source model met the quality rule (and the
  accuracy rule, when one was set and accuracy measured).
- ``LATENCY_UNSTABLE``: some measurements never became stable within the time budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prunekit.v1 import report_pb2, spec_pb2

from ..quantization import QuantizationDetails

_MODES = {
    "static_int8": spec_pb2.QUANTIZE_MODE_STATIC_INT8,
    "dynamic_int8": spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8,
    "fp16": spec_pb2.QUANTIZE_MODE_FP16,
}
_CALIBRATIONS = {
    "minmax": spec_pb2.CALIBRATION_METHOD_MINMAX,
    "entropy": spec_pb2.CALIBRATION_METHOD_ENTROPY,
    "percentile": spec_pb2.CALIBRATION_METHOD_PERCENTILE,
}
_CODED = re.compile(r"^([A-Z][A-Z0-9_]*[A-Z0-9]):\s*(.*)$", re.DOTALL)


def warning(code: str, message: str) -> report_pb2.ReportWarning:
    """A report warning with a stable ``code``."""
    return report_pb2.ReportWarning(code=code, message=message)


def upstream_warnings(messages: Iterable[str], default_code: str) -> list[report_pb2.ReportWarning]:
    """Warnings from ``"CODE: message"`` strings; strings without a code get ``default_code``."""
    out: list[report_pb2.ReportWarning] = []
    for text in messages:
        match = _CODED.match(text)
        out.append(warning(match[1], match[2]) if match else warning(default_code, text))
    return out


def unstructured_no_speedup(variant: str) -> report_pb2.ReportWarning:
    """The warning every unstructured-pruning variant carries."""
    return warning(
        "UNSTRUCTURED_NO_SPEEDUP",
        f"variant {variant!r} has zeroed weights but unchanged shapes: dense kernels do not skip zeros, "
        "so it is not expected to be faster. Its gain is storage and transfer: compare "
        "compressed_size_bytes, or use structured pruning for speed.",
    )


def synthetic_inputs_warning(description: str) -> report_pb2.ReportWarning:
    """Quality came from synthetic inputs (``description`` says which)."""
    return warning(
        "SYNTHETIC_INPUTS",
        f"quality was measured on synthetic inputs ({description}) as agreement with the original "
        "model; real eval data (spec data.eval) gives fidelity on the inputs that matter.",
    )


def quantization_info(details: QuantizationDetails) -> report_pb2.QuantizationInfo:
    """The proto form of how a variant was quantized (unknown modes map to UNSPECIFIED)."""
    return report_pb2.QuantizationInfo(
        mode=_MODES.get(details.mode, spec_pb2.QUANTIZE_MODE_UNSPECIFIED),
        calibration=_CALIBRATIONS.get(details.calibration, spec_pb2.CALIBRATION_METHOD_UNSPECIFIED),
        calibration_samples=details.calibration_samples,
        calibration_inputs=details.calibration_inputs,
        per_channel=details.per_channel,
        activation_type=details.activation_type,
        weight_type=details.weight_type,
        format=details.format,
        excluded_nodes=list(details.excluded_nodes),
        tool=details.tool,
        percentile=details.percentile,
    )


def synthetic_calibration_warning(description: str) -> report_pb2.ReportWarning:
    """Static quantization's activation ranges came from synthetic inputs."""
    return warning(
        "SYNTHETIC_CALIBRATION",
        f"static quantization calibrated its activation ranges on synthetic inputs ({description}); "
        "ranges from real data usually quantize more faithfully.",
    )


def auto_kept_unquantized(source: str, winner: str) -> report_pb2.ReportWarning:
    """AUTO kept the unquantized model of ``source``."""
    return warning(
        "AUTO_KEPT_UNQUANTIZED",
        f"AUTO quantization of the {source} model kept {winner!r}: no quantized candidate was faster "
        "while meeting the quality rule on this runtime and device.",
    )


def auto_no_candidate(source: str, *, accuracy_rule: bool = False) -> report_pb2.ReportWarning:
    """No candidate of ``source`` met the quality rule (and the accuracy rule, when it applied)."""
    rules = "the quality and accuracy rules" if accuracy_rule else "the quality rule"
    return warning(
        "AUTO_NO_CANDIDATE",
        f"AUTO quantization of the {source} model selected nothing: no candidate met {rules}.",
    )


def latency_unstable_warning(names: list[str], max_seconds: float) -> report_pb2.ReportWarning:
    """Some measurements never became stable within the budget."""
    return warning(
        "LATENCY_UNSTABLE",
        f"latency of {', '.join(names)} did not stabilise within {max_seconds:g} s per batch size: "
        "the machine was noisy; read those numbers with care or raise benchmark.max_seconds.",
    )
