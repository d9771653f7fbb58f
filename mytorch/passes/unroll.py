"""`unroll`: a loop whose body the loop op cannot differentiate becomes its T steps again.

`roll` turns every traced loop it can into a `loop` node, so that the passes after it see one
step. When they do not bring the body down to what the loop's gradient rule handles (an
`rnn_step`, or work row by row on the batch; see `ir/loop.py`), compiling for training would
fail: such a loop goes back to its steps, as traced (`h_t = body(xs[t], h_{t-1})`, each state
read where the loop's was).
"""

from __future__ import annotations

from ..errors import CompileError
from ..ir.graph import Graph, Node
from ..ir.loop import check_differentiable_body
from .base import PassResult, register_pass, remark
from .rewrite import inline_body, is_forward_loop, prune, step_index

PATTERN = "unroll: a loop the gradient rule cannot take"


@register_pass("unroll")
def unroll(graph: Graph) -> PassResult:
    changed = False
    for loop in list(graph.nodes):
        if is_forward_loop(loop) and loop.graph is graph:
            reason = _not_differentiable(loop.params["body"])
            if reason is not None:
                remark(PATTERN, loop, True, reason)
                _unroll(graph, loop)
                changed = True
    if changed:
        graph.sort()
    return PassResult(graph, changed)


def _not_differentiable(body: Graph) -> str | None:
    try:
        check_differentiable_body(body)
    except CompileError as e:
        return str(e)
    return None


def _unroll(graph: Graph, loop: Node) -> None:
    xs, h, *invariants = loop.inputs
    body = loop.params["body"]
    states = []
    for t in range(xs.shape[0]):
        x = graph.add_node("getitem", [xs], {"index": (t,)}, before=loop)
        h = inline_body(graph, body, [x, h, *invariants], before=loop)
        states.append(h)
    # loop[t] is step t's state; the loop itself, all of them stacked.
    reads = {u for u in loop.users if step_index(u) is not None}
    for read in reads:
        graph.replace_all_uses(read, states[step_index(read)])
    prune(graph, reads)
    if loop.users or loop in graph.outputs:
        graph.replace_all_uses(loop, graph.add_node("stack", states, {"dim": 0}, before=loop))
    prune(graph, [loop])
