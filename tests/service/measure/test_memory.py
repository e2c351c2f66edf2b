"""Peak memory of a block: the VmHWM method on Linux and the ru_maxrss fallback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from prunekit_server.measure import memory
from prunekit_server.measure.memory import MAXRSS_METHOD, VMHWM_METHOD, PeakMemory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_high_water_mark_sees_a_freed_peak() -> None:
    with PeakMemory() as peak:
        block = np.ones(64 << 20, dtype=np.uint8)
        del block  # freed before the block ends: only a high-water mark still knows
    assert peak.method == VMHWM_METHOD
    assert peak.bytes >= 56 << 20
    with PeakMemory() as idle:
        pass
    assert idle.bytes < 8 << 20


def test_fallback_when_the_mark_cannot_be_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with PeakMemory(collect=False) as peak:
        block = np.ones(8 << 20, dtype=np.uint8)
        del block
    assert peak.method == MAXRSS_METHOD
    assert peak.bytes >= 0
