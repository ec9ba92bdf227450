"""The OpenVINO encoder route (`encoder="openvino[:DEVICE[:PRECISION]]"`).

Our ONNX export compiled and run by the `openvino` package itself, not by ONNX Runtime:
its own room beside onnx/, whose export, batch sizes and fallback it reuses.
"""
