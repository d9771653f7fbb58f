"""Hypothesis-generated graphs (`tests.graphs.random_graphs`) run through the llvm backend and the
numpy interpreter: the same output shapes, dtypes and values (rtol 1e-4, atol 1e-5), NaN and
inf included; also in float64, and after the default pass pipeline.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from mytorch.codegen import BACKENDS
from mytorch.ir import Graph, parse, verify
from mytorch.passes import PassManager, resolve_pipeline
from tests.graphs import graphs_with_inputs, random_graphs, random_inputs

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)


def run_both(graph: Graph, arrays, assert_same) -> None:
    note(f"graph:\n{graph}")
    with np.errstate(all="ignore"):
        expected = BACKENDS["numpy"](graph)([a.copy() for a in arrays])
    actual = BACKENDS["llvm"](graph)(arrays)
    assert len(actual) == len(expected) == len(graph.outputs)
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == tuple(graph.outputs[k].type.shape), "output shape is not the graph's"
        assert_same(a, np.asarray(e), what=f"output {k}")


def with_specials(arrays, seed: int) -> list[np.ndarray]:
    """Copies with NaN, +inf and -inf written at a few random places."""
    rng = np.random.default_rng(seed)
    out = []
    for a in arrays:
        a = a.copy()
        flat = a.reshape(-1)
        if flat.size and a.dtype.kind == "f":
            for pos in rng.choice(flat.size, size=min(flat.size, 2), replace=False):
                flat[pos] = rng.choice([np.nan, np.inf, -np.inf])
        out.append(a)
    return out


def as_float64(graph: Graph) -> Graph:
    """The same graph with every f32 value made f64 (through the text form)."""
    converted = parse(str(graph).replace("f32", "f64"))
    verify(converted)
    return converted


@SETTINGS
@given(case=graphs_with_inputs())
def test_random_graphs_float32(case, assert_same):
    graph, arrays = case
    run_both(graph, arrays, assert_same)


@SETTINGS
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_float64(graph, seed, assert_same):
    graph = as_float64(graph)
    arrays = random_inputs(graph, seed)
    assert all(a.dtype == np.float64 for a in arrays)
    run_both(graph, arrays, assert_same)


@SETTINGS
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_with_nan_and_inf_inputs(graph, seed, assert_same):
    run_both(graph, with_specials(random_inputs(graph, seed), seed), assert_same)


@SETTINGS
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_after_the_default_pipeline(graph, seed, assert_same):
    arrays = random_inputs(graph, seed)
    optimized = PassManager(resolve_pipeline("default")).run(parse(str(graph)))
    run_both(optimized, arrays, assert_same)


def test_the_float64_conversion_really_changes_dtypes():
    graph = parse(
        "graph(%x: f32[3], %w: f32[3] param) {\n"
        "  %c0 = const() {fill=2.0} : f32[]\n"
        "  %mul0 = mul(%x, %c0) : f32[3]\n"
        "  %add0 = add(%mul0, %w) : f32[3]\n"
        "  return (%add0)\n"
        "}"
    )
    converted = as_float64(graph)
    assert [n.type.dtype for n in converted.inputs + converted.nodes] == [np.float64] * 5
