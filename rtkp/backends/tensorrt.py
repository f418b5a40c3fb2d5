"""TensorRT backend (TensorRT 10/11 tensor-address API: set_tensor_address + execute_async_v3).

Device memory comes from PyTorch CUDA tensors, so no pycuda/cuda-python is needed. `device="cpu"` exists only for the
tests, where a fake `tensorrt` module executes on host memory.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rtkp.backends.base import ModelInfo
from rtkp.backends.onnx_cache import ensure_onnx
from rtkp.errors import EngineError, require
from rtkp.graphs.exports_index import GENERIC_VERSION, GRAPH_VERSION
from rtkp.graphs.outputs import output_names
from rtkp.graphs.prototypes import features_width, graph_width, pad_prototypes, uses_generic, with_width
from rtkp.graphs.tensorrt import EngineCache, EngineKey, build_serialized, onnx_precision_for


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
        self.max_keypoints = info.max_keypoints if info.is_coke else len(info.manifest.keypoint_names)
        self.key = EngineKey(
            info.weights_sha256,
            gpu,
            str(trt.__version__),
            self.input_size,
            max_batch,
            precision,
            clutter,
            self.max_keypoints if info.is_coke else None,
            GRAPH_VERSION,
        )
        self.cache = EngineCache(info.path / "trt")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.variants: dict[bool, tuple] = {}  # by variant: (engine, context); True the generic graph's
        self.generic = False
        self.engine, self.context = self._variant(False)
        self.name = f"tensorrt-{precision}"
        self.prototypes = self.clutter = self.active = None
        if info.is_coke:
            self.set_prototypes(info.prototypes, info.clutter)

    def _variant(self, generic: bool) -> tuple:
        """(engine, execution context) of the plain or the generic graph, built or loaded on first use."""
        if generic not in self.variants:
            engine = self._engine(replace(self.key, generic=GENERIC_VERSION if generic else 0))
            self.variants[generic] = (engine, engine.create_execution_context())
        return self.variants[generic]

    def _engine(self, key: EngineKey):
        runtime = self.trt.Runtime(self.logger)
        self.runtime = runtime
        data = self.cache.load(key)
        if data is not None:
            engine = runtime.deserialize_cuda_engine(data)
            if engine is not None:
                return engine
            EngineCache._refuse(self.cache.paths(key)[0], "TensorRT could not deserialise it")
        precision = onnx_precision_for(self.trt, key.precision)
        onnx_path = ensure_onnx(self.info, self.input_size, precision, bool(key.generic))
        data = build_serialized(self.trt, onnx_path, key)
        self.cache.store(key, data, onnx_path)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError("TensorRT built an engine it cannot deserialise")
        return engine

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> None:
        """The engine's prototype input has K_max rows: K <= K_max in use, the rest masked off (no rebuild). Rows
        with a generic part run the generic graph's engine (built or loaded on first use)."""
        t = self.torch
        d = self.info.manifest.feature_dim
        self.generic = uses_generic(prototypes, d)
        self.engine, self.context = self._variant(self.generic)
        padded, active = pad_prototypes(prototypes, self.max_keypoints, graph_width(d, self.generic))
        self.k = len(prototypes)
        self.prototypes = t.as_tensor(padded).to(self.device)
        self.active = t.as_tensor(active).to(self.device)
        self.clutter = t.as_tensor(np.ascontiguousarray(clutter, np.float32)).to(self.device)

    def _execute(self, images: np.ndarray, generic: bool | None = None):
        """One engine run: -> keypoints (B, K_max, 4) ((B, K_max, P, 6) for several animals) and, for CoKe,
        features (B, D, h, w), as device tensors ((B, D + G, h, w) from the generic graph: generic=True asks for it
        whatever the rows in use need), and the centre votes (B, 2, h, w) from the generic graph of several animals
        (else None)."""
        t = self.torch
        x = t.from_numpy(np.ascontiguousarray(images, np.uint8)).to(self.device)
        b = len(images)
        peaks = self.info.manifest.max_instances if self.info.is_coke else 0
        # several animals: each keypoint's P best peaks with their centre votes (rtkp.model.graph)
        rows = (self.max_keypoints, peaks, 6) if peaks else (self.max_keypoints, 4)
        out = t.empty((b, *rows), dtype=t.float32, device=self.device)
        generic = self.generic if generic is None else generic
        ctx = self._variant(generic)[1]
        protos = self.prototypes
        if generic != self.generic:
            width = graph_width(self.info.manifest.feature_dim, generic)
            protos = t.as_tensor(with_width(self.prototypes.cpu().numpy(), width)).to(self.device)
        ctx.set_input_shape("images", tuple(x.shape))
        ctx.set_tensor_address("images", x.data_ptr())
        feats = centres = None
        if self.info.is_coke:
            w, h = self.input_size
            d = features_width(self.info.manifest.feature_dim, generic)
            stride = self.info.manifest.stride
            # every output needs an address; the features are computed for matching anyway, so writing them out
            # costs one device copy
            feats = t.empty((b, d, h // stride, w // stride), dtype=t.float32, device=self.device)
            ctx.set_input_shape("clutter", tuple(self.clutter.shape))
            ctx.set_tensor_address("prototypes", protos.data_ptr())
            ctx.set_tensor_address("clutter", self.clutter.data_ptr())
            ctx.set_tensor_address("active", self.active.data_ptr())
            ctx.set_tensor_address("features", feats.data_ptr())
            if "centres" in output_names(self.info.manifest, generic):  # the generic engine of several animals
                centres = t.empty((b, 2, h // stride, w // stride), dtype=t.float32, device=self.device)
                ctx.set_tensor_address("centres", centres.data_ptr())
        ctx.set_tensor_address("keypoints", out.data_ptr())
        stream = t.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        if not ctx.execute_async_v3(stream):
            raise EngineError("TensorRT execution failed (see its log above)")
        if self.device.type == "cuda":
            t.cuda.current_stream(self.device).synchronize()
        return out, feats, centres

    def infer(self, images: np.ndarray) -> np.ndarray:
        if len(images) > self.max_batch:
            return np.concatenate(
                [self.infer(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
            )
        out = self._execute(images)[0]
        return out[:, : self.k].cpu().numpy() if self.info.is_coke else out.cpu().numpy()

    def features(self, images: np.ndarray, generic: bool = False) -> np.ndarray:
        if not self.info.is_coke:
            raise EngineError("a heatmap model has no feature output (only CoKe models match prototypes)")
        if len(images) > self.max_batch:
            step = self.max_batch
            return np.concatenate([self.features(images[i : i + step], generic) for i in range(0, len(images), step)])
        return self._execute(images, generic or self.generic)[1].cpu().numpy()

    def shot_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.info.is_coke:
            raise EngineError("a heatmap model has no feature output (only CoKe models match prototypes)")
        if len(images) > self.max_batch:
            parts = [self.shot_maps(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
            centres = [c for _, c in parts if c is not None]
            return np.concatenate([f for f, _ in parts]), (np.concatenate(centres) if centres else None)
        _, feats, centres = self._execute(images, True)
        return feats.cpu().numpy(), (centres.cpu().numpy() if centres is not None else None)

    def resized(self, input_size: tuple[int, int]) -> TensorRTBackend:
        """The same model and settings at another input size: its own engine (built once, then cached)."""
        fp16 = self.precision == "fp16"
        return TensorRTBackend(self.info, fp16, self.max_batch, str(self.device), input_size)

    def close(self) -> None:
        self.context = self.engine = None
        self.variants.clear()
