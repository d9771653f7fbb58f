"""Registry completeness: every op has a reference kernel, a shape rule and a gradient rule that
agree with each other on the op's example cases (tests/ir/op_cases.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mytorch.ops import OPS, OpDef, TensorType

from .op_cases import CASES, CASES_BY_OP, IRCase


def test_every_op_has_a_case():
    missing = sorted(set(OPS) - set(CASES_BY_OP))
    assert not missing, f"ops without an IR test case in tests/ir/op_cases.py: {missing}"


def test_every_case_names_a_registered_op():
    unknown = sorted(set(CASES_BY_OP) - set(OPS))
    assert not unknown, f"cases for ops that are not registered: {unknown}"


@pytest.mark.parametrize("name", sorted(OPS))
def test_opdef_has_callable_rules(name):
    op = OPS[name]
    assert isinstance(op, OpDef)
    assert op.name == name, f"registered as {name!r} but named {op.name!r}"
    for rule in ("impl", "shape", "vjp"):
        assert callable(getattr(op, rule)), f"op {name!r} has no callable {rule}"
    for flag in ("pure", "commutative", "differentiable"):
        assert isinstance(getattr(op, flag), bool), f"op {name!r}: flag {flag} is not a bool"


def test_random_ops_are_impure_and_the_rest_pure():
    impure = sorted(name for name, op in OPS.items() if not op.pure)
    assert impure == ["dropout_mask", "rand", "randn"]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_shape_rule_agrees_with_the_reference_kernel(case: IRCase):
    op = OPS[case.op]
    rule = op.shape(*case.inputs, **case.params)
    assert isinstance(rule, TensorType), f"{case.op}: shape rule returned {type(rule).__name__}"
    out = np.asarray(op.impl(*case.inputs, **case.params))
    assert tuple(rule.shape) == out.shape, f"{case.id}: rule {rule.shape}, kernel {out.shape}"
    assert np.dtype(rule.dtype) == out.dtype, f"{case.id}: rule {rule.dtype}, kernel {out.dtype}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_rule_returns_one_entry_per_input(case: IRCase):
    op = OPS[case.op]
    out = np.asarray(op.impl(*case.inputs, **case.params))
    g = np.random.default_rng(0).standard_normal(out.shape).astype(out.dtype)
    if out.dtype.kind != "f":
        g = np.ones(out.shape, np.float32)
    grads = op.vjp(g, out, *case.inputs, **case.params)
    assert isinstance(grads, tuple), f"{case.op}: vjp returned {type(grads).__name__}"
    assert len(grads) == len(case.inputs), (
        f"{case.op}: vjp gave {len(grads)} gradients for {len(case.inputs)} inputs"
    )
    for k, (grad, x) in enumerate(zip(grads, case.inputs, strict=True)):
        if not op.differentiable or x.dtype.kind != "f" or out.dtype.kind != "f":
            assert grad is None, f"{case.id}: input {k} cannot have a gradient, got one"
            continue
        assert grad is not None, f"{case.id}: no gradient for float input {k}"
        grad = np.asarray(grad)
        assert grad.shape == x.shape, f"{case.id}: input {k} grad {grad.shape} != {x.shape}"
        assert grad.dtype == x.dtype, f"{case.id}: input {k} grad {grad.dtype} != {x.dtype}"
        assert np.all(np.isfinite(grad)), f"{case.id}: input {k} gradient is not finite"


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.differentiable))
def test_differentiable_ops_have_a_float_case(name):
    # Otherwise the gradient-rule test above would never call this op's vjp with a gradient.
    assert any(any(a.dtype.kind == "f" for a in c.inputs) for c in CASES_BY_OP.get(name, [])), (
        f"differentiable op {name!r} has no case with a float input"
    )
