"""The DYNAMIC method's config and rules: input-dependent computation (early exit, token skipping).

One table of knobs per form (:data:`FORM_FIELDS`): a knob the form does not read must be left unset. The
value rules (:func:`dynamic_problems`) serve both the spec check (:func:`dynamic_violations`, field paths
under ``prune.dynamic``) and :class:`DynamicConfig` (``ValueError``). :func:`dynamic_job_violations`
holds the rules across the spec: DYNAMIC delivers one variant, so no quantize, fine-tune or target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from prunekit.v1 import spec_pb2

from .names import enum_short_name
from .prune_configs import PruneConfig
from .values import fraction_problem, int_range_problem, pattern_problem
from .violation import FieldViolation

__all__ = [
    "DEFAULT_DYNAMIC_STEPS",
    "DEFAULT_MAX_EXITS",
    "FORMS",
    "FORM_FIELDS",
    "MAX_DYNAMIC_STEPS",
    "MAX_EXITS",
    "TOKEN_SCORERS",
    "DynamicConfig",
    "DynamicForm",
    "TokenScorer",
    "dynamic_job_violations",
    "dynamic_problems",
    "dynamic_violations",
]

DynamicForm = Literal["early_exit", "token_skip", "head_gate"]
TokenScorer = Literal["learned", "attention"]
TOKEN_SCORERS: tuple[TokenScorer, ...] = ("learned", "attention")
FORMS: tuple[DynamicForm, ...] = ("early_exit", "token_skip", "head_gate")
DEFAULT_MAX_EXITS = 3
MAX_EXITS = 8
DEFAULT_DYNAMIC_STEPS = 300
MAX_DYNAMIC_STEPS = 100_000
MAX_KEEP_TOKENS = 1 << 20
MAX_FROM_LAYER = 1024

FORM_FIELDS: dict[DynamicForm, frozenset[str]] = {
    "early_exit": frozenset({"form", "exits", "max_exits", "threshold", "steps"}),
    "token_skip": frozenset(
        {"form", "keep_ratio", "keep_tokens", "from_layer", "steps", "frozen_layers", "token_scorer"}
    ),
    "head_gate": frozenset({"form", "threshold", "from_layer", "steps"}),
}
"""The ``DynamicSpec`` fields each form reads."""
_ALL_FIELDS = (
    "exits", "max_exits", "threshold", "keep_ratio", "keep_tokens", "from_layer", "steps", "frozen_layers",
    "token_scorer",
)  # fmt: skip


def _threshold_problem(value: float) -> str | None:
    if isinstance(value, int | float) and math.isfinite(value) and 0.0 < value <= 1.0:
        return None
    return f"must be a number with 0 < threshold <= 1 (0: calibrated), got {value!r}"


def dynamic_problems(
    form: str,
    values: dict[str, object],
) -> list[tuple[str, str]]:
    """Every ``(field, problem)`` of a form and its knobs (``values``: field -> value, 0/empty = unset)."""
    if form not in FORMS:
        return [("form", "required: EARLY_EXIT, TOKEN_SKIP or HEAD_GATE")]
    found: list[tuple[str, str]] = []
    for name in _ALL_FIELDS:
        if values.get(name) and name not in FORM_FIELDS[form]:
            found.append((name, f"not used by form {form.upper()}"))
    threshold = values.get("threshold") or 0.0
    if threshold:
        problem = _threshold_problem(threshold)  # type: ignore[arg-type]
        if problem:
            found.append(("threshold", problem))
    checks: tuple[tuple[str, int, int], ...] = (
        ("max_exits", 1, MAX_EXITS),
        ("keep_tokens", 1, MAX_KEEP_TOKENS),
        ("from_layer", 1, MAX_FROM_LAYER),
        ("steps", 1, MAX_DYNAMIC_STEPS),
    )
    for name, low, high in checks:
        value = values.get(name) or 0
        problem = int_range_problem(value, low, high) if value else None
        if problem:
            found.append((name, problem))
    keep = values.get("keep_ratio") or 0.0
    problem = fraction_problem(keep, "keep_ratio") if keep else None
    if problem:
        found.append(("keep_ratio", problem))
    if keep and values.get("keep_tokens"):
        found.append(("keep_tokens", "set keep_ratio or keep_tokens, not both"))
    scorer = values.get("token_scorer") or ""
    if scorer and scorer not in TOKEN_SCORERS:
        found.append(("token_scorer", f"must be one of {', '.join(TOKEN_SCORERS)}, got {scorer!r}"))
    if values.get("frozen_layers") and scorer == "attention" and values.get("steps"):
        found.append(("steps", "not used with frozen_layers and the attention scorer (nothing is trained)"))
    exits = values.get("exits") or ()
    assert isinstance(exits, tuple | list)
    if len(exits) > MAX_EXITS:
        found.append(("exits", f"at most {MAX_EXITS} exits"))
    for i, name in enumerate(exits):
        problem = pattern_problem(name)
        if problem:
            found.append((f"exits[{i}]", problem.replace("a glob", "a node or tensor name")))
    return found


def dynamic_violations(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    """Append the rules ``prune.dynamic`` breaks (DYNAMIC only) to ``found``, paths under ``path``."""
    if not prune.HasField("dynamic"):
        found.append(FieldViolation(f"{path}.dynamic", "required for DYNAMIC (at least its form)"))
        return
    d = prune.dynamic
    form = enum_short_name(spec_pb2.DynamicForm.DESCRIPTOR, d.form) if d.form else ""
    values: dict[str, object] = {name: getattr(d, name) for name in _ALL_FIELDS}
    values["exits"] = tuple(d.exits)
    values["token_scorer"] = (
        enum_short_name(spec_pb2.TokenScorer.DESCRIPTOR, d.token_scorer) if d.token_scorer else ""
    )
    for name, problem in dynamic_problems(form, values):
        found.append(FieldViolation(f"{path}.dynamic.{name}", problem))


def dynamic_job_violations(spec: spec_pb2.OptimizationSpec, prefix: str, found: list[FieldViolation]) -> None:
    """DYNAMIC delivers the one ``dynamic`` variant: a spec that also quantizes, fine-tunes or sets a target
    breaks a rule (one violation per such section)."""
    if not (spec.HasField("prune") and spec.prune.method == spec_pb2.PRUNE_METHOD_DYNAMIC):
        return
    quantizes = spec.HasField("quantize") and spec.quantize.mode != spec_pb2.QUANTIZE_MODE_NONE
    for section, present in (("quantize", quantizes), ("finetune", spec.HasField("finetune"))):
        if present:
            found.append(
                FieldViolation(
                    f"{prefix}.{section}",
                    f"not with prune method DYNAMIC (it trains its own gates): leave {section} unset",
                )
            )
    if spec.HasField("target"):
        found.append(FieldViolation(f"{prefix}.target", "not with prune method DYNAMIC"))


@dataclass(frozen=True)
class DynamicConfig(PruneConfig):
    """Input-dependent computation of ``form``; bad knobs raise ``ValueError`` (see :func:`dynamic_problems`).

    ``early_exit``: exit heads after ``exits`` (node or tensor names; chosen automatically, at most
    ``max_exits``, when empty), leaving at confidence ``threshold`` (0: calibrated). ``token_skip``: from
    layer ``from_layer`` on, keep ``keep_ratio`` of the tokens (or ``keep_tokens``), the later layers
    distilled unless ``frozen_layers``. ``steps``: distillation steps training the heads or the layers.
    """

    method = "dynamic"

    form: DynamicForm = field(
        default="early_exit",
        metadata={"description": "'early_exit', 'token_skip' or 'head_gate'."},
    )
    exits: tuple[str, ...] = field(
        default=(),
        metadata={"description": "EARLY_EXIT: node or tensor names an exit head follows (empty: automatic)."},
    )
    max_exits: int = field(
        default=DEFAULT_MAX_EXITS,
        metadata={"description": f"EARLY_EXIT: at most this many automatic exits, 1 to {MAX_EXITS}."},
    )
    threshold: float = field(
        default=0.0,
        metadata={"description": "Confidence needed to leave at an exit, 0 < t <= 1 (0: calibrated)."},
    )
    keep_ratio: float = field(
        default=0.0,
        metadata={"description": "TOKEN_SKIP: fraction of tokens kept, 0 < r < 1 (0: calibrated)."},
    )
    keep_tokens: int = field(
        default=0,
        metadata={"description": "TOKEN_SKIP: tokens kept (0: unset; exclusive with keep_ratio)."},
    )
    from_layer: int = field(
        default=0,
        metadata={"description": "TOKEN_SKIP: first layer (0-based, >= 1) on the kept tokens (0: middle)."},
    )
    steps: int = field(
        default=DEFAULT_DYNAMIC_STEPS,
        metadata={
            "description": f"Distillation steps training the exit heads (EARLY_EXIT) or the layers after "
            f"the skipping point (TOKEN_SKIP), 1 to {MAX_DYNAMIC_STEPS}."
        },
    )
    token_scorer: TokenScorer = field(
        default="learned",
        metadata={
            "description": "TOKEN_SKIP: 'learned' (a linear scorer on the hidden states, trained) or "
            "'attention' (the first token's attention in the layer before)."
        },
    )
    frozen_layers: bool = field(
        default=False,
        metadata={
            "description": "TOKEN_SKIP: keep the later layers' weights as they are (no distillation: the "
            "attention scores alone)."
        },
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "exits", tuple(self.exits))
        values: dict[str, object] = {name: getattr(self, name) for name in _ALL_FIELDS}
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        defaults = (
            ("max_exits", DEFAULT_MAX_EXITS),
            ("steps", DEFAULT_DYNAMIC_STEPS),
            ("token_scorer", "learned"),
        )
        for name, default in defaults:
            if values[name] == default:
                values[name] = 0
        problems = dynamic_problems(self.form, values)
        if problems:
            name, problem = problems[0]
            raise ValueError(f"{name} {problem}")
