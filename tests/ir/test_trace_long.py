"""Long unrolled loops: tracing the tutorial RNN over many steps stays linear and never recurses
per step (run under a small recursion limit)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

import mytorch
from mytorch.ir import verify
from mytorch.ir.interpreter import run

from .programs import sequence_inputs, tutorial_rnn, unrolled

NODES_PER_STEP = 7  # getitem, cat, 2 x (matmul, add), tanh
ONCE = 2  # the two weights' transposes: ops on parameters only are recorded once


@contextmanager
def recursion_limit(depth_above_here: int):
    """Allow only `depth_above_here` more frames than the caller already uses."""
    depth = len(_stack())
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + depth_above_here)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _stack():
    frames, frame = [], sys._getframe()
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def check_long_trace(steps: int, budget_seconds: float) -> None:
    rnn = tutorial_rnn()
    xs, h0 = sequence_inputs(steps)
    start = time.perf_counter()
    with recursion_limit(150):
        graph = mytorch.trace(unrolled(rnn, steps), xs, h0)
        verify(graph)
        text = str(graph)
        outputs = run(graph, [xs.data, h0.data] + [p.data for p in rnn.parameters()])
        graph.to_networkx()
    elapsed = time.perf_counter() - start
    assert len(graph) == NODES_PER_STEP * steps + ONCE
    assert graph.op_counts()["tanh"] == steps
    assert len(text.splitlines()) == len(graph) + 3  # header, return, }
    expected = unrolled(rnn, steps)(xs, h0)
    for actual, e in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(actual, e.data, rtol=1e-5, atol=1e-6)
    # Generous: this guards against quadratic blow-ups, not against a slow machine.
    assert elapsed < budget_seconds, f"{steps} steps took {elapsed:.1f} s"


def test_trace_500_steps():
    check_long_trace(500, budget_seconds=20)


@pytest.mark.slow
def test_trace_5000_steps():
    check_long_trace(5000, budget_seconds=60)
