"""The job pipeline: one module per stage, each a function of explicit inputs."""

from ..progress import ProgressFn
from .analyze import run_analysis
from .data import JobData, StagedShard
from .optimize import OptimizationResult, run_optimization

__all__ = ["JobData", "OptimizationResult", "ProgressFn", "StagedShard", "run_analysis", "run_optimization"]
