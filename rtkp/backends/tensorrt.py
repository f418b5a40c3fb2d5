"""TensorRT backend (TensorRT 10/11 tensor-address API: set_tensor_address + execute_async_v3).

Device memory comes from PyTorch CUDA tensors, so no pycuda/cuda-python is needed. `device="cpu"` exists only for the
tests, where a fake `tensorrt` module executes on host memory.
"""

from __future__ import annotations

import numpy as np

from ..errors import EngineError, require
from ..graphs.tensorrt import EngineCache, EngineKey, build_serialized, onnx_precision_for
from .base import ModelInfo
from .onnx_cache import ensure_onnx


class TensorRTBackend:
    """A TensorRT engine for one model, input size, precision and batch range. See backends.base.Backend."""

    def __init__(
        self,
        info: ModelInfo,
        fp16: bool = True,
        max_batch: int = 8,
        device: str = "cuda",
        input_size: tuple[int, int] | None = None,
    ):
        trt = require("tensorrt", "tensorrt")
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("TensorRT needs a CUDA GPU, and PyTorch sees none here")
        self.trt, self.torch, self.info = trt, torch, info
        self.device = torch.device(device)
        self.input_size = tuple(input_size or info.input_size)
        self.max_batch = max_batch
        self.precision = precision = "fp16" if fp16 else "fp32"
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "host"
        clutter = tuple(info.clutter.shape) if info.is_coke else None
        self.key = EngineKey(
            info.weights_sha256, gpu, str(trt.__version__), self.input_size, max_batch, precision, clutter
        )
        self.cache = EngineCache(info.path / "trt")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = self._engine()
        self.context = self.engine.create_execution_context()
        self.name = f"tensorrt-{precision}"
        self.prototypes = self.clutter = None
        if info.is_coke:
            self.set_prototypes(info.prototypes, info.clutter)

    def _engine(self):
        runtime = self.trt.Runtime(self.logger)
        self.runtime = runtime
        data = self.cache.load(self.key)
        if data is not None:
            engine = runtime.deserialize_cuda_engine(data)
            if engine is not None:
                return engine
            EngineCache._refuse(self.cache.paths(self.key)[0], "TensorRT could not deserialise it")
        onnx_path = ensure_onnx(self.info, self.input_size, onnx_precision_for(self.trt, self.key.precision))
        data = build_serialized(self.trt, onnx_path, self.key)
        self.cache.store(self.key, data, onnx_path)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError("TensorRT built an engine it cannot deserialise")
        return engine

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> None:
        t = self.torch
        self.prototypes = t.as_tensor(np.ascontiguousarray(prototypes, np.float32)).to(self.device)
        self.clutter = t.as_tensor(np.ascontiguousarray(clutter, np.float32)).to(self.device)

    def infer(self, images: np.ndarray) -> np.ndarray:
        if len(images) > self.max_batch:
            return np.concatenate(
                [self.infer(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
            )
        t = self.torch
        x = t.from_numpy(np.ascontiguousarray(images, np.uint8)).to(self.device)
        k = len(self.info.manifest["keypoint_names"])
        out = t.empty((len(images), k, 4), dtype=t.float32, device=self.device)
        ctx = self.context
        ctx.set_input_shape("images", tuple(x.shape))
        ctx.set_tensor_address("images", x.data_ptr())
        if self.info.is_coke:
            ctx.set_input_shape("clutter", tuple(self.clutter.shape))
            ctx.set_tensor_address("prototypes", self.prototypes.data_ptr())
            ctx.set_tensor_address("clutter", self.clutter.data_ptr())
        ctx.set_tensor_address("keypoints", out.data_ptr())
        stream = t.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        if not ctx.execute_async_v3(stream):
            raise EngineError("TensorRT execution failed (see its log above)")
        if self.device.type == "cuda":
            t.cuda.current_stream(self.device).synchronize()
        return out.cpu().numpy()

    def close(self) -> None:
        self.context = self.engine = None
