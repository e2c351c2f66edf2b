"""Measurements of models: parameters and MACs (analysis); quality and latency live beside it."""

from .analysis import analyze, count_parameters, layer_table

__all__ = ["analyze", "count_parameters", "layer_table"]
