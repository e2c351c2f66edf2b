"""TorchScript output of a channel-pruned model: the user's module with swapped tensors, else a trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit_server.modelio.pruned_torchscript import graph_tensors, write_pruned_torchscript
from prunekit_server.pruning import ChannelConfig, NeuronConfig, StructuredConfig, prune
from tests.service.pruning.structured_zoo import context, feeds, load, rel_error, run_ort


def _write(name: str, fmt: str, config: StructuredConfig, tmp_path: Path) -> tuple[list[str], Path, object]:
    case = load(name, fmt)
    result = prune(case.model, config, context(case))
    assert result.model is not None
    assert result.module is not None
    out = tmp_path / "pruned.pt"
    warnings = write_pruned_torchscript(
        case.source, result.module, case.model, result.model, case.inputs, out
    )
    feed = feeds(case.inputs, 1, seed=21)[0]
    loaded = torch.jit.load(str(out))
    with torch.no_grad():
        got = loaded(*(torch.from_numpy(feed[spec.name]) for spec in case.inputs))
    want = run_ort(result.model, feed)[0]
    assert rel_error(got.numpy(), want) < 1e-4
    assert not list(tmp_path.glob("*.swap.pt"))
    return warnings, out, loaded


@pytest.mark.parametrize(("name", "fmt"), [("resnet", "script"), ("mlp", "trace"), ("densenet", "script")])
def test_the_users_module_is_kept_when_it_takes_the_new_shapes(name: str, fmt: str, tmp_path: Path) -> None:
    config_type = NeuronConfig if name == "mlp" else ChannelConfig
    warnings, _, loaded = _write(name, fmt, config_type(ratio=0.5, round_to=1), tmp_path)
    assert len(warnings) == 1
    assert warnings[0].startswith("TORCHSCRIPT_OUTPUT: pruned.pt is your TorchScript module")
    original = torch.jit.load(str(load(name, fmt).source))
    assert [n for n, _ in loaded.named_children()] == [n for n, _ in original.named_children()]


def test_a_depthwise_conv_makes_it_fall_back_to_a_trace(tmp_path: Path) -> None:
    """TorchScript bakes ``groups`` into the code: the swapped module fails, the pruned graph is traced."""
    warnings, _, _ = _write("mobilenetv2", "script", ChannelConfig(ratio=0.5, round_to=1), tmp_path)
    assert len(warnings) == 1
    assert warnings[0].startswith("TORCHSCRIPT_OUTPUT: pruned.pt is a trace of the pruned graph")
    assert "fails on the new shapes" in warnings[0]


def test_graph_tensors_map_every_pruned_tensor_to_its_initializer() -> None:
    case = load("resnet", "script")
    result = prune(case.model, ChannelConfig(ratio=0.5, round_to=1), context(case))
    assert result.module is not None
    tensors = graph_tensors(result.module)
    assert tensors["stem.1.running_var"].shape == (4,)
    assert tensors["layer1.1.down.0.weight"].shape == (8, 4, 1, 1)
    assert np.array_equal(tensors["fc.bias"], result.module.fc.bias.detach().numpy())
    initializers = {t.name for t in case.model.graph.initializer}
    assert set(tensors) <= initializers
