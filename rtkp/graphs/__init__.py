"""Graph artifacts of a model folder: ONNX graphs (FP32, FP16, debug) of rtkp.model.graph.InferenceGraph and TensorRT
engines built from them, each recorded with its weights' hash (exports.json, trt/*.json) so stale ones are rebuilt;
and the contract of the graph's prototype input that every backend fills (K_max rows and a mask: prototypes.py).

Not `rtkp export` (that annotates videos: rtkp.export.local); `rtkp build-engine` and the backends make these on demand.
"""
