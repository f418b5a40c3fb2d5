"""Exported artifacts: ONNX graphs (FP32 and FP16) and TensorRT engines, each recorded with a manifest entry."""
