"""TorchScript that took torch's fused attention fast paths exports to ONNX and converts, same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.modelio.torchscript import load_torchscript, torchscript_to_onnx
from tests.zoo import ZOO, cached

FUSED = {"aten::_native_multi_head_attention", "aten::_transformer_encoder_layer_fwd"}


def test_the_fast_paths_export_and_convert_with_the_same_outputs(tmp_path: Path) -> None:
    path = cached("torchvit", "trace")
    module = load_torchscript(path)
    assert {node.kind() for node in module.inlined_graph.nodes()} >= FUSED
    entry = ZOO["torchvit"]
    model = torchscript_to_onnx(module, list(entry.inputs), tmp_path / "vit.onnx")
    assert {"Softmax", "LayerNormalization"} <= {node.op_type for node in model.graph.node}
    (image,) = entry.sample(seed=7)
    with torch.no_grad():
        expected = module(image).numpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": image.numpy()})[0], expected, rtol=1e-4, atol=1e-5)
    gm = onnx_to_fx(model, inputs=list(entry.inputs))
    with torch.no_grad():
        np.testing.assert_allclose(gm(image).numpy(), expected, rtol=1e-4, atol=1e-5)
    linears = [name for name, layer in gm.named_modules() if isinstance(layer, torch.nn.Linear)]
    assert len(linears) >= 3 * 4 + 2 * 2 + 1  # q, k, v, out per attention; two FFN layers per block; head
