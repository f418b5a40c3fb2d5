"""Graph artifacts of a model folder: ONNX graphs (FP32, FP16, debug) of rtkp.model.graph.InferenceGraph and TensorRT
engines built from them, each recorded with its weights' hash (exports.json, trt/*.json) so stale ones are rebuilt.

Not `rtkp export` (that annotates videos: rtkp.export.local); `rtkp build-engine` and the backends make these on demand.
"""
