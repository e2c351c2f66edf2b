"""A job's fine-tuning plan: the config of the final phase and how ITERATIVE rounds share its budget.

:meth:`FinetunePlan.round_config` splits the budget of an ITERATIVE schedule:
``steps_per_round`` steps for each recovery round when set, else the budget
divided evenly between the rounds (the recovery after each of the first
``rounds - 1`` rounds and the final fine-tune after the last one). The plan
of a spec is :func:`.from_spec.finetune_plan`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import FinetuneConfig


@dataclass(frozen=True)
class FinetunePlan:
    """A job's fine-tuning: the config of the final phase and everything around it."""

    config: FinetuneConfig
    distill: bool
    feature_layers: tuple[str, ...]
    feature_weight: float
    checkpoint_every_steps: int
    checkpoint_every_seconds: float
    steps_per_round: int

    def round_config(self, rounds: int, train_samples: int, round_index: int) -> FinetuneConfig:
        """The config of the recovery after round ``round_index`` (1-based) of ``rounds``.

        Seeds differ per round (``seed + round_index``) so the rounds see
        different batch orders.
        """
        c = self.config
        seed = c.seed + round_index
        if self.steps_per_round:
            return dataclasses.replace(c, steps=self.steps_per_round, epochs=0, max_seconds=0.0, seed=seed)
        return self.share(rounds, train_samples, seed)

    def final_config(self, rounds: int, train_samples: int) -> FinetuneConfig:
        """The config of the phase after pruning: the whole budget, or its share when rounds split it."""
        if rounds <= 1 or self.steps_per_round:
            return self.config
        return self.share(rounds, train_samples, self.config.seed)

    def share(self, rounds: int, train_samples: int, seed: int) -> FinetuneConfig:
        """The config with one of ``rounds`` equal parts of the budget (steps and seconds)."""
        c = self.config
        per_epoch = train_samples // c.batch_size if train_samples >= c.batch_size else 1
        budgets = [b for b in (c.steps, c.epochs * per_epoch) if b > 0]
        steps = max(1, min(budgets) // rounds) if budgets else 0
        return dataclasses.replace(c, steps=steps, epochs=0, max_seconds=c.max_seconds / rounds, seed=seed)
