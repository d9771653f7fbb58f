"""The pass infrastructure: registry, pipelines, the PassManager, and `compile(passes=...)`."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch.ir import Graph, VerifyError, parse
from mytorch.ops import TensorType
from mytorch.passes import PIPELINES, PassManager, PassResult, add_pass, register_pass
from mytorch.passes.base import PASSES, resolve_pipeline

from .helpers import dedent

# DESIGN.md's passes, in its order; the default pipeline may add passes between them.
DESIGN_ORDER = [
    "simplify",
    "const_fold",
    "cse",
    "split_concat",
    "fuse_rnn_cell",
    "hoist_input_projection",
    "reroll",
    "dce",
]

# Work for several passes: an identity (simplify), a duplicate (cse) and dead code (dce).
GRAPH = """
graph(%x: f32[2,3]) {
  %c0 = const() {fill=1.0} : f32[]
  %mul0 = mul(%x, %c0) : f32[2,3]
  %tanh0 = tanh(%mul0) : f32[2,3]
  %tanh1 = tanh(%x) : f32[2,3]
  %exp0 = exp(%x) : f32[2,3]
  %add0 = add(%tanh0, %tanh1) : f32[2,3]
  return (%add0)
}
"""


def graph() -> Graph:
    return parse(dedent(GRAPH))


@pytest.fixture
def scratch_passes():
    """Names registered during a test are removed afterwards."""
    before = set(PASSES)
    yield
    for name in set(PASSES) - before:
        del PASSES[name]


# ---- registry and pipelines -----------------------------------------------------------------


def test_the_default_pipeline_runs_the_designed_passes_in_order_and_none_is_empty():
    default = PIPELINES["default"]
    assert [name for name in default if name in DESIGN_ORDER] == DESIGN_ORDER
    assert default[0] == "roll" and default[-1] == "dce"
    assert [name for name, _ in resolve_pipeline("default")] == default
    assert all(callable(PASSES[name]) for name in default)
    assert PIPELINES["none"] == []
    assert resolve_pipeline("none") == []


def test_a_list_mixes_registered_names_and_pass_objects():
    def my_pass(g):
        return g

    resolved = resolve_pipeline(["cse", my_pass, "dce"])
    assert [name for name, _ in resolved] == ["cse", "my_pass", "dce"]
    assert resolved[0][1] is PASSES["cse"] and resolved[1][1] is my_pass


def test_unknown_names_are_a_clear_value_error_listing_what_exists():
    with pytest.raises(ValueError, match="unknown pipeline 'fastest'") as info:
        resolve_pipeline("fastest")
    assert "default" in str(info.value) and "none" in str(info.value)
    with pytest.raises(ValueError, match="unknown pass 'no_such_pass'") as info:
        resolve_pipeline(["cse", "no_such_pass"])
    assert all(name in str(info.value) for name in DESIGN_ORDER)


def test_registering_a_duplicate_name_is_an_error(scratch_passes):
    with pytest.raises(ValueError, match="'dce' is already registered"):
        add_pass("dce", lambda g: g)
    with pytest.raises(ValueError, match="'cse' is already registered"):

        @register_pass("cse")
        def my_cse(g):
            return g

    @register_pass("my_identity")
    def my_identity(g):
        return g

    assert PASSES["my_identity"] is my_identity
    with pytest.raises(ValueError, match="already registered"):
        register_pass("my_identity")(lambda g: g)
    assert PASSES["my_identity"] is my_identity


def test_a_pass_must_be_callable(scratch_passes):
    with pytest.raises(TypeError, match="callable"):
        add_pass("not_a_pass", 42)
    assert "not_a_pass" not in PASSES
    with pytest.raises(TypeError, match="42"):
        resolve_pipeline(["cse", 42])


# ---- the PassManager -------------------------------------------------------------------------


def test_records_name_node_counts_changed_and_time_for_every_pass():
    manager = PassManager(resolve_pipeline(["simplify", "cse", "reroll", "dce"]))
    result = manager.run(graph())
    assert [r.name for r in manager.records] == ["simplify", "cse", "reroll", "dce"]
    counts = [(r.nodes_before, r.nodes_after, r.changed) for r in manager.records]
    # simplify drops mul0 and c0; cse merges tanh1 into tanh0; reroll finds nothing; dce: exp0.
    assert counts == [(6, 4, True), (4, 3, True), (3, 3, False), (3, 2, True)]
    assert all(r.seconds >= 0 for r in manager.records)
    assert str(result) == dedent(
        """
        graph(%x: f32[2,3]) {
          %tanh0 = tanh(%x) : f32[2,3]
          %add0 = add(%tanh0, %tanh0) : f32[2,3]
          return (%add0)
        }
        """
    )


def test_instruments_see_the_graph_after_every_pass():
    seen = []

    class Recorder:
        def after_pass(self, name, g):
            seen.append((name, len(g)))

    PassManager(resolve_pipeline("default"), [Recorder()]).run(graph())
    assert [name for name, _ in seen] == PIPELINES["default"]
    assert seen[-1] == ("dce", 2)


def corrupt_type(g: Graph) -> PassResult:
    """A broken pass: it records a wrong type on the first node."""
    g.nodes[0].type = TensorType((7, 7), np.dtype(np.float32))
    return PassResult(g, True)


def test_a_pass_that_breaks_the_graph_is_caught_by_the_verifier_and_named():
    manager = PassManager([*resolve_pipeline(["simplify", "cse"]), ("corrupt_type", corrupt_type)])
    with pytest.raises(RuntimeError) as info:
        manager.run(graph())
    assert str(info.value).startswith(
        "pass 'corrupt_type' failed after passes ['simplify', 'cse']: "
    )
    assert isinstance(info.value.__cause__, VerifyError)
    assert "f32[7,7]" in str(info.value)
    assert [r.name for r in manager.records] == ["simplify", "cse"]



def broken() -> Graph:
    g = graph()
    g.nodes[1].type = TensorType((7, 7), np.dtype(np.float32))  # %mul0's recorded type is wrong
    return g


def look(g: Graph) -> PassResult:
    return PassResult(g, False)


@pytest.mark.parametrize("passes", [[], [look], ["dce"], [look, "dce"]])
def test_an_unverified_input_is_verified_after_the_first_pass_changed_or_not(passes):
    """A fresh trace goes in unverified (run(verified=False)): what the first pass returns is
    verified even when that pass changed nothing, and with no passes the graph itself is."""
    with pytest.raises((RuntimeError, VerifyError)) as info:
        PassManager(resolve_pipeline(passes)).run(broken(), verified=False)
    error = info.value if isinstance(info.value, VerifyError) else info.value.__cause__
    assert isinstance(error, VerifyError)
    assert "f32[7,7]" in str(error)
    PassManager([("look", look)]).run(broken())  # verified=True: trusted as given

def test_a_pass_that_raises_is_wrapped_with_the_passes_before_it():
    def explode(g):
        raise KeyError("boom")

    manager = PassManager(
        [*resolve_pipeline(["cse"]), ("explode", explode), ("dce", PASSES["dce"])]
    )
    with pytest.raises(RuntimeError, match=r"pass 'explode' failed after passes \['cse'\]") as info:
        manager.run(graph())
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("returned", [None, 3, "graph"])
def test_a_pass_must_return_a_graph_or_a_pass_result(returned):
    manager = PassManager([("sloppy", lambda g: returned)])
    with pytest.raises(RuntimeError, match="pass 'sloppy' failed after passes \\[\\]") as info:
        manager.run(graph())
    assert isinstance(info.value.__cause__, TypeError)
    assert "Graph or a PassResult" in str(info.value)


def test_a_plain_function_returning_the_graph_is_a_pass():
    def drop_exp(g: Graph) -> Graph:
        for n in list(g.nodes):
            if n.op == "exp" and not n.users:
                g.remove_node(n)
        return g

    def look(g: Graph) -> Graph:
        return g

    manager = PassManager([("drop_exp", drop_exp), ("look", look)])
    result = manager.run(graph())
    assert "exp" not in result.op_counts()
    assert [(r.name, r.changed) for r in manager.records] == [("drop_exp", True), ("look", False)]


def test_a_plain_function_that_changes_params_in_place_is_recorded_as_changed():
    from mytorch.ir.graph import freeze_params

    def keep_dims(g: Graph) -> Graph:
        for n in g.nodes:
            if n.op == "sum":
                n.params = freeze_params({**n.params, "keepdim": True})
                n.type = TensorType((1, 1), n.type.dtype)
        return g

    g = parse(
        "graph(%x: f32[2,3]) {\n  %sum0 = sum(%x) {dim=None, keepdim=False} : f32[]\n"
        "  return (%sum0)\n}"
    )
    before = str(g)
    manager = PassManager([("keep_dims", keep_dims)])
    assert str(manager.run(g)) != before
    assert manager.records[0].changed


def test_an_object_with_a_name_and_call_is_a_pass_named_by_its_name():
    class CountOps:
        name = "count_ops"

        def __init__(self):
            self.counts = []

        def __call__(self, g):
            self.counts.append(len(g))
            return PassResult(g, False)

    counter = CountOps()
    resolved = resolve_pipeline(["simplify", "cse", counter])
    assert resolved[2] == ("count_ops", counter)
    manager = PassManager(resolved)
    manager.run(graph())
    assert counter.counts == [3]  # what simplify and cse left
    assert [r.name for r in manager.records] == ["simplify", "cse", "count_ops"]


def test_the_none_pipeline_leaves_the_graph_as_traced():
    g = graph()
    before = str(g)
    manager = PassManager(resolve_pipeline("none"))
    assert str(manager.run(g)) == before
    assert manager.records == []


# ---- compile(passes=...) ---------------------------------------------------------------------


def f(x):
    y = mytorch.tanh(x * 1.0) + mytorch.tanh(x)
    unused = mytorch.exp(x)  # noqa: F841  (dead code for dce)
    return y


def compiled_graph(passes):
    x = mytorch.randn(2, 3)
    fn = mytorch.compile(f, backend="numpy", passes=passes)
    out = fn(x)
    np.testing.assert_allclose(out.numpy(), f(x).numpy(), rtol=1e-5, atol=1e-6)
    return fn.graph


def test_compile_takes_a_pipeline_name():
    traced = mytorch.trace(f, mytorch.randn(2, 3))
    assert str(compiled_graph("none")) == str(traced)
    optimized = compiled_graph("default")
    assert optimized.op_counts() == {"tanh": 1, "add": 1}


def test_compile_takes_a_list_of_names():
    g = compiled_graph(["dce"])
    assert "exp" not in g.op_counts()
    assert g.op_counts()["tanh"] == 2  # no cse asked for


def test_compile_takes_pass_objects_and_functions(scratch_passes):
    calls = []

    class Spy:
        name = "spy"

        def __call__(self, g):
            calls.append(str(g))
            return g

    def only_tanh_count(g):
        calls.append(g.op_counts().get("tanh", 0))
        return PassResult(g, False)

    compiled_graph(["simplify", "cse", Spy(), only_tanh_count, "dce"])
    assert len(calls) == 2 and calls[1] == 1


def test_compile_with_an_unknown_pass_is_a_value_error():
    with pytest.raises(ValueError, match="unknown pass 'no_such_pass'"):
        compiled_graph(["cse", "no_such_pass"])
    with pytest.raises(ValueError, match="unknown pipeline 'fastest'"):
        compiled_graph("fastest")
