"""Measurements of models: parameters and MACs (analysis); quality, accuracy and latency live beside it.

A job's measuring stages are here too, below the pipeline that composes them and the report that reads
their records: :mod:`.settings` (what a job measures and how), :mod:`.timings` (the benchmark stage),
:mod:`.evaluation` (fidelity and accuracy), under the model names of :mod:`.names`.
"""

from .analysis import analyze, count_parameters, layer_table

__all__ = ["analyze", "count_parameters", "layer_table"]
