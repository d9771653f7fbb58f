"""`reroll`: T chained `rnn_step`s reading P[0], ..., P[T-1] become one `loop` node whose body
is a one-step graph, so the graph (and compile time) no longer grows with T.

Every step's state stays available as `loop[t]`; a stack of all of them is the loop itself.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from .base import PassResult, register_pass, remark
from .chains import cell_chains
from .rewrite import prune, rnn_step_body, stacked_source, step_index

PATTERN = "reroll: chain of rnn_steps"


def _shared(step: Node) -> tuple:
    xw, _, w_hh = step.inputs
    source = xw.inputs[0] if xw.op == "getitem" else None
    return (source, w_hh, step.params["nonlinearity"])


@register_pass("reroll")
def reroll(graph: Graph) -> PassResult:
    changed = False
    for chain in cell_chains(graph, "rnn_step", _shared):
        if _rerollable(chain):
            _reroll(graph, chain)
            changed = True
    if changed:
        graph.sort()
    return PassResult(graph, changed)


def _rerollable(chain: list[Node]) -> bool:
    first = chain[0]
    if len(chain) < 2:
        return remark(PATTERN, first, False, "a single step: nothing to re-roll")
    source = _shared(first)[0]
    if source is None:
        return remark(PATTERN, first, False, "the step input is not a slice of one tensor")
    if stacked_source([c.inputs[0] for c in chain]) is not source:
        reason = f"the steps do not read {source!r}[0..{len(chain) - 1}] in order, all of it"
        return remark(PATTERN, first, False, reason)
    return remark(PATTERN, first, True, f"{len(chain)} steps")


def _reroll(graph: Graph, chain: list[Node]) -> None:
    first = chain[0]
    projected, h0, w_hh = first.inputs[0].inputs[0], first.inputs[1], first.inputs[2]
    body = rnn_step_body(projected, h0, w_hh, first.params["nonlinearity"])
    loop = graph.add_node("loop", [projected, h0, w_hh], {"body": body})
    in_chain = set(chain)
    slices = []
    for t, step in enumerate(chain):
        outside = [u for u in step.users if u not in in_chain]
        if outside or step in graph.outputs:
            state = graph.add_node("getitem", [loop], {"index": (t,)})
            for user in outside:
                user.inputs = tuple(state if i is step else i for i in user.inputs)
                step.users.remove(user)
                state.users.append(user)
            graph.outputs = [state if o is step else o for o in graph.outputs]
            slices.append(state)
    prune(graph, [chain[-1]])
    _collapse_stacks(graph, loop, slices)


def _collapse_stacks(graph: Graph, loop: Node, slices: list[Node]) -> None:
    """stack(loop[0], ..., loop[T-1]) (nn.RNN's output, a next layer's inputs) is the loop."""
    stacks = {u for s in slices for u in s.users if u.op == "stack" and u.params["dim"] == 0}
    for stack in stacks:
        if stacked_source(stack.inputs) is loop and stack.type == loop.type:
            graph.replace_all_uses(stack, loop)
            prune(graph, [stack])
    prune(graph, [s for s in slices if step_index(s) is not None])
