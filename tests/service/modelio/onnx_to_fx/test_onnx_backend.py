"""ONNX's own backend test models through the converter: whatever it converts matches the expected outputs.

One test per case of :mod:`.onnx_backend` (about 30 s in all on a busy 2-core
machine); a refusal must be the service's own error and, when an op is the cause,
name it (``op <type>``). ``bench/onnx_backend.py`` prints the counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .onnx_backend import case_name, cases, run_case

CASES = cases()


@pytest.mark.parametrize("path", CASES, ids=[case_name(p) for p in CASES])
def test_backend_case(path: Path) -> None:
    outcome, detail = run_case(path)
    assert outcome != "wrong", detail
    if outcome == "refused":
        assert detail.startswith(("op ", "UNSUPPORTED_MODEL: ", "INVALID_SPEC: ", "opset upgrade")), detail


def test_the_suite_is_there() -> None:
    every = cases()
    assert len(every) >= 149
    assert {"test_PReLU_1d_multiparam", "test_expand_shape_model1", "light_bvlc_alexnet"} <= {
        case_name(p) for p in every
    }
