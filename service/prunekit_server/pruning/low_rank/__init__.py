"""LOW_RANK: factorize Gemm, MatMul and Conv layers into two layers of rank r by truncated SVD.

Which layers qualify and how a matrix is read: :mod:`.factors`; the graph
rewrite: :mod:`.surgery`. Ranks come from the config's goal:

* ``energy``: each layer's smallest rank keeping that fraction of its squared singular values;
* ``ratio``: at least that fraction of the eligible layers' MACs removed;
* ``target_macs_reduction``: the model's MACs divided by at least that much.

A Conv is split in its channel form (a k x k conv to ``r`` channels, then 1 x 1), its spatial form
(k x 1 to ``r`` channels, then 1 x k) or, with ``conv: auto``, whichever keeps the goal's energy at
fewer MACs (:mod:`.factors`).

The two MACs goals bisect one kept-energy fraction shared by all layers (the
layers with the flattest spectra keep the largest ranks). A layer whose rank
would not lower its MACs stays dense, skipped with the reason; output layers
too unless ``prune_output_layers``. MACs are the model analysis' (the MAC counter
of the reports). The result carries the new model and its GraphModule, so
TorchScript output and fine-tuning take it like any shape-changing method.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from prunekit.spec.low_rank_configs import LowRankConfig

from ...errors import FieldViolation, invalid_spec, unsupported_model
from ...measure.analysis import layer_table
from ...modelio.onnx_to_fx import onnx_to_fx
from ..base import LayerPruneInfo, PruneContext, PruneResult, register_pruner
from ..weights import output_layers
from .factors import SPATIAL, Candidate, Options, candidates, choose, choose_for_saving, spatial_twin
from .surgery import FIRST_SUFFIX, factorize

__all__ = ["LowRankConfig", "prune_low_rank"]


Choice = dict[str, tuple[Candidate, int]]


def _options(config: LowRankConfig, active: list[Candidate]) -> Options:
    """The forms each layer may take under ``config.conv`` (see :func:`.factors.choose`)."""
    options: dict[str, list[Candidate]] = {}
    for c in active:
        twin = spatial_twin(c) if config.conv != "channel" else None
        if twin is None:
            options[c.name] = [c]
        else:
            options[c.name] = [twin] if config.conv == "spatial" else [c, twin]
    return options


def _ranks(config: LowRankConfig, options: Options, total_macs: int) -> tuple[Choice, list[str]]:
    if config.energy:
        return choose(options, config.energy), []
    if config.ratio:
        saving = math.ceil(config.ratio * sum(forms[0].macs for forms in options.values()))
        goal = f"ratio {config.ratio:g} of the eligible layers' MACs"
    else:
        saving = math.ceil(total_macs - total_macs / config.target_macs_reduction)
        goal = f"a {config.target_macs_reduction:g}x MACs reduction"
    choice, reached = choose_for_saving(options, saving)
    if reached:
        return choice, []
    return choice, [f"LOW_RANK_TARGET_NOT_MET: rank 1 in every eligible layer does not reach {goal}"]


def _info(c: Candidate, rank: int, reason: str) -> LayerPruneInfo:
    params = math.prod(c.weight_shape)
    if c.form == SPATIAL:
        o, i, kh, kw = c.weight_shape
        first_shape: tuple[int, ...] = (rank, i, kh, 1)
        after = rank * (i * kh + o * kw)
    else:
        first_shape = (rank, c.fan_in) if c.node.op_type != "Conv" else (rank, *c.weight_shape[1:])
        if c.node.op_type == "MatMul" and rank:
            first_shape = (c.fan_in, rank)
        after = rank * (c.out + c.fan_in)
    after = after if rank else params
    nonzero = int(np.count_nonzero(c.matrix))
    return LayerPruneInfo(
        name=c.name,
        op_type=c.node.op_type,
        weight_name=c.weight_name,
        shape_before=c.weight_shape,
        shape_after=first_shape if rank else c.weight_shape,
        parameters_before=params,
        parameters_after=after,
        nonzero_before=nonzero,
        nonzero_after=after if rank else nonzero,
        skipped=not rank,
        skip_reason=reason,
        rank=rank,
        split_into=(c.name + FIRST_SUFFIX, c.name) if rank else (),
    )


@register_pruner(LowRankConfig)
def prune_low_rank(model: onnx.ModelProto, config: LowRankConfig, context: PruneContext) -> PruneResult:
    """Factorize the model's layers as the package docstring states.

    Raises ``INVALID_SPEC`` when the ignore patterns leave no layer, and
    ``UNSUPPORTED_MODEL`` when no layer can be factorized for another reason.
    """
    table = layer_table(model, list(context.inputs))
    macs = {layer.name: int(layer.macs) for layer in table}
    outputs = set() if config.prune_output_layers else output_layers(model)
    layers = candidates(model, macs, config.ignore, outputs)
    active = [c for c in layers if not c.skip_reason]
    if not active:
        reasons = [c.skip_reason for c in layers]
        if reasons and all(r.startswith("matches ignore pattern") for r in reasons):
            raise invalid_spec(
                [FieldViolation("spec.prune.ignore", "the patterns match every factorizable layer")]
            )
        detail = "; ".join(sorted({f"{c.name}: {c.skip_reason}" for c in layers})[:5])
        raise unsupported_model(
            "no layer can be factorized"
            + (f" ({detail})" if detail else ": the model has no Gemm, MatMul or Conv with a constant weight")
        )
    choice, warnings = _ranks(config, _options(config, active), sum(macs.values()))
    chosen = [(form, rank) for form, rank in choice.values() if rank]
    infos = []
    for c in layers:
        form, rank = choice.get(c.name, (c, 0))
        reason = c.skip_reason or ("" if rank else "the rank its goal needs would not lower its MACs")
        infos.append(_info(form if rank else c, rank, reason))
    if not chosen:
        warnings.append("LOW_RANK_NOTHING_FACTORIZED: no layer's rank lowers its MACs at this goal")
        return PruneResult(tensors={}, layers=infos, warnings=warnings)
    new = factorize(model, chosen)
    module = onnx_to_fx(new, inputs=list(context.inputs) or None)
    return PruneResult(tensors={}, layers=infos, warnings=warnings, model=new, module=module)
