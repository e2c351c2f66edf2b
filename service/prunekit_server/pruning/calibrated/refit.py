"""Structured OBS on one layer's matrix ``M`` (``out x fan_in``): what removing an input channel costs,
and the least-squares refit of the channels kept.

An input channel is ``k`` consecutive columns of ``M``: one column of a Linear, the ``kh x kw`` patch
columns of one input channel of a 2-D Conv (its input rows are ``im2col`` patches, channel-major).
``H = X X^T`` of the layer's calibration rows is damped as :func:`.solvers.damped_cholesky` does, by
:data:`REFIT_DAMPING` of its mean diagonal, in both (so a saliency is the cost the refit then has).

* :func:`channel_saliency`: for channel ``J``, ``sum_rows w_J^T [(H + dI)^-1_JJ]^-1 w_J``, the least
  growth of ``||M X - M' X||^2`` when ``J``'s columns go and every other column is refitted
  (Optimal Brain Surgeon with one channel removed);
* :func:`refit`: ``M' = (C + d P)(G + d I)^-1`` with ``C = Y X~^T`` and ``G = X~ X~^T``, the minimiser of
  ``||Y - M' X~||^2 + d ||M' - P||^2``: the kept columns (and a bias, as a column of ones) refitted to
  the outputs ``Y`` the layer gave before pruning, on the inputs ``X~`` it reads after, staying near its
  current values ``P`` where the inputs say nothing.
"""

from __future__ import annotations

import torch

from .solvers import damped_cholesky

__all__ = ["REFIT_DAMPING", "channel_saliency", "refit"]

REFIT_DAMPING = 1e-4
"""``d`` as a fraction of the mean diagonal: small, since one solve (not SparseGPT's sequence of
updates) needs it only where the inputs say little, and it shrinks every change by about ``d``."""


def channel_saliency(matrix: torch.Tensor, hessian: torch.Tensor, k: int) -> torch.Tensor:
    """One saliency per input channel of ``matrix`` (``out x channels*k``; see the module doc).

    ``hessian`` may have trailing rows and columns beyond the matrix's (a bias's column of ones): those
    are refitted but never removed.
    """
    columns = matrix.shape[1]
    channels = columns // k
    factor, _ = damped_cholesky(hessian, REFIT_DAMPING)
    inverse = torch.cholesky_inverse(factor)[:columns, :columns]
    blocks = inverse.reshape(channels, k, channels, k)
    index = torch.arange(channels, device=matrix.device)
    diagonal = blocks[index, :, index, :]  # channels x k x k: (H^-1)_JJ of each channel
    weights = matrix.reshape(matrix.shape[0], channels, k).permute(1, 2, 0)  # channels x k x out
    solved = torch.linalg.solve(diagonal, weights)
    saliency: torch.Tensor = (weights * solved).sum(dim=(1, 2))
    return saliency


def refit(
    cross: torch.Tensor, gram: torch.Tensor, prior: torch.Tensor, damping: float = REFIT_DAMPING
) -> torch.Tensor:
    """``M'`` (``out x n``) from ``C`` (``out x n``), ``G`` (``n x n``) and ``P`` (``out x n``)."""
    factor, damp = damped_cholesky(gram, damping)
    solved = torch.cholesky_solve((cross + damp * prior).T, factor)
    result: torch.Tensor = solved.T
    return result
