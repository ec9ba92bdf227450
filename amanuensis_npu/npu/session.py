"""An open NPU device: its hardware context, buffers, and one kernel run per dispatch.

Used only under `NPUAttention`'s device lock. Three decisions here depend on upstream
behaviour that cannot be tried on this machine; each is stated with its source.

One hardware context at a time on npu1. The amdxdna driver partitions npu1 by columns
(amd/xdna-driver ``src/driver/amdxdna/npu1_regs.c``: ``temporal_only = 0``,
``first_col = 1``, leaving 4 columns to applications), while the npu4 family time-shares
the whole array (``npu4_family.h``: ``temporal_only = 1``). Our kernel uses all 4 npu1
columns (``TARGETS`` in kernels/attention/layout.py), so a second live context (the
batch-1 and batch-8 builds are two xclbins) can only share or wait for the same columns:
the solver shares an identical partition or fails (Linux
``drivers/accel/amdxdna/aie2_solver.c``, ``allocate_partition``), and mlir-aie's own
runtime drains all its cached contexts on Phoenix because evicting just one leaves the
firmware failing the next submit (Xilinx/mlir-aie
``python/utils/hostruntime/xrtruntime/hostruntime.py``, ``CachedXRTRuntime.load``). So on
npu1 the session releases the loaded context (buffers, kernel, instructions) before it
creates another; on npu2 both stay loaded.

A run that timed out is never touched again. ``run.wait(ms)`` returns
``ERT_CMD_STATE_TIMEOUT``, and "it is the callers responsibility to abort the run if it
continues to time out" (Xilinx/XRT ``src/runtime_src/core/include/xrt/xrt_kernel.h``,
``run::wait``), but pyxrt binds no ``abort`` (``src/python/pybind11/src/pyxrt.cpp``: its
``run`` has ``start``, ``set_arg``, ``wait``, ``wait2``, ``state``, ``add_callback``). The
command may still be running and writing its buffers; the driver keeps them alive until it
ends or its context is torn down (xdna-driver ``aie2_ctx.c``, ``aie2_hmm_invalidate``:
"TDR will terminal context execution and unref all BOs"). So the session raises
`RunTimedOut`; the backend closes the session (every reference to the run, its buffers,
kernel and context is dropped, which destroys the context) and disables the NPU for the
process: a new command would queue behind the hung one and cost another full timeout.

The instruction count is in 32-bit words. The kernel's third argument (after opcode 3 and
the instruction buffer) goes into the command's register map unchanged (pyxrt's
``kernel.__call__`` casts it to int). ROCm's xdna driver fills the same slot of the same
``ERT_START_CU`` command with ``insts_size / sizeof(uint32_t)``, "instruction sequence
dword count" (ROCm/rocm-systems ``projects/rocr-runtime/runtime/hsa-runtime/core/driver/
xdna/amd_xdna_driver.cpp``, ``SubmitCmdChain``), and mlir-aie's hardware tests pass
``instr_v.size()`` of a ``std::vector<uint32_t>`` (``test/npu-xrt/many_buffers/test.cpp``,
``runtime_lib/test_lib/xrt_test_wrapper.h``; mlir-aie pull request 1609, "PyXRT takes the
instruction sequence length as number of instructions not number of bytes"). mlir-aie's
Python host runtime passes ``insts.nbytes`` instead (``xrtruntime/hostruntime.py``,
``XRTHostRuntime.run``); we follow the register map and the C++ tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .artifacts import FIRST_DATA_ARG, Artifact, ArtifactSet, base_heads, read_insts
from .errors import NPUError, RunTimedOut
from .sim_artifacts import artifacts_for
from .xrt import is_simulated, target_from_name, target_from_sysfs

OPCODE_RUN = 3  # mlir-aie's NPU kernels: opcode 3 runs the instruction stream
INSTR_GROUP = 1  # group id of the instruction buffer argument
BO_CACHE_SHAPES = 4  # batch sizes whose buffers stay allocated per loaded artifact
SINGLE_CONTEXT_TARGETS = ("npu1",)  # column-partitioned: one full-array context at a time


@dataclass
class DispatchTiming:
    """Host-side wall time of one dispatch's phases (seconds), for the latency benchmark."""

    write_sync_in: float = 0.0  # bo.write + sync TO_DEVICE of every input
    launch: float = 0.0  # the kernel call (command submission)
    wait: float = 0.0  # run.wait until the state comes back
    sync_read_out: float = 0.0  # sync FROM_DEVICE + bo.read of the output

    @property
    def total(self) -> float:
        return self.write_sync_in + self.launch + self.wait + self.sync_read_out


@dataclass
class Loaded:
    """One artifact on the device: hardware context, kernel, instructions, buffers."""

    artifact: Artifact
    xclbin: Any
    context: Any
    kernel: Any
    instr_bo: Any
    n_instr_words: int
    buffers: dict[int, list[Any]] = field(default_factory=dict)


class Session:
    """The device opened once, and the artifacts loaded on it (see the module docstring)."""

    def __init__(self, xrt: ModuleType) -> None:
        self.xrt = xrt
        try:
            self.device = xrt.device(0)
            self.device_name = str(self.device.get_info(xrt.xrt_info_device.name))
        except Exception as exc:
            raise NPUError(f"could not open NPU device 0: {exc}") from None
        target = target_from_name(self.device_name)
        if target is None and not is_simulated(xrt):
            target = target_from_sysfs()  # a name we do not know: trust the PCI id
        if target is None:
            raise NPUError(f"device {self.device_name!r} is not a supported NPU (npu1/npu2)")
        self.target = target
        self._sets: dict[int, ArtifactSet] = {}
        self.loaded: dict[Path, Loaded] = {}
        self.context_switches = 0

    @property
    def artifacts(self) -> ArtifactSet:
        """The artifacts for Whisper Base's shape (the default model)."""
        return self.artifact_set(base_heads())

    def artifact_set(self, heads: int) -> ArtifactSet:
        """The artifacts built for models of `heads` heads, looked up once per shape
        (NoArtifact, naming the build command, when none is)."""
        found = self._sets.get(heads)
        if found is None:
            found = self._sets[heads] = artifacts_for(self.target, is_simulated(self.xrt), heads)
        return found

    @property
    def single_context(self) -> bool:
        return self.target in SINGLE_CONTEXT_TARGETS

    def load(self, artifact: Artifact) -> Loaded:
        """The artifact's context, kernel and instructions, created on first use."""
        found = self.loaded.get(artifact.directory)
        if found is not None:
            return found
        if self.single_context and self.loaded:
            self.loaded.clear()  # drops context, kernel and buffers before the next context
            self.context_switches += 1
        xrt = self.xrt
        try:
            xclbin = xrt.xclbin(str(artifact.xclbin))
            kernels = [k for k in xclbin.get_kernels() if k.get_name() == artifact.kernel_name]
            if not kernels:
                raise NPUError(f"{artifact.xclbin} has no kernel {artifact.kernel_name!r}")
            max_data_args = kernels[0].get_num_args() - FIRST_DATA_ARG
            n_buffers = len(artifact.manifest.get("buffers", []))
            if n_buffers > max_data_args:  # passing more arguments crashes XRT
                raise NPUError(
                    f"{artifact.kernel_name} takes {max_data_args} data buffers, "
                    f"the layout has {n_buffers}"
                )
            self.device.register_xclbin(xclbin)
            context = xrt.hw_context(self.device, xclbin.get_uuid())
            kernel = xrt.kernel(context, artifact.kernel_name)
            insts = read_insts(artifact.insts)
            group = kernel.group_id(INSTR_GROUP)
            instr_bo = xrt.bo(self.device, insts.nbytes, xrt.bo.cacheable, group)
            instr_bo.write(insts, 0)
            instr_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, insts.nbytes, 0)
        except NPUError:
            raise
        except Exception as exc:
            raise NPUError(f"loading {artifact.xclbin} failed: {exc}") from None
        loaded = Loaded(artifact, xclbin, context, kernel, instr_bo, int(insts.size))
        self.loaded[artifact.directory] = loaded
        return loaded

    def buffers_for(self, loaded: Loaded, batch: int, sizes: list[int]) -> list[Any]:
        """Buffer objects for this batch size, allocated once and reused."""
        bos = loaded.buffers.get(batch)
        if bos is not None and [b.size() for b in bos] == sizes:
            return bos
        if len(loaded.buffers) >= BO_CACHE_SHAPES:
            loaded.buffers.pop(next(iter(loaded.buffers)))
        xrt = self.xrt
        bos = [
            xrt.bo(self.device, n, xrt.bo.host_only, loaded.kernel.group_id(FIRST_DATA_ARG + i))
            for i, n in enumerate(sizes)
        ]
        loaded.buffers[batch] = bos
        return bos

    def dispatch(
        self,
        loaded: Loaded,
        inputs: list[np.ndarray],
        out_nbytes: int,
        batch: int,
        wait_ms: int,
        moved: dict[str, int],
    ) -> tuple[np.ndarray, DispatchTiming]:
        """Run one layer: write+sync inputs, launch, wait, sync+read output (raw bytes).

        `moved` is filled as data really moves, so the caller counts what happened
        even when a step fails.
        """
        xrt = self.xrt
        to_dev = xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
        from_dev = xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE
        bos = self.buffers_for(loaded, batch, [int(a.nbytes) for a in inputs] + [out_nbytes])
        timing = DispatchTiming()
        t0 = time.perf_counter()
        try:
            for bo, arr in zip(bos, inputs, strict=False):
                bo.write(arr.reshape(-1).view(np.uint8), 0)
                bo.sync(to_dev, int(arr.nbytes), 0)
                moved["to_device"] += int(arr.nbytes)
        except Exception as exc:
            raise NPUError(f"copying inputs to the device failed: {exc}") from None
        t1 = time.perf_counter()
        try:
            run = loaded.kernel(OPCODE_RUN, loaded.instr_bo, loaded.n_instr_words, *bos)
        except Exception as exc:
            raise NPUError(f"kernel launch failed: {exc}") from None
        moved["dispatches"] += 1
        t2 = time.perf_counter()
        try:
            state = run.wait(wait_ms)
        except Exception as exc:
            raise NPUError(f"waiting for the kernel failed: {exc}") from None
        t3 = time.perf_counter()
        timing.write_sync_in, timing.launch, timing.wait = t1 - t0, t2 - t1, t3 - t2
        if state != xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            name = getattr(state, "name", str(state))
            if name == "ERT_CMD_STATE_TIMEOUT":
                raise RunTimedOut(f"kernel run timed out after {wait_ms} ms ({name})")
            raise NPUError(f"kernel run ended in state {name}")
        out_bo = bos[-1]
        try:
            out_bo.sync(from_dev, out_nbytes, 0)
            moved["from_device"] += out_nbytes
            raw = np.asarray(out_bo.read(out_nbytes, 0)).view(np.uint8)
        except Exception as exc:
            raise NPUError(f"reading the output back failed: {exc}") from None
        timing.sync_read_out = time.perf_counter() - t3
        return raw, timing

    def close(self) -> None:
        """Drop every context, kernel and buffer (the driver destroys what is unreferenced)."""
        self.loaded.clear()

    def state(self) -> dict[str, Any]:
        return {
            "device_name": self.device_name,
            "target": self.target,
            "loaded_artifacts": [str(d) for d in self.loaded],
            "one_context_at_a_time": self.single_context,
            "context_switches": self.context_switches,
        }
