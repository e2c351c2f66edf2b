"""One broken rule of a spec: the path of the field and what is wrong with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .values import patterns_problems

__all__ = ["FieldViolation", "SpecRuleError", "pattern_violations"]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (``spec.prune.ratio``) and what is wrong."""

    field: str
    description: str


class SpecRuleError(ValueError):
    """A spec message that breaks rules: ``violations`` lists every one (a translation refused it)."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


def pattern_violations(patterns: Sequence[object], path: str, found: list[FieldViolation]) -> None:
    """Append a violation for too many globs (at ``path``) and for each bad glob (at ``path[i]``)."""
    for index, problem in patterns_problems(patterns):
        found.append(FieldViolation(path if index is None else f"{path}[{index}]", problem))
