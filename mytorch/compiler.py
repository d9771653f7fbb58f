"""`mytorch.compile` and `mytorch.trace`: trace per signature, optimize, build, cache, run.

The first call for a signature (input structure, shapes, dtypes, static arguments, training
mode, grad mode) traces the function abstractly, runs the pass pipeline and builds a runner with
the backend; later calls with that signature only read the inputs and the live parameters and
call the runner. What cannot be traced or built falls back to eager with a warning (or raises
`CompileError` with `fullgraph=True`).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import warnings
from dataclasses import dataclass, field

from . import pytree
from .compiled_backward import CompiledBackward
from .errors import CompileError
from .ir.autodiff import optimized_backward
from .ir.graph import Graph, collector_paused
from .ir.parser import parse
from .ir.trace import TraceResult, trace_call
from .ir.verify import verify
from .parallel import BatchSplit
from .passes import PassManager, resolve_pipeline
from .passes.report import Explanation
from .plugins import get_backend
from .tensor import Tensor, is_grad_enabled, is_tracing, wrap, wrap_fields

_eager = importlib.import_module(".tensor", __package__)  # its module state, read per call


def trace(model_or_fn, *example_inputs) -> Graph:
    """The graph of `model_or_fn(*example_inputs)` before any pass."""
    fn, name, param_names = _target(model_or_fn)
    result = trace_call(fn, example_inputs, {}, name=name, param_names=param_names)
    return verify(result.graph)


def explain(model_or_fn, *example_inputs, passes="default") -> Explanation:
    """A report of what the pass pipeline does to `model_or_fn(*example_inputs)`."""
    fn, name, param_names = _target(model_or_fn)
    result = trace_call(fn, example_inputs, {}, name=name, param_names=param_names)
    traced = verify(result.graph)
    before = parse(str(traced))  # a copy: the passes rewrite in place
    manager = PassManager(resolve_pipeline(passes), remarks=[])
    graph = manager.run(traced)
    report = Explanation(_title(name, before), before, graph, manager.records, manager.remarks)
    sources = [x for x in pytree.flatten(example_inputs)[0] if isinstance(x, Tensor)]
    wrt = tuple(k for k, t in enumerate(sources + result.params) if t.trainable)
    if is_grad_enabled() and wrt:  # what a call needing gradients also builds
        manager = PassManager(resolve_pipeline(passes))
        backward = optimized_backward(graph, wrt, lambda g: manager.run(verify(g)))
        report.add_backward(backward.derived_nodes, backward.graph, manager.records, backward.saved)
    return report


def _title(name: str, graph: Graph) -> str:
    args = ", ".join(f"{i.name}: {i.type}" for i in graph.inputs if not i.is_param)
    return f"{name}({args})"


def compile(
    model_or_fn=None,
    *,
    backend: str = "llvm",
    passes="default",
    fullgraph: bool = False,
    dump: str | None = None,
):
    """A compiled version of a Module or function, with the same signature and results."""
    if model_or_fn is None:  # used as @mytorch.compile(...)
        return functools.partial(
            compile, backend=backend, passes=passes, fullgraph=fullgraph, dump=dump
        )
    from .nn import Module

    cls = CompiledModule if isinstance(model_or_fn, Module) else CompiledFunction
    return cls(model_or_fn, backend=backend, passes=passes, fullgraph=fullgraph, dump=dump)


def _target(model_or_fn):
    """The callable to trace, its name, and names for the parameters it owns."""
    from .nn import Module

    if isinstance(model_or_fn, Module):
        names = {id(p): n for n, p in model_or_fn.named_parameters()}
        return model_or_fn, type(model_or_fn).__name__, names
    if not callable(model_or_fn):
        raise TypeError(f"compile/trace expect a Module or a function, got {model_or_fn!r}")
    return model_or_fn, getattr(model_or_fn, "__name__", "fn"), _captured_names(model_or_fn)


def _captured_names(fn) -> dict[int, str]:
    """Readable names for tensors a function reaches through its closure or globals:
    `m.i2h.weight` for a parameter of the module `m`, `w` for a tensor `w`."""
    from .nn import Module

    code = getattr(fn, "__code__", None)
    if code is None:
        return {}
    scope = {n: fn.__globals__[n] for n in code.co_names if n in getattr(fn, "__globals__", {})}
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
        try:
            scope[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    names = {}
    for var, value in scope.items():
        if isinstance(value, Module):
            names.update({id(p): f"{var}.{n}" for n, p in value.named_parameters()})
        elif isinstance(value, Tensor):
            names[id(value)] = var
    return names


@dataclass
class _Compiled:
    """One signature's build: the optimized graph, the runner and the live parameters."""

    trace: TraceResult
    graph: Graph
    runner: object
    artifacts: object  # backend extras: llvm_ir, asm
    train_mode: bool | None  # the module's training flag it was built for
    grad_enabled: bool
    dump: _DumpWriter | None = None
    # per tuple of input positions needing gradients: its training build, or why there is none
    training: dict = field(default_factory=dict)
    # The fast call (backends whose runner has `fast_call`, tensor-only calls): the call's
    # tensors in, the function's result out (or the output tensors, for `finish` to assemble),
    # or an int when it does not take the call.
    simple_args: int | None = None
    bound: object = None
    finish: object = None


class CompiledFunction:
    """A callable that runs compiled code per input signature (see `mytorch.compile`)."""

    def __init__(self, fn, *, backend, passes, fullgraph, dump):
        self._fn, self._name, self._param_names = _target(fn)
        self._backend_name = backend
        self._passes = passes
        resolve_pipeline(passes)  # unknown pass names fail here, not at the first call
        self._fullgraph = fullgraph
        self._dump = dump or os.environ.get("MYTORCH_DUMP") or None
        self._cache: dict = {}
        self._warned: set[str] = set()
        self._last: _Compiled | None = None
        self._last_training: CompiledBackward | None = None
        self._fast: _Compiled | None = None  # the last signature, when it has a fast call
        self._fast_training: _TrainingCall | None = None  # the last call that needed gradients
        if not isinstance(fn, type) and hasattr(fn, "__name__"):
            functools.update_wrapper(self, fn, updated=())

    # ---- what was built --------------------------------------------------------------------------

    @property
    def graph(self) -> Graph | None:
        """The optimized graph of the last signature used."""
        return self._last.graph if self._last else None

    @property
    def backward_graph(self) -> Graph | None:
        """The optimized backward graph of the last call that needed gradients, if any."""
        return self._last_training.graph if self._last_training else None

    @property
    def llvm_ir(self) -> str | None:
        return getattr(self._last.artifacts, "llvm_ir", None) if self._last else None

    @property
    def asm(self) -> str | None:
        return getattr(self._last.artifacts, "asm", None) if self._last else None

    # ---- calling ---------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        if not kwargs and _eager._tracer is None:
            mode = getattr(self._fn, "training", None)
            # The last signature run without a tape, again with tensors only: its bound call checks
            # every array (and that nothing is trainable, when gradients are on) in native code;
            # whatever it does not take comes back as an int, for the general path.
            fast = self._fast
            grad = _eager._grad_enabled
            if fast is not None and fast.train_mode == mode and fast.grad_enabled == grad:
                result = fast.bound(*args)
                if type(result) is not int:
                    return result if fast.finish is None else fast.finish(result)
            # The last call that needed gradients again (None when it is not).
            last = self._fast_training
            if last is not None and grad and last.train_mode == mode:
                result = last.call(args)
                if result is not None:
                    return result
        return self._call(args, kwargs)

    def _call(self, args, kwargs):
        if is_tracing():  # called from a function being traced: trace straight through it
            return self._fn(*args, **kwargs)
        mode = (_training(self._fn), is_grad_enabled())
        simple = not kwargs and all(isinstance(a, Tensor) for a in args)
        if simple:  # the common case, kept lean
            leaves = args
            key = (tuple([(a.data.shape, a.data.dtype) for a in args]), mode)
        else:
            leaves, spec = pytree.flatten((args, kwargs))
            key = (spec, tuple(_leaf_key(x) for x in leaves), mode)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = self._build(args, kwargs, mode, simple)
        if isinstance(entry, CompileError):
            return self._fn(*args, **kwargs)
        inputs = [x for x in leaves if isinstance(x, Tensor)]
        sources = inputs + entry.trace.params
        if mode[1]:
            wrt = tuple([k for k, t in enumerate(sources) if t.trainable])
            if wrt:
                training = entry.training.get(wrt) or self._build_training(entry, wrt)
                if isinstance(training, CompileError):
                    return self._fn(*args, **kwargs)
                self._last, self._last_training = entry, training
                if simple:
                    self._fast_training = _TrainingCall(entry, training, key[0], sources)
                arrays = [t.data for t in sources]
                return entry.trace.assemble(training.run(sources, arrays))
        runner = entry.runner or self._build_runner(entry)
        if isinstance(runner, CompileError):
            return self._fn(*args, **kwargs)
        self._last = entry
        self._fast = entry if entry.bound is not None else None
        return self._run(entry, sources)

    def _build(self, args, kwargs, mode, simple):
        try:
            # One pause of the collector for trace and passes: what roll drops is freed by
            # reference counts before the collector ever scans the T-step trace.
            with collector_paused():
                result = trace_call(
                    self._fn, args, kwargs, name=self._name, param_names=self._param_names
                )
                dump = _DumpWriter.create(self._dump, self._name)
                traced_nodes = len(result.graph)
                if dump:
                    dump.stage("trace", result.graph)
                    title = _title(self._name, result.graph)
                manager = PassManager(
                    resolve_pipeline(self._passes),
                    [dump] if dump else [],
                    remarks=[] if dump else None,
                )
                # Verified after the first pass (see PassManager.run): a traced loop is verified
                # once roll has made it one step long. Each traced node's type came from its op's
                # shape rule as it was recorded.
                graph = manager.run(result.graph, verified=False)
            if dump:
                report = Explanation(title, result.graph, graph, manager.records, manager.remarks)
                report.traced_nodes = traced_nodes
                dump.write("explain.txt", str(report))
            entry = _Compiled(result, graph, None, None, *mode, dump)
            entry.simple_args = len(args) if simple else None
            # A call that needs gradients runs the training build (a forward that also saves
            # what the backward reads): the plain forward is built when a call first needs it.
            sources = [x for x in pytree.flatten((args, kwargs))[0] if isinstance(x, Tensor)]
            if not (is_grad_enabled() and any(t.trainable for t in sources + result.params)):
                self._build_runner(entry)
            return entry
        except CompileError as e:
            return self._fall_back(e)

    def _build_runner(self, entry: _Compiled):
        """Build the plain forward of a signature (raising or warning if the backend cannot)."""
        try:
            entry.runner = get_backend(self._backend_name)(entry.graph)
        except CompileError as e:
            entry.runner = self._fall_back(e)  # remembered: later calls run eagerly at once
            return entry.runner
        entry.artifacts = getattr(entry.runner, "artifacts", None)
        if entry.dump:
            entry.dump.artifacts(entry.artifacts)
        if entry.simple_args is not None and hasattr(entry.runner, "fast_call"):
            entry.bound, entry.finish = _bind(
                entry.runner, entry.simple_args, entry.trace, grad_enabled=entry.grad_enabled
            )
            if entry.bound is not None:
                entry.bound = self._threaded(entry)
        return entry.runner

    def _threaded(self, entry: _Compiled):
        """The bound call, split over the batch on `set_num_threads` threads where that pays
        (calls without a tape only)."""
        split = (
            None
            if entry.grad_enabled
            else BatchSplit.of(entry.graph, get_backend(self._backend_name))
        )
        if split is None:
            return entry.bound
        single = entry.trace.returns_single_tensor

        def finish(arrays):  # as the bound call returns them
            tensors = tuple(wrap(a, "compiled") for a in arrays)
            return tensors[0] if single else tensors

        return split.wrap(entry.bound, entry.simple_args, entry.trace.params, finish)

    def _build_training(self, entry: _Compiled, wrt: tuple[int, ...]):
        """The compiled backward for gradients of inputs `wrt` (positions among the sources)."""
        dump = entry.dump.sub("backward") if entry.dump else None

        def optimize(graph: Graph) -> Graph:
            manager = PassManager(resolve_pipeline(self._passes), [dump] if dump else [])
            return manager.run(verify(graph))

        def build(graph: Graph):
            runner = get_backend(self._backend_name)(graph)
            if dump:
                dump.artifacts(getattr(runner, "artifacts", None), graph.name)
            return runner

        try:
            training = CompiledBackward(entry.graph, wrt, optimize, build, dump)
            if entry.artifacts is None:  # what `llvm_ir` and `asm` show until a plain build
                entry.artifacts = training.artifacts
        except CompileError as e:
            training = self._fall_back(e)
        entry.training[wrt] = training
        return training

    def _fall_back(self, error: CompileError) -> CompileError:
        """Warn once per reason that calls run eagerly (or raise, with fullgraph=True)."""
        if self._fullgraph:
            raise error
        reason = str(error)
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(
                f"mytorch.compile({self._name}): running eagerly: {reason}",
                RuntimeWarning,
                stacklevel=_frames_in_this_module() + 1,  # the user's line that made the call
            )
        return error

    def _run(self, entry: _Compiled, sources: list[Tensor]):
        outs = entry.runner([t.data for t in sources])
        return entry.trace.assemble([wrap(o, "compiled") for o in outs])


class _TrainingCall:
    """The last call that needed gradients, repeated cheaply: the same number of tensors with
    the same shapes and dtypes, and the same of them (and of the parameters) trainable."""

    def __init__(self, entry: _Compiled, training: CompiledBackward, arg_types, sources):
        self.run = training.run
        self.train_mode = entry.train_mode
        self.arg_types = arg_types
        self.params = entry.trace.params
        self.trainable = [t.trainable for t in sources]
        # The tape's inputs when only parameters are trainable (arguments change per call).
        n_args = len(arg_types)
        self.trainable_sources = (
            None if any(self.trainable[:n_args]) else tuple([p for p in self.params if p.trainable])
        )
        trace = entry.trace
        # one tensor returned: no tree to rebuild
        self.assemble = _first if trace.returns_single_tensor else trace.assemble

    def call(self, args):
        """The function's result, or None when the general path must take the call."""
        if len(args) != len(self.arg_types):
            return None
        for a, (shape, dtype) in zip(args, self.arg_types, strict=True):
            if not isinstance(a, Tensor):
                return None
            data = a.data
            if data.shape != shape or (data.dtype is not dtype and data.dtype != dtype):
                return None
        sources = [*args, *self.params]
        if [t.trainable for t in sources] != self.trainable:
            return None
        arrays = [t.data for t in sources]
        return self.assemble(self.run(sources, arrays, self.trainable_sources))


def _first(outputs: list):
    return outputs[0]


def _bind(runner, n_args: int, trace: TraceResult, *, grad_enabled: bool):
    """The runner's fast call for `n_args` Tensors (it reads their and the parameters' `.data`)
    and what assembles its result, if anything does. With gradients on, it takes only calls
    where no tensor is trainable: the others need the tape, made on the general path. Its
    outputs are made into Tensors natively, as `wrap` makes them."""
    from .nn import Parameter

    single = trace.returns_single_tensor
    bound = runner.fast_call(
        n_args,
        holders=(Tensor, Parameter),
        params=tuple(trace.params),
        no_trainable=grad_enabled,
        wrap=(Tensor, wrap_fields("compiled")),
        single=single,
    )
    assemble = None if single or trace.returns_flat_tuple else trace.assemble
    finish = None if assemble is None else (lambda tensors: assemble(list(tensors)))
    return bound, finish


class CompiledModule(CompiledFunction):
    """A compiled Module: calls run compiled code; everything else is the Module's own."""

    def __init__(self, module, **options):
        super().__init__(module, **options)
        self._module = module

    def train(self, mode: bool = True):
        self._module.train(mode)
        return self

    def eval(self):
        self._module.eval()
        return self

    def __getattr__(self, name):
        # Only reached for names this wrapper lacks: parameters(), state_dict(), train(), ...
        return getattr(self.__dict__["_module"], name)

    def __repr__(self) -> str:
        return f"Compiled{self._module!r}"


def _frames_in_this_module() -> int:
    """How many innermost frames of the caller's stack run code of this file."""
    frame, count = sys._getframe(1), 0
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, count = frame.f_back, count + 1
    return count


def _leaf_key(x):
    if isinstance(x, Tensor):
        return ("tensor", x.shape, x.dtype.str)
    try:
        hash(x)
    except TypeError:
        raise TypeError(
            f"compiled functions take Tensors, containers of them and hashable Python values; "
            f"got {type(x).__name__}"
        ) from None
    return ("static", type(x).__name__, x)


def _training(fn) -> bool | None:
    return getattr(fn, "training", None)


class _DumpWriter:
    """Writes numbered stages of one compiled signature into `DIR/<function>-<k>/`."""

    def __init__(self, folder: str, prefix: str = ""):
        self.folder = folder
        self.prefix = prefix
        self.counter = 0

    def sub(self, name: str) -> _DumpWriter:
        """A writer into the same folder numbering its own stages: `<name>_000_...`."""
        return _DumpWriter(self.folder, f"{self.prefix}{name}_")

    @classmethod
    def create(cls, root: str | None, name: str):
        if not root:
            return None
        os.makedirs(root, exist_ok=True)
        k = 0
        while os.path.exists(os.path.join(root, f"{name}-{k}")):
            k += 1
        folder = os.path.join(root, f"{name}-{k}")
        os.makedirs(folder)
        return cls(folder)

    def write(self, filename: str, text: str) -> None:
        with open(os.path.join(self.folder, filename), "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def stage(self, name: str, graph: Graph) -> None:
        self.write(f"{self.prefix}{self.counter:03d}_{name}.txt", str(graph))
        self.counter += 1

    def after_pass(self, name: str, graph: Graph) -> None:
        self.stage(name, graph)

    def artifacts(self, artifacts, label: str = "") -> None:
        for attr, filename in (
            ("llvm_ir_raw", "llvm_raw.ll"),
            ("llvm_ir", "llvm_opt.ll"),
            ("asm", "asm.s"),
        ):
            text = getattr(artifacts, attr, None)
            if text:
                name = f"{label}_{filename}" if label else filename
                self.write(f"{self.prefix}{self.counter:03d}_{name}", text)
                self.counter += 1
