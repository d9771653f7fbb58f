"""The axpy kernel's remainders: rows that are no multiple of the row tile (whole tiles, tiles of
mr - 1, a last tile moved back over rows already done), row blocks and k blocks of two lengths
sharing one copy of the tile code, weight gradients whose k blocks are counted at run time. Against
the numpy interpreter and eager mode; and a product's code does not grow with its rows' remainder.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.codegen import gemm
from tests.codegen.test_llvm_kernels import check_against_references, rnn_case, use_isa
from tests.codegen.test_llvm_kernels import (
    test_products_ending_in_elementwise_ops_match_references as epilogue_case,
)
from tests.codegen.test_llvm_kernels import (
    test_products_of_a_transposed_a_on_copies_match_references as packed_case,
)
from tests.codegen.test_llvm_shared import run_both, sequence_loss
from tests.ir.programs import RNN

F32 = np.float32
MR = 6  # the row tile of a 4-vector panel on AVX-512 (8 lanes: 3; 4 lanes: 6)


def moved_back(monkeypatch) -> list[int]:
    """The row counts whose last tile `gemm._row_tile_runs` moves back, as kernels are made."""
    moved, original = [], gemm._overlaps

    def overlaps(total, mr):
        answer = original(total, mr)
        if answer and total % mr:
            moved.append(total)
        return answer

    monkeypatch.setattr(gemm, "_overlaps", overlaps)
    return moved


def test_rows_overlap_only_where_few_are_redone():
    assert gemm._overlaps(1000, MR)  # 167 tiles: 2 rows done twice
    assert gemm._overlaps(384, MR) and gemm._overlaps(383, MR)
    assert not gemm._overlaps(128, MR)  # 4 of 128 rows twice: tiles of 6 and 5 instead
    assert not gemm._overlaps(5, MR)


# Rows of x for a Linear(57, 128) (its weight kept as panels of W.T, the bias starting the sums):
# multiples of the tile, of mr - 1, one past, a remainder tile, tiles moved back
LINEAR_ROWS = [6, 11, 12, 13, 30, 31, 128, 383, 384, 385, 1000]
LINEAR_CASES = [("host", m) for m in LINEAR_ROWS] + [
    (isa, m) for isa in ("avx2", "generic") for m in (13, 385, 1000)
]


@pytest.mark.parametrize("isa,m", LINEAR_CASES, ids=[f"{i}-{m}" for i, m in LINEAR_CASES])
def test_row_remainders_of_a_linear_layer_match_references(
    monkeypatch, isa, m, assert_outputs_same
):
    use_isa(monkeypatch, isa)
    moved = moved_back(monkeypatch)
    mytorch.manual_seed(m)
    layer = nn.Linear(57, 128)
    x = Tensor(np.random.default_rng(m).standard_normal((m, 57)).astype(F32), trainable=False)

    def fn(x):
        return layer(x), mytorch.tanh(layer(x)) * 2.0

    check_against_references(fn, [x], assert_outputs_same, what=f"Linear {m}x57->128")
    if isa == "host":
        assert bool(moved) == (m in (383, 385, 1000)), moved


def _fma_calls(compiled) -> int:
    return len(re.findall(r"call [^\n]*@llvm\.fma\.", compiled.llvm_ir))


def test_a_products_code_does_not_grow_with_its_rows_remainder():
    """x @ W.T + b over T = 996 (whole tiles) or 1,000 rows (a tile moved back): the same code;
    the remainder of 1,000 rows no longer adds a second tile's copy."""
    calls = []
    for m in (996, 1000, 1001):
        mytorch.manual_seed(0)
        layer = nn.Linear(57, 128)
        compiled = mytorch.compile(layer)
        with mytorch.no_grad():
            compiled(mytorch.randn(m, 57))
        calls.append(_fma_calls(compiled))
    assert calls[0] == calls[1] == calls[2] > 0, calls


# (rows of A, k, n): a plain B read in place or in panels, with k blocks and row blocks of two
# lengths each (KC_ROWS = 256 k steps per block; 1,024 in panels)
PLAIN_SHAPES = [
    (800, 250, 40),  # row blocks 522 + 278, the last one's last tile moved back
    (800, 300, 40),  # and k blocks 256 + 44, accumulating into C: tiles of 6 and 5
    (70, 301, 33),  # k blocks 256 + 45: steps past the independent sums in a loop
    (13, 513, 20),  # three k blocks, the last of one step
    (300, 1030, 100),  # B in panels: k blocks 1,024 + 6, row blocks 126 + 174
]
PLAIN_CASES = [("host", *s) for s in PLAIN_SHAPES] + [
    (isa, *s) for isa in ("avx2", "generic") for s in (PLAIN_SHAPES[1], PLAIN_SHAPES[2])
]


@pytest.mark.parametrize(
    "isa,m,k,n", PLAIN_CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}" for c in PLAIN_CASES]
)
def test_k_and_row_blocks_of_two_lengths_match_references(
    monkeypatch, isa, m, k, n, assert_outputs_same
):
    use_isa(monkeypatch, isa)
    rng = np.random.default_rng(m + k + n)

    def tensor(*shape):  # positive: no cancellation in long float32 sums to magnify rounding
        return Tensor(rng.uniform(0.5, 1.5, shape).astype(F32), trainable=False)

    def fn(a, b, bias):
        return a @ b, a @ b + bias

    check_against_references(fn, [tensor(m, k), tensor(k, n), tensor(n)], assert_outputs_same)


@pytest.mark.parametrize("m,k,n", [(1600, 130, 40), (389, 20, 100)])
def test_packed_row_blocks_of_two_lengths_match_references(
    monkeypatch, m, k, n, assert_outputs_same
):
    """A.T @ B on copies of B's blocks: row blocks 1,020 + 580 (tiles of 6 and 5), k blocks
    128 + 2; 389 rows: one block."""
    packed_case(monkeypatch, "host", m, k, n, F32, assert_outputs_same)


@pytest.mark.parametrize("m,k,n", [(389, 20, 50), (800, 250, 40)])
def test_moved_back_tiles_ending_in_elementwise_ops_match_references(
    monkeypatch, m, k, n, assert_outputs_same
):
    """A last row tile moved back redoes its rows' epilogue from the product's start, not from
    C: the same values again."""
    moved = moved_back(monkeypatch)
    epilogue_case(monkeypatch, "host", m, k, n, F32, assert_outputs_same)
    assert moved


@pytest.mark.parametrize("batch", [131, 389])
def test_rnn_steps_of_moved_back_tiles_match_references(monkeypatch, batch, assert_outputs_same):
    """The loop's step products start from the input projection and end in tanh, their k steps
    backwards on odd steps: a tile moved back over rows already activated starts them again."""
    moved = moved_back(monkeypatch)
    _, fn, inputs = rnn_case((7, 40, 5, batch, 3))
    check_against_references(fn, inputs, assert_outputs_same, what=f"B={batch}")
    assert batch in moved


@pytest.mark.parametrize("hidden,batch", [(70, 64), (24, 16), (130, 48)])
def test_weight_gradients_over_any_number_of_steps_match_references(
    monkeypatch, hidden, batch, assert_same
):
    """A weight gradient X.T @ G over T * batch k steps (`gemm.accumulate_steps`) counts its k
    blocks at run time: fewer steps than a block, whole blocks, a shorter last one; on copies of
    B's blocks (rows of A >= 64) and on B in place. One kernel serves every T."""
    made = []
    original = gemm.accumulate_steps
    monkeypatch.setattr(
        gemm, "accumulate_steps", lambda k, a, *rest: made.append(a.shape) or original(k, a, *rest)
    )
    mytorch.manual_seed(hidden)
    rnn = RNN(5, hidden, 3)
    fn = sequence_loss(rnn, batch)
    native = mytorch.compile(fn, backend="llvm")
    interpreted = mytorch.compile(fn, backend="numpy")
    for steps in (1, 2, 3, 5, 9):
        got, want = run_both(rnn, (native, interpreted), steps, batch, seed=steps)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, what=f"T={steps} output {k}")
    assert any(rows >= 64 for rows, _ in made) == (hidden >= 64), made
