"""Helpers for the structured pruning tests: zoo models as the service sees them, ORT runs, MACs.

A zoo model in any format becomes what a job's intake makes of it: ONNX exports
as they are, TorchScript files through the legacy exporter
(:func:`~prunekit_server.modelio.torchscript.torchscript_to_onnx`). Input specs
carry the model's own input names (the dynamo exporter names them after
``forward``'s arguments) and the zoo's shapes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from prunekit.v1 import model_pb2
from prunekit_server.measure.analysis import analyze
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.modelio.torchscript import load_torchscript, torchscript_to_onnx
from prunekit_server.pruning import PruneContext
from tests.zoo import ZOO, cached


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str
    model: onnx.ModelProto
    inputs: tuple[model_pb2.InputSpec, ...]
    source: Path


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers]


def load(name: str, fmt: str) -> Case:
    """Zoo model ``name`` in format ``fmt`` as the service's intake would hand it to a pruner."""
    source = cached(name, fmt)
    entry = ZOO[name]
    if source.suffix == ".pt":
        target = source.with_suffix(".intake.onnx")
        if not target.exists():
            partial = target.with_suffix(f".{os.getpid()}.partial")
            torchscript_to_onnx(load_torchscript(source), list(entry.inputs), partial)
            partial.replace(target)
        model = onnx.load(str(target))
    else:
        model = onnx.load(str(source))
    names = graph_input_names(model)
    inputs = tuple(
        model_pb2.InputSpec(name=n, shape=list(s.shape), dtype=s.dtype)
        for n, s in zip(names, entry.inputs, strict=True)
    )
    return Case(name, fmt, model, inputs, source)


def feeds(
    inputs: Sequence[model_pb2.InputSpec], count: int = 4, seed: int = 3
) -> list[dict[str, np.ndarray]]:
    return synthetic_inputs(list(inputs), count, seed)


def context(case: Case, count: int = 4) -> PruneContext:
    return PruneContext(inputs=case.inputs, feeds=tuple(feeds(case.inputs, count)), synthetic=True)


def run_ort(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feed)]


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-6)
    return float(np.abs(actual.astype(np.float64) - expected).max()) / scale


def macs(model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec]) -> tuple[int, bool]:
    """The model analysis' MACs and whether every layer's shapes were known."""
    result = analyze(model, list(inputs), source_format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=0)
    return int(result.macs), not any(w.startswith("MACS_UNKNOWN") for w in result.warnings)
