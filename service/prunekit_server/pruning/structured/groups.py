"""Dependency groups: which channels must go together, which groups may go, and proof they can.

Torch-Pruning's dependency graph, traced on the converted GraphModule, yields
one group per root layer: the root's output channels plus every layer that
shrinks with them (BatchNorms, the next layers' inputs, both sides of a
residual add, every branch of a concat, depthwise convs, broadcast gates).
A group is *eligible* unless it has fewer than two channels per chunk, a
layer whose output channels it removes is ignored (``ignore`` globs, ignoring
overrides, output layers), or (NEURON) it reaches anything but Linear layers.

Grouped convolutions split a group into ``chunks`` of equal width; channels
are removed at the same positions of every chunk.

Torch-Pruning's index bookkeeping is wrong for a few patterns (a reshape that
splits channels into heads or shuffle groups). :func:`verify` therefore
prunes a couple of channels of every group on a copy and checks the copy
against the original whose layers read those channels as zeros (the exact
meaning of removing them); a group that fails or raises is left alone with a
``GROUP_SKIPPED`` warning. Groups that normalise over their channels
(LayerNorm, GroupNorm) cannot match a zeroed original and are only checked
to run, as are groups reaching a graph output.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import fx, nn

from ..fx_tools import WEIGHTED_MODULES, first_match, names_of, origin, output_modules, outputs_of
from .shuffle import SHUFFLE_REASON, crosses_shuffle, traceable

CONV_TYPES: tuple[type[nn.Module], ...] = tuple(m for m in WEIGHTED_MODULES if m is not nn.Linear)
CHANNEL_ROOTS: tuple[type[nn.Module], ...] = WEIGHTED_MODULES
NEURON_ROOTS: tuple[type[nn.Module], ...] = (nn.Linear,)
_NORMALISING = (nn.LayerNorm, nn.GroupNorm)
TOLERANCE = 1e-4


@dataclass
class Group:
    """One eligible dependency group, identified by its root layer's module path."""

    key: str
    width: int
    chunks: int
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    ratio: float | None = None
    exact: bool = True
    """Whether removing the channels must equal reading them as zeros (see the module doc)."""

    @property
    def chunk_width(self) -> int:
        return self.width // self.chunks


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Torch-Pruning's warnings and what a failing GraphModule prints."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def dependency_graph(gm: nn.Module, args: Sequence[torch.Tensor]) -> Any:
    """Torch-Pruning's dependency graph of ``gm`` traced on ``args``."""
    with quiet():
        model = traceable(gm, args)
        return tp.DependencyGraph().build_dependency(model, example_inputs=list(args), verbose=False)


def prunes_inputs(dep: Any) -> bool:
    return getattr(dep.handler, "__name__", "") == "prune_in_channels"


def _chunks(graph: Any, group: Any) -> int:
    found = 1
    for dep, _ in group:
        module = dep.target.module
        pruner = graph.get_pruner_of_module(module) if isinstance(module, nn.Module) else None
        if pruner is None or (isinstance(module, CONV_TYPES) and module.groups == module.out_channels):
            continue
        count = (
            pruner.get_in_channel_groups(module)
            if prunes_inputs(dep)
            else pruner.get_out_channel_groups(module)
        )
        found = max(found, int(count or 1))
    return found


def root_group(graph: Any, module: nn.Module, idxs: Sequence[int]) -> Any:
    """The group removing root channels ``idxs`` of ``module`` (on the graph's current widths)."""
    pruner = graph.get_pruner_of_module(module)
    return graph.get_pruning_group(module, pruner.prune_out_channels, sorted(int(i) for i in idxs))


def width_of(graph: Any, module: nn.Module) -> int:
    return int(graph.get_pruner_of_module(module).get_out_channels(module))


@dataclass
class Selection:
    """The eligible groups of a graph and why the other layers stay (module path -> reason)."""

    groups: list[Group]
    skipped: dict[str, str]
    warned: dict[str, str]
    """The skipped groups a report should warn about (prunable layers left whole by structure)."""


def select_groups(
    gm: fx.GraphModule,
    graph: Any,
    *,
    roots: tuple[type[nn.Module], ...],
    held: Mapping[str, str],
    ignore: Sequence[str],
    overrides: Sequence[tuple[str, float]],
    prune_output_layers: bool,
    linear_only: bool,
) -> Selection:
    """Every eligible group of ``gm`` (see the module doc) with its override ratio, and the skips.

    ``held``: layers never roots, with the reason (the attention projections, see :mod:`.attention`).
    """
    paths = {module: name for name, module in gm.named_modules()}
    outputs = set() if prune_output_layers else output_modules(gm)
    reasons: dict[str, str] = {}
    for path in outputs:
        reasons[path] = "output layer (set prune_output_layers to prune it)"
    reasons.update(held)
    for path in paths.values():
        hit = first_match(ignore, names_of(gm, path)) if path else None
        if hit is not None:
            reasons[path] = f"matches ignore pattern {hit!r}"
    ignored = [m for m, p in paths.items() if p in reasons]
    found: list[Group] = []
    skipped: dict[str, str] = {}
    warned: dict[str, str] = {}
    with quiet():
        all_groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=list(roots)))
    for group in all_groups:
        root = group[0].dep.target.module
        key = paths[root]
        layers = [(d, d.target.module) for d, _ in group if d.target.module in paths]
        outs = [paths[m] for d, m in layers if not prunes_inputs(d)]
        ins = [paths[m] for d, m in layers if prunes_inputs(d)]
        if linear_only and not _linear_chain(group):
            continue
        if crosses_shuffle(group):
            skipped[key] = warned[key] = SHUFFLE_REASON
            continue
        chunks = _chunks(graph, group)
        width = len(group[0].idxs)
        if width % chunks or width // chunks < 2:
            skipped[key] = "too few channels to prune"
            continue
        exact = not any(
            isinstance(d.target.module, _NORMALISING) or d.target.type == tp.ops.OPTYPE.OUTPUT
            for d, _ in group
        )
        ratio = next(
            (r for pattern, r in overrides for p in outs if first_match([pattern], names_of(gm, p))), None
        )
        found.append(
            Group(key, width, chunks, tuple(dict.fromkeys(outs)), tuple(dict.fromkeys(ins)), ratio, exact)
        )
    for path, reason in reasons.items():
        module = gm.get_submodule(path) if path else None
        if isinstance(module, roots):
            skipped.setdefault(path, reason)
    warned.update((path, reason) for path, reason in held.items() if not linear_only)
    return Selection(found, skipped, warned)


def _linear_chain(group: Any) -> bool:
    """Whether every layer with parameters in ``group`` is a Linear (NEURON's hidden units)."""
    for dep, _ in group:
        module = dep.target.module
        if dep.target.type == tp.ops.OPTYPE.PARAMETER:
            return False
        has_parameters = isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False))
        if has_parameters and not isinstance(module, nn.Linear):
            return False
    return True


def _probe(group: Group) -> list[int]:
    """A few channels per chunk, away from position 0 (a fixed point of most permutations)."""
    width = group.chunk_width
    entries = sorted({width // 2, width - 1}) if width >= 3 else [width // 2]
    return [chunk * width + e for chunk in range(group.chunks) for e in entries]


def _masked_outputs(
    gm: fx.GraphModule, graph: Any, groups: Sequence[Group], args: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The outputs of ``gm`` when the layers of ``groups`` read the probed channels as zeros."""
    zeroed: dict[nn.Module, set[int]] = {}
    for group in groups:
        for dep, idxs in root_group(graph, gm.get_submodule(group.key), _probe(group)):
            if prunes_inputs(dep) and isinstance(dep.target.module, nn.Module):
                zeroed.setdefault(dep.target.module, set()).update(int(i) for i in idxs)

    def hook(layer: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        x = inputs[0].clone()
        dim = x.dim() - 1 if isinstance(layer, nn.Linear) else 1
        x.index_fill_(dim, torch.as_tensor(sorted(zeroed[layer]), dtype=torch.long), 0.0)
        return (x, *inputs[1:])

    handles = [layer.register_forward_pre_hook(hook) for layer in zeroed]
    try:
        with torch.no_grad():
            return [o.detach() for o in outputs_of(gm(*args))]
    finally:
        for handle in handles:
            handle.remove()


def _pruned_outputs(
    gm: fx.GraphModule, groups: Sequence[Group], args: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    work = copy.deepcopy(gm)
    graph = dependency_graph(work, args)
    for group in groups:
        pruning = root_group(graph, work.get_submodule(group.key), _probe(group))
        if not graph.check_pruning_group(pruning):
            raise ValueError("the group would lose every channel of a layer")
        pruning.prune()
    with torch.no_grad():
        return [o.detach() for o in outputs_of(work(*args))]


def _mismatch(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], *, exact: bool) -> str:
    if len(actual) != len(expected):
        return "the number of outputs changed"
    for a, e in zip(actual, expected, strict=True):
        if a.shape != e.shape:
            return f"an output changed shape {tuple(e.shape)} -> {tuple(a.shape)}"
        if exact and e.is_floating_point():
            scale = max(float(e.abs().max()) if e.numel() else 0.0, 1e-6)
            error = float((a - e).abs().max()) / scale if e.numel() else 0.0
            if not error <= TOLERANCE:
                return (
                    f"removing channels differs from zeroing them (relative error {error:.2g}): "
                    "Torch-Pruning cannot follow this group (e.g. channels reshaped into heads or shuffled)"
                )
    return ""


def _trial(
    gm: fx.GraphModule, graph: Any, groups: Sequence[Group], args: Sequence[torch.Tensor], check_shapes: bool
) -> str:
    """Why probing ``groups`` together fails ("" when it passes)."""
    exact = all(g.exact for g in groups)
    try:
        with quiet():
            pruned = _pruned_outputs(gm, groups, args)
            reference = _masked_outputs(gm, graph, groups if exact else [], args)
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        return f"Torch-Pruning cannot prune it: {type(exc).__name__}: {detail}"
    if not exact and not check_shapes:
        return ""  # it runs; its output shapes may change (prune_output_layers)
    return _mismatch(pruned, reference, exact=exact)


def verify(
    gm: fx.GraphModule,
    graph: Any,
    groups: Sequence[Group],
    args: Sequence[torch.Tensor],
    *,
    prune_output_layers: bool,
) -> dict[str, str]:
    """Root path -> reason for every group that fails its probe (see the module doc).

    The groups are probed together first (exact ones, then the others); only
    when a batch fails is each of its groups probed alone.
    """
    failures: dict[str, str] = {}
    for batch in ([g for g in groups if g.exact], [g for g in groups if not g.exact]):
        if not batch or not _trial(gm, graph, batch, args, not prune_output_layers):
            continue
        for group in batch:
            reason = _trial(gm, graph, [group], args, not prune_output_layers)
            if reason:
                failures[group.key] = reason
    return failures


def layer_name(gm: fx.GraphModule, path: str) -> str:
    """The ONNX node name of the module at ``path`` (its path when the converter recorded none)."""
    return origin(gm, path).name
