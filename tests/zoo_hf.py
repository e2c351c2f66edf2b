"""The Hugging Face fixtures as a job's intake hands them to a pruner.

``tests/fixtures/transformers`` holds tiny models built from ``transformers``
configs with random weights (written by ``scripts/transformer_fixtures.py``;
``transformers`` itself is not needed here): BERT, DistilBERT, ViT, Swin
(shifted windows, a relative position bias per head), GPT-2 (a fused q|k|v
projection), a LLaMA-style decoder (grouped-query attention, rotary
embeddings), a Qwen2-style one (8 query heads over 2 key/value heads), a
Whisper encoder and a T5 encoder (a relative position bias per head), each as
legacy ONNX, dynamo ONNX and a TorchScript trace where the exporter could make
it. ``models.json`` names the input and each file, or why
the exporter refused.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import onnx

from prunekit.v1 import model_pb2
from prunekit_server.modelio.torchscript import load_torchscript, torchscript_to_onnx

FIXTURES = Path(__file__).parent / "fixtures" / "transformers"
INDEX: dict[str, dict[str, object]] = json.loads((FIXTURES / "models.json").read_text())
FORMATS = ("legacy", "dynamo", "trace")


def refusal(name: str, fmt: str) -> str:
    """Why the exporter made no file of ``name`` in ``fmt``; empty when there is one."""
    entry = str(INDEX[name]["files"][fmt])  # type: ignore[index]
    return entry if entry.startswith("not exported") else ""


def cases() -> list[tuple[str, str]]:
    """Every (family, format) with a file."""
    return [(name, fmt) for name in INDEX for fmt in FORMATS if not refusal(name, fmt)]


@functools.cache
def load(name: str, fmt: str) -> tuple[onnx.ModelProto, tuple[model_pb2.InputSpec, ...]]:
    """The ONNX model the service works on (a trace through the TorchScript intake) and its input spec.

    Cached: callers must not change the model.
    """
    spec = INDEX[name]["inputs"][0]  # type: ignore[index]
    dtype = model_pb2.DATA_TYPE_INT64 if spec["dtype"] == "int64" else model_pb2.DATA_TYPE_FLOAT32
    declared = model_pb2.InputSpec(name=spec["name"], shape=spec["shape"], dtype=dtype)
    source = FIXTURES / str(INDEX[name]["files"][fmt])  # type: ignore[index]
    if source.suffix == ".pt":
        with tempfile.TemporaryDirectory(prefix="prunekit-hf-") as tmp:
            model = torchscript_to_onnx(load_torchscript(source), [declared], Path(tmp) / "intake.onnx")
    else:
        model = onnx.load(str(source))
    initializers = {t.name for t in model.graph.initializer}
    first = next(v.name for v in model.graph.input if v.name not in initializers)
    return model, (model_pb2.InputSpec(name=first, shape=spec["shape"], dtype=dtype),)
