"""ONNX Runtime's quantization pre-processing, run before static and dynamic quantization.

``quant_pre_process`` folds and fuses what ONNX Runtime would fold at load
time and runs shape inference (symbolic, then ONNX's), so the quantizer sees
the graph the runtime will execute and knows every tensor's shape. When the
symbolic pass fails the ONNX pass alone is tried; when that fails too the
model is quantized as it is, with a ``QUANT_PREPROCESS_SKIPPED`` warning. The
result is kept per input path inside the context's scratch directory, so
several modes quantizing the same model pre-process it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

from .base import QuantizeContext


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def preprocessed(model: Path, context: QuantizeContext) -> tuple[Path, list[str]]:
    """The pre-processed copy of ``model`` (made once per context) and any warnings."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    context.workdir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(model.resolve()).encode()).hexdigest()[:16]
    out = context.workdir / f"{model.stem}.{key}.preprocessed.onnx"
    note = out.with_suffix(".warning")
    if out.is_file():
        return out, [note.read_text()] if note.is_file() else []
    errors: list[str] = []
    for skip_symbolic in (False, True):
        try:
            with quiet():
                quant_pre_process(str(model), str(out), skip_symbolic_shape=skip_symbolic)
            return out, []
        except Exception as exc:  # ORT raises anything from shape inference and its optimizer
            errors.append(_one_line(exc))
            out.unlink(missing_ok=True)
    warning = (
        "QUANT_PREPROCESS_SKIPPED: ONNX Runtime's quantization pre-processing failed "
        f"({'; '.join(errors)}); the model was quantized without it"
    )
    note.write_text(warning)
    return model, [warning]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ONNX Runtime's quantization tools print progress and log warnings: keep them out of the job."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
