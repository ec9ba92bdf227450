"""A simulated `pyxrt` module: rehearse the NPU code path on a machine without an NPU.

Selected with ``AMANUENSIS_NPU_XRT=sim``. The runtime (`amanuensis_npu.npu.xrt`)
then takes this module where it would take XRT's ``pyxrt`` and runs exactly the same
code: open device -> read its name -> pick and check the artifact -> register the
xclbin -> hardware context -> kernel -> buffer objects -> sync -> launch -> wait ->
sync back -> read. Nothing here is NPU hardware: the "device" is host memory and the
"kernel" is the host-compiled scalar build of the attention kernel
(`amanuensis_npu.npu.host_kernel`), run on the bytes that were synced to the simulated
device. Every name the simulated device reports says "simulated".

Why the sim is strict: it exists to catch the mistakes that only show up on hardware.
It keeps pyxrt's signatures and semantics (as in Xilinx/XRT src/python/pybind11):

- ``bo.write(buffer, offset)`` and ``bo.read(size, offset)`` need the offset;
  ``read`` returns an int8 ndarray copy; ``map()`` is a writable memoryview.
- Host and device memory are separate: data reaches the kernel only through
  ``bo.sync(XCL_BO_SYNC_BO_TO_DEVICE, ...)`` and comes back only through
  ``bo.sync(XCL_BO_SYNC_BO_FROM_DEVICE, ...)``.
- ``kernel(3, instr_bo, n_instr_words, bo0, bo1, ...)`` starts a run and returns
  an ``xrt.run``; failures of the kernel do not raise, ``run.wait(timeout_ms)``
  returns an ``ert_cmd_state`` that the caller must check. ``wait()`` without a
  timeout (0 = forever) on a hung run raises here instead of hanging the caller.
  The count is the instruction stream's length in 32-bit words; anything else (a
  byte count, say) ends the run in ERROR.
- There is no ``run.abort`` (pyxrt has none). A hung run stays on its hardware
  context until the context is destroyed (every reference to it, its kernels
  included, dropped): later runs on that context hang behind it, and its buffers
  refuse ``write``/``read``/``sync`` because the device may still write them.
- On npu1 one hardware context may be alive per device handle (the runtime's
  one-full-array-context policy, `amanuensis_npu.npu.session`).
- Data buffers use ``kernel.group_id(3 + i)``, the instruction buffer
  ``group_id(1)`` with ``bo.cacheable``. A buffer whose group does not match its
  argument is silently not bound (as pyxrt's ``__call__`` swallows the failed
  cast), and the run then ends in ERROR.
- Passing more arguments than the kernel has is refused (real XRT crashes).
- Only this module's xclbin stand-ins load (`write_simulated_xclbin`); a real
  xclbin raises RuntimeError, so simulated and real artifacts cannot be mixed up.

Fault injection: ``AMANUENSIS_NPU_SIM_FAULTS`` is a comma-separated list of
``KIND`` or ``KIND@N`` (only the N-th dispatch, 1-based, counted per process) or
``KIND@N+`` (the N-th dispatch and every later one). Kinds:

- ``open``     opening the device raises RuntimeError (``@N`` counts opens).
- ``error``    the run ends in ``ERT_CMD_STATE_ERROR``; output is not written.
- ``abort``    the run ends in ``ERT_CMD_STATE_ABORT``.
- ``timeout``  the run hangs: ``wait(t)`` blocks ``t`` ms and returns
               ``ERT_CMD_STATE_TIMEOUT`` (``hang`` is a synonym); see above.
- ``zeros``    the run completes but the output buffer is all zeros.
- ``nan``      the run completes but every 16-bit word of the output is 0x7FC0
               (NaN as bf16/float32; out of the kernel's range as int16).
- ``raise``    the kernel call itself raises RuntimeError (driver error).

Example: ``AMANUENSIS_NPU_SIM_FAULTS=error@3,zeros@5``. The fault list is read at
every open/dispatch, so it can change while a process runs.
``AMANUENSIS_NPU_SIM_DEVICE`` picks the simulated part: ``npu1`` (default,
"NPU Phoenix (simulated)"), ``npu2`` ("NPU Strix (simulated)"), or by name
``strix-halo``, ``krackan``, ``gorgon`` (npu2 parts, named as the amdxdna driver does).
``AMANUENSIS_NPU_SIM_BATCHES`` (e.g. ``1,8``) makes the runtime generate one
simulated artifact per batch size, each usable only at its size, as real builds
are (kernels/Makefile ``BATCHES``); unset, one artifact serves any batch.
"""

from __future__ import annotations

import ctypes
import enum
import json
import logging
import os
import re
import threading
import uuid as _uuidlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger("amanuensis_npu.npu.xrt_sim")

SIMULATED = True
"""Lets callers tell this module from the real pyxrt without string matching."""

KERNEL_NAME = "MLIR_AIE"
XCLBIN_MAGIC = b"AMANUENSIS-NPU SIMULATED XCLBIN\n"
"""Real xclbins start with b"xclbin2"; ours start with this, so neither loads as the other."""
INSTS_MAGIC = 0x534D4E41  # b"ANMS" little-endian: "amanuensis NPU simulated"
_OPCODE_NPU_RUN = 3
_SIM_BDF = "0000:00:00.0"
_INFINITE_WAIT_GUARD_S = 600.0
"""A sim run that is not hung still finishes; bound `wait()` anyway so CI cannot hang."""

# AMANUENSIS_NPU_SIM_DEVICE -> (target, name): the names the amdxdna driver gives these
# parts (amd/xdna-driver src/driver/amdxdna/npu1_regs.c, npu4_regs.c npu4_rev_vbnv_tbl).
_DEVICES = {
    "npu1": ("npu1", "NPU Phoenix"),
    "phoenix": ("npu1", "NPU Phoenix"),
    "hawk": ("npu1", "NPU Phoenix"),  # Hawk Point reports itself as Phoenix (same PCI id)
    "npu2": ("npu2", "NPU Strix"),
    "strix": ("npu2", "NPU Strix"),
    "strix-halo": ("npu2", "NPU Strix Halo"),
    "krackan": ("npu2", "NPU Krackan 1"),
    "gorgon": ("npu2", "NPU Gorgon Point 1"),
}


# --------------------------------------------------------------------------- enums


class xclBOSyncDirection(enum.IntEnum):  # noqa: N801 - pyxrt's spelling
    """DMA directions, same members and values as pyxrt (XRT xrt/detail/xclbin.h)."""

    XCL_BO_SYNC_BO_TO_DEVICE = 0
    XCL_BO_SYNC_BO_FROM_DEVICE = 1
    XCL_BO_SYNC_BO_GMIO_TO_AIE = 2
    XCL_BO_SYNC_BO_AIE_TO_GMIO = 3


class ert_cmd_state(enum.IntEnum):  # noqa: N801 - pyxrt's spelling
    """Run states, same members and values as XRT's ert.h."""

    ERT_CMD_STATE_NEW = 1
    ERT_CMD_STATE_QUEUED = 2
    ERT_CMD_STATE_RUNNING = 3
    ERT_CMD_STATE_COMPLETED = 4
    ERT_CMD_STATE_ERROR = 5
    ERT_CMD_STATE_ABORT = 6
    ERT_CMD_STATE_SUBMITTED = 7
    ERT_CMD_STATE_TIMEOUT = 8
    ERT_CMD_STATE_NORESPONSE = 9
    ERT_CMD_STATE_SKERROR = 10
    ERT_CMD_STATE_SKCRASHED = 11


class xrt_info_device(enum.IntEnum):  # noqa: N801 - pyxrt's spelling
    """Keys for `device.get_info` (a subset of pyxrt's, same names)."""

    bdf = 0
    interface_uuid = 1
    kdma = 2
    max_clock_frequency_mhz = 3
    m2m = 4
    name = 5
    nodma = 6
    offline = 7
    electrical = 8
    thermal = 9
    mechanical = 10
    memory = 11
    platform = 12
    pcie_info = 13
    host = 14
    dynamic_regions = 15
    vmr = 16


XCL_BO_FLAGS_NONE = 0


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    kind: str
    first: int | None = None  # None: every occurrence
    open_ended: bool = False

    def applies(self, n: int) -> bool:
        if self.first is None:
            return True
        return n >= self.first if self.open_ended else n == self.first


FAULT_KINDS = ("open", "error", "abort", "timeout", "hang", "zeros", "nan", "raise")
_FAULT_RE = re.compile(r"^(?P<kind>[a-z]+)(?:@(?P<n>\d+)(?P<plus>\+)?)?$")


def parse_faults(spec: str | None) -> list[Fault]:
    """Parse an ``AMANUENSIS_NPU_SIM_FAULTS`` value; a typo is an error, not a no-op."""
    faults: list[Fault] = []
    for item in (spec or "").replace(";", ",").split(","):
        item = item.strip().lower()
        if not item:
            continue
        match = _FAULT_RE.match(item)
        if not match or match["kind"] not in FAULT_KINDS:
            raise ValueError(
                f"AMANUENSIS_NPU_SIM_FAULTS: cannot parse {item!r}; expected KIND, KIND@N or "
                f"KIND@N+ with KIND one of {', '.join(FAULT_KINDS)}"
            )
        kind = "timeout" if match["kind"] == "hang" else match["kind"]
        first = int(match["n"]) if match["n"] else None
        if first is not None and first < 1:
            raise ValueError(f"AMANUENSIS_NPU_SIM_FAULTS: dispatch numbers start at 1 ({item!r})")
        faults.append(Fault(kind, first, bool(match["plus"])))
    return faults


_counter_lock = threading.Lock()
_counters = {"open": 0, "dispatch": 0}


def reset_counters() -> None:
    """Restart the open/dispatch numbering that ``KIND@N`` faults refer to (tests)."""
    with _counter_lock:
        _counters["open"] = 0
        _counters["dispatch"] = 0


def _next(counter: str) -> int:
    with _counter_lock:
        _counters[counter] += 1
        return _counters[counter]


def _active_fault(counter_value: int, kinds: tuple[str, ...]) -> str | None:
    for fault in parse_faults(os.environ.get("AMANUENSIS_NPU_SIM_FAULTS")):
        if fault.kind in kinds and fault.applies(counter_value):
            return fault.kind
    return None


# --------------------------------------------------------------------------- objects


class uuid:  # noqa: N801 - pyxrt's spelling
    """An xclbin UUID (pyxrt's ``xrt.uuid``)."""

    def __init__(self, value: str) -> None:
        self._value = str(_uuidlib.UUID(str(value)))

    def to_string(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, uuid) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"<xrt_sim.uuid {self._value}>"


def _simulated_part() -> tuple[str, str]:
    value = os.environ.get("AMANUENSIS_NPU_SIM_DEVICE", "npu1").strip().lower() or "npu1"
    if value not in _DEVICES:
        raise ValueError(
            f"AMANUENSIS_NPU_SIM_DEVICE must be one of {', '.join(_DEVICES)}, got {value!r}"
        )
    target, name = _DEVICES[value]
    return target, f"{name} (simulated)"


def simulated_target() -> str:
    """Which NPU generation the simulated device pretends to be (npu1 or npu2)."""
    return _simulated_part()[0]


class device:  # noqa: N801 - pyxrt's spelling
    """The simulated NPU: host and 'device' memory per buffer, no hardware."""

    def __init__(self, index: int | str = 0) -> None:
        if isinstance(index, str):
            if index != _SIM_BDF:
                raise RuntimeError(f"xrt_sim: no device with BDF {index!r}")
        elif not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"device(): incompatible constructor argument {index!r}")
        elif index != 0:
            raise RuntimeError(f"xrt_sim: no device at index {index} (the simulation has one)")
        if _active_fault(_next("open"), ("open",)):
            raise RuntimeError("xrt_sim: simulated fault: failed to open device 0 (open)")
        self._target, self._name = _simulated_part()
        self._registered: dict[uuid, xclbin] = {}
        self._contexts: weakref.WeakSet[hw_context] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get_info(self, key: xrt_info_device) -> str:
        if not isinstance(key, xrt_info_device):
            raise TypeError(f"get_info(): incompatible function arguments ({key!r})")
        if key == xrt_info_device.name:
            return self._name
        if key == xrt_info_device.bdf:
            return _SIM_BDF
        if key == xrt_info_device.offline:
            return "0"
        return "NA (simulated)"

    def register_xclbin(self, xclbin_obj: xclbin) -> uuid:
        if not isinstance(xclbin_obj, xclbin):
            raise TypeError("register_xclbin(): incompatible function arguments")
        with self._lock:
            self._registered[xclbin_obj.get_uuid()] = xclbin_obj
        return xclbin_obj.get_uuid()

    def load_xclbin(self, _xclbin: Any) -> uuid:
        raise RuntimeError(
            "xrt_sim: load_xclbin is not supported on NPU devices; "
            "use register_xclbin and hw_context"
        )

    def get_xclbin_uuid(self) -> uuid:
        with self._lock:
            if not self._registered:
                return uuid("00000000-0000-0000-0000-000000000000")
            return next(iter(self._registered))

    def _lookup(self, u: uuid) -> xclbin:
        with self._lock:
            found = self._registered.get(u)
        if found is None:
            raise RuntimeError(f"xrt_sim: xclbin {u.to_string()} is not registered on this device")
        return found


class xclbin:  # noqa: N801 - pyxrt's spelling
    """Parses the sim's xclbin stand-in (kernel names and argument counts)."""

    class xclbinkernel:  # noqa: N801 - pyxrt's spelling
        def __init__(self, name: str = "", num_args: int = 0) -> None:
            self._name = name
            self._num_args = num_args

        def get_name(self) -> str:
            return self._name

        def get_num_args(self) -> int:
            return self._num_args

    def __init__(self, filename: str | os.PathLike) -> None:
        path = Path(filename)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RuntimeError(f"xrt_sim: cannot read xclbin {path}: {exc}") from exc
        if raw.startswith(b"xclbin2"):
            raise RuntimeError(
                f"xrt_sim: {path} is a real xclbin; the simulated device only loads the "
                "stand-ins written by amanuensis_npu.npu.xrt_sim "
                "(use the hardware XRT for real ones)"
            )
        if not raw.startswith(XCLBIN_MAGIC):
            raise RuntimeError(f"xrt_sim: {path} is not an xclbin (bad magic)")
        try:
            meta = json.loads(raw[len(XCLBIN_MAGIC) :].decode("utf-8"))
            self._uuid = uuid(meta["uuid"])
            self._kernels = [
                xclbin.xclbinkernel(k["name"], int(k["num_args"])) for k in meta["kernels"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"xrt_sim: corrupt xclbin stand-in {path}: {exc}") from exc
        self._meta = meta

    def get_kernels(self) -> list[xclbin.xclbinkernel]:
        return list(self._kernels)

    def get_uuid(self) -> uuid:
        return self._uuid

    def get_xsa_name(self) -> str:
        return f"amanuensis-npu simulated {self._meta.get('target', '?')}"

    def get_mems(self) -> list[Any]:
        return []


class hw_context:  # noqa: N801 - pyxrt's spelling
    """Binds a registered xclbin to the device, as on the NPU; destroyed when unreferenced.

    On npu1 only one context may be alive per device handle: the kernel uses every
    column, and the runtime's policy is one full-array context at a time (see
    `amanuensis_npu.npu.session` for the upstream reasons). The real driver may instead
    share or refuse the columns; refusing here makes a breach of the policy loud.
    A run that timed out stays on its context until the context is destroyed (the
    driver tears it down then); later runs on the context queue behind it and hang too.
    """

    def __init__(self, dev: device, u: uuid) -> None:
        if not isinstance(dev, device) or not isinstance(u, uuid):
            raise TypeError("hw_context(): incompatible constructor arguments")
        xb = dev._lookup(u)
        with dev._lock:
            if dev._target == "npu1" and len(dev._contexts):
                raise RuntimeError(
                    "xrt_sim: a hardware context already holds all 4 npu1 columns; "
                    "release it before creating another (one full-array context at a time)"
                )
            dev._contexts.add(self)
        self._device = dev
        self._xclbin = xb
        self._hung: list[run] = []
        # Destroying the context ends what still runs on it, as the driver does.
        weakref.finalize(self, _abort_all, self._hung)


class bo:  # noqa: N801 - pyxrt's spelling
    """A buffer object with separate host and device copies; data moves on `sync` only."""

    class flags(enum.IntEnum):  # noqa: N801 - pyxrt's spelling
        normal = 0
        cacheable = 1 << 24
        svm = 1 << 27
        device_only = 1 << 28
        host_only = 1 << 29
        p2p = 1 << 30

    normal = flags.normal
    cacheable = flags.cacheable
    svm = flags.svm
    device_only = flags.device_only
    host_only = flags.host_only
    p2p = flags.p2p

    def __init__(self, dev: device, size: int, flags: bo.flags, group: int) -> None:
        if not isinstance(dev, device):
            raise TypeError("bo(): incompatible constructor arguments (device)")
        if not isinstance(flags, bo.flags):
            raise TypeError("bo(): incompatible constructor arguments (flags)")
        if not isinstance(size, int | np.integer) or int(size) <= 0:
            raise RuntimeError(f"xrt_sim: cannot allocate a buffer of {size!r} bytes")
        self._device = dev
        self._size = int(size)
        self._flags = flags
        self._group = int(group)
        self._host = np.zeros(self._size, dtype=np.uint8)
        self._dev = np.zeros(self._size, dtype=np.uint8)
        self._runs: weakref.WeakSet[run] = weakref.WeakSet()

    def _check_idle(self) -> None:
        """The device may still write a buffer of a run that has not finished: refuse it.

        A run the caller gave up on (its wait timed out) keeps running: pyxrt cannot
        abort it; only destroying its context ends it.
        """
        if any(not r._done.is_set() for r in list(self._runs)):
            raise RuntimeError(
                "xrt_sim: buffer in use by a run that has not finished "
                "(a timed-out run keeps it until its context is destroyed)"
            )

    def size(self) -> int:
        return self._size

    def address(self) -> int:
        return id(self._dev) & 0xFFFF_FFFF_F000

    def _range(self, size: int, offset: int) -> slice:
        if offset < 0 or size < 0 or offset + size > self._size:
            raise RuntimeError(
                f"xrt_sim: {size} bytes at offset {offset} exceed the buffer ({self._size} bytes)"
            )
        return slice(offset, offset + size)

    def write(self, buffer: Any, seek: int) -> None:
        self._check_idle()
        view = memoryview(buffer)
        if not view.c_contiguous:
            # pyxrt copies itemsize*size bytes from the start pointer: a strided view
            # would silently send the wrong bytes. Refuse instead.
            raise RuntimeError("xrt_sim: bo.write needs a C-contiguous buffer")
        data = np.frombuffer(view.cast("B"), dtype=np.uint8)
        self._host[self._range(data.size, int(seek))] = data

    def read(self, size: int, skip: int) -> np.ndarray:
        self._check_idle()
        return self._host[self._range(int(size), int(skip))].view(np.int8).copy()

    def map(self) -> memoryview:
        return memoryview(self._host)

    def sync(self, direction: xclBOSyncDirection, size: int | None = None, offset: int = 0) -> None:
        if not isinstance(direction, xclBOSyncDirection):
            raise TypeError("sync(): incompatible function arguments (direction)")
        self._check_idle()
        span = self._range(self._size - offset if size is None else int(size), int(offset))
        if direction == xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE:
            self._dev[span] = self._host[span]
        elif direction == xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE:
            self._host[span] = self._dev[span]
        else:
            raise RuntimeError(f"xrt_sim: {direction.name} is not supported on the NPU")


class run:  # noqa: N801 - pyxrt's spelling
    """One execution of the kernel; its state says how it ended (failures do not raise)."""

    def __init__(self, krnl: kernel | None = None) -> None:
        self._kernel = krnl
        self._state = ert_cmd_state.ERT_CMD_STATE_NEW
        self._done = threading.Event()
        self._hung = False
        self._args: dict[int, Any] = {}

    def set_arg(self, index: int, value: Any) -> None:
        self._args[int(index)] = value

    def state(self) -> ert_cmd_state:
        return self._state

    def start(self) -> None:
        if self._kernel is None:
            raise RuntimeError("xrt_sim: run has no kernel")
        self._state = ert_cmd_state.ERT_CMD_STATE_SUBMITTED
        self._kernel._launch(self)

    def wait(self, timeout_ms: int = 0) -> ert_cmd_state:
        timeout_ms = int(timeout_ms)
        if timeout_ms <= 0:
            if self._hung:
                raise RuntimeError(
                    "xrt_sim: wait() without a timeout on a hung run would block forever; "
                    "pass timeout_ms"
                )
            if not self._done.wait(_INFINITE_WAIT_GUARD_S):
                raise RuntimeError("xrt_sim: run did not finish within the simulation's guard")
            return self._state
        if self._done.wait(timeout_ms / 1000.0):
            return self._state
        return ert_cmd_state.ERT_CMD_STATE_TIMEOUT

    def _finish(self, state: ert_cmd_state) -> None:
        self._state = state
        self._done.set()


class kernel:  # noqa: N801 - pyxrt's spelling
    """The `MLIR_AIE` kernel of a registered xclbin, executed by the host-compiled kernel."""

    def __init__(self, ctx: hw_context | device, name_or_uuid: Any, name: str | None = None):
        self._context: hw_context | None = None  # XRT's kernel keeps its context alive
        if isinstance(ctx, hw_context):
            xb, kname, dev = ctx._xclbin, name_or_uuid, ctx._device
            self._context = ctx
        elif isinstance(ctx, device) and isinstance(name_or_uuid, uuid) and name is not None:
            xb, kname, dev = ctx._lookup(name_or_uuid), name, ctx
        else:
            raise TypeError("kernel(): incompatible constructor arguments")
        matches = [k for k in xb.get_kernels() if k.get_name() == kname]
        if not matches:
            raise RuntimeError(f"xrt_sim: no kernel named {kname!r} in the xclbin")
        self._device = dev
        self._xclbin = xb
        self._name = kname
        self._num_args = matches[0].get_num_args()

    def group_id(self, index: int) -> int:
        if not 0 <= int(index) < self._num_args:
            raise RuntimeError(f"xrt_sim: kernel argument {index} out of range")
        # Memory groups are per argument on the NPU; keep them distinct so that a
        # buffer allocated for the wrong argument is caught.
        return 0x10 + int(index)

    def __call__(self, *args: Any) -> run:
        if len(args) > self._num_args:
            raise RuntimeError(
                f"xrt_sim: {len(args)} arguments passed to {self._name}, which takes "
                f"{self._num_args} (opcode, instructions, count, and at most "
                f"{self._num_args - 3} data buffers); real XRT crashes here"
            )
        r = run(self)
        for i, item in enumerate(args):
            if isinstance(item, bo):
                item._runs.add(r)  # bound or not, the command references the buffer
                if item._group == self.group_id(i):
                    r.set_arg(i, item)
                # else: pyxrt's __call__ swallows the failed set_arg; the argument stays unset
            elif isinstance(item, int | np.integer) and not isinstance(item, bool):
                r.set_arg(i, int(item))
            # anything else: pyxrt's casts fail silently too
        r.start()
        return r

    # -- execution ---------------------------------------------------------------------

    def _launch(self, r: run) -> None:
        dispatch_no = _next("dispatch")
        if _active_fault(dispatch_no, ("raise",)):
            r._finish(ert_cmd_state.ERT_CMD_STATE_NEW)  # never submitted, never runs
            raise RuntimeError("xrt_sim: simulated fault: kernel submission failed (raise)")
        fault = _active_fault(dispatch_no, ("error", "abort", "timeout", "zeros", "nan"))
        ctx = self._context
        if fault == "timeout" or (ctx is not None and ctx._hung):  # hung, or queued behind one
            r._hung = True
            r._state = ert_cmd_state.ERT_CMD_STATE_RUNNING
            r._kernel = None  # the context keeps the run; the run must not keep the context
            if ctx is not None:
                ctx._hung.append(r)
            return
        if fault in ("error", "abort"):
            state = (
                ert_cmd_state.ERT_CMD_STATE_ERROR
                if fault == "error"
                else ert_cmd_state.ERT_CMD_STATE_ABORT
            )
            r._finish(state)
            return
        r._state = ert_cmd_state.ERT_CMD_STATE_RUNNING
        worker = threading.Thread(
            target=self._execute, args=(r, fault), name="xrt_sim-run", daemon=True
        )
        worker.start()

    def _execute(self, r: run, fault: str | None) -> None:
        try:
            data = self._check_args(r)
            if data is None:
                r._finish(ert_cmd_state.ERT_CMD_STATE_ERROR)
                return
            out = data[-1]
            if fault == "zeros":
                out._dev[:] = 0
            else:
                _run_host_kernel(self._xclbin._meta, data)
                if fault == "nan":
                    _poison_output(out)
            r._finish(ert_cmd_state.ERT_CMD_STATE_COMPLETED)
        except Exception as exc:  # a device error never raises into the host program
            _log.warning("xrt_sim: the simulated kernel failed (%s: %s)", type(exc).__name__, exc)
            r._finish(ert_cmd_state.ERT_CMD_STATE_ERROR)

    def _check_args(self, r: run) -> list[bo] | None:
        """What the NPU firmware would reject: bad opcode, instructions, or buffers."""
        if r._args.get(0) != _OPCODE_NPU_RUN:
            return None
        instr, n_words = r._args.get(1), r._args.get(2)
        if (
            not isinstance(instr, bo)
            or instr._flags != bo.cacheable
            or not isinstance(n_words, int)
        ):
            return None
        if n_words <= 0 or n_words * 4 != instr._size:
            return None  # the count is the stream's length in 32-bit words, not bytes
        words = instr._dev[: n_words * 4].view(np.uint32)
        if words[0] != INSTS_MAGIC or _uuid_words(self._xclbin.get_uuid()) != list(words[2:6]):
            return None  # instructions not synced, or from another xclbin
        n_buffers = int(words[1])
        data = [r._args.get(3 + i) for i in range(n_buffers)]
        if any(not isinstance(b, bo) for b in data):
            return None
        built_for = int(words[6]) if n_words > 6 else 0
        if built_for and _batch_of(self._xclbin._meta, data) != built_for:  # type: ignore[arg-type]
            return None  # DMA sizes baked into the instructions do not fit these buffers
        return data  # type: ignore[return-value]


# --------------------------------------------------------------------------- kernel glue


def _layout(batch: int, heads: int = 8) -> list[Any]:
    from . import quantization

    return list(quantization.buffer_layout(batch, heads=heads))


def _batch_of(meta: dict[str, Any], buffers: list[bo]) -> int:
    per_batch = [int(b["nbytes_per_batch"]) for b in meta["buffers"]]
    sizes = [b._size for b in buffers]
    batch = sizes[0] // per_batch[0] if per_batch[0] else 0
    if batch < 1 or any(s != batch * p for s, p in zip(sizes, per_batch, strict=True)):
        raise RuntimeError(f"xrt_sim: buffer sizes {sizes} do not match the kernel's layout")
    return batch


def _typed_views(meta: dict[str, Any], buffers: list[bo]) -> tuple[list[np.ndarray], int]:
    batch = _batch_of(meta, buffers)
    specs = _layout(batch, int(meta.get("heads", 8)))
    views = []
    for spec, buf in zip(specs, buffers, strict=True):
        views.append(buf._dev.view(np.dtype(spec.dtype)).reshape(spec.shape))
    return views, batch


def _run_host_kernel(meta: dict[str, Any], buffers: list[bo]) -> None:
    """Run what the xclbin's design computes (meta "design") on the synced device bytes.

    "layer" (and "head", one head) is the attention layer; "exp2n" and "scores" are the
    bring-up designs of kernels/bringup/, run through the same entry points of the
    host-built kernel (attn_exp2n_block, attn_tile_scores).
    """
    from amanuensis_npu.npu.host_kernel import get_host_kernel

    design = meta.get("design", "layer")
    if design in ("layer", "head"):
        views, batch = _typed_views(meta, buffers)
        get_host_kernel().run_layer(views, batch)
        return
    lib = get_host_kernel().lib
    sizes = [b._size for b in buffers]
    if design == "exp2n":
        block = 1024  # attention.cc ATTN_EXP_BLOCK
        if len(buffers) != 2 or sizes[0] != sizes[1] or sizes[0] % (4 * block):
            raise RuntimeError(f"xrt_sim: exp2n buffers of {sizes} bytes")
        fn = lib.attn_exp2n_block
        fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p]
        t, p = buffers[0]._dev.view(np.int32), buffers[1]._dev.view(np.int32)
        for i in range(0, t.size, block):
            fn(t[i:].ctypes.data, p[i:].ctypes.data)
    elif design == "scores":
        if sizes != [2048, 4352, 8192]:
            raise RuntimeError(f"xrt_sim: scores buffers of {sizes} bytes")
        fn = lib.attn_tile_scores
        fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 3
        fn(*(b._dev.ctypes.data for b in buffers))
    else:
        raise RuntimeError(f"xrt_sim: unknown design {design!r} in the xclbin stand-in")


def _abort_all(runs: list[run]) -> None:
    for r in runs:
        r._finish(ert_cmd_state.ERT_CMD_STATE_ABORT)


def _poison_output(out: bo) -> None:
    """Overwrite the output with NaN bit patterns, as a kernel reading garbage would.

    Every 16-bit word becomes 0x7FC0: NaN as bf16 and (pairwise) as float32; as the
    int16 output of SPEC.md it is 32704, beyond the kernel's bound of 127 * 256.
    """
    out._dev.view(np.uint16)[:] = 0x7FC0


def _uuid_words(u: uuid) -> list[int]:
    return [int(w) for w in np.frombuffer(_uuidlib.UUID(u.to_string()).bytes, dtype="<u4")]


# --------------------------------------------------------------------------- artifacts


def write_simulated_xclbin(
    path: Path,
    *,
    target: str,
    buffers_per_batch: list[dict[str, Any]],
    spec_version: str,
    design: str = "layer",
    heads: int = 8,
) -> uuid:
    """Write an xclbin stand-in that `xclbin(path)` accepts; it contains no hardware image.

    `design` says what the simulated kernel computes: "layer" (the attention layer, with
    `heads` heads) or a bring-up design of kernels/bringup/ ("exp2n", "scores", "head").
    """
    u = uuid(str(_uuidlib.uuid4()))
    meta = {
        "simulated": True,
        "note": "amanuensis-npu simulated xclbin stand-in: no AIE configuration inside",
        "uuid": u.to_string(),
        "target": target,
        "spec_version": spec_version,
        "kernels": [{"name": KERNEL_NAME, "num_args": 3 + max(5, len(buffers_per_batch))}],
        "buffers": buffers_per_batch,
        "design": design,
        "heads": heads,
    }
    path.write_bytes(XCLBIN_MAGIC + json.dumps(meta, indent=1).encode("utf-8"))
    return u


def write_simulated_insts(
    path: Path, xclbin_uuid: uuid, n_buffers: int, batch: int | None = None
) -> int:
    """Write an instruction stream (32-bit words) the sim checks before it runs; returns words.

    With `batch`, the stream only serves buffers of that batch size, as a real
    instruction stream whose DMA sizes are fixed at build time; None serves any.
    """
    words = [INSTS_MAGIC, n_buffers, *_uuid_words(xclbin_uuid), int(batch or 0), 0]
    np.asarray(words, dtype="<u4").tofile(path)
    return len(words)
