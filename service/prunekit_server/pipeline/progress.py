"""How stages report progress: ``progress(stage, fraction, message)``."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, float, str], None]
"""Called with a stage name, the fraction done (0..1) and a message for people."""


def no_progress(stage: str, fraction: float, message: str) -> None:
    """A ProgressFn that ignores every report."""
