"""Losses fine-tuning adds to the hard ones (cross-entropy on labels, MSE on targets).

:func:`distillation_loss` compares temperature-softened outputs of a student
and its teacher. :class:`FeatureMatch` teaches a student to reproduce the outputs of chosen
layers of its teacher: forward hooks capture the output of each paired
submodule during the student's and the teacher's forward pass, and
:meth:`FeatureMatch.loss` is ``weight`` times the mean, over the pairs, of the
mean squared error between them. A pair whose outputs differ in shape cannot be
matched (:meth:`FeatureMatch.mismatches` finds them before training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from .evaluate import first_output


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    log_p = functional.log_softmax(student / temperature, dim=1)
    q = functional.softmax(teacher / temperature, dim=1)
    return functional.kl_div(log_p, q, reduction="batchmean") * temperature**2


class FeatureMatch:
    """MSE between the outputs of ``pairs`` of (student submodule, teacher submodule), times ``weight``."""

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]], weight: float = 1.0) -> None:
        if not pairs:
            raise ValueError("feature matching needs at least one pair of layers")
        if not weight > 0:
            raise ValueError(f"feature weight must be > 0, got {weight}")
        self.pairs = list(pairs)
        self.weight = weight
        self._student: list[torch.Tensor | None] = [None] * len(self.pairs)
        self._teacher: list[torch.Tensor | None] = [None] * len(self.pairs)

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Within the block, forward passes record each paired layer's (last) output."""
        self._student = [None] * len(self.pairs)
        self._teacher = [None] * len(self.pairs)
        handles = []
        for index, (student, teacher) in enumerate(self.pairs):
            handles.append(student.register_forward_hook(self._recorder(self._student, index)))
            handles.append(teacher.register_forward_hook(self._recorder(self._teacher, index)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _recorder(into: list[torch.Tensor | None], index: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            into[index] = first_output(output)

        return hook

    def loss(self) -> torch.Tensor:
        """The weighted mean MSE of the outputs captured by the last :meth:`capture` block."""
        terms = []
        for index, (student, teacher) in enumerate(zip(self._student, self._teacher, strict=True)):
            if student is None or teacher is None:
                raise ValueError(f"feature pair {index} produced no output in the forward pass")
            if student.shape != teacher.shape:
                raise ValueError(
                    f"feature pair {index}: shapes {tuple(student.shape)} and {tuple(teacher.shape)} differ"
                )
            terms.append(functional.mse_loss(student.float(), teacher.detach().float()))
        return self.weight * torch.stack(terms).mean()

    def mismatches(
        self, student: nn.Module, teacher: nn.Module, args: Sequence[torch.Tensor]
    ) -> dict[int, str]:
        """Pair index -> why it cannot be matched, found by one forward pass of both on ``args``."""
        with torch.no_grad(), self.capture():
            was = student.training, teacher.training
            student.eval()
            teacher.eval()
            try:
                student(*args)
                teacher(*args)
            finally:
                student.train(was[0])
                teacher.train(was[1])
        found: dict[int, str] = {}
        for index, (s, t) in enumerate(zip(self._student, self._teacher, strict=True)):
            if s is None or t is None:
                found[index] = "the layer does not run in the model's forward pass"
            elif s.shape[1:] != t.shape[1:]:
                found[index] = (
                    f"its output shape changed from {list(t.shape[1:])} to {list(s.shape[1:])} (per sample)"
                )
        return found
