"""The native binder: the lean call from Python into a compiled graph, as a Python builtin.

Calling through ctypes costs ~0.5 µs and reading an array's address through `ndarray.ctypes.data`
~2.5 µs, so a warm `a + b` spent most of its time getting into native code. The binder is one
generic function, JIT-compiled once per process from the IR below and exposed as a
METH_FASTCALL builtin (what a C extension's function is). Its `self` is a *plan*: an int64 array
describing one compiled graph. A call `bound(*objects)` does, in native code:

    for each input (the objects passed, then the plan's parameter objects):
        the array: the object itself, or (holder plans) its `.data` attribute
        check: exactly an ndarray with the expected dtype object, shape, C-contiguous, aligned
        pointers[k] = its data pointer
    for each output: PyArray_Empty(shape, dtype), pointers[...] = its data pointer
    call the graph's entry(pointers), with the GIL released for graphs worth it
    (wrapping plans) make each output into an object holding it: a Tensor, as `wrap` makes it
    return the tuple of outputs, or the one output alone

Anything else (a wrong count, type, dtype, shape or layout, a trainable tensor under a plan that
requires none, the graph's buffers in use by another call) returns an int code and calls nothing:
the caller then takes its general Python path, which converts what can be converted and raises a
clear error for the rest. The binder only accepts exactly the common case; correctness never
depends on it. A negative code is the native status word: an index out of range.

It reads CPython and numpy structs directly (an object's type; an ndarray's data, ndim, shape,
dtype and flags: numpy's PyArrayObject_fields, the same in numpy 1.x and 2.x) and calls numpy's
PyArray_Empty by its C-API table index. `_binder()` checks all of that against live objects once;
if anything differs (another interpreter, a free-threaded build), the binder is not used at all.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import sysconfig

import numpy as np
from llvmlite import ir

from ..ops.registry import TensorType
from .runtime import llvm, target_machine

I32, I64, PTR = ir.IntType(32), ir.IntType(64), ir.PointerType()

# Byte offsets: PyObject.ob_type; PyArrayObject_fields (numpy/ndarraytypes.h).
OB_TYPE = 8
ARRAY_DATA, ARRAY_NDIM, ARRAY_DIMS, ARRAY_DESCR, ARRAY_FLAGS = 16, 24, 32, 56, 64
C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400
NUMPY_API_ARRAY_TYPE, NUMPY_API_EMPTY = 2, 184  # indices in numpy's C-API table (a stable ABI)
METH_FASTCALL = 0x80

# Plan header: int64 words; pointers stored as integers.
N_ARGS, FLAGS, N_PARAMS, N_OUTPUTS, ENTRY, STATE = 0, 1, 2, 3, 4, 5
TYPE_A, TYPE_B, DATA_NAME, TRAINABLE_NAME, FALSE = 6, 7, 8, 9, 10
PARAMS, SLOTS, POINTERS = 11, 12, 13
WRAP_TYPE, FIELDS, N_FIELDS, EMPTY_TUPLE = 14, 15, 16, 17
HEADER = 18
SLOT = 4  # words per array: dtype object, ndim, address of its shape, required flags
HOLDERS, NO_TRAINABLE, RELEASE_GIL, SINGLE = 1, 2, 4, 8  # FLAGS bits
Py_tp_new = 65  # the slot id PyType_GetSlot takes (typeslots.h)

# State words shared by the plans of one graph and its Python path.
BUSY, STATUS, CALLS = 0, 1, 2

# What an int result means (positive: nothing was called).
BAD_ARGS, IN_USE, TRAINABLE, BAD_INPUT = 1, 2, 3, 16  # BAD_INPUT + k: input k was not as expected

CAPI = {  # name: (return type, argument types)
    "PyObject_GetAttr": (PTR, [PTR, PTR]),
    "Py_IncRef": (ir.VoidType(), [PTR]),
    "Py_DecRef": (ir.VoidType(), [PTR]),
    "PyErr_Clear": (ir.VoidType(), []),
    "PyLong_FromLongLong": (PTR, [I64]),
    "PyTuple_New": (PTR, [I64]),
    "PyTuple_SetItem": (I32, [PTR, I64, PTR]),
    "PyEval_SaveThread": (PTR, []),
    "PyEval_RestoreThread": (ir.VoidType(), [PTR]),
    "PyObject_SetAttr": (I32, [PTR, PTR, PTR]),
}
NUMPY_EMPTY = (PTR, [I32, PTR, PTR, I32])  # PyArray_Empty(ndim, shape, dtype (stolen), fortran)
OBJECT_NEW = (PTR, [PTR, PTR, PTR])  # object.__new__'s slot: tp_new(type, args, kwargs)

enabled = os.environ.get("MYTORCH_BINDER", "1") != "0"  # MYTORCH_BINDER=0: the Python path only


class _Plan(np.ndarray):
    """A plan's words; `keep` holds everything they point to, as long as the builtin lives."""


class ABI:
    """The addresses the binder calls, found and verified in this process."""

    def __init__(self):
        api = ctypes.pythonapi
        self.functions = {
            name: ctypes.cast(getattr(api, name), ctypes.c_void_p).value for name in CAPI
        }
        table = _numpy_api_table()
        self.array_type = table[NUMPY_API_ARRAY_TYPE]
        self.functions["PyArray_Empty"] = table[NUMPY_API_EMPTY]
        if self.array_type != id(np.ndarray):
            raise RuntimeError("numpy's C-API table does not start as expected")
        get_slot = api.PyType_GetSlot
        get_slot.restype, get_slot.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
        self.functions["object_new"] = get_slot(object, Py_tp_new)
        if not self.functions["object_new"]:
            raise RuntimeError("object has no tp_new slot")
        new = api.PyCFunction_NewEx
        new.restype, new.argtypes = (
            ctypes.py_object,
            [ctypes.c_void_p, ctypes.py_object, ctypes.c_void_p],
        )
        self.new_builtin = new


def _numpy_api_table():
    core = getattr(np, "_core", None) or np.core
    capsule = core._multiarray_umath._ARRAY_API
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return (ctypes.c_void_p * (NUMPY_API_EMPTY + 1)).from_address(get(capsule, None))


def _word(address: int, ctype=ctypes.c_int64) -> int:
    return ctype.from_address(address).value


def _check_layouts() -> None:
    """Raise unless objects and ndarrays have the fields the binder reads where it reads them."""
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise RuntimeError("not a CPython build with the GIL")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise RuntimeError("not a 64-bit build")
    base = np.zeros(40, np.uint8)
    read_only = np.ones((2, 2))
    read_only.flags.writeable = False
    samples = [
        np.zeros((2, 3), np.float32),
        np.zeros(7, np.int64)[::2],
        np.asfortranarray(np.zeros((3, 4))),
        base[1:33].view(np.float32).reshape(2, 4),  # unaligned
        read_only,
        np.zeros((), np.float64),
        np.broadcast_to(np.ones(3, np.float32), (2, 3)),
        np.zeros((1, 5, 1), ">f4"),
    ]
    for obj in [1.5, [], object(), *samples]:
        if _word(id(obj) + OB_TYPE) != id(type(obj)):
            raise RuntimeError("PyObject.ob_type is not where expected")
    for a in samples:
        address = id(a)
        flags = _word(address + ARRAY_FLAGS, ctypes.c_int32)
        if (
            _word(address + ARRAY_DATA) != a.ctypes.data
            or _word(address + ARRAY_NDIM, ctypes.c_int32) != a.ndim
            or _word(address + ARRAY_DESCR) != id(a.dtype)
            or bool(flags & C_CONTIGUOUS) != a.flags.c_contiguous
            or bool(flags & ALIGNED) != a.flags.aligned
            or bool(flags & WRITEABLE) != a.flags.writeable
        ):
            raise RuntimeError(f"ndarray fields are not where expected ({a.dtype}, {a.shape})")
        # Only now that the other fields matched is the shape pointer followed.
        dims = (ctypes.c_int64 * max(a.ndim, 1)).from_address(_word(address + ARRAY_DIMS))
        if tuple(dims[: a.ndim]) != a.shape:
            raise RuntimeError(f"ndarray shapes are not where expected ({a.shape})")


unavailable_reason = ""  # why `_binder()` gave None, for a reader wondering


@functools.cache
def _binder():
    """(abi, engine, method def) of the compiled binder; None where it cannot be used."""
    global unavailable_reason
    try:
        _check_layouts()
        abi = ABI()
        _check_empty(abi)
        module = llvm().parse_assembly(_emit(abi))
        module.verify()
        # Unoptimized: it builds in ~10 ms instead of ~100, and its time goes to the C-API
        # calls it makes, not to its own instructions.
        engine = llvm().create_mcjit_compiler(module, target_machine(opt=0))
        engine.finalize_object()
        address = engine.get_function_address("mytorch_bind")
        method = _MethodDef(b"bound", address, METH_FASTCALL, None)
        return abi, engine, method
    except Exception as e:  # noqa: BLE001 - any surprise means: use the Python path
        unavailable_reason = f"{type(e).__name__}: {e}"
        return None


class _MethodDef(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("meth", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("doc", ctypes.c_char_p),
    ]


def _check_empty(abi: ABI) -> None:
    """PyArray_Empty, called through the table, makes the array asked for."""
    empty = ctypes.PYFUNCTYPE(
        ctypes.py_object, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int
    )(abi.functions["PyArray_Empty"])
    dtype = np.dtype(np.float32)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(dtype))  # PyArray_Empty steals it
    dims = (ctypes.c_int64 * 2)(2, 3)
    out = empty(2, ctypes.addressof(dims), id(dtype), 0)
    if type(out) is not np.ndarray or out.shape != (2, 3) or out.dtype is not dtype:
        raise RuntimeError("PyArray_Empty is not where expected")


def available() -> bool:
    """True when the binder works in this process (and is enabled)."""
    return enabled and _binder() is not None


def bind(
    entry: int,
    inputs: list[TensorType],
    outputs: list[TensorType],
    pointers_tail: tuple[int, int],
    state: np.ndarray,
    *,
    n_args: int,
    holders: tuple[type, ...] = (),
    params: tuple = (),
    no_trainable: bool = False,
    wrap: tuple[type, tuple] | None = None,
    single: bool = False,
    release_gil: bool = True,
    writeable: bool = False,
    keep: tuple = (),
):
    """A builtin `bound(*objects)` calling the graph at `entry`, or None without the binder.

    `inputs` are the graph's input types: `n_args` objects passed to each call, then one per
    `params`. With `holders` (types), the objects passed must be exactly of one of those types
    and the arrays are their `.data` (parameters' too); `no_trainable` then also requires every
    one's `.trainable` to be False. `pointers_tail` are the workspace and status word addresses
    the entry takes after the outputs; `state` holds the status word, and `keep` what else the
    plan points to (the native code, the workspace).

    A call returns the tuple of output arrays; with `wrap=(cls, fields)`, each output is made
    into an instance of `cls` (`object.__new__(cls)`, its `.data` the array, then each
    `(name, value)` of `fields` set in order); with `single`, the one output alone, no tuple.
    With `writeable`, inputs must also be writeable (for code that updates them in place).
    """
    found = _binder() if enabled else None
    if found is None:
        return None
    abi, _engine, method = found
    if holders and len(holders) > 2 or len(inputs) != n_args + len(params):
        raise ValueError("a plan takes up to two holder types and one type per input")
    if single and len(outputs) != 1:
        raise ValueError("`single` is for graphs with one output")
    wrap_type, fields = wrap or (None, ())
    types = [*inputs, *outputs]
    dtypes = [np.dtype(t.dtype) for t in types]
    shapes = [tuple(t.shape) for t in types]
    n_slots = len(types)
    start_fields = HEADER + len(params)
    start_slots = start_fields + 2 * len(fields)
    start_pointers = start_slots + SLOT * n_slots
    start_dims = start_pointers + n_slots + 2
    plan = np.zeros(start_dims + sum(len(s) for s in shapes), np.int64).view(_Plan)
    base = plan.ctypes.data
    flags = (HOLDERS if holders else 0) | (NO_TRAINABLE if no_trainable else 0)
    flags |= (RELEASE_GIL if release_gil else 0) | (SINGLE if single else 0)
    holders = tuple(holders)
    names = (sys.intern("data"), sys.intern("trainable"))
    plan[:HEADER] = [
        n_args,
        flags,
        len(params),
        len(outputs),
        entry,
        state.ctypes.data,
        id(holders[0]) if holders else 0,
        id(holders[-1]) if holders else 0,
        id(names[0]),
        id(names[1]),
        id(False),
        base + 8 * HEADER,
        base + 8 * start_slots,
        base + 8 * start_pointers,
        id(wrap_type) if wrap else 0,
        base + 8 * start_fields,
        len(fields),
        id(()),
    ]
    plan[HEADER:start_fields] = [id(p) for p in params]
    plan[start_fields:start_slots] = [id(x) for field in fields for x in field]
    required = C_CONTIGUOUS | ALIGNED | (WRITEABLE if writeable else 0)
    at = start_dims
    for k, (dtype, shape) in enumerate(zip(dtypes, shapes, strict=True)):
        plan[start_slots + SLOT * k : start_slots + SLOT * (k + 1)] = [
            id(dtype),
            len(shape),
            base + 8 * at,
            required,  # (only inputs are checked: outputs are made here)
        ]
        plan[at : at + len(shape)] = shape
        at += len(shape)
    plan[start_pointers + n_slots : start_pointers + n_slots + 2] = pointers_tail
    plan.keep = (found, state, params, holders, names, dtypes, wrap, keep)  # found: its code
    return abi.new_builtin(ctypes.addressof(method), plan, None)


# ---- the binder's code ---------------------------------------------------------------------


class _Emitter:
    """Helpers to write the binder with llvmlite's IRBuilder."""

    def __init__(self, abi: ABI, fn: ir.Function):
        self.abi = abi
        self.fn = fn
        self.b = ir.IRBuilder(fn.append_basic_block("start"))

    def block(self, name: str) -> ir.Block:
        return self.fn.append_basic_block(name)

    def capi(self, name: str, *args):
        ret, params = {"PyArray_Empty": NUMPY_EMPTY, "object_new": OBJECT_NEW}.get(name) or CAPI[
            name
        ]
        fn_type = ir.FunctionType(ret, params)
        address = ir.Constant(I64, self.abi.functions[name])
        return self.b.call(self.b.inttoptr(address, fn_type.as_pointer()), list(args))

    def at(self, base: ir.Value, offset, typ=PTR) -> ir.Value:
        """Load the `typ` at byte `offset` (an int or an i64 value) from `base`."""
        offset = ir.Constant(I64, offset) if isinstance(offset, int) else offset
        address = self.b.gep(base, [offset], source_etype=ir.IntType(8))
        return self.b.load(address, typ=typ)

    def word(self, base: ir.Value, index, typ=I64) -> ir.Value:
        """Word `index` (an int or an i64 value) of an array of 8-byte words."""
        index = ir.Constant(I64, index) if isinstance(index, int) else index
        return self.b.load(self.b.gep(base, [index], source_etype=I64), typ=typ)

    def set_word(self, base: ir.Value, index, value: ir.Value) -> None:
        index = ir.Constant(I64, index) if isinstance(index, int) else index
        self.b.store(value, self.b.gep(base, [index], source_etype=I64))

    def var(self, typ, value) -> ir.Value:
        """A local variable: an alloca in the first block."""
        with self.b.goto_block(self.fn.entry_basic_block):
            self.b.position_at_start(self.fn.entry_basic_block)
            slot = self.b.alloca(typ)
        self.b.store(value, slot)
        return slot

    def loop(self, start: ir.Value, stop: ir.Value, name: str):
        """`for i in range(start, stop)`: returns (i, close). The builder is left in the body;
        close() ends the body and leaves the builder after the loop."""
        i = self.var(I64, start)
        head, body, done = self.block(f"{name}.head"), self.block(f"{name}.body"), self.block(name)
        self.b.branch(head)
        self.b.position_at_end(head)
        value = self.b.load(i)
        self.b.cbranch(self.b.icmp_signed("<", value, stop), body, done)
        self.b.position_at_end(body)

        def close():
            self.b.store(self.b.add(self.b.load(i), ir.Constant(I64, 1)), i)
            self.b.branch(head)
            self.b.position_at_end(done)

        return value, close

    def decref_range(self, held: ir.Value, start: ir.Value, stop: ir.Value, name: str) -> None:
        k, close = self.loop(start, stop, name)
        self.capi("Py_DecRef", self.b.load(self.b.gep(held, [k], source_etype=PTR), typ=PTR))
        close()


def _emit(abi: ABI) -> str:
    """LLVM IR of `PyObject *mytorch_bind(PyObject *plan, PyObject *const *args, i64 nargs)`."""
    module = ir.Module(name="mytorch_binder")
    module.triple = ""
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, I64]), name="mytorch_bind")
    plan_obj, args, nargs = fn.args
    e = _Emitter(abi, fn)
    b = e.b
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)

    def const(value: int) -> ir.Constant:
        return ir.Constant(I64, value)

    def returns_code(code: ir.Value) -> None:
        b.ret(e.capi("PyLong_FromLongLong", code))

    plan = e.at(plan_obj, ARRAY_DATA)
    state = e.word(plan, STATE, PTR)
    # Fix the allocas' block: everything else starts in "check".
    check = e.block("check")
    b.branch(check)
    b.position_at_end(check)
    bad_args, in_use, setup = e.block("bad_args"), e.block("in_use"), e.block("setup")
    b.cbranch(b.icmp_signed("!=", nargs, e.word(plan, N_ARGS)), bad_args, in_use)
    b.position_at_end(bad_args)
    returns_code(const(BAD_ARGS))
    b.position_at_end(in_use)
    busy_block = e.block("busy")
    b.cbranch(b.icmp_signed("!=", e.word(state, BUSY), zero), busy_block, setup)
    b.position_at_end(busy_block)
    returns_code(const(IN_USE))

    # setup: claim the plan's buffers until every way out
    b.position_at_end(setup)
    e.set_word(state, BUSY, one)
    flags = e.word(plan, FLAGS)
    n_args = e.word(plan, N_ARGS)
    n_in = b.add(n_args, e.word(plan, N_PARAMS))
    n_out = e.word(plan, N_OUTPUTS)
    slots, pointers = e.word(plan, SLOTS, PTR), e.word(plan, POINTERS, PTR)
    params = e.word(plan, PARAMS, PTR)
    held = b.alloca(PTR, b.add(n_in, n_out))  # new references to every array, in slot order
    n_held = e.var(I64, zero)
    code = e.var(I64, zero)

    def flag(bit: int) -> ir.Value:
        return b.icmp_signed("!=", b.and_(flags, const(bit)), zero)

    fail = e.block("fail")

    def fail_if(bad: ir.Value, value: ir.Value, name: str) -> None:
        ok = e.block(name)
        failing = e.block(f"{name}.fail")
        b.cbranch(bad, failing, ok)
        b.position_at_end(failing)
        b.store(value, code)
        b.branch(fail)
        b.position_at_end(ok)

    # ---- inputs ----
    i, close_inputs = e.loop(zero, n_in, "inputs")
    input_code = b.add(const(BAD_INPUT), i)
    is_arg = b.icmp_signed("<", i, n_args)
    from_arg, from_param, got = e.block("from_arg"), e.block("from_param"), e.block("got")
    b.cbranch(is_arg, from_arg, from_param)
    b.position_at_end(from_arg)
    arg = b.load(b.gep(args, [i], source_etype=PTR), typ=PTR)
    b.branch(got)
    b.position_at_end(from_param)
    param = b.load(b.gep(params, [b.sub(i, n_args)], source_etype=PTR), typ=PTR)
    b.branch(got)
    b.position_at_end(got)
    obj = b.phi(PTR)
    obj.add_incoming(arg, from_arg)
    obj.add_incoming(param, from_param)
    plain, holder, have = e.block("plain"), e.block("holder"), e.block("have")
    b.cbranch(flag(HOLDERS), holder, plain)
    b.position_at_end(plain)
    e.capi("Py_IncRef", obj)
    b.branch(have)

    b.position_at_end(holder)
    kind = e.at(obj, OB_TYPE)
    known = b.or_(
        b.icmp_unsigned("==", kind, b.inttoptr(e.word(plan, TYPE_A), PTR)),
        b.icmp_unsigned("==", kind, b.inttoptr(e.word(plan, TYPE_B), PTR)),
    )
    fail_if(b.and_(is_arg, b.not_(known)), input_code, "holder_type")

    def attribute(name_word: int, label: str) -> ir.Value:
        """obj.<name> (a new reference); when it is missing, this input's code for the general
        path, the AttributeError cleared."""
        value = e.capi("PyObject_GetAttr", obj, b.inttoptr(e.word(plan, name_word), PTR))
        missing, found = e.block(f"no_{label}"), e.block(label)
        b.cbranch(b.icmp_unsigned("==", value, PTR(None)), missing, found)
        b.position_at_end(missing)
        e.capi("PyErr_Clear")
        b.store(input_code, code)
        b.branch(fail)
        b.position_at_end(found)
        return value

    read_trainable, read_data = e.block("read_trainable"), e.block("read_data")
    b.cbranch(flag(NO_TRAINABLE), read_trainable, read_data)
    b.position_at_end(read_trainable)
    trainable = attribute(TRAINABLE_NAME, "trainable")
    e.capi("Py_DecRef", trainable)  # only its identity is compared below
    is_false = b.icmp_unsigned("==", trainable, b.inttoptr(e.word(plan, FALSE), PTR))
    fail_if(b.not_(is_false), const(TRAINABLE), "not_trainable")
    b.branch(read_data)
    b.position_at_end(read_data)
    data = attribute(DATA_NAME, "has_data")
    has_data = b.block
    b.branch(have)

    b.position_at_end(have)
    array = b.phi(PTR)
    array.add_incoming(obj, plain)
    array.add_incoming(data, has_data)
    b.store(array, b.gep(held, [i], source_etype=PTR))
    b.store(b.add(i, one), n_held)
    slot = b.gep(slots, [b.mul(i, const(SLOT))], source_etype=I64)
    _check_array(e, array, slot, input_code, fail_if)
    b.store(e.at(array, ARRAY_DATA), b.gep(pointers, [i], source_etype=PTR))
    close_inputs()

    # ---- outputs ----
    j, close_outputs = e.loop(zero, n_out, "outputs")
    k = b.add(n_in, j)
    slot = b.gep(slots, [b.mul(k, const(SLOT))], source_etype=I64)
    dtype = e.word(slot, 0, PTR)
    e.capi("Py_IncRef", dtype)  # PyArray_Empty steals a reference
    ndim = b.trunc(e.word(slot, 1), I32)
    out = e.capi("PyArray_Empty", ndim, e.word(slot, 2, PTR), dtype, ir.Constant(I32, 0))
    no_memory, allocated = e.block("no_memory"), e.block("allocated")
    b.cbranch(b.icmp_unsigned("==", out, PTR(None)), no_memory, allocated)
    b.position_at_end(no_memory)  # MemoryError is set: release and return NULL
    e.set_word(state, BUSY, zero)
    e.decref_range(held, zero, b.load(n_held), "release_on_error")
    b.ret(PTR(None))
    b.position_at_end(allocated)
    b.store(out, b.gep(held, [k], source_etype=PTR))
    b.store(b.add(k, one), n_held)
    b.store(e.at(out, ARRAY_DATA), b.gep(pointers, [k], source_etype=PTR))
    close_outputs()

    # ---- the call ----
    e.set_word(state, STATUS, zero)
    e.set_word(state, CALLS, b.add(e.word(state, CALLS), one))
    entry_type = ir.FunctionType(ir.VoidType(), [PTR])
    entry = b.inttoptr(e.word(plan, ENTRY), entry_type.as_pointer())
    released, direct, called = e.block("released"), e.block("direct"), e.block("called")
    b.cbranch(flag(RELEASE_GIL), released, direct)
    b.position_at_end(released)
    thread = e.capi("PyEval_SaveThread")
    b.call(entry, [pointers])
    e.capi("PyEval_RestoreThread", thread)
    b.branch(called)
    b.position_at_end(direct)
    b.call(entry, [pointers])
    b.branch(called)
    b.position_at_end(called)
    e.set_word(state, BUSY, zero)
    e.decref_range(held, zero, n_in, "release_inputs")
    status = e.word(state, STATUS)
    error, success = e.block("native_error"), e.block("success")
    b.cbranch(b.icmp_signed("!=", status, zero), error, success)
    b.position_at_end(error)
    e.decref_range(held, n_in, b.add(n_in, n_out), "release_outputs")
    returns_code(b.neg(status))

    b.position_at_end(success)
    given_up = e.block("given_up")  # an exception is set: release the outputs, return NULL
    wrap_type = b.inttoptr(e.word(plan, WRAP_TYPE), PTR)
    wrapping, wrapped = e.block("wrapping"), e.block("wrapped")
    b.cbranch(b.icmp_unsigned("!=", wrap_type, PTR(None)), wrapping, wrapped)
    b.position_at_end(wrapping)
    _emit_wrap(e, plan, held, n_in, n_out, wrap_type, given_up)
    b.branch(wrapped)
    b.position_at_end(wrapped)
    alone, as_tuple = e.block("alone"), e.block("as_tuple")
    b.cbranch(flag(SINGLE), alone, as_tuple)
    b.position_at_end(alone)
    b.ret(b.load(b.gep(held, [n_in], source_etype=PTR), typ=PTR))
    b.position_at_end(as_tuple)
    result = e.capi("PyTuple_New", n_out)
    fill = e.block("fill")
    b.cbranch(b.icmp_unsigned("==", result, PTR(None)), given_up, fill)
    b.position_at_end(given_up)
    e.decref_range(held, n_in, b.add(n_in, n_out), "release_outputs_on_error")
    b.ret(PTR(None))
    b.position_at_end(fill)
    j, close_fill = e.loop(zero, n_out, "fill")
    item = b.load(b.gep(held, [b.add(n_in, j)], source_etype=PTR), typ=PTR)
    e.capi("PyTuple_SetItem", result, j, item)  # steals the reference
    close_fill()
    b.ret(result)

    # ---- fail: release what is held, return the code ----
    b.position_at_end(fail)
    e.set_word(state, BUSY, zero)
    e.decref_range(held, zero, b.load(n_held), "release")
    returns_code(b.load(code))
    return str(module)


def _emit_wrap(e: _Emitter, plan, held, n_in, n_out, wrap_type, given_up: ir.Block) -> None:
    """Replace each output array in `held` by a new `wrap_type` object holding it as `.data`,
    with the plan's fields set; on an error, branch to `given_up`."""
    b = e.b
    zero = ir.Constant(I64, 0)
    data_name = b.inttoptr(e.word(plan, DATA_NAME), PTR)
    fields, n_fields = e.word(plan, FIELDS, PTR), e.word(plan, N_FIELDS)
    empty = b.inttoptr(e.word(plan, EMPTY_TUPLE), PTR)
    j, close = e.loop(zero, n_out, "wrap")
    slot = b.gep(held, [b.add(n_in, j)], source_etype=PTR)
    array = b.load(slot, typ=PTR)
    obj = e.capi("object_new", wrap_type, empty, PTR(None))
    made = e.block("made")
    b.cbranch(b.icmp_unsigned("==", obj, PTR(None)), given_up, made)
    b.position_at_end(made)
    failed = e.block("set_failed")  # drop the new object, then give up
    stored = e.block("stored")
    b.cbranch(
        b.icmp_signed("!=", e.capi("PyObject_SetAttr", obj, data_name, array), ir.Constant(I32, 0)),
        failed,
        stored,
    )
    b.position_at_end(stored)
    f, close_fields = e.loop(zero, n_fields, "fields")
    name = e.word(fields, b.mul(f, ir.Constant(I64, 2)), PTR)
    value = e.word(fields, b.add(b.mul(f, ir.Constant(I64, 2)), ir.Constant(I64, 1)), PTR)
    field_set = e.block("field_set")
    b.cbranch(
        b.icmp_signed("!=", e.capi("PyObject_SetAttr", obj, name, value), ir.Constant(I32, 0)),
        failed,
        field_set,
    )
    b.position_at_end(field_set)
    close_fields()
    e.capi("Py_DecRef", array)  # the object holds it now
    b.store(obj, slot)
    close()
    after = b.block
    b.position_at_end(failed)
    e.capi("Py_DecRef", obj)
    b.branch(given_up)
    b.position_at_end(after)


def _check_array(e: _Emitter, array: ir.Value, slot: ir.Value, code: ir.Value, fail_if) -> None:
    """Branch to the failure unless `array` is exactly what `slot` describes."""
    b = e.b
    fail_if(
        b.icmp_unsigned(
            "!=", e.at(array, OB_TYPE), b.inttoptr(ir.Constant(I64, e.abi.array_type), PTR)
        ),
        code,
        "is_ndarray",
    )
    fail_if(b.icmp_unsigned("!=", e.at(array, ARRAY_DESCR), e.word(slot, 0, PTR)), code, "dtype")
    ndim = e.word(slot, 1)
    fail_if(b.icmp_signed("!=", b.sext(e.at(array, ARRAY_NDIM, I32), I64), ndim), code, "ndim")
    required = b.trunc(e.word(slot, 3), I32)
    flags = e.at(array, ARRAY_FLAGS, I32)
    fail_if(b.icmp_signed("!=", b.and_(flags, required), required), code, "flags")
    expected, actual = e.word(slot, 2, PTR), e.at(array, ARRAY_DIMS)
    d, close = e.loop(ir.Constant(I64, 0), ndim, "dims")
    fail_if(b.icmp_signed("!=", e.word(actual, d), e.word(expected, d)), code, "dim")
    close()
