"""CHANNEL and NEURON on the test zoo, in every format: parity, the requested reduction, same outputs.

For every case: the converted graph matches ONNX Runtime (conversion parity);
the pruned model has the requested MACs reduction (within 5 % for a MACs
target, measured by the model analysis on the pruned ONNX); its outputs keep
their shapes; ONNX Runtime runs it and agrees with the pruned GraphModule.
The full matrix (every model x format x method) is bench/structured_pruning.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.pruning import ChannelConfig, NeuronConfig, PruneResult, StructuredConfig, prune

from .structured_zoo import context, feeds, load, macs, rel_error, run_ort

CHANNEL_CASES = [
    *(
        (name, "legacy")
        for name in (
            "resnet",
            "unet",
            "mobilenetv2",
            "densenet",
            "senet",
            "shufflenet",
            "vit",
            "bert",
            "transformer",
            "mlp",
            "yolo",
        )
    ),
    *((name, "dynamo") for name in ("resnet", "mobilenetv2", "shufflenet", "vit")),
    *((name, "script") for name in ("resnet", "densenet", "unet", "bert")),
    *((name, "trace") for name in ("mobilenetv2", "senet")),
]
NEURON_CASES = [
    ("mlp", "legacy"),
    ("mlp", "dynamo"),
    ("mlp", "script"),
    ("mlp", "trace"),
    ("transformer", "legacy"),
    ("bert", "dynamo"),
    ("vit", "script"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check(name: str, fmt: str, config: StructuredConfig) -> PruneResult:
    case = load(name, fmt)
    feed = feeds(case.inputs, 1, seed=11)[0]
    original = run_ort(case.model, feed)

    gm = onnx_to_fx(case.model, inputs=list(case.inputs))
    with torch.no_grad():
        converted = gm(*(torch.from_numpy(feed[spec.name]) for spec in case.inputs))
    converted_outputs = converted if isinstance(converted, tuple | list) else [converted]
    for got, want in zip(converted_outputs, original, strict=True):
        assert rel_error(got.numpy(), want) < 1e-4, "conversion parity"

    result = prune(case.model, config, context(case))
    assert result.model is not None
    assert result.module is not None
    assert result.tensors == {}
    pruned = run_ort(result.model, feed)
    assert [p.shape for p in pruned] == [o.shape for o in original]
    with torch.no_grad():
        module_out = result.module(*(torch.from_numpy(feed[spec.name]) for spec in case.inputs))
    module_outputs = module_out if isinstance(module_out, tuple | list) else [module_out]
    for got, want in zip(pruned, module_outputs, strict=True):
        assert rel_error(got, want.numpy()) < 1e-4, "the pruned ONNX matches the pruned graph"

    before, complete_before = macs(case.model, case.inputs)
    after, complete_after = macs(result.model, case.inputs)
    changed = [layer for layer in result.layers if layer.shape_after != layer.shape_before]
    assert changed, "some layer got narrower"
    assert all(layer.parameters_after < layer.parameters_before for layer in changed)
    if config.target_macs_reduction and complete_before and complete_after:
        reached = before / after
        assert abs(reached / config.target_macs_reduction - 1) <= 0.05, f"reached {reached:.3f}x"
        assert not any(w.startswith("MACS_TARGET_MISSED") for w in result.warnings)
    elif complete_before and complete_after:
        assert after < before
    return result


@pytest.mark.parametrize(("name", "fmt"), CHANNEL_CASES, ids=[f"{n}-{f}" for n, f in CHANNEL_CASES])
def test_channel_reaches_a_macs_target(name: str, fmt: str) -> None:
    result = _check(name, fmt, ChannelConfig(target_macs_reduction=2.0, round_to=1))
    if name in ("vit", "bert", "transformer"):
        # attention projections reshape channels into heads: left to ATTENTION_HEAD, with a warning
        assert any(w.startswith("GROUP_SKIPPED") for w in result.warnings)
        records = result.module.meta["prunekit_onnx_names"]
        names = {records[path]["node"] for path in records if path.rsplit(".", 1)[-1] in ("q", "k", "v")}
        projections = [layer for layer in result.layers if layer.name in names]
        assert projections
        assert all(layer.shape_after[0] == layer.shape_before[0] for layer in projections)


@pytest.mark.parametrize(("name", "fmt"), NEURON_CASES, ids=[f"{n}-{f}" for n, f in NEURON_CASES])
def test_neuron_prunes_hidden_units(name: str, fmt: str) -> None:
    _check(name, fmt, NeuronConfig(ratio=0.5, round_to=1, importance="activation"))


def test_channel_on_the_yolo_neck_prunes_through_its_concat_chains() -> None:
    """C2f splits and concats, SPPF, the FPN/PAN neck, the heads shrink; each C2f's split input and its
    last bottleneck's output (one group Torch-Pruning cannot map through chunk-then-concat) stay."""
    case = load("yolo", "legacy")
    result = prune(case.model, ChannelConfig(ratio=0.3, round_to=1), context(case))
    skipped = [w for w in result.warnings if w.startswith("GROUP_SKIPPED")]
    assert all("/m." in w and "/cv2/" in w for w in skipped), skipped
    widths = {layer.name: (layer.shape_before[0], layer.shape_after[0]) for layer in result.layers}
    for name in (
        "/p5/p5.2/cv1/cv1.0/Conv",
        "/td3/cv2/cv2.0/Conv",
        "/td4/m.0/cv1/cv1.0/Conv",
        "/bu5/cv2/cv2.0/Conv",
        "/down4/down4.0/Conv",
    ):
        assert widths[name][1] < widths[name][0], name
    feed = feeds(case.inputs, 1)[0]
    assert run_ort(result.model, feed)[0].shape == run_ort(case.model, feed)[0].shape


def test_channel_on_the_mobile_net_skips_only_the_shuffled_groups() -> None:
    """Grouped convs, depthwise, SE and a channel shuffle: the groups Torch-Pruning cannot follow
    through the shuffle are reported and left; everything else is pruned."""
    case = load("mobile", "legacy")
    result = prune(case.model, ChannelConfig(ratio=0.5, round_to=1), context(case))
    skipped = sorted(w.split(":")[1].strip() for w in result.warnings if w.startswith("GROUP_SKIPPED"))
    assert skipped == ["/branch_a/Conv", "/branch_b/branch_b.0/Conv"]
    widths = {layer.name: (layer.shape_before, layer.shape_after) for layer in result.layers}
    assert widths["/dw/Conv"][1][0] < widths["/dw/Conv"][0][0]  # depthwise, pruned with its producer
    mix_before, mix_after = widths["/mix/Conv"]
    assert mix_after[0] < mix_before[0]
    assert mix_after[0] % 4 == 0
    feed = feeds(case.inputs, 1)[0]
    assert np.isfinite(run_ort(result.model, feed)[0]).all()
