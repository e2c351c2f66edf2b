"""Control flow, unrolled or inlined at conversion time.

* ``If`` whose condition is known at conversion time is its taken branch, inlined
  (exporters emit such Ifs for checks on static sizes or flags);
* ``Loop`` with a constant trip count (and a condition that stays a constant) is
  its body repeated: iteration numbers and carried values bound anew each time,
  the scan outputs stacked along a new first axis;
* ``Scan`` over inputs of static length the same way: each iteration reads
  slice ``i`` of every scan input (along ``scan_input_axes``, from the end where
  ``scan_input_directions`` says 1) and its scan outputs are stacked along
  ``scan_output_axes`` (reversed where ``scan_output_directions`` says 1).

A condition that depends on the data stays unsupported, and so does a loop of
more than :data:`MAX_UNROLL` iterations (the refusals say so).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch

from .node import NodeContext
from .registry import Result, converter
from .values import Dims, Value, const

MAX_UNROLL = 256
"""The most iterations a Loop or Scan is unrolled into."""


@converter("If")
def if_(cx: NodeContext) -> Result:
    condition = cx.value(0)
    if not condition.is_const:
        cx.fail("the condition depends on the inputs (only an If with a static condition is converted)")
    taken = "then_branch" if bool(condition.tensor.reshape(-1)[0]) else "else_branch"
    return cx.inline(cx.subgraph(taken))


def _run_body(cx: NodeContext, body: onnx.GraphProto, bound: Sequence[Value | Dims]) -> list[Value | Dims]:
    """One iteration: ``body``'s inputs bound to ``bound``, its outputs converted in this scope."""
    for spec, value in zip(body.input, bound, strict=True):
        cx.env[spec.name] = value
    return cx.inline(body)


def _stack(cx: NodeContext, parts: list[Value | Dims], axis: int, reverse: bool) -> Value:
    """The iterations' ``parts`` stacked along a new ``axis`` (negative: counted from the end)."""
    values = [cx.builder.dims_tensor(p) if isinstance(p, Dims) else p for p in parts]
    if reverse:
        values.reverse()
    return cx.call(torch.stack, values, axis % (values[0].rank + 1))


@converter("Loop")
def loop(cx: NodeContext) -> Result:
    if not cx.has(0) or not cx.value(0).is_const:
        cx.fail("the trip count must be a constant (a loop running until a data-dependent condition is not)")
    trips = int(cx.value(0).tensor.reshape(-1)[0])
    if trips > MAX_UNROLL:
        cx.fail(f"{trips} iterations: at most {MAX_UNROLL} are unrolled")
    body = cx.subgraph("body")
    carried: list[Value | Dims] = [cx.input(k) for k in range(2, cx.num_inputs)]
    condition: Value = cx.value(1) if cx.has(1) else const(torch.tensor(True))
    scans: list[list[Value | Dims]] = [[] for _ in range(len(body.output) - 1 - len(carried))]
    for i in range(trips):
        if not condition.is_const:
            cx.fail("the loop condition depends on the inputs")
        if not bool(condition.tensor.reshape(-1)[0]):
            break
        outputs = _run_body(cx, body, [const(torch.tensor(i, dtype=torch.int64)), condition, *carried])
        out_condition = outputs[0]
        condition = (
            cx.builder.dims_tensor(out_condition) if isinstance(out_condition, Dims) else out_condition
        )
        carried = list(outputs[1 : 1 + len(carried)])
        for k, part in enumerate(outputs[1 + len(carried) :]):
            scans[k].append(part)
    if any(not parts for parts in scans):
        cx.fail("a loop that runs no iteration has empty scan outputs")
    return [*carried, *(_stack(cx, parts, 0, False) for parts in scans)]


@converter("Scan", since=9)
def scan(cx: NodeContext) -> Result:
    body = cx.subgraph("body")
    count = cx.attr_int("num_scan_inputs", 0)
    states: list[Value | Dims] = [cx.input(k) for k in range(cx.num_inputs - count)]
    sequences = [cx.value(k) for k in range(cx.num_inputs - count, cx.num_inputs)]
    in_axes = cx.attr_ints("scan_input_axes") or [0] * count
    in_reverse = cx.attr_ints("scan_input_directions") or [0] * count
    n_out = len(body.output) - len(states)
    out_axes = cx.attr_ints("scan_output_axes") or [0] * n_out
    out_reverse = cx.attr_ints("scan_output_directions") or [0] * n_out
    lengths = {seq.shape[axis % seq.rank] for seq, axis in zip(sequences, in_axes, strict=True)}
    if len(lengths) != 1:
        cx.fail("the scan inputs differ in length")
    trips = lengths.pop()
    if trips > MAX_UNROLL:
        cx.fail(f"{trips} iterations: at most {MAX_UNROLL} are unrolled")
    scans: list[list[Value | Dims]] = [[] for _ in range(n_out)]
    for i in range(trips):
        slices = [
            cx.call(torch.select, seq, axis % seq.rank, trips - 1 - i if back else i)
            for seq, axis, back in zip(sequences, in_axes, in_reverse, strict=True)
        ]
        outputs = _run_body(cx, body, [*states, *slices])
        states = list(outputs[: len(states)])
        for k, part in enumerate(outputs[len(states) :]):
            scans[k].append(part)
    if trips == 0:
        cx.fail("a scan over empty inputs is not converted")
    stacked = [
        _stack(cx, parts, axis, bool(back))
        for parts, axis, back in zip(scans, out_axes, out_reverse, strict=True)
    ]
    return [*states, *stacked]
