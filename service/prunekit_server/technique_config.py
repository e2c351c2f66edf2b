"""Kept for ``training/config.py`` only: what configs share lives in :mod:`prunekit.spec.technique`."""

from __future__ import annotations

from prunekit.spec.technique import check_patterns, config_from_dict, config_to_dict, describe_fields

__all__ = ["check_patterns", "config_from_dict", "config_to_dict", "describe_fields"]
