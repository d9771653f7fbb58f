"""`batch_steps`: `stack([f(h[0]), ..., f(h[T-1])])` becomes `f(h)`, one batched computation.

After `reroll`, every step's state is a slice `h[t]` of the loop's result. Per-step work that
only reads the state, such as the tutorial's output projection `h[t] @ Wo.T + bo`, is the same
expression T times; when its results are stacked, one call over the whole (T, ...) tensor does
it: the output projection deferred out of the loop as one large product.

The T expression trees must match op for op; where they differ, they must be the slices h[t]
in order (the batched leaf); values shared by all steps stay as they are. Only ops known to
work unchanged on a leading steps dim are batched: elementwise ops, matmul with the steps on
the left operand, and softmax/log_softmax (their dim shifts by one).
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from .base import PassResult, register_pass, remark
from .rewrite import prune, replace, step_index

PATTERN = "batch_steps: stack of per-step work"
ELEMENTWISE = set(
    "add sub mul div pow neg abs exp log tanh sigmoid sqrt relu clamp cast where "
    "eq ne lt le gt ge".split()
)


@register_pass("batch_steps")
def batch_steps(graph: Graph) -> PassResult:
    changed = False
    for stack in list(graph.nodes):
        if stack.op != "stack" or stack.graph is not graph or stack.params["dim"] != 0:
            continue
        batched = batch_stack(graph, stack)
        if batched is not None:
            replace(graph, stack, batched)
            changed = True
    if changed:
        graph.sort()
    return PassResult(graph, changed)


def batch_stack(graph: Graph, stack: Node, states: dict | None = None) -> Node | None:
    """The batched value of `stack` (added just before it), or None (and a remark why not).

    `states` maps values to (xs, t) when they are xs[t] without being slices (yet): `roll`
    batches the per-step work on a loop's states before it makes loop[t] for each of them.
    """
    steps = list(stack.inputs)
    if len(steps) < 2:
        remark(PATTERN, stack, False, "fewer than 2 steps")
        return None
    plan = _unify(steps, states or {})
    if isinstance(plan, str):
        remark(PATTERN, stack, False, plan)
        return None
    if plan[0] == "shared":
        remark(PATTERN, stack, False, "every step is the same value")
        return None
    result = _build(graph, plan, stack)
    if result.type != stack.type:  # a guard: the rules above should make this impossible
        prune(graph, [result])
        remark(PATTERN, stack, False, f"batched type {result.type} is not {stack.type}")
        return None
    remark(PATTERN, stack, True, f"{len(steps)} steps")
    return result


def _slice(node: Node, states: dict) -> tuple[Node | None, int | None]:
    """(xs, t) when `node` is xs[t], else (None, None)."""
    t = step_index(node)
    if t is not None:
        return node.inputs[0], t
    return states.get(node, (None, None))


def _unify(nodes: list[Node], states: dict):
    """A plan: ("shared", node) | ("steps", source) | ("op", node, [input plans]), or a reason."""
    first = nodes[0]
    if all(n is first for n in nodes):
        return ("shared", first)
    slices = [_slice(n, states) for n in nodes]
    if all(t == k for k, (_, t) in enumerate(slices)):
        source = slices[0][0]
        if all(s is source for s, _ in slices) and source.shape[0] == len(nodes):
            return ("steps", source)
        return "the steps slice different tensors, or not all of one"
    if any(n.op != first.op or n.params != first.params or n.is_input for n in nodes):
        return f"the steps differ at %{first.name} ({first.op})"
    if len({len(n.inputs) for n in nodes}) != 1:
        return f"the steps differ at %{first.name} ({first.op})"
    inputs = []
    for k in range(len(first.inputs)):
        sub = _unify([n.inputs[k] for n in nodes], states)
        if isinstance(sub, str):
            return sub
        inputs.append(sub)
    batched = [p[0] != "shared" for p in inputs]
    if not any(batched):  # the same computation on the same values: one shared value
        return ("shared", first)
    if first.op in ELEMENTWISE:
        # A leading steps dim lines up under numpy broadcasting only if every batched operand
        # has the step result's full rank and no shared operand has more.
        step_rank = len(first.shape)
        for is_batched, operand in zip(batched, first.inputs, strict=True):
            if (
                (len(operand.shape) != step_rank)
                if is_batched
                else (len(operand.shape) > step_rank)
            ):
                return f"the operands of {first.op} do not broadcast the same way with a steps dim"
        return ("op", first, inputs)
    if first.op == "matmul" and batched == [True, False] and len(first.inputs[1].shape) == 2:
        return ("op", first, inputs)
    if first.op in ("softmax", "log_softmax"):
        return ("op", first, inputs)
    return f"{first.op} is not known to batch over a leading steps dim"


def _build(graph: Graph, plan, before: Node) -> Node:
    kind = plan[0]
    if kind in ("shared", "steps"):
        return plan[1]
    _, node, inputs = plan
    params = dict(node.params)
    if node.op in ("softmax", "log_softmax"):
        params["dim"] += 1
    return graph.add_node(
        node.op, [_build(graph, p, before) for p in inputs], params, before=before
    )
