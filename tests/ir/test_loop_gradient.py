"""The loop op's gradient rule (backpropagation through time) on loops written as text: against
finite differences for bodies of every shape the rule meets, and the shape of the backward graph
it derives (the reverse loop carries and stacks the pre-activation's cotangent)."""

from __future__ import annotations

import numpy as np
import pytest

from mytorch.ir import parse
from mytorch.ir.autodiff import clone, derive_backward, optimized_backward
from mytorch.ir.interpreter import run
from mytorch.ir.verify import verify
from mytorch.passes import PIPELINES, PassManager, resolve_pipeline
from tests.graphs import random_inputs

RNN_STEP = """
graph(%xs: f64[T,2,3], %h0: f64[2,3], %w: f64[3,3]) {
  %loop0 = loop(%xs, %h0, %w) : f64[T,2,3] graph(%x: f64[2,3], %h: f64[2,3], %w_hh: f64[3,3]) {
    %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='NL'} : f64[2,3]
    return (%rnn_step0)
  }
  return (%loop0)
}
"""

# The state's cotangent reads the step's input: the reverse loop carries it as it is.
STATE_TIMES_INPUT = """
graph(%xs: f64[T,2,3], %h0: f64[2,3]) {
  %loop0 = loop(%xs, %h0) : f64[T,2,3] graph(%x: f64[2,3], %h: f64[2,3]) {
    %mul0 = mul(%x, %h) : f64[2,3]
    %tanh0 = tanh(%mul0) : f64[2,3]
    return (%tanh0)
  }
  return (%loop0)
}
"""

# The input's gradient reads the output's cotangent, before the carried pre-activation's: it is
# rebuilt outside the loop from what every next step sends back.
STEP_TIMES_INPUT = """
graph(%xs: f64[T,2,3], %h0: f64[2,3], %w: f64[3,3]) {
  %loop0 = loop(%xs, %h0, %w) : f64[T,2,3] graph(%x: f64[2,3], %h: f64[2,3], %w_hh: f64[3,3]) {
    %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f64[2,3]
    %mul0 = mul(%rnn_step0, %x) : f64[2,3]
    return (%mul0)
  }
  return (%loop0)
}
"""

# Row-wise ops after the cell: the carried value is the cell's pre-activation cotangent.
CELL_THEN_GATE = """
graph(%xs: f64[T,2,4], %h0: f64[2,3], %w_ih: f64[3,4], %w_hh: f64[3,3], %b: f64[3]) {
  %loop0 = loop(%xs, %h0, %w_ih, %w_hh, %b) : f64[T,2,3] graph(BODY_INPUTS) {
    %rnn_cell0 = rnn_cell(%x, %h, %wi, %wh, %bb) {nonlinearity='tanh'} : f64[2,3]
    %sigmoid0 = sigmoid(%rnn_cell0) : f64[2,3]
    %mul0 = mul(%sigmoid0, %h) : f64[2,3]
    %add0 = add(%mul0, %rnn_cell0) : f64[2,3]
    return (%add0)
  }
  return (%loop0)
}
"""

PROGRAMS = {
    "rnn-step-tanh": RNN_STEP.replace("NL", "tanh"),
    "rnn-step-relu": RNN_STEP.replace("NL", "relu"),
    "state-times-input": STATE_TIMES_INPUT,
    "step-times-input": STEP_TIMES_INPUT,
    "cell-then-gate": CELL_THEN_GATE.replace(
        "BODY_INPUTS", "%x: f64[2,4], %h: f64[2,3], %wi: f64[3,4], %wh: f64[3,3], %bb: f64[3]"
    ),
}


def forward_graph(name: str, steps: int):
    return verify(parse(PROGRAMS[name].replace("T,", f"{steps},").strip()))


def backward_values(graph, inputs, cotangent):
    """Every input's gradient, from the derived backward graph run by the interpreter."""
    backward = derive_backward(graph, range(len(graph.inputs)))
    saving, mapping = clone(graph)
    saving.set_outputs([mapping[n] for n in backward.saved])
    saved = iter(run(saving, inputs))
    feeds = [cotangent if kind == "cotangent" else next(saved) for kind, _ in backward.sources]
    grads = dict(zip(backward.gradients, run(backward.graph, feeds), strict=True))
    return [grads.get(k) for k in range(len(inputs))]


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_loop_gradients_match_finite_differences(name, steps):
    graph = forward_graph(name, steps)
    inputs = [a * 0.5 for a in random_inputs(graph, seed=steps)]
    cotangent = np.random.default_rng(7).standard_normal(graph.outputs[0].shape)
    grads = backward_values(graph, inputs, cotangent)

    def loss(args):
        return float((run(graph, args)[0] * cotangent).sum())

    eps = 1e-6
    for k, x in enumerate(inputs):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            up = [a.copy() for a in inputs]
            down = [a.copy() for a in inputs]
            up[k][idx] += eps
            down[k][idx] -= eps
            numeric[idx] = (loss(up) - loss(down)) / (2 * eps)
        assert grads[k] is not None, f"no gradient for input {k}"
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-5, atol=1e-7, err_msg=f"input {k}")


def optimized(name: str, steps: int):
    graph = forward_graph(name, steps)
    # (without `peel`: these tests show the gradient rule's reverse loop as it makes it)
    manager = PassManager(resolve_pipeline([p for p in PIPELINES["default"] if p != "peel"]))
    return optimized_backward(graph, range(len(graph.inputs)), lambda g: manager.run(verify(g)))


def test_the_reverse_loop_carries_and_stacks_the_pre_activation_cotangent():
    backward = optimized("rnn-step-tanh", 5)
    assert str(backward.graph) == "\n".join(
        [
            "graph(%grad_loop0: f64[5,2,3], %loop0: f64[5,2,3], %w: f64[3,3], %h0: f64[2,3]) {",
            "  %c0 = const() {fill=0.0} : f64[2,3]",
            # d[t] = (g[t] + d[t+1] @ w) * (1 - h[t]^2): one product and one pass per step
            "  %loop1 = loop(%loop0, %grad_loop0, %c0, %w) {reverse=True, sequences=2} : "
            "f64[5,2,3] graph(%h: f64[2,3], %g: f64[2,3], %carry: f64[2,3], %w_hh: f64[3,3]) {",
            "    %matmul0 = matmul(%carry, %w_hh) : f64[2,3]",
            "    %add0 = add(%g, %matmul0) : f64[2,3]",
            "    %mul0 = mul(%h, %h) : f64[2,3]",
            "    %c0 = const() {fill=1.0} : f64[]",
            "    %sub0 = sub(%c0, %mul0) : f64[2,3]",
            "    %mul1 = mul(%add0, %sub0) : f64[2,3]",
            "    return (%mul1)",
            "  }",
            # the weight's gradient: one product over every step's d, in the layout of w
            "  %reshape0 = reshape(%loop1) {shape=(10, 3)} : f64[10,3]",
            "  %transpose0 = transpose(%reshape0) {d0=0, d1=1} : f64[3,10]",
            "  %reshape2 = reshape(%h0) {shape=(1, 2, 3)} : f64[1,2,3]",
            "  %getitem0 = getitem(%loop0) {index=[:4]} : f64[4,2,3]",
            "  %cat0 = cat(%reshape2, %getitem0) {dim=0} : f64[5,2,3]",
            "  %reshape3 = reshape(%cat0) {shape=(10, 3)} : f64[10,3]",
            "  %matmul0 = matmul(%transpose0, %reshape3) : f64[3,3]",
            # h0's: what the first step sends back
            "  %getitem1 = getitem(%loop1) {index=[0]} : f64[2,3]",
            "  %matmul1 = matmul(%getitem1, %w) : f64[2,3]",
            # xs's (the projected inputs'): d itself
            "  return (%loop1, %matmul1, %matmul0)",
            "}",
        ]
    )
