"""Kept for ``pipeline/settings.py`` only: :func:`check_spec` lives in :mod:`.spec_check`."""

from __future__ import annotations

from .spec_check import check_spec

__all__ = ["check_spec"]
