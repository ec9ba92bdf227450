"""Attention on the Ryzen AI NPU (`attention="npu"`) and its exact CPU emulator (`"emulator"`).

The kernel's side: quantization adapters, its integer model (emulator), its host build.
The runtime, one concern per module: settings (config), pyxrt and the device (xrt),
artifacts (artifacts, sim_artifacts), the open device (session), availability (status)
and the backend with its fallback policy (backend); `runtime` gathers their public
names. `xrt_sim` is a simulated pyxrt device that runs the host build.
"""
