"""The llvm backend's matrix kernels on the shapes that pick each path: the tutorial RNN over T
steps (hoisted input projection, the loop of rnn_steps, the deferred output projection) and Linear
layers, at odd sizes (H not a multiple of the vector width, B = 1 and B > 1, I = 1, T = 1), against
the numpy interpreter and eager mode. Parameter copies kept between calls must follow every change
to a parameter. The same checks run with the code generated for AVX2 and for plain 128-bit vectors.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.codegen import gemm, runtime
from mytorch.codegen import llvm as backend
from tests.ir.programs import RNN, stacked_sequence
from tests.odd_arrays import read_only, unaligned

F32 = np.float32
# (input, hidden, output, batch, steps)
RNN_SIZES = [
    (57, 128, 18, 1, 12),  # the names tutorial: B = 1, H a multiple of 16
    (5, 37, 3, 1, 7),  # H not a multiple of 8 or 16
    (1, 20, 1, 3, 4),  # I = 1, O = 1, B > 1
    (8, 130, 17, 2, 1),  # T = 1
    (16, 48, 16, 4, 5),
    (3, 9, 2, 5, 3),
    (7, 40, 5, 13, 4),  # row tiles and a last partial one, whole and masked vectors
]


def rnn_case(sizes, h0_input=False, seed=0):
    i, h, o, b, t = sizes
    mytorch.manual_seed(seed)
    rnn = RNN(i, h, o)
    rng = np.random.default_rng(seed)
    inputs = [Tensor(rng.standard_normal((t, b, i)).astype(F32), trainable=False)]
    if h0_input:
        inputs.append(Tensor(rng.standard_normal((b, h)).astype(F32), trainable=False))
    return rnn, stacked_sequence(rnn, b, h0_input), inputs


def check_against_references(fn, inputs, assert_outputs_same, what=""):
    """llvm == numpy interpreter (same optimized graph) == eager."""
    with mytorch.no_grad():
        native = mytorch.compile(fn, backend="llvm", fullgraph=True)(*inputs)
        interpreted = mytorch.compile(fn, backend="numpy", fullgraph=True)(*inputs)
        eager = fn(*inputs)
    assert_outputs_same(native, interpreted, what=f"{what} llvm vs numpy")
    assert_outputs_same(native, eager, what=f"{what} llvm vs eager")


def use_isa(monkeypatch, isa: str) -> None:
    """Generate code for an AVX2 CPU (8 lanes) or for 128-bit vectors (4 lanes) instead of the
    host's features: the kernels' vector width and the JIT's target CPU both follow."""
    if isa == "host":
        return
    cpu, features = {"avx2": ("haswell", {"avx", "avx2", "fma"}), "generic": ("x86-64", set())}[isa]
    if "avx2" in features and "avx2" not in runtime.host_features():
        pytest.skip("the host cannot run AVX2 code")

    def target_machine():
        binding = runtime.llvm()
        target = binding.Target.from_triple(binding.get_process_triple())
        return target.create_target_machine(cpu=cpu, features="", opt=3, jit=True)

    monkeypatch.setattr(gemm, "host_features", lambda: features)
    monkeypatch.setattr(runtime, "target_machine", target_machine)


def sizes_id(sizes) -> str:
    return "I{}-H{}-O{}-B{}-T{}".format(*sizes)


def product_cases(shapes, odd_shape) -> list[tuple]:
    """(isa, m, k, n, dtype): every shape on the host's ISA, and one on AVX2 and generic vectors."""
    return [("host", *s) for s in shapes] + [(isa, *odd_shape) for isa in ("avx2", "generic")]


def product_ids(cases) -> list[str]:
    return [f"{isa}-{m}x{k}x{n}-{np.dtype(d).name}" for isa, m, k, n, d in cases]


RNN_CASES = [("host", s, h0) for s in RNN_SIZES for h0 in (False, True)] + [
    (isa, s, h0)
    for isa in ("avx2", "generic")
    for s, h0 in ((RNN_SIZES[1], False), (RNN_SIZES[2], True))
]


@pytest.mark.parametrize(
    "isa,sizes,h0_input",
    RNN_CASES,
    ids=[f"{isa}-{sizes_id(s)}-{'h0' if h0 else 'zero'}" for isa, s, h0 in RNN_CASES],
)
def test_rnn_sequence_matches_references(monkeypatch, isa, sizes, h0_input, assert_outputs_same):
    use_isa(monkeypatch, isa)
    _, fn, inputs = rnn_case(sizes, h0_input)
    check_against_references(fn, inputs, assert_outputs_same, what=str(sizes))


LINEAR_SHAPES = [
    (1, 5, 1),
    (1, 57, 128),
    (12, 57, 128),
    (7, 3, 17),
    (40, 33, 18),
    (64, 16, 48),
    (3, 200, 9),
    (130, 20, 1),
]
LINEAR_CASES = [("host", *s) for s in LINEAR_SHAPES] + [
    (isa, *s) for isa in ("avx2", "generic") for s in ((12, 57, 128), (40, 33, 18))
]


@pytest.mark.parametrize("isa,m,k,n", LINEAR_CASES)
def test_linear_layer_matches_references(monkeypatch, isa, m, k, n, assert_outputs_same):
    use_isa(monkeypatch, isa)
    mytorch.manual_seed(m * 1000 + k * 10 + n)
    layer = nn.Linear(k, n)
    x = Tensor(np.random.default_rng(k).standard_normal((m, k)).astype(F32), trainable=False)
    check_against_references(layer, [x], assert_outputs_same, what=f"Linear {m}x{k}->{n}")


def test_names_rnn_keeps_a_transposed_copy_of_its_weight():
    rnn, fn, inputs = rnn_case(RNN_SIZES[0])
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    compiled(*inputs)
    assert "kept.pack" in compiled.llvm_ir, "the W.T copies are kept and packed"


@pytest.mark.parametrize(
    "isa,sizes",
    [("host", RNN_SIZES[0]), ("host", RNN_SIZES[1]), ("avx2", RNN_SIZES[1])],
    ids=["names", "odd", "avx2-odd"],
)
def test_kept_weight_copies_follow_every_parameter_change(
    monkeypatch, isa, sizes, assert_outputs_same
):
    use_isa(monkeypatch, isa)
    rnn, fn, inputs = rnn_case(sizes)
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    weight = rnn.i2h.weight
    i = sizes[0]

    def check(what):
        with mytorch.no_grad():
            assert_outputs_same(compiled(*inputs), fn(*inputs), what=what)

    check("first call")
    check("second call")
    original = weight.data.copy()
    changes = [
        ("one recurrent weight scaled", lambda w: w.__setitem__((3, i + 2), w[3, i + 2] * 3)),
        ("one input weight changed", lambda w: w.__setitem__((0, 0), 0.5)),
        ("last element", lambda w: w.__setitem__((-1, -1), -2.0)),
        ("every weight scaled", lambda w: w.__imul__(1.5)),
        ("back to the original bits", lambda w: w.__setitem__(slice(None), original)),
        ("a zero made negative", lambda w: w.__setitem__((1, i), -0.0)),
    ]
    for what, change in changes:
        change(weight.data)
        check(what)
    weight.data = np.array(original * 0.5)  # a new array, not an in-place update
    check("a new array")
    rnn.h2o.weight.data[:] = 0.25
    check("the output weight changed")
    weight.data[2, i + 1] = np.nan
    with mytorch.no_grad():
        out, h = compiled(*inputs)
        ref_out, ref_h = fn(*inputs)
    np.testing.assert_array_equal(np.isnan(h.data), np.isnan(ref_h.data))
    assert np.isnan(h.data).any(), "a NaN weight reaches the state"


def test_zero_parameters_on_the_first_call_are_correct(assert_outputs_same):
    """The workspace starts zeroed: a zero parameter must not be mistaken for a stale copy."""
    rnn, fn, inputs = rnn_case(RNN_SIZES[0])
    for p in rnn.parameters():
        p.data[...] = 0.0
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    with mytorch.no_grad():
        assert_outputs_same(compiled(*inputs), fn(*inputs), what="zero weights")
        rnn.i2h.weight.data[5, 60] = 1.0
        assert_outputs_same(compiled(*inputs), fn(*inputs), what="then one weight set")


def test_host_target_machine_matches_the_kernels_vector_width():
    """The kernels' lanes come from the same features the JIT compiles for."""
    features = llvm.get_host_cpu_features().flatten()
    lanes = gemm.vector_width(np.float32)
    assert lanes == (16 if "+avx512f" in features else 8 if "+avx2" in features else 4)


@pytest.mark.parametrize("m", [1, 3, 40])
def test_uniform_constant_bias_fused_into_the_product(m, assert_outputs_same):
    """A constant bias of equal values is one element seen everywhere (stride 0): the kernels
    must broadcast it, not read a vector from it."""
    mytorch.manual_seed(m)
    layer = nn.Linear(40, 33)

    def fn(x):
        return x @ layer.weight.T + mytorch.ones(33) * 0.5

    x = Tensor(np.random.default_rng(m).standard_normal((m, 40)).astype(F32), trainable=False)
    check_against_references(fn, [x], assert_outputs_same, what=f"rows {m}")


TRANSPOSE_SHAPES = [(2, 2), (5, 3), (8, 8), (16, 16), (17, 9), (57, 128), (33, 70), (1, 40, 3)]
TRANSPOSE_CASES = [("host", s, d) for s in TRANSPOSE_SHAPES for d in (np.float32, np.float64)] + [
    (isa, s, np.float32) for isa in ("avx2", "generic") for s in ((17, 9), (33, 70))
]


@pytest.mark.parametrize(
    "isa,shape,dtype",
    TRANSPOSE_CASES,
    ids=[f"{isa}-{'x'.join(map(str, s))}-{np.dtype(d).name}" for isa, s, d in TRANSPOSE_CASES],
)
def test_transposed_copies_match_references(monkeypatch, isa, shape, dtype, assert_outputs_same):
    """Transposes materialized in blocks through registers (`packing.transpose`): whole and edge
    blocks, sizes below and around the vector width, a batch of matrices, the last dims of a
    slice; into an output, a cat and a sum."""
    use_isa(monkeypatch, isa)
    rng = np.random.default_rng(sum(shape))
    x = Tensor(rng.standard_normal((*shape[:-2], shape[-2] + 2, shape[-1] + 1)).astype(dtype))
    n = shape[-1]

    def fn(x):
        part = x[..., 1:-1, :-1]  # offset and strided rows
        t = part.transpose(-1, -2)
        return t, Tensor.cat((t, t * 2.0), -1), t.sum(-1)

    check_against_references(fn, [x], assert_outputs_same, what=f"transpose {shape} of {n}")


PLACED_SHAPES = [(1, 1, 1), (12, 57, 128), (7, 5, 3), (3, 17, 33), (40, 2, 9)]


@pytest.mark.parametrize("m,k,n", PLACED_SHAPES)
def test_products_placed_into_their_consumer_match_references(m, k, n, assert_outputs_same):
    """Products written straight into a cat's value (along either dim, as themselves or
    transposed) or into a transposed output, as a backward's weight gradients are; a product with
    another user, or in a cat twice, keeps a buffer of its own."""
    rng = np.random.default_rng(m * k * n)

    def tensor(*shape):
        return Tensor(rng.standard_normal(shape).astype(F32), trainable=False)

    a, b, c = tensor(m, k), tensor(k, n), tensor(n, m)

    def fn(a, b, c):
        p, q = a @ b, c @ a  # (m, n), (n, k)
        return (
            Tensor.cat(((a @ b).transpose(0, 1), c @ a), 1),  # (n, m + k)
            Tensor.cat((b.transpose(0, 1) @ a.transpose(0, 1), c), 0),  # (2n, m)
            (c.transpose(0, 1) @ q).transpose(0, 1),  # an output written transposed
            Tensor.cat((p, p), 0),
            Tensor.cat((q, q * 2.0), 1) + q.sum(),
        )

    check_against_references(fn, [a, b, c], assert_outputs_same, what=f"{m}x{k}x{n}")


def gemm_choices(monkeypatch, name: str) -> list[bool]:
    """What gemm's layout test `name(a, b)` answers, one entry per product it is asked about."""
    chosen, original = [], getattr(gemm, name)
    monkeypatch.setattr(gemm, name, lambda a, b: chosen.append(original(a, b)) or chosen[-1])
    return chosen


# (rows of A, k, n of B, dtype): B copied into column panels (gemm.prefers_panels)
PANEL_SHAPES = [
    (128, 1, 65, np.float32),  # k = 1; n one column past a panel
    (131, 3, 100, np.float32),  # rows not a multiple of the row tile
    (128, 300, 200, np.float32),  # a last panel of a partial vector
    (130, 1100, 67, np.float32),  # k over one cache block
    (129, 17, 257, np.float64),
]
PANEL_CASES = product_cases(PANEL_SHAPES, (131, 3, 100, np.float32))


@pytest.mark.parametrize(
    "isa,m,k,n,dtype",
    PANEL_CASES,
    ids=product_ids(PANEL_CASES),
)
def test_products_of_a_plain_b_in_panels_match_references(
    monkeypatch, isa, m, k, n, dtype, assert_outputs_same
):
    """A @ B with B's rows contiguous (a backward's G @ W) and many rows of A copies B into
    column panels: with and without a bias fused in, rows merged from a 3-D A, a B sliced from
    a wider matrix; an A read down its columns keeps B as it is."""
    use_isa(monkeypatch, isa)
    chosen = gemm_choices(monkeypatch, "prefers_panels")
    rng = np.random.default_rng(m + k + n)

    def tensor(*shape):  # positive: no cancellation in long float32 sums to magnify rounding
        return Tensor(rng.uniform(0.5, 1.5, shape).astype(dtype), trainable=False)

    a, b, wide, bias = tensor(m, k), tensor(k, n), tensor(k, n + 3), tensor(n)

    def fn(a, b, wide, bias):
        return (
            a @ b,
            a @ b + bias,
            a.reshape(1, m, k) @ wide[:, 1:-2],
            a.transpose(0, 1).transpose(0, 1) @ b * 2.0,
        )

    check_against_references(fn, [a, b, wide, bias], assert_outputs_same, what=f"{m}x{k}x{n}")
    assert any(chosen), "no product took the panel path"


@pytest.mark.parametrize("total", [1, 2, 5, 6, 7, 8, 13, 20, 32, 40, 128, 130, 4096])
def test_row_tiles_cover_the_rows_without_a_small_last_tile(total):
    """The axpy kernel's row tiles (`gemm._row_tiles`): every row once, in order; where a
    remainder would be a small tile, tiles of mr - 1 instead (128 rows: 18 x 6 + 4 x 5)."""
    mr = 6
    rows, start = [], 0
    for first, size, count in gemm._row_tiles(total, mr):
        assert (first or 0) == start and 1 <= size <= mr
        rows += [size] * count
        start += size * count
    assert start == total
    if total >= 4 * mr:
        assert min(rows) >= mr - 1
    assert gemm._row_tiles(128, mr) == [(None, 6, 18), (108, 5, 4)]


def test_row_blocks_merge_a_small_remainder():
    """A few rows past a whole row block join it (one pass over B); half a block stays apart."""
    assert gemm._row_blocks(128, 126) == [(0, 128, 1)]
    assert gemm._row_blocks(4096, 252) == [(None, 252, 15), (3780, 316, 1)]
    assert gemm._row_blocks(4096, 126) == [(None, 126, 32), (4032, 64, 1)]
    assert gemm._row_blocks(252, 126) == [(None, 126, 2)]


# (rows of A, k, n of B, dtype): with A read down its columns, B copied into panels a block at a
# time (gemm._packs)
PACKED_SHAPES = [
    (64, 1, 17, np.float32),  # k = 1; n under one vector
    (65, 129, 100, np.float32),  # k one past a block; rows one past whole tiles
    (400, 130, 600, np.float32),  # several row blocks and column blocks
    (131, 300, 64, np.float32),  # n one whole panel
    (70, 140, 33, np.float64),
]
PACKED_CASES = product_cases(PACKED_SHAPES, (65, 129, 100, np.float32))


@pytest.mark.parametrize(
    "isa,m,k,n,dtype",
    PACKED_CASES,
    ids=product_ids(PACKED_CASES),
)
def test_products_of_a_transposed_a_on_copies_match_references(
    monkeypatch, isa, m, k, n, dtype, assert_outputs_same
):
    """A.T @ B with A (k, m) and B's rows contiguous (a weight gradient) runs on copies of
    blocks of B: A transposed whole, a slice of a wider A, B sliced from a wider matrix (rows
    not aligned), a bias fused in, the product written into a cat, unaligned and read-only
    inputs."""
    use_isa(monkeypatch, isa)
    chosen = gemm_choices(monkeypatch, "_packs")
    rng = np.random.default_rng(m + k + n)

    def array(*shape):  # positive: no cancellation in long float32 sums to magnify rounding
        return rng.uniform(0.5, 1.5, shape).astype(dtype)

    def tensor(x):
        return Tensor(x, trainable=False)

    a, b, wide_a, wide_b, bias = (
        array(k, m),
        array(k, n),
        array(k, m + 5),
        array(k, n + 3),
        array(n),
    )

    def fn(a, b, wide_a, wide_b, bias):
        return (
            a.transpose(0, 1) @ b,
            wide_a[:, 2 : m + 2].transpose(0, 1) @ wide_b[:, 1:-2] + bias,
            Tensor.cat((a.transpose(0, 1) @ b, wide_a[:, :m].transpose(0, 1)), 1),
        )

    inputs = [tensor(x) for x in (a, b, wide_a, wide_b, bias)]
    check_against_references(fn, inputs, assert_outputs_same, what=f"{m}x{k}x{n}")
    odd = [tensor(unaligned(a)), tensor(read_only(b))] + inputs[2:]
    check_against_references(fn, odd, assert_outputs_same, what=f"{m}x{k}x{n} odd arrays")
    assert any(chosen), "no product took the packed path"


FUSED_SHAPES = [(1,), (5, 3), (12, 1, 128), (4, 17, 33)]


@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=["x".join(map(str, s)) for s in FUSED_SHAPES])
def test_fused_elementwise_chains_match_references(shape, assert_outputs_same):
    """Chains of elementwise ops computed in one loop (`fused_elementwise`): the tanh gradient
    (1 - h * h) * g, through a reshape that drops a dim of 1, with broadcast operands, a float64
    operand, math functions; an op with two users or that is an output is stored once."""
    rng = np.random.default_rng(len(shape))

    def tensor(shape, dtype=F32):
        return Tensor(rng.standard_normal(shape).astype(dtype), trainable=False)

    h, g, row = tensor(shape), tensor(shape), tensor(shape[-1:])
    wide = tensor(shape, np.float64)
    flat = tuple(n for n in shape if n != 1) or (1,)

    def fn(h, g, row, wide):
        grad = (1.0 - h * h) * g
        shared = mytorch.exp(h * 0.5) + row
        chained = (grad.reshape(flat) + 2.0) * mytorch.tanh(shared.reshape(flat))
        return chained, shared, ((grad - wide).abs() + 1.0).sqrt() / (shared + 3.0)

    check_against_references(fn, [h, g, row, wide], assert_outputs_same, what=f"{shape}")


# (rows of A, k, n, dtype): products ending in elementwise ops (`lowering.product_epilogues`)
EPILOGUE_SHAPES = [
    (1, 1, 1, np.float32),
    (5, 7, 3, np.float32),  # under one vector: masked lanes
    (64, 384, 384, np.float32),  # the names model's backward step
    (13, 40, 37, np.float32),  # a last partial row tile and vector
    (130, 300, 70, np.float32),  # k over the plain B's cache block; B into panels
    (70, 20, 33, np.float64),
]
EPILOGUE_CASES = product_cases(EPILOGUE_SHAPES, (13, 40, 37, np.float32))


@pytest.mark.parametrize(
    "isa,m,k,n,dtype",
    EPILOGUE_CASES,
    ids=product_ids(EPILOGUE_CASES),
)
def test_products_ending_in_elementwise_ops_match_references(
    monkeypatch, isa, m, k, n, dtype, assert_outputs_same
):
    """A product read only by a chain of elementwise ops computes the chain in its own kernel,
    on every kernel path: B as W.T (dot form), a plain B (axpy form, one or several k blocks),
    an A read down its columns (copies of B's blocks); operands broadcast, transposed (not
    loadable as vectors), the value written into a cat or as an output. Ops it cannot end in
    (a bool operand, a math function) keep the product stored."""
    use_isa(monkeypatch, isa)
    ended = []
    original = backend.product_epilogues
    monkeypatch.setattr(
        backend, "product_epilogues", lambda *a: ended.append(original(*a)) or ended[-1]
    )
    rng = np.random.default_rng(m + k + n)

    def tensor(*shape):
        return Tensor(rng.uniform(-1.0, 1.0, shape).astype(dtype), trainable=False)

    a, w, b, at = tensor(m, k), tensor(n, k), tensor(k, n), tensor(k, m)
    g, h, row, g_t = tensor(m, n), tensor(m, n), tensor(n), tensor(n, m)

    def fn(a, w, b, at, g, h, row, g_t):
        return (
            (g + a @ w.transpose(0, 1)) * (1.0 - h * h),  # the tanh step's gradient
            g - a @ b,
            Tensor.cat(((at.transpose(0, 1) @ b) / (2.0 + h), g), 1) * 1.5,
            -(a @ (b * 2.0)) * row + g_t.transpose(0, 1),
            (a @ (b * 3.0)) * (h > 0.0),
            mytorch.tanh(a @ (b * 4.0)) * g,
        )

    check_against_references(fn, [a, w, b, at, g, h, row, g_t], assert_outputs_same)
    assert sum(len(e) for e in ended) == 4, "products did not end in their elementwise ops"


@pytest.mark.parametrize("batch", [(), (3,)])
def test_elementwise_bias_of_a_fused_product_add_is_not_inlined(batch, assert_outputs_same):
    """An add computed with its product (the bias starts its sums) keeps its operands stored."""
    rng = np.random.default_rng(7)
    w = Tensor(rng.standard_normal((4, 5)).astype(F32))
    b = Tensor(rng.standard_normal(5).astype(F32))
    x = Tensor(rng.standard_normal((*batch, 4)).astype(F32), trainable=False)

    def fn(x):
        return mytorch.tanh(x @ w + b * 2.0) * 3.0

    check_against_references(fn, [x], assert_outputs_same, what=f"batch {batch}")


def test_kept_copies_through_a_training_loop_and_after(assert_outputs_same):
    """A weight changed on every call (a training loop) is repacked without a compare; every
    call still sees the live weight, through the periodic compares and after the loop stops,
    and a change after many unchanged calls is still seen."""
    rnn, fn, inputs = rnn_case(RNN_SIZES[1])
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    weight = rnn.i2h.weight.data

    def check(what):
        with mytorch.no_grad():
            assert_outputs_same(compiled(*inputs), fn(*inputs), what=what)

    for step in range(150):  # past the 8 changed calls that start it and two recompares
        weight[step % weight.shape[0], -1] += 0.01
        check(f"training step {step}")
    for step in range(70):
        check(f"unchanged call {step}")
    weight *= 0.5
    check("changed after the loop")
    for step in range(12):
        if step % 3 == 0:
            weight[0, 0] += 0.25
        check(f"changed now and then {step}")
