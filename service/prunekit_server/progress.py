"""How stages report progress: ``progress(stage, fraction, message, details)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ProgressFn(Protocol):
    """Called with a stage name, the fraction done (0..1), a message for people and,
    optionally, structured ``details`` (JSON-ready).

    Details keys in use: ``"finetune"`` (a step's progress: ``step``,
    ``total_steps``, ``epoch``, ``loss``, ``eval_metric``, ``metric``,
    ``phase``) and ``"checkpoint"`` (a checkpoint was written: ``phase``,
    ``name``, ``step``; its files lie under ``workdir/checkpoints/<phase>/<name>``).
    """

    def __call__(
        self, stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None
    ) -> None: ...


def no_progress(stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None) -> None:
    """A ProgressFn that ignores every report."""
