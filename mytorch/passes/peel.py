"""`peel`: a loop whose carry starts at zeros runs its first step outside the loop.

RNN loops start from h = 0, and their first step multiplies those zeros by W_hh: a whole step's
product for nothing, and the backward's reverse loop starts from a zero carry as well. Peeling
(classic loop peeling) makes the first step its own nodes, reading the carry as the zero
constant, and `simplify` then folds the zeros away (rnn_step(x, 0, w) -> tanh(x)):

    hs = loop(xs, 0, w)  ->  h = body(xs[0], 0, w);  hs = cat(h[None], loop(xs[1:], h, w))

(a reverse loop peels its last slice, which it runs first). Autodiff runs over the optimized
forward, so the backward no longer has the zero rows in the weight gradient either. Only loops
whose body feeds the carry to a product are peeled: elsewhere the split would cost a copy for
no saving. A loop of one step becomes that step; a step from zeros outside any loop (a sequence
of one step, never rolled) is simplified the same way.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops.shape import Slice, step_range
from .base import PassResult, register_pass, remark
from .rewrite import inline_body, is_zeros
from .simplify import simplify

PATTERN = "peel: a loop whose carry starts at zeros"
# ops whose work on a zero operand in these positions simplify removes (see simplify.py)
PRODUCTS = {"matmul": (0, 1), "rnn_step": (1,), "rnn_cell": (1,)}


@register_pass("peel")
def peel(graph: Graph) -> PassResult:
    changed = False
    for loop in list(graph.nodes):
        if loop.op == "loop" and loop.graph is graph and _peelable(graph, loop):
            _peel(graph, loop)
            changed = True
    if changed:
        graph.sort()
    # what the peeled steps no longer compute (and a step from zeros that was never a loop)
    if changed or any(_zero_product(n) for n in graph.nodes):
        changed |= simplify(graph).changed
    return PassResult(graph, changed)


def _zero_product(node: Node) -> bool:
    positions = PRODUCTS.get(node.op, ())
    return any(is_zeros(node.inputs[k]) for k in positions if k < len(node.inputs))


def _peelable(graph: Graph, loop: Node) -> bool:
    sequences = loop.params.get("sequences", 1)
    if not is_zeros(loop.inputs[sequences]):
        return False  # (the common case: no remark)
    carry = loop.params["body"].inputs[sequences]
    if not any(
        k < len(u.inputs) and u.inputs[k] is carry
        for u in carry.users
        for k in PRODUCTS.get(u.op, ())
    ):
        return remark(PATTERN, loop, False, "no product reads the carry")
    if not _no_copy(graph, loop):
        return remark(PATTERN, loop, False, "its steps are read together: joining them copies")
    return remark(PATTERN, loop, True, f"{loop.inputs[0].shape[0]} steps")


def _no_copy(graph: Graph, loop: Node) -> bool:
    """Whether the peeled step and the loop's other steps need no copy to be one value: each
    read takes steps of one of them, or a cat copies the loop's steps anyway (`simplify` joins
    the two cats and readers of all steps read them there)."""
    if loop in graph.outputs:
        return False
    steps = loop.shape[0]
    peeled = steps - 1 if loop.params.get("reverse", False) else 0
    if any(u.op == "cat" and u.params["dim"] in (0, -len(u.shape)) for u in loop.users):
        return True
    for u in loop.users:
        span = step_range(u.params["index"], steps) if u.op == "getitem" else None
        if span is None or (span[0] <= peeled < span[1] and span[1] - span[0] > 1):
            return False
    return True


def _peel(graph: Graph, loop: Node) -> None:
    sequences = loop.params.get("sequences", 1)
    reverse = loop.params.get("reverse", False)
    seqs, zeros, invariants = (
        loop.inputs[:sequences],
        loop.inputs[sequences],
        loop.inputs[sequences + 1 :],
    )
    steps = seqs[0].shape[0]
    first = steps - 1 if reverse else 0
    rest = Slice(0, steps - 1, None) if reverse else Slice(1, steps, None)

    def add(op, inputs, params):
        return graph.add_node(op, inputs, params, before=loop)

    # The step's slices as slices and reshapes: their gradients join the rest's into one cat.
    xs = [
        add(
            "reshape",
            [add("getitem", [s], {"index": (Slice(first, first + 1, None),)})],
            {"shape": tuple(s.shape[1:])},
        )
        for s in seqs
    ]
    h = inline_body(graph, loop.params["body"], [*xs, zeros, *invariants], before=loop)
    stacked = add("reshape", [h], {"shape": (1,) + tuple(h.shape)})
    if steps > 1:
        rest_seqs = [add("getitem", [s], {"index": (rest,)}) for s in seqs]
        others = add("loop", [*rest_seqs, h, *invariants], loop.params)
        parts = [others, stacked] if reverse else [stacked, others]
        stacked = add("cat", parts, {"dim": 0})
    graph.replace_all_uses(loop, stacked)
    graph.remove_node(loop)
