"""`roll`: the T identical steps of a traced loop become one `loop` node, before other passes.

Tracing unrolls `for t in range(T): h = step(xs[t], h)` into T copies of the step. When every
copy computes its state the same way (the same ops, params and types, reading xs[t], the previous
step's state and values shared by all steps), the copies become

    loop(xs, h0, *invariants) {one step}

so every later pass sees one step instead of T, and the graph (and compile time) stops growing
with T. Only what the state depends on goes into the body. Per-step work on the states (the
tutorial's output projection) is batched when it is stacked (`batch_steps`' rules: one product
over all the states), dropped when unused, and otherwise reads `loop[t]`. What each step computes
afresh from shared values (a `W.T` per step) is cloned into the body;
values shared by all steps are the loop's invariant inputs.

How: one pass over the graph numbers each node with the last step it depends on (the step of
xs[t] is t), which also finds the state: the one value of step t-1 that step t reads (work on
it that only step t uses, such as nn.RNN's `h @ W_hh.T`, counts as step t's). Step 1's
computation of its state is the template (step 0 may differ: with a constant h0, its `h @ W.T`
depends on no step); every other step is matched against it, op by op. It runs first, on the
traced graph; `reroll` handles the chains that the other passes make when it does not fire.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops.registry import TensorType
from .base import PassResult, register_pass, remark
from .batch_steps import batch_stack
from .rewrite import is_pure, step_index

PATTERN = "roll: a loop's identical steps"
_EPILOGUE = -1  # the step number of nodes that combine several steps (a stack of outputs, ...)
# What an input of the template (step 1's nodes) is: the step's x, the previous state, a node of
# the template (its position, an int) or a value from outside the steps (the node itself).
_X, _H = object(), object()


@register_pass("roll")
def roll(graph: Graph) -> PassResult:
    changed = False
    tried: set[Node] = set()
    while True:
        for xs, slices in _sequences(graph, tried):
            tried.add(xs)
            steps = _match(graph, xs, slices)
            if isinstance(steps, str):
                remark(PATTERN, xs, False, steps)
                continue
            remark(PATTERN, steps.carries[0], True, f"{len(steps.carries)} steps")
            _roll(graph, xs, steps)
            changed = True
            break  # the graph changed: look again (a rolled layer feeds the next one)
        else:
            return PassResult(graph, changed)


def _sequences(graph: Graph, tried: set[Node]) -> list[tuple[Node, dict[Node, int]]]:
    """Values xs read as xs[0], ..., xs[T-1] (T >= 3), with those slices: {slice: t}."""
    found: dict[Node, dict[Node, int]] = {}
    for node in graph.nodes:
        if node.op == "getitem":
            t = step_index(node)
            if t is not None and node.inputs[0] not in tried:
                found.setdefault(node.inputs[0], {})[node] = t
    out = []
    for xs, slices in found.items():
        steps = xs.shape[0] if xs.shape else 0
        if steps >= 3 and len(set(slices.values())) == steps:
            out.append((xs, slices))
    return out


class _Steps:
    """A matched loop: the template (step 1's nodes making its state) and every step's copy."""

    def __init__(self, slices, template, roles, bodies, carry_in, copies, stacks):
        self.slices: dict[Node, int] = slices  # xs[t] -> t
        self.template: list[Node] = template  # inputs first; the last one is the state
        self.roles: list[list] = roles  # per template node, what each input is (see _X, _H)
        self.bodies: list[list[Node]] = bodies  # per step, its nodes in template order
        self.carries = [body[-1] for body in bodies]  # the state each step makes
        self.carry_in: Node = carry_in  # h0, the state step 0 reads
        self.copies: set[Node] = copies  # invariants each step computes afresh (cloned)
        self.stacks: list[Node] = stacks  # stacks of a value from every step


def _match(graph: Graph, xs: Node, slices: dict[Node, int]) -> _Steps | str:
    """The steps reading xs[t], if each computes its state as step 1 does, else why not."""
    count = xs.shape[0]
    found = _number_steps(graph, slices, count)
    if isinstance(found, str):
        return found
    step, states, stacks = found
    template = _template(step, slices, states)
    if isinstance(template, str):
        return template
    nodes, roles = template
    copies: set[Node] = set()
    matcher = _Matcher(nodes, roles, slices, states, _SameInvariant(copies))
    bodies = []
    for t in range(count):
        if t == 1:
            body = nodes
        elif t < count - 1:
            body = matcher.backward(t, states[t + 1])
        else:
            body = matcher.forward(t)
        if isinstance(body, str):
            return body
        bodies.append(body)
    h0, h1 = matcher.carry_in.type, nodes[-1].type
    if h0 != h1:
        return f"the state changes type: h0 is {h0}, a step makes {h1}"
    reason = _contained(graph, bodies)
    if reason:
        return reason
    return _Steps(slices, nodes, roles, bodies, matcher.carry_in, copies, stacks)


def _number_steps(graph: Graph, slices: dict[Node, int], count: int):
    """({node: the last step it depends on}, [per step t, the value of step t-1 it reads],
    [the stacks of a value from every step]).

    This runs over every node of a long traced graph, so it keeps to dict lookups per input.
    """
    step: dict[Node, int] = dict(slices)  # (the slices leave it at the end: one lookup here)
    states: list[Node | None] = [None] * count
    stacks: list[Node] = []  # stacks of a value from every step (candidates to batch)
    for node in graph.nodes:
        if node in step:  # a slice (no other node is numbered before it is reached)
            continue
        lo = hi = None
        for i in node.inputs:
            s = step.get(i)
            if s is None:
                continue
            if s == _EPILOGUE:
                lo, hi = 0, count
                break
            if hi is None:
                lo = hi = s
            elif s > hi:
                hi = s
            elif s < lo:
                lo = s
        if hi is None:
            continue
        if hi - lo > 1:
            step[node] = _EPILOGUE
            if node.op == "stack" and len(node.inputs) == count:
                stacks.append(node)
            continue
        step[node] = hi
        if lo < hi:  # it reads step hi - 1: that value is the state between the two steps
            for i in node.inputs:
                if step.get(i) == lo and i not in slices:
                    if states[hi] is None:
                        states[hi] = i
                    elif states[hi] is not i:
                        return "more than one value flows from a step to the next"
    for node in slices:
        del step[node]
    if states[1] is None or states[2] is None:
        return "the steps are independent: no state flows from one to the next"
    _sink(graph, step, slices, states)
    return step, states, stacks


def _sink(graph: Graph, step: dict[Node, int], slices: dict[Node, int], states: list) -> None:
    """Move what combines a state with shared values and only the next step uses into that
    step: nn.RNN's step t reads `h @ W_hh.T`, made from step t-1's h; the state is h."""
    outputs = set(graph.outputs)
    for t in range(1, len(states)):
        state = states[t]
        while state is not None and is_pure(state) and state not in outputs:
            deps = [i for i in state.inputs if i in step or i in slices]
            if (
                len(deps) != 1
                or len(state.inputs) == 1
                or step.get(deps[0]) != t - 1
                or any(step.get(u) != t for u in state.users)
            ):
                break
            step[state] = t
            state = deps[0]
        states[t] = state


def _template(step: dict[Node, int], slices: dict[Node, int], states: list):
    """Step 1's nodes that its state depends on, inputs first, and what each of their inputs is."""
    carry, previous = states[2], states[1]
    order, seen, pending = [], {carry}, [(carry, False)]
    while pending:  # depth first, inputs before users, without recursion
        node, done = pending.pop()
        if done:
            order.append(node)
            continue
        pending.append((node, True))
        for i in reversed(node.inputs):  # so that the first input comes first
            if step.get(i) == 1 and i not in seen:
                seen.add(i)
                pending.append((i, False))
    position = {n: j for j, n in enumerate(order)}
    roles = []
    for node in order:
        if not is_pure(node):
            return f"%{node.name} ({node.op}) is random: each step must draw afresh"
        kinds = []
        for i in node.inputs:
            if slices.get(i) == 1:
                kinds.append(_X)
            elif i is previous:
                kinds.append(_H)
            elif i in position:
                kinds.append(position[i])
            elif i not in step and i not in slices:
                kinds.append(i)
            else:
                return f"step 1 reads %{i.name} of another step"
        roles.append(kinds)
    if not any(k is _H for kinds in roles for k in kinds):
        return "the state does not flow through the steps' computation of it"
    return order, roles


class _Matcher:
    """Finds step t's copy of the template, op by op; `carry_in` is what step 0 reads as h."""

    def __init__(self, template, roles, slices, states, same):
        self.template, self.roles, self.slices = template, roles, slices
        self.states, self.same = states, same
        self.carry_in: Node | None = None

    def _input_ok(self, t: int, role, value: Node, body: list) -> bool:
        if role is _X:
            return self.slices.get(value) == t
        if role is _H:
            if t > 0:
                return value is self.states[t]
            if self.carry_in is None and value not in self.slices:
                self.carry_in = value
            return value is self.carry_in
        if role.__class__ is int:
            return body[role] is value
        return role is value or self.same(role, value)

    def _node_ok(self, a: Node, b: Node) -> bool:
        return (
            a.op == b.op
            and (a.type is b.type or a.type == b.type)
            and len(a.inputs) == len(b.inputs)
            and (a.params is b.params or a.params == b.params)
        )

    def backward(self, t: int, carry: Node) -> list[Node] | str:
        """Step t's copy, found from its state (the value step t+1 reads) back to its inputs.

        This runs for every step of a long loop: the common cases are inline."""
        template, all_roles, slices = self.template, self.roles, self.slices
        state = self.states[t]  # the state step t reads
        body: list = [None] * len(template)
        body[-1] = carry
        taken = {carry}
        for j in range(len(template) - 1, -1, -1):  # users before inputs
            a, b = template[j], body[j]
            if (
                b is None
                or a.op != b.op
                or (a.type is not b.type and a.type != b.type)
                or len(a.inputs) != len(b.inputs)
                or (a.params is not b.params and a.params != b.params)
            ):  # (_node_ok, inline)
                return f"step {t} computes its state differently from step 1 (at %{a.name})"
            for role, value in zip(all_roles[j], b.inputs, strict=True):
                if role is value:  # a value every step reads
                    continue
                if role.__class__ is int:
                    known = body[role]
                    if known is value:
                        continue
                    if known is None and value not in taken:
                        body[role] = value
                        taken.add(value)
                        continue
                elif role is _X:
                    if slices.get(value) == t:
                        continue
                elif role is _H and t:
                    if value is state:
                        continue
                elif self._input_ok(t, role, value, body):
                    continue
                return f"step {t} reads another value than step 1 at %{b.name}"
        return body

    def forward(self, t: int) -> list[Node] | str:
        """Step t's copy, found from its inputs: each node among the users of one of its inputs."""
        body: list[Node] = []
        for a, roles in zip(self.template, self.roles, strict=True):
            role = next(r for r in roles if r is _X or r is _H or r.__class__ is int)
            if role is _X:
                sources = [s for s, k in self.slices.items() if k == t]
            else:
                sources = [self.states[t] if role is _H else body[role]]
            match = next(
                (
                    b
                    for source in sources
                    for b in source.users
                    if self._node_ok(a, b)
                    and b not in body
                    and all(
                        self._input_ok(t, r, v, body) for r, v in zip(roles, b.inputs, strict=True)
                    )
                ),
                None,
            )
            if match is None:
                return f"step {t} computes its state differently from step 1 (at %{a.name})"
            body.append(match)
        return body


def _contained(graph: Graph, bodies: list[list[Node]]) -> str | None:
    """Why the steps cannot become a loop body: a value other than a state is used elsewhere."""
    outputs = set(graph.outputs)
    for body in bodies:
        inside = set(body)
        for node in body[:-1]:
            if node in outputs or not inside.issuperset(node.users):
                return f"%{node.name}, made inside a step, is used outside the loop's state"
    return None


class _SameInvariant:
    """Whether two step-invariant values are equal: the same node, or equal computations of
    equal values (a `W.T` or a constant each step makes afresh). Marks those in `copies`."""

    def __init__(self, copies: set[Node]):
        self.copies = copies
        self.known: set[tuple[Node, Node]] = set()

    def __call__(self, a: Node, b: Node) -> bool:
        if (  # the common case first: the same op on the very same inputs
            a.op == b.op
            and a.params is b.params
            and a.type == b.type
            and a.inputs == b.inputs
            and not a.is_input
            and not a.is_const
            and is_pure(a)
        ):
            self.copies.add(a)
            return True
        pending = [(a, b)]
        while pending:
            a, b = pending.pop()
            if a is b or (a, b) in self.known:
                continue
            if (
                a.op != b.op
                or a.type != b.type
                or a.is_input
                or not is_pure(a)
                or len(a.inputs) != len(b.inputs)
                or (a.params is not b.params and a.params != b.params)
            ):
                return False
            if a.is_const and not np.array_equal(a.value, b.value):
                return False
            self.known.add((a, b))
            self.copies.add(a)
            pending.extend(zip(a.inputs, b.inputs, strict=True))
        return True


def _roll(graph: Graph, xs: Node, steps: _Steps) -> None:
    body, invariants = _make_body(steps)
    first = steps.carries[0]
    loop = graph.add_node("loop", [xs, steps.carry_in, *invariants], {"body": body}, before=first)
    dead = {node for body in steps.bodies for node in body}
    # Stacks of every step's work on its state become that work on all the states at once (a
    # stack of the states themselves is the loop), before anything reads loop[t].
    states = {carry: (loop, t) for t, carry in enumerate(steps.carries)}
    for stack in steps.stacks:
        if stack.params["dim"] == 0 and stack.graph is graph:
            batched = batch_stack(graph, stack, states)
            if batched is not None:
                graph.replace_all_uses(stack, batched)
                dead.add(stack)
    outputs = set(graph.outputs)
    _sweep(graph, steps.carries, dead, outputs)
    # Whatever else reads a step's state reads loop[t].
    for t, carry in enumerate(steps.carries):
        outside = [u for u in carry.users if u not in dead]
        if not outside and carry not in outputs:
            continue
        state = graph.add_node("getitem", [loop], {"index": (t,)}, before=carry)
        for user in outside:
            user.inputs = tuple(state if i is carry else i for i in user.inputs)
            state.users.append(user)
        carry.users = [u for u in carry.users if u in dead]
        if carry in outputs:
            graph.outputs = [state if o is carry else o for o in graph.outputs]
    graph.remove_nodes(dead)


def _sweep(graph: Graph, carries: list[Node], dead: set[Node], outputs: set[Node]) -> None:
    """Add to `dead` the pure values that only dead values use: the per-step work on the states
    that nothing uses (in a loop that returns only its last output, every earlier step's output
    projection), the xs[t] and the `W.T` the steps read, and what only those read.

    One pass over the graph, users before inputs, so each value's users are decided before it:
    a value dies when it has users and all are dead, or has none and is work on a state."""
    on_states = set()  # what reads a state, directly or not (work with no users dies with them)
    pending = [u for carry in carries for u in carry.users if u not in dead]
    while pending:
        node = pending.pop()
        if node not in on_states and node not in dead:
            on_states.add(node)
            pending.extend(node.users)
    nodes = graph.nodes
    for k in range(len(nodes) - 1, -1, -1):
        node = nodes[k]
        if node in dead:
            continue
        users = node.users
        if (
            (users or node in on_states)
            and node.graph is graph
            and dead.issuperset(users)
            and node not in outputs
            and is_pure(node)
        ):
            dead.add(node)


def _make_body(steps: _Steps) -> tuple[Graph, list[Node]]:
    """The one-step graph (x, h, *invariants) -> h', and the outer values of its invariants."""
    body = Graph("body")
    x_type = next(iter(steps.slices)).type
    x = body.add_input("x", TensorType(x_type.shape, x_type.dtype))
    h = body.add_input("h", steps.carry_in.type)
    invariants: list[Node] = []
    made: dict[Node, Node] = {}  # outer invariant -> its value in the body

    def invariant(outer: Node) -> Node:
        """The body's value of a value from outside the steps (an input, or a clone)."""
        order, pending = [], [(outer, False)]
        while pending:  # the per-step computation's nodes, inputs first (no recursion)
            node, ready = pending.pop()
            if node in made:
                continue
            if ready or node not in steps.copies or node.is_const:
                order.append(node)
                made[node] = None  # a placeholder, set below in order
                continue
            pending.append((node, True))
            pending.extend((i, False) for i in node.inputs if i not in made)
        for node in order:
            if node not in steps.copies:  # shared by every step: an invariant input
                made[node] = body.add_input(node.name, node.type, rename=True)
                invariants.append(node)
            elif node.is_const:
                made[node] = body.add_const(node.value)
            else:
                made[node] = _clone(body, node, [made[i] for i in node.inputs])
        return made[outer]

    values: list[Node] = []
    for node, roles in zip(steps.template, steps.roles, strict=True):
        inputs = [
            x if r is _X else h if r is _H else values[r] if r.__class__ is int else invariant(r)
            for r in roles
        ]
        values.append(_clone(body, node, inputs))
    body.set_outputs([values[-1]])
    return body, invariants


def _clone(graph: Graph, node: Node, inputs: list[Node]) -> Node:
    copy = graph.add_node(node.op, inputs, node.params, type=node.type)
    copy.loc = node.loc
    return copy
