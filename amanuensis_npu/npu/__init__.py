"""Attention on the Ryzen AI NPU (`attention="npu"`) and its exact CPU emulator (`"emulator"`).

Quantization adapters, the kernel's integer model, the host build of the kernel,
the XRT runtime and a simulated pyxrt device that runs the host build.
"""
