"""The two criteria on one layer's matrix ``M`` (``out x fan_in``): Wanda's mask, SparseGPT's update.

Both take the sparsity as ``ratio`` (unstructured: that fraction of each
output row, or of each column block's weights for SparseGPT) or as ``n:m``
(``n`` kept of every ``m`` consecutive columns of a row). Columns must already
be ordered so that an N:M group is ``m`` consecutive ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BLOCK", "DAMPING", "Sparsity", "damped_cholesky", "sparsegpt", "wanda"]

BLOCK = 128
"""Columns SparseGPT prunes together before updating the ones after them."""
DAMPING = 0.01
"""Added to the Hessian's diagonal, as a fraction of its mean."""


@dataclass(frozen=True)
class Sparsity:
    """Unstructured ``ratio`` (when ``m`` is 0) or ``n`` kept of every ``m``."""

    ratio: float = 0.0
    n: int = 0
    m: int = 0


def _smallest(scores: torch.Tensor, sparsity: Sparsity) -> torch.Tensor:
    """Mask of the weights to remove: the lowest ``ratio`` of each row, or ``m - n`` of every ``m``."""
    rows, cols = scores.shape
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if sparsity.m:
        groups = scores.reshape(rows, cols // sparsity.m, sparsity.m)
        drop = torch.topk(groups, sparsity.m - sparsity.n, dim=2, largest=False).indices
        return mask.reshape(groups.shape).scatter_(2, drop, True).reshape(rows, cols)
    k = round(sparsity.ratio * cols)
    if k:
        mask.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
    return mask


def wanda(matrix: np.ndarray, column_sq: np.ndarray, sparsity: Sparsity) -> np.ndarray:
    """``matrix`` with the weights of lowest ``|w| * ||x_col||_2`` zeroed, compared within each row."""
    scores = torch.from_numpy(np.abs(matrix) * np.sqrt(np.maximum(column_sq, 0.0))[None, :])
    mask = _smallest(scores, sparsity).numpy()
    return np.where(mask, 0.0, matrix)


def damped_cholesky(hessian: torch.Tensor, damping: float = DAMPING) -> tuple[torch.Tensor, float]:
    """The lower Cholesky factor of ``H + d I`` and ``d``: ``damping`` (default :data:`DAMPING`) of the
    mean diagonal, x10 until it factorizes."""
    damp = damping * float(torch.mean(torch.diag(hessian)))
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(6):
        factor, info = torch.linalg.cholesky_ex(hessian + damp * (10**attempt) * eye)
        if int(info) == 0:
            return factor, damp * (10**attempt)
    raise ValueError("the calibration Hessian is not positive definite")


def _inverse_factor(hessian: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of ``H^-1`` (``H`` damped as :func:`damped_cholesky` does)."""
    inverse = torch.cholesky_inverse(damped_cholesky(hessian)[0])
    upper: torch.Tensor = torch.linalg.cholesky(inverse, upper=True)
    return upper


def sparsegpt(matrix: np.ndarray, hessian: np.ndarray, sparsity: Sparsity, device: str = "cpu") -> np.ndarray:
    """Prune ``matrix`` column block by column block, moving each removed weight's error onto later columns.

    ``hessian`` is ``X^T X`` of the layer's calibration rows (``fan_in x fan_in``).
    Columns no input ever reached are zeroed. Float64 on CPU, float32 on CUDA.
    """
    dtype = torch.float64 if device == "cpu" else torch.float32
    w = torch.tensor(matrix, dtype=dtype, device=device)
    h = torch.tensor(hessian, dtype=dtype, device=device)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_factor(h)
    cols, step = w.shape[1], BLOCK - (BLOCK % sparsity.m if sparsity.m else 0)
    for start in range(0, cols, step):
        end = min(start + step, cols)
        block, hblock = w[:, start:end].clone(), hinv[start:end, start:end]
        errors = torch.zeros_like(block)
        scale = torch.diag(hblock).reshape(1, -1) ** 2
        mask = None if sparsity.m else _block_mask(block**2 / scale, sparsity.ratio)
        for i in range(end - start):
            if sparsity.m and i % sparsity.m == 0:
                group = block[:, i : i + sparsity.m] ** 2 / scale[:, i : i + sparsity.m]
                group_mask = _smallest(group, Sparsity(n=sparsity.n, m=sparsity.m))
            column = block[:, i]
            drop = mask[:, i] if mask is not None else group_mask[:, i % sparsity.m]
            kept = torch.where(drop, torch.zeros_like(column), column)
            error = (column - kept) / hblock[i, i]
            block[:, i:] -= error.unsqueeze(1) @ hblock[i, i:].unsqueeze(0)
            block[:, i] = kept
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w.cpu().numpy().astype(np.float64)


def _block_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """The lowest ``ratio`` of a block's scores, over all its rows together."""
    flat = scores.reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    k = round(ratio * flat.numel())
    if k:
        mask[torch.topk(flat, k, largest=False).indices] = True
    return mask.reshape(scores.shape)
