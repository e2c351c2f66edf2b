"""The AnalyzeModel pipeline: ingest a model, then describe it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prunekit.v1 import model_pb2

from ..measure.analysis import analyze
from ..modelio.ingest import ingest


def run_analysis(
    model_path: Path, model_format: int, inputs: Sequence[model_pb2.InputSpec], workdir: Path
) -> model_pb2.ModelAnalysis:
    """Validate the model at ``model_path`` and return its analysis.

    ``size_bytes`` is the upload's size; warnings from intake come before those of
    the analysis. Raises ServiceError as :func:`~prunekit_server.modelio.ingest.ingest` does.
    """
    ingested = ingest(model_path, model_format, inputs, workdir)
    analysis = analyze(
        ingested.onnx_model,
        ingested.inputs,
        source_format=model_format,
        size_bytes=model_path.stat().st_size,
    )
    warnings = [*ingested.warnings, *analysis.warnings]
    del analysis.warnings[:]
    analysis.warnings.extend(warnings)
    return analysis
