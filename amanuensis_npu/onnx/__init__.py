"""The ONNX Runtime encoder route (`encoder="onnx"`): export, providers, runner.

The vendors' NPU route: the whole encoder as a static-shape ONNX model, run by an
ONNX Runtime execution provider (VitisAI on Ryzen AI, OpenVINO, QNN) or the CPU.
Submodules import onnx/onnxruntime on use, so importing this package stays cheap.
"""
