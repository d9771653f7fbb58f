"""The llvm backend: an entry module per graph signature calling shared kernels, JIT-compiled
for the host CPU.

    graph -> GraphLowering (views and kernels per node, in order) -> LLVM IR -> O3 -> machine code

The entry function `void f(ptr* args)` receives, in order: the graph's inputs (arguments, then
parameters), its outputs, one workspace for every intermediate, and a status word that native
code sets when it meets an index out of range. All are numpy arrays; the runner checks every
one before the call (in native code, see `binder.py`; or `runtime.Signature` on its Python path).

The workspace also keeps packed copies of weight parameters from call to call, with snapshots
that tell whether a parameter changed (`GraphLowering.kept_transpose`): it must live as long as
the runner and start zeroed.

Kernels are shared: each kernel function (a product, a loop, a fused elementwise chain) is
emitted as its own module, compiled once per process for everything that decides its code
(`_kernel_key`; linked into the module of the first entry that needs it, see `build`) and
called by every entry function that needs it (the names example's 18 sequence lengths share
most of theirs; a loop or a product over time steps takes the number of steps at run time,
`lowering.Scaled`). So a kernel's code never depends on where its graph puts things: it gets its
own scratch (`void kernel(ptr views..., ptr scratch, ptr flags, ptr status[, i64 count])`), reads
the parameters' changed flags at fixed offsets (`_flag`) and sets process-wide error codes
(`ERRORS`).

A value goes straight where its reader wants it when it can: an output's buffer, a cat's slice
(`_placed_products`, `_placed_in_cats`: a loop's steps and the step peeled before it land in
the cat that joins them). A cat's other contiguous pieces are copied with memcpy in the entry
function: a cat of any length compiles no kernel.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import itertools
import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from llvmlite import ir

from ..errors import CompileError
from ..ir.graph import Graph, Node, collector_paused
from . import binder, gemm, lowering, mathfns, packing, runtime
from .kernel import I8, I64, PTR, KernelBuilder, View, contiguous_strides, llvm_type
from .lowering import (
    FUSABLE,
    KERNELS,
    SCALED,
    UNSUPPORTED,
    VIEWS,
    Scaled,
    cat_slices,
    convert_copy,
    copy_kernel,
    emit_math,
    epilogue_tree,
    fused_elementwise,
    is_basic_index,
    product_epilogues,
    product_with_epilogue,
)
from .runtime import Artifacts, NativeFunction, Signature

ALIGN = 64  # bytes: every workspace buffer starts on a cache line
RELEASE_GIL_BYTES = 1 << 14  # calls touching this much memory release the GIL (see Runner)
# A parameter changed on this many calls in a row is rebuilt without comparing, and compared
# again on 2 calls of every CHECK_EVERY - TRAINING + 2 (see `GraphLowering._param_changed`).
TRAINING = 8
CHECK_EVERY = 64
# The status word's messages, process-wide: a shared kernel sets the same code in every graph.
ERRORS: list[str] = []
# Re-emit every shared kernel found in the cache and check its code is the cached one (tests).
CHECK_SHARED = False


@dataclass(eq=False)
class SharedKernel:
    """A kernel function and what its callers must provide: `scratch_bytes` of workspace of its
    own and the changed flags of `params` (graph input indices). Compiled with the entry of the
    build that made it (`code`, set by `build`)."""

    symbol: str
    scratch_bytes: int
    params: tuple[int, ...]
    text: str  # its IR as emitted
    code: runtime.NativeCode | None = None


# key -> kernel, while some runner uses it (runners hold their kernels)
_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_symbols = itertools.count()
_BUILDING = threading.Lock()


class GraphLowering:
    """Lowers a graph's nodes into the entry function, one after another; kernels go into
    shared kernel functions (`_emit_kernel_function`)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.module = ir.Module(name=graph.name)
        self.module.triple = ""
        fn_type = ir.FunctionType(ir.VoidType(), [PTR])
        self.function = ir.Function(self.module, fn_type, name="entry")
        self.function.args[0].name = "args"
        self.function.args[0].add_attribute("noalias")
        self.k = KernelBuilder(self.module, self.function)
        # The workspace starts with the parameters' changed flags: 2 bytes for graph input k at
        # 2 * k (see `_param_changed`), where every kernel finds them.
        self.workspace_bytes = 2 * len(graph.inputs)
        self.kernel_bytes = 0  # scratch of the kernel being emitted, from its own pointer
        self.kernels: list[SharedKernel] = []  # the kernels the entry calls, kept alive with it
        self.new_kernels: dict[tuple, SharedKernel] = {}  # key -> kernel, compiled by `build`
        self._kernel_params: list[int] = []  # params whose flags the kernel being emitted reads
        # In a kernel that takes a size at run time (`lowering.Scaled`): that size, an i64.
        self.count: ir.Value | None = None
        self.scaled: Scaled | None = None
        self._declared: dict[str, ir.Function] = {}
        self._target = _target_key()
        self._packed: list[dict] = [{}]
        # Set by a loop around its body: an i1, true on steps whose products run k backwards.
        self.reverse_k: ir.Value | None = None
        n_inputs, n_outputs = len(graph.inputs), len(graph.outputs)
        self._workspace = self._arg(n_inputs + n_outputs)
        self._status = self._arg(n_inputs + n_outputs + 1)
        self._flags = self._workspace
        self._entry_k = self.k
        self._entry_inputs: list[View] = []
        self._param_flags: set[int] = set()  # parameters compared in the entry function

    @property
    def _in_kernel(self) -> bool:
        return self.k is not self._entry_k

    # ---- what kernels use -----------------------------------------------------------------------

    def _arg(self, index: int) -> ir.Value:
        b = self.k.builder
        slot = b.gep(self.function.args[0], [ir.Constant(I64, index)], source_etype=PTR)
        return b.load(slot, typ=PTR)

    def scratch(self, shape, dtype) -> View:
        """A fresh contiguous buffer in the workspace (in a kernel: in its own scratch)."""
        size = max(int(np.prod(shape, dtype=np.int64)), 1) * np.dtype(dtype).itemsize
        start = self._reserve(size, kernel=self._in_kernel)
        byte_ptr = self.k.builder.gep(
            self._workspace, [ir.Constant(I64, start)], inbounds=True, source_etype=I8
        )
        return View(byte_ptr, ir.Constant(I64, 0), tuple(shape), contiguous_strides(shape), dtype)

    def _reserve(self, size: int, kernel: bool = False) -> int:
        """The offset of `size` fresh bytes in the workspace (or in the kernel's scratch)."""
        used = self.kernel_bytes if kernel else self.workspace_bytes
        start = -(-used // ALIGN) * ALIGN
        if kernel:
            self.kernel_bytes = start + size
        else:
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
        """An i1 in the current function: whether parameter `index` changed since the last call
        (the entry function's answer, `_compare_param`, read from the parameter's flag)."""
        if self._in_kernel:
            if index not in self._kernel_params:
                self._kernel_params.append(index)
        else:
            self._compare_param(index)
        b = self.k.builder
        byte = b.load(self._flag(self._flags, index, b), typ=I8)
        return b.icmp_unsigned("!=", byte, ir.Constant(I8, 0))

    def _compare_param(self, index: int) -> None:
        """Emit, once, where the entry function is: whether parameter `index` changed.

        The entry function compares the whole parameter with a snapshot in the workspace (and
        refreshes it; `_compare_kernel`) once per call, before the first kernel that asks, and
        leaves the answer in the parameter's flag byte. The workspace starts zeroed: a zero
        parameter and zero copies agree.

        A parameter that changed on TRAINING calls in a row (a training loop: every step
        updates it) is taken as changed without comparing or refreshing the snapshot: the
        copies are rebuilt from the live parameter, never stale, without the compare and the
        snapshot's copy (T1's forward, over an unchanged call: ~9 -> ~3 us). Two calls of
        every CHECK_EVERY - TRAINING + 2 compare again (the snapshot is stale by then; the second
        finds whether the parameter still changes): code that stops training returns to
        comparing alone."""
        if index in self._param_flags:
            return
        self._param_flags.add(index)
        param = self._entry_inputs[index]
        flat = View(param.ptr, param.offset, (1, param.size), (0, 1), param.dtype)
        snapshot = self.scratch(flat.shape, flat.dtype)
        self._emit_kernel_function(None, snapshot, [flat], partial(_compare_kernel, index=index))

    @staticmethod
    def _flag(flags: ir.Value, index: int, b: ir.IRBuilder) -> ir.Value:
        """Parameter `index`'s flag byte (then its streak byte) at the workspace's start."""
        return b.gep(flags, [ir.Constant(I64, 2 * index)], inbounds=True, source_etype=I8)

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
        if message not in ERRORS:
            ERRORS.append(message)
        code = ir.Constant(I64, ERRORS.index(message) + 1)
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
        skip = set(placed) | inlined | set(biased)
        ends = product_epilogues(graph, inlined, skip | {add for add, _ in biased.values()})
        ended = set(ends.values())
        places = _Places(self, direct, _placed_in_cats(graph, skip | ended))
        for node in graph.nodes:
            if node in env or node in placed or node in inlined or node in ended:
                continue  # computed with another node
            try:
                if node in ends:  # the product's kernel computes it
                    product, leaves = ends[node], []
                    tree = epilogue_tree(node, product, env, inlined, leaves)
                    out = places.dest(node) or self.scratch(node.shape, node.dtype)
                    args = [env[i] for i in product.inputs] + leaves
                    self._emit_kernel(product, out, args, partial(product_with_epilogue, tree=tree))
                    env[node] = out
                    continue
                if node.op in FUSABLE and any(i in inlined for i in node.inputs):
                    out = places.dest(node) or self.scratch(node.shape, node.dtype)
                    leaves: list[View] = []
                    tree = _tree(node, node.shape, env, inlined, leaves)
                    self._emit_kernel(node, out, leaves, partial(fused_elementwise, tree=tree))
                    env[node] = out
                    continue
                if node.op == "cat" or node in consumers:
                    env[node] = self._lower_placing(node, env, placed, places, graph, outputs)
                    continue
                if node in biased:
                    add, bias = biased[node]
                    out = places.dest(add) or self.scratch(add.shape, add.dtype)
                    args = [env[i] for i in node.inputs] + [env[bias]]
                    self._emit_kernel(node, out, args)
                    env[add] = out
                    continue
                env[node] = self._lower_node(node, [env[i] for i in node.inputs], places.dest(node))
            except CompileError:
                raise
            except Exception as e:
                what = f"lowering %{node.name} = {node.op}"
                raise CompileError(f"llvm backend: {what} failed: {type(e).__name__}: {e}") from e
        for node, dest in zip(graph.outputs, outputs, strict=True):
            if env[node] is not dest:
                gemm.copy(self.k, env[node], dest)

    def _lower_placing(self, node: Node, env, placed, places: _Places, graph, outputs) -> View:
        """A cat (its products, `_placed_products`, written straight into their place in its
        value; values computed there already, `_placed_in_cats`, left there; the rest copied in)
        or an output transpose whose product writes its transpose."""
        if node.op == "transpose":  # a graph output: the product writes its transpose
            out = outputs[graph.outputs.index(node)]
            self._place(node.inputs[0], out.transpose((1, 0)), env)
            return out
        out, slices = places.cat(node)
        copies = []
        for k, (x, dst) in enumerate(zip(node.inputs, slices, strict=True)):
            if places.holds(node, k):
                continue
            if placed.get(x) is not node:
                copies.append((env[x], dst))
            elif x.op == "transpose":
                self._place(x.inputs[0], dst.transpose((1, 0)), env)
            else:
                self._place(x, dst, env)
        if self._in_kernel:
            for src, dst in copies:
                convert_copy(self, src, dst)
        elif len(copies) == len(node.inputs) and not any(_flat_copy(*c) for c in copies):
            self._emit_kernel(node, out, [env[x] for x in node.inputs])  # one kernel copies all
        else:
            for src, dst in copies:
                if _flat_copy(src, dst):
                    self._memcpy(src, dst)
                else:
                    self._emit_kernel_function(None, dst, [src], partial(copy_kernel))
        return out

    def _memcpy(self, src: View, dst: View) -> None:
        """dst = src, both contiguous and of one dtype: a call to memcpy in the entry function,
        no kernel (a cat's pieces of any length along its first dim)."""
        b = self.k.builder
        memcpy = self.module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
        at = [
            b.gep(v.ptr, [v.offset], inbounds=True, source_etype=llvm_type(v.dtype))
            for v in (dst, src)
        ]
        size = ir.Constant(I64, dst.size * dst.dtype.itemsize)
        b.call(memcpy, [*at, size, ir.Constant(ir.IntType(1), 0)])

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
        if node.op == "getitem_grad" and is_basic_index(node.params["index"]):
            return self._basic_getitem_grad(node, args[0], dest)
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
            outer, self.count = self.count, None
            try:
                kernel(self, node, out, *args)
            finally:
                self.count = outer
        else:
            self._emit_kernel_function(node, out, args, kernel)

    def _emit_kernel_function(self, node: Node | None, out: View, args: list[View], kernel):
        """Call the node's kernel function, made (and compiled) unless an identical one exists.

        One function per kernel keeps LLVM's work per function small (optimizing one huge
        function of many loops grows faster than linearly: an unrolled LSTM took minutes) and
        lets graphs share it. `node` is None for a kernel that `kernel` alone describes.
        """
        views = [out, *args]
        hook = SCALED.get(node.op) if node is not None else None
        scaled = hook(node, views) if hook is not None and kernel is KERNELS[node.op] else None
        key = self._kernel_key(node, views, kernel, scaled)
        shared = _SHARED.get(key)
        if shared is None or CHECK_SHARED:
            made = self._kernel_text(node, views, kernel, scaled)
            if shared is None:
                shared = self.new_kernels[key] = _SHARED[key] = _new_kernel(*made)
            elif made != (shared.text, shared.scratch_bytes, shared.params):
                raise AssertionError(f"kernel {kernel} shared under a key that misses something")
        self.kernels.append(shared)
        for index in shared.params:
            self._compare_param(index)
        start = self._reserve(max(shared.scratch_bytes, 1))
        b = self.k.builder
        scratch = b.gep(self._workspace, [ir.Constant(I64, start)], inbounds=True, source_etype=I8)
        pointers = [
            b.gep(v.ptr, [v.offset], inbounds=True, source_etype=llvm_type(v.dtype)) for v in views
        ]
        count = [] if scaled is None else [ir.Constant(I64, scaled.count)]
        callee = self._declare(shared.symbol, len(views), len(count))
        b.call(callee, [*pointers, scratch, self._flags, self._status, *count])

    def _declare(self, symbol: str, n_views: int, n_counts: int) -> ir.Function:
        fn = self._declared.get(symbol)
        if fn is None:
            fn_type = ir.FunctionType(ir.VoidType(), [PTR] * (n_views + 3) + [I64] * n_counts)
            fn = self._declared[symbol] = ir.Function(self.module, fn_type, name=symbol)
        return fn

    def _kernel_text(self, node, views: list[View], kernel, scaled) -> tuple[str, int, tuple]:
        """The kernel function's module, as text: `void kernel(ptr views..., ptr scratch,
        ptr flags, ptr status[, i64 count])`; its scratch bytes and the parameters whose flags
        it reads. A scaled kernel sees its scaled dims one unit long (`_scaled_layouts`): its
        code cannot depend on their size."""
        module = ir.Module(name="kernel")
        module.triple = ""
        counts = [] if scaled is None else [I64]
        fn_type = ir.FunctionType(ir.VoidType(), [PTR] * (len(views) + 3) + counts)
        fn = ir.Function(module, fn_type, name="kernel")
        fn.args[0].add_attribute("noalias")  # the output buffer is always a fresh one
        caller = (self.module, self.k, self._workspace, self._flags, self._status)
        self.module, self.k = module, KernelBuilder(module, fn)
        self._workspace, self._flags, self._status = fn.args[len(views) : len(views) + 3]
        self.count, self.scaled = (fn.args[-1], scaled) if scaled else (None, None)
        self.kernel_bytes, self._kernel_params = 0, []
        local = [
            View(arg, ir.Constant(I64, 0), shape, v.strides, v.dtype, v.param)
            for arg, v, (shape, *_) in zip(
                fn.args, views, _scaled_layouts(views, scaled), strict=False
            )
        ]
        try:
            with self.scope():
                kernel(self, node, *local)
            self.k.builder.ret_void()
        finally:
            self.module, self.k, self._workspace, self._flags, self._status = caller
            self.count, self.scaled = None, None
        return str(module), self.kernel_bytes, tuple(self._kernel_params)

    def _kernel_key(self, node, views: list[View], kernel, scaled) -> tuple:
        """Everything that decides a kernel function's code: the lowering and its arguments,
        the node (op, params, types; a loop's whole body), the views' layouts and the target.
        A scaled kernel's key has its scaled dims as units, and the node without its types
        (which hold those dims; its lowering reads the views)."""
        if isinstance(kernel, partial):
            how = (kernel.func, _canon(kernel.args), _canon(kernel.keywords))
        else:
            how = (kernel,)
        layouts = _scaled_layouts(views, scaled)
        if scaled is None:
            what = None if node is None else _node_key(node)
        else:
            what = (node.op, _canon(node.params), scaled.unit, scaled.dims, scaled.plan)
        return (*how, what, layouts, self._target)

    def _basic_getitem_grad(self, node: Node, g: View, dest: View | None) -> View:
        """The gradient of x[index] for basic indexing (ints, slices, None): zeros, and g
        copied into the indexed view (no table of destinations, no sum: no element repeats)."""
        out = dest or self.scratch(node.shape, node.dtype)
        b = self.k.builder
        memset = self.module.declare_intrinsic("llvm.memset", [PTR, I64])
        at = self.k.address(out, [0] * len(out.shape))  # its first element (offset in elements)
        size = ir.Constant(I64, out.size * out.dtype.itemsize)
        b.call(memset, [at, ir.Constant(I8, 0), size, ir.Constant(ir.IntType(1), 0)])
        part = VIEWS["getitem"](self, node, out)
        if self._in_kernel:
            convert_copy(self, g, part)
        else:
            self._emit_kernel_function(None, part, [g], partial(copy_kernel))
        return out


def _scaled_layouts(views: list[View], scaled: Scaled | None) -> tuple:
    """(shape, strides, dtype, param) per view; a scaled kernel's scaled dims one unit long."""
    layouts = [[v.shape, v.strides, v.dtype.str, v.param] for v in views]
    for position, dim in () if scaled is None else scaled.dims:
        shape = list(layouts[position][0])
        shape[dim] = scaled.unit
        layouts[position][0] = tuple(shape)
    return tuple(tuple(x) for x in layouts)


def _compare_kernel(ctx: GraphLowering, node, snapshot: View, flat: View, index: int) -> None:
    """Parameter `index`'s flag = whether it changed; see `GraphLowering._compare_param`."""
    b = ctx.k.builder
    flag = ctx._flag(ctx._flags, index, b)
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
            changed = packing.refresh(ctx.k, flat, snapshot)
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


def _new_kernel(text: str, scratch_bytes: int, params: tuple) -> SharedKernel:
    """A new kernel under a symbol of its own (compiled by `build`, with the entry calling it)."""
    return SharedKernel(f"mytorch.kernel.{next(_symbols)}", scratch_bytes, params, text)


def _target_key() -> tuple:
    """What else decides generated code: the ISA the kernels are written for, the JIT's target
    and the code generators' tuning constants."""
    tuning = tuple(
        (m.__name__, name, value)
        for m in (gemm, packing, lowering, mathfns)
        for name, value in sorted(vars(m).items())
        if name.isupper() and isinstance(value, (int, float, str))
    )
    return (
        tuple(sorted(gemm.host_features())),
        runtime.target_machine,
        tuning,
        (ALIGN, TRAINING, CHECK_EVERY),
    )


def _node_key(node: Node) -> tuple:
    return (node.op, _canon(node.params), node.type, tuple(i.type for i in node.inputs))


def _graph_key(graph: Graph) -> tuple:
    """A graph's whole structure (its names aside)."""
    index = {}
    items = []
    for n in graph.inputs:
        index[n] = len(index)
        items.append((n.op, n.type))
    for n in graph.nodes:
        if n in index:
            continue
        index[n] = len(index)
        value = None if n.value is None else _canon(n.value)
        inputs = tuple(index[i] for i in n.inputs)
        items.append((n.op, _canon(n.params), n.type, inputs, value))
    return (tuple(items), tuple(index[o] for o in graph.outputs))


def _canon(value) -> tuple:
    """A hashable value equal only for values that lower the same (1, 1.0 and True differ)."""
    if isinstance(value, Graph):
        return ("graph", _graph_key(value))
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_canon(v) for v in value))
    if isinstance(value, Mapping):
        return ("map", tuple((k, _canon(v)) for k, v in sorted(value.items())))
    if isinstance(value, Node):  # a fused chain's node
        return ("node", _node_key(value))
    try:
        hash(value)
    except TypeError:
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)


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


def _placed_in_cats(graph: Graph, skip: set[Node]) -> dict[Node, tuple[Node, int]]:
    """Values computed straight into their slice of a cat along its first dim (any dim after
    dims of 1: a contiguous slice), which then copies nothing for them: node -> (cat, input
    position). The cat reads the node or a reshape of it; the node is computed by a kernel of
    its own (not in `skip`) and is no output; other nodes read it in its slice."""
    outputs = set(graph.outputs)
    slots: dict[Node, tuple[Node, int]] = {}
    for cat in graph.nodes:
        if cat.op != "cat" or math.prod(cat.shape[: cat.params["dim"] % len(cat.shape)]) != 1:
            continue
        for k, x in enumerate(cat.inputs):
            node = x.inputs[0] if x.op == "reshape" else x
            if (
                node in slots
                or node in skip
                or node in outputs
                or node.is_input
                or node.op not in KERNELS
                or node.op in VIEWS
                or node.dtype != cat.dtype
                or cat.inputs.count(x) != 1
            ):
                continue
            slots[node] = (cat, k)
    return slots


class _Places:
    """Where lower_subgraph's values go when not in fresh scratch: outputs' buffers (`direct`)
    and slices of cats (`_placed_in_cats`; a cat's value is made when its first piece is)."""

    def __init__(self, ctx: GraphLowering, direct: dict[Node, View], slots):
        self.ctx, self.direct, self.slots = ctx, direct, slots
        self.cats: dict[Node, tuple[View, list[View]]] = {}
        self.held = {(cat, k) for cat, k in slots.values()}

    def dest(self, node: Node) -> View | None:
        if node in self.direct:
            return self.direct[node]
        if node not in self.slots:
            return None
        cat, k = self.slots[node]
        piece = self.cat(cat)[1][k]
        return replace(piece, shape=node.shape, strides=contiguous_strides(node.shape))

    def cat(self, cat: Node) -> tuple[View, list[View]]:
        """The cat's value and its pieces' slices of it."""
        if cat not in self.cats:
            out = self.dest(cat) or self.ctx.scratch(cat.shape, cat.dtype)
            self.cats[cat] = (out, cat_slices(self.ctx, cat, out))
        return self.cats[cat]

    def holds(self, cat: Node, k: int) -> bool:
        """Whether the cat's piece k was computed in its place."""
        return (cat, k) in self.held


def _flat_copy(src: View, dst: View) -> bool:
    return (
        src.shape == dst.shape
        and src.dtype == dst.dtype
        and src.is_contiguous
        and dst.is_contiguous
    )


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

    def twin(self) -> Runner:
        """A runner of the same native code with its own workspace and state: another thread
        may call it while this one runs."""
        twin = copy.copy(self)
        twin.workspace = np.zeros_like(self.workspace)
        twin.state = np.zeros_like(self.state)
        twin._call = twin.fast_call(len(twin.inputs))
        return twin

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
    """Build native code for `graph`; a CompileError names what cannot be lowered.

    The entry and the kernels no earlier build made are one LLVM module (`runtime.NativeCode`);
    every other build finds a kernel by its symbol. One build at a time: a kernel is in the
    cache before it is compiled.
    """
    for node in graph.nodes:
        for t in [node.type] + [i.type for i in node.inputs]:
            llvm_type(t.dtype)
    # The collector paused: lowering makes ~10^4 IR objects that live until the module is text;
    # collections would scan them again and again (~10% of a build).
    with _BUILDING, collector_paused():
        lowering = GraphLowering(graph)
        try:
            text = lowering.lower()
            new = lowering.new_kernels.values()
            code = runtime.NativeCode(text, {k.symbol: k.text for k in new})
        except BaseException:
            for key in lowering.new_kernels:
                _SHARED.pop(key, None)
            raise
        binding = runtime.llvm()
        for kernel in new:
            kernel.code = code
            binding.add_symbol(kernel.symbol, code.address(kernel.symbol))
    kernels = list(dict.fromkeys(lowering.kernels))
    native = NativeFunction(None, "entry", keep=tuple(kernels), code=code)
    others = dict.fromkeys(k.code for k in kernels if k.code is not code)
    native.artifacts = Artifacts.joined([code.artifacts] + [c.artifacts for c in others])
    return Runner(graph, native, lowering.workspace_bytes, ERRORS)
