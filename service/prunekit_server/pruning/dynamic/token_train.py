"""TOKEN_SKIP's training: the train inputs probed at the point, the later layers distilled, written back.

:func:`probe_tokens` runs the original once over the train inputs with three outputs: its own output,
the point's hidden states and the attention each token got (:func:`~.token_skip.score_nodes`' nodes).
:func:`distill_layers` trains the scorer and the later layers on them (:mod:`.distill`) and gives the
scorer and the new values of the layers' initializers; :func:`with_tensors` writes those into the
token-skipping model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ...measure.accuracy import run_batched
from ...measure.latency import cpu_session
from .distill import Scorer, ScorerWeights, TokenTraining, distill_tail
from .early_exit import Split
from .points import ExitPoint, Graph, Output
from .tail import TailStudent

__all__ = ["Distilled", "distill_layers", "probe_tokens", "with_tensors"]

_FLOAT = onnx.TensorProto.FLOAT


def _teacher(original: np.ndarray, output: Output) -> np.ndarray:
    if output.final_op == "Softmax":
        logits: np.ndarray = np.log(np.clip(original, 1e-12, None))
        return logits
    return original


def probe_tokens(
    graph: Graph,
    point: ExitPoint,
    scores: tuple[list[onnx.NodeProto], list[onnx.TensorProto], str],
    output: Output,
    train: Split,
    batch: int,
    scratch: Path,
) -> TokenTraining:
    """The train inputs as the later layers see them (see the module docstring); ``scores``: the score
    nodes, their constants and the score tensor."""
    probe = onnx.ModelProto()
    probe.CopyFrom(graph.model)
    nodes, consts, score = scores
    names = ["dyn_probe_out", "dyn_probe_point", score]
    probe.graph.node.append(helper.make_node("Cast", [output.name], [names[0]], name=names[0], to=_FLOAT))
    probe.graph.node.append(helper.make_node("Cast", [point.tensor], [names[1]], name=names[1], to=_FLOAT))
    probe.graph.node.extend(nodes)
    probe.graph.initializer.extend(consts)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, _FLOAT, None) for n in names)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "dynamic_token_probe.onnx"
    path.write_bytes(probe.SerializeToString())
    outputs = run_batched(cpu_session(path), train.inputs, batch)
    out, points, found = (np.concatenate([item[j] for item in outputs.items]) for j in range(3))
    n = len(train)
    return TokenTraining(
        points=points.reshape(n, *point.shape[1:]),
        scores=found.reshape(n, point.shape[1]),
        teacher=_teacher(out.reshape(n, -1), output),
    )


@dataclass(frozen=True)
class Distilled:
    """What training gave: the later layers' initializers (empty when frozen), the scorer (None: the
    attention scores), the losses."""

    tensors: dict[str, np.ndarray]
    scorer: ScorerWeights | None
    losses: list[float]


def distill_layers(
    graph: Graph,
    point: ExitPoint,
    softmaxes: Sequence[str],
    output: Output,
    training: TokenTraining,
    keeps: Sequence[int],
    steps: int,
    seed: int,
    *,
    learn_scorer: bool,
    train_layers: bool,
) -> Distilled:
    """Train the scorer and/or the later layers ``steps`` steps (:func:`~.distill.distill_tail`);
    ``ValueError`` when the later layers cannot be run on their own (:func:`~.tail.masked_tail`)."""
    student = TailStudent(graph, point, softmaxes, output)
    if not train_layers:
        student.freeze()
    scorer = Scorer(torch.from_numpy(training.points.astype(np.float32)), seed) if learn_scorer else None
    losses = distill_tail(student, training, keeps, steps, seed, output.final_op, scorer)
    return Distilled(
        student.tensors() if train_layers else {},
        scorer.folded() if scorer is not None else None,
        losses,
    )


def with_tensors(model: onnx.ModelProto, tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers named in ``tensors`` hold those values (their dtype kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for index, tensor in enumerate(out.graph.initializer):
        value = tensors.get(tensor.name)
        if value is not None:
            dtype = numpy_helper.to_array(tensor).dtype
            out.graph.initializer[index].CopyFrom(numpy_helper.from_array(value.astype(dtype), tensor.name))
    return out
