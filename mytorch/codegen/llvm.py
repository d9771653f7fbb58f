"""The llvm backend: one LLVM module per graph signature, JIT-compiled for the host CPU.

    graph -> GraphLowering (views and kernels per node, in order) -> LLVM IR -> O3 -> machine code

The entry function `void f(ptr* args)` receives, in order: the graph's inputs (arguments, then
parameters), its outputs, one workspace for every intermediate, and a status word that native
code sets when it meets an index out of range. All are numpy arrays; the runner checks every
one before the call (in native code, see `binder.py`; or `runtime.Signature` on its Python path).

The workspace also keeps packed copies of weight parameters from call to call, with snapshots
that tell whether a parameter changed (`GraphLowering.kept_transpose`): it must live as long as
the runner and start zeroed.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
from dataclasses import replace
from functools import partial

import numpy as np
from llvmlite import ir

from ..errors import CompileError
from ..ir.graph import Graph, Node
from . import binder, gemm, packing
from .kernel import I8, I64, PTR, KernelBuilder, View, contiguous_strides, llvm_type
from .lowering import (
    FUSABLE,
    KERNELS,
    UNSUPPORTED,
    VIEWS,
    cat_slices,
    convert_copy,
    emit_math,
    fused_elementwise,
)
from .runtime import NativeFunction, Signature

ALIGN = 64  # bytes: every workspace buffer starts on a cache line
RELEASE_GIL_BYTES = 1 << 14  # calls touching this much memory release the GIL (see Runner)
# A parameter changed on this many calls in a row is rebuilt without comparing, and compared
# again on 2 calls of every CHECK_EVERY - TRAINING + 2 (see `GraphLowering._param_changed`).
TRAINING = 8
CHECK_EVERY = 64


class GraphLowering:
    """Lowers a graph's nodes into the entry function, one after another."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.module = ir.Module(name=graph.name)
        self.module.triple = ""
        fn_type = ir.FunctionType(ir.VoidType(), [PTR])
        self.function = ir.Function(self.module, fn_type, name="entry")
        self.function.args[0].name = "args"
        self.function.args[0].add_attribute("noalias")
        self.k = KernelBuilder(self.module, self.function)
        self.workspace_bytes = 0
        self.errors: list[str] = []
        self._slots = itertools.count()
        self._in_kernel = False
        self._packed: list[dict] = [{}]
        # Set by a loop around its body: an i1, true on steps whose products run k backwards.
        self.reverse_k: ir.Value | None = None
        n_inputs, n_outputs = len(graph.inputs), len(graph.outputs)
        self._workspace = self._arg(n_inputs + n_outputs)
        self._status = self._arg(n_inputs + n_outputs + 1)
        self._entry_k, self._entry_workspace = self.k, self._workspace
        self._entry_inputs: list[View] = []
        self._param_flags: dict[int, int] = {}  # parameter index -> workspace offset of its flag

    # ---- what kernels use -----------------------------------------------------------------------

    def _arg(self, index: int) -> ir.Value:
        b = self.k.builder
        slot = b.gep(self.function.args[0], [ir.Constant(I64, index)], source_etype=PTR)
        return b.load(slot, typ=PTR)

    def scratch(self, shape, dtype, entry: bool = False) -> View:
        """A fresh contiguous buffer in the workspace, addressed from the current function (or
        from the entry function)."""
        start = self._reserve(shape, dtype)
        builder = self._entry_k.builder if entry else self.k.builder
        workspace = self._entry_workspace if entry else self._workspace
        byte_ptr = builder.gep(workspace, [ir.Constant(I64, start)], inbounds=True, source_etype=I8)
        return View(byte_ptr, ir.Constant(I64, 0), tuple(shape), contiguous_strides(shape), dtype)

    def _reserve(self, shape, dtype) -> int:
        """The workspace offset of a fresh buffer of `shape` and `dtype`."""
        start = -(-self.workspace_bytes // ALIGN) * ALIGN
        size = max(int(np.prod(shape, dtype=np.int64)), 1) * np.dtype(dtype).itemsize
        self.workspace_bytes = start + size
        return start

    def existing_copy(self, view: View) -> View | gemm.Panels | None:
        """A copy of `view` made earlier in a scope that is still open, if any."""
        key = _key(view)
        for scope in reversed(self._packed):
            if key in scope:
                return scope[key]
        return None

    def contiguous(self, view: View) -> View:
        """`view`, or a contiguous copy of it; copies are shared within the current scope."""
        if view.is_contiguous:
            return view
        existing = self.existing_copy(view)
        if existing is not None:
            return existing
        packed = self.scratch(view.shape, view.dtype)
        if len(view.shape) == 2 and view.strides[0] == 1 and view.strides[1] != 1:  # a W.T
            shape = (1, *view.shape)
            panel = replace(packed, shape=shape, strides=contiguous_strides(shape))
            packing.pack(self.k, view.transpose((1, 0)), gemm.Panels(panel, view.shape[1]))
        else:
            gemm.copy(self.k, view, packed)
        self._packed[-1][_key(view)] = packed
        return packed

    def panels(self, view: View, rows: int) -> gemm.Panels:
        """A copy of `view` (K x N, rows contiguous) in column panels for products with `rows`
        rows of A, made on every call and shared within the current scope: aligned rows, read
        as one stream, for a B that many products read (a reverse loop's weight)."""
        existing = self.existing_copy(view)
        if existing is not None:
            return existing
        depth, n = view.shape
        width = gemm.panel_width(rows, n, view.dtype)
        full, rest = divmod(n, width)
        packed = gemm.Panels(self.scratch((full + (rest > 0), depth, width), view.dtype), n)
        s0, s1 = view.strides
        if full:
            src = View(
                view.ptr, view.offset, (full, depth, width), (width * s1, s0, s1), view.dtype
            )
            dst = replace(packed.view, shape=(full, depth, width))
            gemm.copy(self.k, src, dst)
        if rest:
            b = self.k.builder
            start = b.add(view.offset, ir.Constant(I64, full * width * s1))
            src = View(view.ptr, start, (depth, rest), view.strides, view.dtype)
            last = self.k.offset_view(packed.view, 0, ir.Constant(I64, full))
            gemm.copy(self.k, src, replace(last, shape=(depth, rest)))
        self._packed[-1][_key(view)] = packed
        return packed

    def kept_transpose(self, view: View, rows: int) -> gemm.Panels:
        """A copy of `view`, a parameter's matrix W seen as W.T, in column panels for products
        with `rows` rows of A (see `gemm.Panels`), that stays in the workspace between calls. It
        is rebuilt only on calls where the parameter's bits differ from the snapshot taken at the
        last rebuild (see `_param_changed`), so a live parameter changed in place is still seen."""
        existing = self.existing_copy(view)
        if existing is not None:
            return existing
        changed = self._param_changed(view.param)
        depth, n = view.shape
        width = gemm.panel_width(rows, n, view.dtype)
        shape = (-(-n // width), depth, width)
        packed = gemm.Panels(self.scratch(shape, view.dtype), n)
        with self.k.builder.if_then(changed, likely=False):
            packing.pack(self.k, view.transpose((1, 0)), packed)
        self._packed[-1][_key(view)] = packed
        return packed

    def _param_changed(self, index: int) -> ir.Value:
        """An i1 in the current function: whether parameter `index` changed since the last call.

        The entry function compares the whole parameter with a snapshot in the workspace (and
        refreshes it) once per call, before the first kernel that asks, and leaves the answer
        in a workspace byte. The workspace starts zeroed: a zero parameter and zero copies
        agree.

        A parameter that changed on TRAINING calls in a row (a training loop: every step
        updates it) is taken as changed without comparing or refreshing the snapshot: the
        copies are rebuilt from the live parameter, never stale, without the compare and the
        snapshot's copy (T1's forward, over an unchanged call: ~9 -> ~3 us). Two calls of
        every CHECK_EVERY - TRAINING + 2 compare again (the snapshot is stale by then; the second
        finds whether the parameter still changes): code that stops training returns to
        comparing alone."""
        if index not in self._param_flags:
            param = self._entry_inputs[index]
            flat = View(param.ptr, param.offset, (1, param.size), (0, 1), param.dtype)
            snapshot = self.scratch(flat.shape, flat.dtype, entry=True)
            self._param_flags[index] = self._reserve((2,), np.uint8)  # the flag, the streak
            b = self._entry_k.builder
            flag = self._flag(self._entry_workspace, index, b)
            streak_at = b.gep(flag, [ir.Constant(I64, 1)], inbounds=True, source_etype=I8)
            streak = b.load(streak_at, typ=I8)
            training = b.icmp_unsigned(">=", streak, ir.Constant(I8, TRAINING))
            one = ir.Constant(I8, 1)
            with b.if_else(training) as (then, otherwise):
                with then:
                    on = b.add(streak, one)
                    recheck = b.icmp_unsigned("==", on, ir.Constant(I8, CHECK_EVERY))
                    on = b.select(recheck, ir.Constant(I8, TRAINING - 2), on)
                    block_t = b.block
                with otherwise:
                    changed = packing.refresh(self._entry_k, flat, snapshot)
                    off = b.select(changed, b.add(streak, one), ir.Constant(I8, 0))
                    block_c = b.block
            new_streak = b.phi(I8)
            new_streak.add_incoming(on, block_t)
            new_streak.add_incoming(off, block_c)
            flag_value = b.phi(ir.IntType(1))
            flag_value.add_incoming(ir.Constant(ir.IntType(1), 1), block_t)
            flag_value.add_incoming(changed, block_c)
            b.store(new_streak, streak_at)
            b.store(b.zext(flag_value, I8), flag)
        b = self.k.builder
        byte = b.load(self._flag(self._workspace, index, b), typ=I8)
        return b.icmp_unsigned("!=", byte, ir.Constant(I8, 0))

    def _flag(self, workspace: ir.Value, index: int, b: ir.IRBuilder) -> ir.Value:
        start = ir.Constant(I64, self._param_flags[index])
        return b.gep(workspace, [start], inbounds=True, source_etype=I8)

    @contextlib.contextmanager
    def scope(self):
        """Code emitted inside (a loop body) does not dominate what follows: forget its copies."""
        self._packed.append({})
        try:
            yield
        finally:
            self._packed.pop()

    def flag_error(self, bad: ir.Value, message: str) -> None:
        """Set the status word to this message's code where `bad` (an i1) holds."""
        if message not in self.errors:
            self.errors.append(message)
        code = ir.Constant(I64, self.errors.index(message) + 1)
        b = self.k.builder
        old = b.load(self._status, typ=I64)
        b.store(b.select(bad, code, old), self._status)

    def math(self, op: str, value: ir.Value) -> ir.Value:
        return emit_math(self.k.builder, self.module, op, value)

    # ---- lowering -----------------------------------------------------------------------------

    def lower(self) -> str:
        g = self.graph
        inputs = [
            self._buffer(self._arg(k), i.type, k if i.is_param else None)
            for k, i in enumerate(g.inputs)
        ]
        self._entry_inputs = inputs
        first = len(g.inputs)
        outputs = [self._buffer(self._arg(first + k), o.type) for k, o in enumerate(g.outputs)]
        self.lower_subgraph(g, inputs, outputs)
        self.k.builder.ret_void()
        return str(self.module)

    @staticmethod
    def _buffer(ptr: ir.Value, type_, param: int | None = None) -> View:
        shape = tuple(type_.shape)
        strides = contiguous_strides(shape)
        return View(ptr, ir.Constant(I64, 0), shape, strides, np.dtype(type_.dtype), param)

    def lower_subgraph(self, graph: Graph, inputs: list[View], outputs: list[View]) -> None:
        """Emit `graph` reading `inputs` and writing its outputs into `outputs`."""
        env: dict[Node, View] = dict(zip(graph.inputs, inputs, strict=True))
        # An output computed by a kernel is written straight into its output buffer.
        direct = {}
        for node, dest in zip(graph.outputs, outputs, strict=True):
            if graph.outputs.count(node) == 1 and not node.is_input and node.op in KERNELS:
                direct[node] = dest
        biased = _bias_adds(graph)
        placed = _placed_products(graph)
        consumers = set(placed.values())
        inlined = _inlined_elementwise(graph, {add for add, _ in biased.values()})
        for node in graph.nodes:
            if node in env or node in placed or node in inlined:  # computed with another node
                continue
            try:
                if node.op in FUSABLE and any(i in inlined for i in node.inputs):
                    out = direct.get(node) or self.scratch(node.shape, node.dtype)
                    leaves: list[View] = []
                    tree = _tree(node, node.shape, env, inlined, leaves)
                    self._emit_kernel(node, out, leaves, partial(fused_elementwise, tree=tree))
                    env[node] = out
                    continue
                if node in consumers:
                    env[node] = self._lower_placing(node, env, placed, direct, graph, outputs)
                    continue
                if node in biased:
                    add, bias = biased[node]
                    out = direct.get(add) or self.scratch(add.shape, add.dtype)
                    args = [env[i] for i in node.inputs] + [env[bias]]
                    self._emit_kernel(node, out, args)
                    env[add] = out
                    continue
                env[node] = self._lower_node(node, [env[i] for i in node.inputs], direct.get(node))
            except CompileError:
                raise
            except Exception as e:
                what = f"lowering %{node.name} = {node.op}"
                raise CompileError(f"llvm backend: {what} failed: {type(e).__name__}: {e}") from e
        for node, dest in zip(graph.outputs, outputs, strict=True):
            if env[node] is not dest:
                gemm.copy(self.k, env[node], dest)

    def _lower_placing(self, node: Node, env, placed, direct, graph, outputs) -> View:
        """A cat or an output transpose whose products (`_placed_products`) write straight into
        their place in its value; the cat copies its other inputs in."""
        if node.op == "transpose":  # a graph output: the product writes its transpose
            out = outputs[graph.outputs.index(node)]
            self._place(node.inputs[0], out.transpose((1, 0)), env)
            return out
        out = direct.get(node) or self.scratch(node.shape, node.dtype)
        for x, dst in zip(node.inputs, cat_slices(self, node, out), strict=True):
            if placed.get(x) is not node:
                convert_copy(self, env[x], dst)
            elif x.op == "transpose":
                self._place(x.inputs[0], dst.transpose((1, 0)), env)
            else:
                self._place(x, dst, env)
        return out

    def _place(self, product: Node, dst: View, env) -> None:
        self._emit_kernel(product, dst, [env[i] for i in product.inputs])

    def _constant(self, value: np.ndarray) -> View:
        """A constant as a global; a uniform one (zeros, say) as one element seen everywhere."""
        flat = value.ravel()
        if flat.size > 1 and np.all(flat == flat[0]):
            one = self.k.global_array(flat[:1], "const")
            return View(one.ptr, one.offset, value.shape, (0,) * value.ndim, value.dtype)
        return self.k.global_array(value, "const")

    def _lower_node(self, node: Node, args: list[View], dest: View | None) -> View:
        if node.is_const:
            return self._constant(node.value)
        if node.op in VIEWS:
            view = VIEWS[node.op](self, node, *args)
            if view is not None and dest is not None:
                gemm.copy(self.k, view, dest)
                return dest
            if view is not None:
                return view
        if node.op not in KERNELS:
            if node.op in VIEWS:  # a view that needs a copy: materialize its input first
                return VIEWS[node.op](self, node, *[self.contiguous(a) for a in args])
            why = UNSUPPORTED.get(node.op, "no lowering is registered for it")
            where = f" (made at {node.loc[0]}:{node.loc[1]})" if node.loc else ""
            raise CompileError(f"the llvm backend cannot lower op {node.op!r}{where}: {why}")
        out = dest or self.scratch(node.shape, node.dtype)
        self._emit_kernel(node, out, args)
        return out

    def _emit_kernel(self, node: Node, out: View, args: list[View], kernel=None) -> None:
        """Emit `kernel` (the op's by default) writing node's value into `out`."""
        kernel = kernel or KERNELS[node.op]
        if self._in_kernel:  # inside a loop body: emit inline, in the loop's own function
            kernel(self, node, out, *args)
        else:
            self._emit_kernel_function(node, out, args, kernel)

    def _emit_kernel_function(self, node: Node, out: View, args: list[View], kernel) -> None:
        """Emit the node's kernel as its own function and call it.

        One function per kernel keeps LLVM's work per function small: optimizing one huge
        function of many loops grows faster than linearly (an unrolled LSTM took minutes).
        """
        views = [out, *args]
        fn_type = ir.FunctionType(ir.VoidType(), [PTR] * (len(views) + 2))
        fn = ir.Function(self.module, fn_type, name=f"{node.op}.{next(self._slots)}")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.args[0].add_attribute("noalias")  # the output buffer is always a fresh one
        caller = (self.k, self._workspace, self._status)
        self.k = KernelBuilder(self.module, fn)
        self._workspace, self._status = fn.args[-2], fn.args[-1]
        local = [
            View(arg, ir.Constant(I64, 0), v.shape, v.strides, v.dtype, v.param)
            for arg, v in zip(fn.args, views, strict=False)
        ]
        self._in_kernel = True
        try:
            with self.scope():
                kernel(self, node, *local)
            self.k.builder.ret_void()
        finally:
            self._in_kernel = False
            self.k, self._workspace, self._status = caller
        b = self.k.builder
        pointers = [
            b.gep(v.ptr, [v.offset], inbounds=True, source_etype=llvm_type(v.dtype)) for v in views
        ]
        b.call(fn, [*pointers, self._workspace, self._status])


def _key(view: View) -> tuple:
    return (id(view.ptr), view.offset.get_reference(), view.shape, view.strides, view.dtype)


def _bias_adds(graph: Graph) -> dict[Node, tuple[Node, Node]]:
    """matmul -> (add, bias) for `matmul(...) + bias` with a bias over the last dim, defined
    before the product and the product used nowhere else: the bias starts the product's sums."""
    order = {n: k for k, n in enumerate(graph.inputs + graph.nodes)}
    fused = {}
    for add in graph.nodes:
        if add.op != "add":
            continue
        for mm, bias in (add.inputs, reversed(add.inputs)):
            if (
                mm.op == "matmul"
                and mm is not bias
                and len(mm.users) == 1
                and mm not in graph.outputs
                and order[bias] < order[mm]
                and len(bias.shape) == 1
                and bias.shape[0] == add.shape[-1]
                and add.type == mm.type
                and bias.dtype == mm.dtype
            ):
                fused[mm] = (add, bias)
                break
    return fused


def _inlined_elementwise(graph: Graph, computed: set[Node]) -> set[Node]:
    """Elementwise float ops computed inside the loop of their one user, another elementwise op
    of the same shape (`fused_elementwise`): the chain (1 - h * h) * g takes one pass over memory,
    not three. Also the reshapes between them that only add or drop dims of 1. Nodes in
    `computed` are computed with another node already (a product's bias add)."""
    outputs = set(graph.outputs)
    inlined = set()

    def single_use(n: Node) -> Node | None:
        if n in outputs or len(n.users) != 1 or n.users[0].inputs.count(n) != 1:
            return None
        return n.users[0]

    for node in graph.nodes:
        if node.op not in FUSABLE or node.dtype.kind != "f" or node in computed:
            continue
        user = single_use(node)
        via = None
        if (
            user is not None
            and user.op == "reshape"
            and _squeezed(user.shape) == _squeezed(node.shape)
        ):
            via, user = user, single_use(user)
        if (
            user is not None
            and user.op in FUSABLE
            and user not in computed
            and user.shape == (via or node).shape
        ):
            inlined.add(node)
            if via is not None:
                inlined.add(via)
    return inlined


def _squeezed(shape) -> tuple:
    return tuple(n for n in shape if n != 1)


def _tree(node: Node, shape, env, inlined, leaves: list[View]):
    """`fused_elementwise`'s tree for `node` (and the inlined nodes it reads), appending its
    leaves to `leaves` as views of `shape` (the root's: the same but for dims of 1)."""
    children = []
    for i in node.inputs:
        if i in inlined and i.op == "reshape":
            i = i.inputs[0]
        if i in inlined:
            children.append(_tree(i, shape, env, inlined, leaves))
        else:
            children.append(len(leaves))
            leaves.append(_with_shape(env[i].broadcast_to(node.shape), shape))
    return (node, children)


def _with_shape(view: View, shape) -> View:
    """`view` seen with `shape`: the same dims but for dims of 1, added or dropped."""
    if view.shape == tuple(shape):
        return view
    strides = iter([s for n, s in zip(view.shape, view.strides, strict=True) if n != 1])
    new = tuple(0 if n == 1 else next(strides) for n in shape)
    return replace(view, shape=tuple(shape), strides=new)


def _placed_products(graph: Graph) -> dict[Node, Node]:
    """2-D float products computed straight into their consumer's value, instead of into a
    buffer of their own that the consumer then copies: product -> consumer, where the consumer
    is a cat (a weight gradient's pieces), a 2-D transpose only a cat uses, or a transpose that
    is an output (the product then writes its transpose: (A @ B).T = B.T @ A.T)."""
    outputs = set(graph.outputs)
    placed = {}
    for mm in graph.nodes:
        if (
            mm.op != "matmul"
            or len(mm.users) != 1
            or mm in outputs
            or mm.dtype.kind != "f"
            or len(mm.shape) != 2
            or any(len(i.shape) != 2 or i.dtype != mm.dtype for i in mm.inputs)
        ):
            continue
        user = mm.users[0]
        if user.op == "cat" and user.inputs.count(mm) == 1:
            placed[mm] = user
        elif user.op == "transpose" and len(user.shape) == 2 and user not in outputs:
            if (
                len(user.users) == 1
                and user.users[0].op == "cat"
                and user.users[0].inputs.count(user) == 1
            ):
                placed[mm] = user
                placed[user] = user.users[0]
        elif user.op == "transpose" and len(user.shape) == 2 and graph.outputs.count(user) == 1:
            if not user.users:
                placed[mm] = user
    return placed


class Runner:
    """Calls a compiled graph: checks arrays, allocates outputs, passes pointers, reports errors.

    A call goes through the native binder (`binder.py`: checks, pointers and output allocation
    in native code) when it takes it; anything it does not take goes through the Python path,
    `call_checked`: every check with a clear error, odd layouts copied, then a ctypes call.
    """

    def __init__(self, graph: Graph, native: NativeFunction, workspace_bytes: int, errors):
        self.native = native
        self.artifacts = native.artifacts
        self.errors = errors
        self.inputs = [i.type for i in graph.inputs]
        self.outputs = [o.type for o in graph.outputs]
        self.signature = Signature([i.name for i in graph.inputs], self.inputs)
        self.workspace = np.zeros(max(workspace_bytes, ALIGN) + ALIGN, np.uint8)
        self.state = np.zeros(3, np.int64)  # binder.BUSY, STATUS, CALLS: shared by every path
        moved = sum(_nbytes(t) for t in self.inputs + self.outputs) + workspace_bytes
        # Releasing the GIL costs ~0.1 us: worth it when the call is long enough for another
        # thread to use it.
        self.release_gil = moved >= RELEASE_GIL_BYTES
        self._call = self.fast_call(len(self.inputs))

    @property
    def native_calls(self) -> int:
        """How many times native code ran (by either path)."""
        return int(self.state[binder.CALLS])

    def fast_call(
        self, n_args: int, *, holders=(), params=(), no_trainable=False, wrap=None, single=False
    ):
        """A builtin `bound(*objects) -> outputs | int code` (see `binder.bind`), or None when
        the binder is not available."""
        return binder.bind(
            self.native.address,
            self.inputs,
            self.outputs,
            (_aligned(self.workspace), self.state.ctypes.data + 8 * binder.STATUS),
            self.state,
            n_args=n_args,
            holders=holders,
            params=params,
            no_trainable=no_trainable,
            wrap=wrap,
            single=single,
            release_gil=self.release_gil,
            keep=(self.native, self.workspace),
        )

    def __call__(self, arrays):
        if self._call is not None and type(arrays) in (list, tuple):
            result = self._call(*arrays)
            if type(result) is tuple:
                return list(result)
            if result < 0:
                raise IndexError(self.errors[-result - 1])
        return self.call_checked(arrays)

    def call_checked(self, arrays) -> list[np.ndarray]:
        """The Python path: clear errors for wrong arrays, copies of odd layouts, a ctypes call.

        It uses the graph's workspace unless another call holds it (a thread inside native code,
        or a call re-entered from Python code run by the binder); then fresh buffers.
        """
        arrays = self.signature.check(arrays)
        outputs = [np.empty(t.shape, t.dtype) for t in self.outputs]
        state = self.state
        shared = not state[binder.BUSY]
        if shared:
            state[binder.BUSY] = 1
            workspace, status = self.workspace, state[binder.STATUS :][:1]
        else:
            workspace, status = np.zeros_like(self.workspace), np.zeros(1, np.int64)
        try:
            addresses = [a.ctypes.data for a in arrays + outputs]
            addresses += [_aligned(workspace), status.ctypes.data]
            status[0] = 0
            state[binder.CALLS] += 1
            self.native.call((ctypes.c_void_p * len(addresses))(*addresses))
        finally:
            if shared:
                state[binder.BUSY] = 0
        if status[0]:
            raise IndexError(self.errors[int(status[0]) - 1])
        return outputs


def _nbytes(t) -> int:
    return int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize


def _aligned(buffer: np.ndarray) -> int:
    address = buffer.ctypes.data
    return address + (-address) % ALIGN


def build(graph: Graph) -> Runner:
    """Build native code for `graph`; a CompileError names what cannot be lowered."""
    for node in graph.nodes:
        for t in [node.type] + [i.type for i in node.inputs]:
            llvm_type(t.dtype)
    lowering = GraphLowering(graph)
    text = lowering.lower()
    native = NativeFunction(text, "entry")
    return Runner(graph, native, lowering.workspace_bytes, lowering.errors)
