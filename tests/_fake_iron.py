"""A recording stand-in for the part of mlir-aie's IRON API that design.py uses.

Without mlir-aie, design.build_program() never runs; this lets a test run it and see what
it asks of IRON. The rules it enforces are IRON's own (mlir-aie python/iron/):
- `Worker(core_fn, fn_args, placement)` passes its arguments to the core body as they are
  and places only `GlobalBuffer`s among them (worker.py);
- `Kernel.__call__` emits a `func.call` whose operands must be MLIR values
  (kernel.py): acquired ObjectFifo elements, `LocalBuffer`s, or Python ints it turns
  into constants; anything else fails while generating MLIR;
- `LocalBuffer` can only be created inside a core body (localbuffer.py);
- `Runtime.fill/drain(..., task_group, wait, placement)`, `task_group()`,
  `finish_task_group()` (runtime/runtime.py), and a sequence may not end with open groups.
It records the runtime's calls in order so the test can compare them with the plan.
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from typing import Any


class IronRuleBroken(AssertionError):
    """design.py asked IRON for something IRON does not do."""


class Value:
    """An MLIR value a core body may pass to a kernel call."""

    def __init__(self, what: str) -> None:
        self.what = what


class Kernel:
    def __init__(self, name: str, bin_name: str, arg_types: list) -> None:
        self.name, self.bin_name, self.arg_types = name, bin_name, arg_types
        self.calls: list[tuple] = []

    def __call__(self, *args: Any) -> None:
        if len(args) != len(self.arg_types):
            raise IronRuleBroken(f"{self.name}: {len(args)} operands for {len(self.arg_types)}")
        for a in args:
            if not isinstance(a, Value | int):
                raise IronRuleBroken(f"{self.name}: operand {a!r} is not an MLIR value")
        self.calls.append(args)


class GlobalBuffer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args


class LocalBuffer(Value):
    def __init__(self, type: Any = None, initial_value: Any = None, name: str | None = None):
        if Worker.current is None:
            raise IronRuleBroken("LocalBuffer created outside a worker's core body")
        super().__init__(f"local buffer of {Worker.current.placement}")
        Worker.current.local_buffers.append(self)


class _Handle:
    def __init__(self, fifo: ObjectFifo, prod: bool) -> None:
        self.fifo, self.prod_side = fifo, prod

    def acquire(self, n: int) -> Value:
        if n > self.fifo.depth:
            raise IronRuleBroken(f"acquire {n} > depth {self.fifo.depth} of {self.fifo.name}")
        return Value(f"element of {self.fifo.name}")

    def release(self, n: int) -> None:
        pass

    def join(self, offsets, placement=None, depths=None, obj_types=None, names=None, **kw):
        if not self.prod_side:
            raise IronRuleBroken("join() on a consumer handle")
        names = names or [f"{self.fifo.name}_join{i}" for i in range(len(offsets))]
        return [
            ObjectFifo(t, depth=d, name=n) for t, d, n in zip(obj_types, depths, names, strict=True)
        ]


class ObjectFifo:
    def __init__(self, obj_type: Any, depth: int = 2, name: str | None = None, **kw: Any):
        self.obj_type, self.depth, self.name = obj_type, depth, name

    def prod(self) -> _Handle:
        return _Handle(self, True)

    def cons(self) -> _Handle:
        return _Handle(self, False)


class Worker:
    current: Worker | None = None

    def __init__(
        self,
        core_fn,
        fn_args: list = [],  # noqa: B006 - IRON's own default
        placement=None,
        while_true: bool = True,
        stack_size=None,
    ):
        self.core_fn, self.fn_args, self.placement = core_fn, fn_args, placement
        self.stack_size = stack_size
        self.local_buffers: list[LocalBuffer] = []
        self.placed = [a for a in fn_args if isinstance(a, GlobalBuffer)]
        for a in fn_args:
            if isinstance(a, ObjectFifo):
                raise IronRuleBroken("an ObjectFifo given to a Worker instead of a handle")

    def resolve(self) -> None:
        Worker.current = self
        try:
            self.core_fn(*self.fn_args)
        finally:
            Worker.current = None


class Runtime:
    def __init__(self) -> None:
        self.ops: list[tuple] = []
        self.open_groups: list[int] = []
        self.workers: list[Worker] = []
        self._next = 0

    @contextmanager
    def sequence(self, *types_: Any):
        self.arg_types = types_
        yield tuple(Value(f"runtime arg {i}") for i in range(len(types_)))
        if self.open_groups:
            raise IronRuleBroken(f"task groups left open: {self.open_groups}")

    def start(self, *workers: Worker) -> None:
        self.workers.extend(workers)

    def task_group(self) -> int:
        self._next += 1
        self.open_groups.append(self._next)
        return self._next

    def finish_task_group(self, tg: int) -> None:
        self.open_groups.remove(tg)
        self.ops.append(("finish", tg))

    def fill(self, handle, source, tap=None, task_group=None, wait=False, placement=None):
        if not handle.prod_side:
            raise IronRuleBroken("fill() needs a producer handle")
        self.ops.append(("fill", handle.fifo.name, tap, task_group, wait, placement))

    def drain(self, handle, dest, tap=None, task_group=None, wait=False, placement=None):
        if handle.prod_side:
            raise IronRuleBroken("drain() needs a consumer handle")
        self.ops.append(("drain", handle.fifo.name, tap, task_group, wait, placement))


class Program:
    last: Program | None = None

    def __init__(self, device: Any, rt: Runtime) -> None:
        self.device, self.rt = device, rt
        Program.last = self

    def resolve_program(self, placer: Any) -> str:
        for w in self.rt.workers:
            w.resolve()
        return "module {}"


class TensorAccessPattern:
    def __init__(self, tensor_dims, offset, sizes, strides) -> None:
        self.tensor_dims, self.offset = tensor_dims, offset
        self.sizes, self.strides = sizes, strides


class Tile:
    def __init__(self, col: int, row: int) -> None:
        self.col, self.row = col, row

    def __repr__(self) -> str:
        return f"Tile({self.col}, {self.row})"


def range_(n: int):
    yield from range(1)  # the body is traced once, as IRON emits one scf.for


def install(monkeypatch) -> None:
    """Put the stand-in into sys.modules as `aie.iron` and the modules design.py imports."""
    mods = {
        "aie": types.ModuleType("aie"),
        "aie.iron": types.ModuleType("aie.iron"),
        "aie.iron.controlflow": types.ModuleType("aie.iron.controlflow"),
        "aie.iron.device": types.ModuleType("aie.iron.device"),
        "aie.iron.placers": types.ModuleType("aie.iron.placers"),
        "aie.helpers": types.ModuleType("aie.helpers"),
        "aie.helpers.taplib": types.ModuleType("aie.helpers.taplib"),
    }
    iron = mods["aie.iron"]
    for name in ("Kernel", "GlobalBuffer", "LocalBuffer", "ObjectFifo", "Worker", "Runtime"):
        setattr(iron, name, globals()[name])
    iron.Program = Program
    mods["aie.iron.controlflow"].range_ = range_
    mods["aie.iron.device"].Tile = Tile
    mods["aie.iron.device"].NPU1 = lambda: "npu1 device"
    mods["aie.iron.device"].NPU2 = lambda: "npu2 device"
    mods["aie.iron.placers"].SequentialPlacer = lambda: "placer"
    mods["aie.helpers.taplib"].TensorAccessPattern = TensorAccessPattern
    mods["aie"].iron = iron
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)
