"""Control flow: an ``If`` whose condition is known at conversion time is its taken branch, inlined.

Exporters emit such Ifs for checks on static sizes or flags; a condition that
depends on the data stays unsupported (the refusal says so).
"""

from __future__ import annotations

from .node import NodeContext
from .registry import Result, converter


@converter("If")
def if_(cx: NodeContext) -> Result:
    condition = cx.value(0)
    if not condition.is_const:
        cx.fail("the condition depends on the inputs (only an If with a static condition is converted)")
    taken = "then_branch" if bool(condition.tensor.reshape(-1)[0]) else "else_branch"
    return cx.inline(cx.subgraph(taken))
