"""PyTorch backend: the inference graph itself, in PyTorch. CPU or CUDA; FP16 on CUDA; optional CUDA graphs for fixed
batch sizes."""

from __future__ import annotations

import numpy as np

from ..errors import EngineError
from .base import ModelInfo


class TorchBackend:
    """Runs rtkp.model.graph.InferenceGraph, the module that is exported to ONNX. See backends.base.Backend."""

    def __init__(
        self,
        info: ModelInfo,
        device: str = "cpu",
        fp16: bool = False,
        cuda_graphs: bool = False,
        threads: int = 0,
        input_size: tuple[int, int] | None = None,
    ):
        import torch

        from ..model.checkpoint import load_model
        from ..model.graph import InferenceGraph

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("PyTorch here has no CUDA device (CPU-only build or no GPU): use --backend onnxruntime")
        if fp16 and not device.startswith("cuda"):
            # PyTorch's CPU half kernels are neither what any deployment runs nor fast; ONNX Runtime runs the FP16
            # graph itself on the CPU.
            raise EngineError("FP16 in the PyTorch backend needs CUDA; on the CPU use --backend onnxruntime for FP16")
        if threads:
            torch.set_num_threads(threads)
        net, manifest, protos, clutter = load_model(info.path)
        self.torch = torch
        self.device = torch.device(device)
        self.graph = InferenceGraph(net, fp16=fp16, peak=manifest.get("peak")).eval().to(self.device)
        self.precision = "fp16" if fp16 else "fp32"
        self.info = info
        self.input_size = tuple(input_size or info.input_size)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, tuple] = {}
        self.name = f"torch-{self.device.type}{'-fp16' if fp16 else ''}{'-graphs' if self.cuda_graphs else ''}"
        self.prototypes = protos.to(self.device) if protos is not None else None
        self.clutter = clutter.to(self.device) if clutter is not None else None

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> None:
        protos = self.torch.as_tensor(prototypes, dtype=self.torch.float32)
        clutter = self.torch.as_tensor(clutter, dtype=self.torch.float32)
        if protos.shape == self.prototypes.shape and clutter.shape == self.clutter.shape:
            # copy_ keeps the tensors' addresses, which captured CUDA graphs depend on
            self.prototypes.copy_(protos)
            self.clutter.copy_(clutter)
        else:
            self.prototypes, self.clutter = protos.to(self.device), clutter.to(self.device)
            self._graphs.clear()

    def _run(self, images):
        if self.info.is_coke:
            return self.graph(images, self.prototypes, self.clutter)
        return self.graph(images)

    def infer(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, np.uint8))
            if not self.cuda_graphs:
                return self._run(x.to(self.device, non_blocking=True)).cpu().numpy()
            return self._replay(x).cpu().numpy()

    def _replay(self, x):
        """Capture one CUDA graph per batch size (after a warm-up on a side stream), then replay it."""
        torch = self.torch
        b = x.shape[0]
        if b not in self._graphs:
            static_in = torch.zeros_like(x, device=self.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._run(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._run(static_in)
            self._graphs[b] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[b]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def close(self) -> None:
        self._graphs.clear()
