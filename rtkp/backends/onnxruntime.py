"""ONNX Runtime backend: the CPU default (explicit thread count, no spinning), CUDA provider when present.

FP16 runs the FP16 ONNX graph (float32 inputs and outputs, half inside) on either device: on the CPU that is slower
than FP32, but it is how the figures of the graph TensorRT 11 builds from are checked without a GPU.
"""

from __future__ import annotations

import os

import numpy as np

from rtkp.backends.base import ModelInfo
from rtkp.backends.onnx_cache import ensure_onnx
from rtkp.errors import EngineError
from rtkp.graphs.outputs import keep_outputs, output_names
from rtkp.graphs.prototypes import graph_width, pad_prototypes, uses_generic, with_width


class OnnxRuntimeBackend:
    """Runs the exported graph with ONNX Runtime. See backends.base.Backend for the interface."""

    def __init__(
        self,
        info: ModelInfo,
        threads: int = 0,
        device: str = "cpu",
        fp16: bool = False,
        input_size: tuple[int, int] | None = None,
    ):
        self.input_size = tuple(input_size or info.input_size)
        self.info = info
        self.threads, self.device, self.fp16 = threads, device, fp16
        # by (variant, keypoints only): the plain graph (False) or the generic one (True); the generic graph's
        # features output is built only in the session that teaching reads (rtkp.graphs.outputs)
        self.sessions: dict[tuple[bool, bool], object] = {}
        self.generic = False
        self.session = self._session(False)
        self.name = f"onnxruntime-{device}{'-fp16' if fp16 else ''}"
        self.precision = "fp16" if fp16 else "fp32"
        self.max_keypoints = info.max_keypoints if info.is_coke else len(info.manifest.keypoint_names)
        if info.is_coke:
            self.set_prototypes(info.prototypes, info.clutter)

    def _session(self, generic: bool, features: bool = False):
        """The session of the plain or the generic graph (rtkp.graphs.prototypes), opened on first use; the generic
        graph without its features output unless `features`."""
        lean = generic and not features and self.info.is_coke
        if (generic, lean) in self.sessions:
            return self.sessions[(generic, lean)]
        import onnxruntime as ort

        threads, device = self.threads, self.device
        path = ensure_onnx(self.info, self.input_size, self.fp16, generic)
        opts = ort.SessionOptions()
        # Spinning threads burn a core while idle; in a pipeline the other stages need it.
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineError("onnxruntime here has no CUDA provider: pip install onnxruntime-gpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            graph = keep_outputs(path, ["keypoints"]) if lean else str(path)
            session = ort.InferenceSession(graph, opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"{path}: onnxruntime cannot load this graph ({str(exc).splitlines()[0]})") from None
        self.sessions[(generic, lean)] = session
        return session

    def resized(self, input_size: tuple[int, int]) -> OnnxRuntimeBackend:
        """The same model, runtime and settings at another input size (its own export and session)."""
        return OnnxRuntimeBackend(self.info, self.threads, self.device, self.fp16, input_size)

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> None:
        """(K, W) rows and the clutter summary; the generic graph runs while some row has a generic part."""
        self.k = len(prototypes)
        self.generic = uses_generic(prototypes, self.info.manifest.feature_dim)
        width = graph_width(self.info.manifest.feature_dim, self.generic)
        self.session = self._session(self.generic)
        self.prototypes, self.active = pad_prototypes(prototypes, self.max_keypoints, width)
        self.clutter = np.ascontiguousarray(clutter, np.float32)

    def _feeds(self, images: np.ndarray, generic: bool | None = None) -> dict:
        feeds = {"images": np.ascontiguousarray(images, np.uint8)}
        if self.info.is_coke:
            protos = self.prototypes
            if generic is not None and generic != self.generic:
                protos = with_width(protos, graph_width(self.info.manifest.feature_dim, generic))
            feeds.update(prototypes=protos, clutter=self.clutter, active=self.active)
        return feeds

    def infer(self, images: np.ndarray) -> np.ndarray:
        out = self.session.run(["keypoints"], self._feeds(images))[0]
        return out[:, : self.k] if self.info.is_coke else out

    def features(self, images: np.ndarray, generic: bool = False) -> np.ndarray:
        if not self.info.is_coke:
            raise EngineError("a heatmap model has no feature output (only CoKe models match prototypes)")
        session = self._session(generic or self.generic, features=True)
        return session.run(["features"], self._feeds(images, generic or self.generic))[0]

    def shot_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.info.is_coke:
            raise EngineError("a heatmap model has no feature output (only CoKe models match prototypes)")
        names = output_names(self.info.manifest, generic=True)[1:]  # features, and centres for several animals
        out = self._session(True, features=True).run(names, self._feeds(images, True))
        return out[0], (out[1] if len(out) > 1 else None)

    def close(self) -> None:
        self.session = None
        self.sessions.clear()
