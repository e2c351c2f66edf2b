"""The pieces token skipping trains with: the kept-token mask, its relaxation, the masked later layers.

The masked tail run by ONNX Runtime gives the original's output with every token kept and the
token-skipping graph's output with a 0/1 mask of the same tokens: training sees what inference does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pruning.dynamic.distill import _relaxed_mask, keep_mask
from prunekit_server.pruning.dynamic.points import Graph, classifier_output, exit_points
from prunekit_server.pruning.dynamic.tail import MASK, masked_tail
from prunekit_server.pruning.dynamic.token_skip import _layers, _skip_model, with_keep
from tests.zoo import ZOO, export


def test_the_mask_keeps_k_tokens_and_always_the_first() -> None:
    scores = torch.tensor([[-5.0, 3.0, 1.0, 2.0], [0.0, -1.0, 4.0, -2.0]])
    mask = keep_mask(scores, 2)
    assert mask.tolist() == [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]


def test_the_relaxed_mask_is_the_hard_mask_forward_with_a_gradient_backward() -> None:
    scores = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]], requires_grad=True)
    mask = _relaxed_mask(scores, 3, 0.0)
    torch.testing.assert_close(mask.detach(), keep_mask(scores.detach(), 3))
    (mask * torch.arange(5.0)).sum().backward()  # type: ignore[no-untyped-call]
    assert scores.grad is not None
    assert bool(scores.grad.abs().sum() > 0)


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def test_the_masked_tail_is_the_original_with_every_token_and_the_skipping_graph_with_fewer(
    tmp_path: Path,
) -> None:
    entry = ZOO["vit"]
    model = onnx.load(str(export(entry.build(), entry, tmp_path / "vit.onnx", "legacy", 17)))
    inputs = list(entry.inputs)
    graph = Graph(model, inputs)
    output = classifier_output(graph)
    layers = _layers(graph, exit_points(graph, output))
    point, probs = layers[1][0], layers[0][1]
    tail = masked_tail(graph, point, [p for _, p in layers[1:]], output)
    feed = synthetic_inputs(inputs, 1, 0)[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(n, 1, None) for n in (point.tensor, probs)])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    want, hidden, attention = session.run(None, feed)
    batch, tokens = hidden.shape[:2]
    every = _run(tail, {point.tensor: hidden, MASK: np.ones((batch, tokens), dtype=np.float32)})
    np.testing.assert_allclose(every, want, rtol=1e-4, atol=1e-5)
    keep = tokens // 2
    scores = torch.from_numpy(attention[:, :, 0, :].mean(axis=1))
    mask = keep_mask(scores, keep).numpy()
    fewer = _run(tail, {point.tensor: hidden, MASK: mask})
    skipped = _run(with_keep(_skip_model(graph, point, probs, tokens), keep), feed)
    np.testing.assert_allclose(fewer, skipped, rtol=1e-3, atol=1e-4)
