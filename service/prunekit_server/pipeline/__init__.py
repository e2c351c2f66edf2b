"""The job pipeline: composes the stages (table in :mod:`.stages`) into run_optimization and run_analysis."""

from ..progress import ProgressFn
from .analyze import run_analysis
from .data import JobData, StagedShard
from .optimize import OptimizationResult, run_optimization

__all__ = ["JobData", "OptimizationResult", "ProgressFn", "StagedShard", "run_analysis", "run_optimization"]
