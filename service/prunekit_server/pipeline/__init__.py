"""The job pipeline: one module per stage, each a function of explicit inputs."""

from .analyze import run_analysis
from .optimize import OptimizationResult, run_optimization
from .progress import ProgressFn

__all__ = ["OptimizationResult", "ProgressFn", "run_analysis", "run_optimization"]
