"""Channel shuffles (ShuffleNetV2 as torchvision builds it) and the time bound on the group search."""

from __future__ import annotations

import time

import pytest
import torch

from prunekit_server.errors import ServiceError
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.pruning import ChannelConfig, prune
from prunekit_server.pruning.graph import example_inputs
from prunekit_server.pruning.structured.bound import time_bound
from prunekit_server.pruning.structured.shuffle import SHUFFLE_REASON, ShuffleFunction, find_shuffles
from tests.zoo_shufflenet import channel_shuffle

from .structured_zoo import context, feeds, load, macs, rel_error, run_ort

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("fmt", ["legacy", "dynamo", "trace"])
def test_channel_prunes_a_shufflenet_around_its_shuffles(fmt: str) -> None:
    case = load("shufflenetv2", fmt)
    result = prune(case.model, ChannelConfig(ratio=0.3, round_to=1), context(case))
    assert result.model is not None
    assert result.module is not None
    shuffled = [w for w in result.warnings if w.startswith("GROUP_SKIPPED") and SHUFFLE_REASON in w]
    assert len(shuffled) >= 3  # the units of a stage share their shuffled channels: a group per stage
    narrower = [layer for layer in result.layers if layer.shape_after != layer.shape_before]
    assert len(narrower) >= 7  # every unit's inner width, the stem, the last conv
    before, _ = macs(case.model, case.inputs)
    after, _ = macs(result.model, case.inputs)
    assert after < 0.9 * before
    feed = feeds(case.inputs, 1, seed=5)[0]
    pruned = run_ort(result.model, feed)
    assert pruned[0].shape == run_ort(case.model, feed)[0].shape
    with torch.no_grad():
        module_out = result.module(*(torch.from_numpy(feed[spec.name]) for spec in case.inputs))
    assert rel_error(pruned[0], module_out.numpy()) < 1e-4


@pytest.mark.parametrize("fmt", ["legacy", "dynamo"])
def test_every_shuffle_is_found(fmt: str) -> None:
    case = load("shufflenetv2", fmt)
    gm = onnx_to_fx(case.model, inputs=list(case.inputs))
    found = find_shuffles(gm, example_inputs(context(case)))
    assert len(found) == 7
    assert {shuffle.groups for shuffle in found.values()} == {2}


def test_the_shuffle_function_is_the_shuffle_and_its_backward_the_inverse() -> None:
    x = torch.randn(2, 12, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ShuffleFunction.apply(x, 3), channel_shuffle(x, 3))
    assert torch.autograd.gradcheck(lambda t: ShuffleFunction.apply(t, 3), (x,))


def _busy_probing() -> None:
    """Work that swallows every Exception, as the probes do: the bound is not one."""
    while True:
        try:
            time.sleep(0.01)
        except Exception:
            continue


def test_a_search_past_its_bound_fails_with_a_reason() -> None:
    bounded = time_bound(0.2, "finding and probing the channel groups")
    with pytest.raises(ServiceError) as info, bounded:
        _busy_probing()
    assert info.value.reason == "UNSUPPORTED_MODEL"
    assert "finding and probing the channel groups took longer than 0.2 s" in str(info.value)
    with time_bound(5.0, "quick work"):
        assert sum(range(10)) == 45
    time.sleep(0.1)  # the timer is off again: no late interruption
