"""PyTorch backend: the inference graph itself, in PyTorch. CPU or CUDA; FP16 on CUDA; optional CUDA graphs for fixed
batch sizes."""

from __future__ import annotations

import copy

import numpy as np

from rtkp.backends.base import ModelInfo
from rtkp.errors import EngineError
from rtkp.graphs.prototypes import graph_width, pad_prototypes, uses_generic, with_width
from rtkp.manifest import read_weights


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

        from rtkp.model.checkpoint import model_from_weights
        from rtkp.model.graph import InferenceGraph

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("PyTorch here has no CUDA device (CPU-only build or no GPU): use --backend onnxruntime")
        if fp16 and not device.startswith("cuda"):
            # PyTorch's CPU half kernels are neither what any deployment runs nor fast; ONNX Runtime runs the FP16
            # graph itself on the CPU.
            raise EngineError("FP16 in the PyTorch backend needs CUDA; on the CPU use --backend onnxruntime for FP16")
        if threads:
            torch.set_num_threads(threads)
        # the weights read and checked by read_model_info: no second read, no second hash
        weights = info.weights_bytes or read_weights(info.path, info.manifest)
        net, manifest, protos, clutter = model_from_weights(info.manifest, weights, info.path / info.manifest.weights)
        self.torch = torch
        self.device = torch.device(device)
        coke = manifest.head == "coke"

        def graph(generic: bool):
            g = InferenceGraph(
                net, fp16=fp16, peak=manifest.peak, features=coke, instances=manifest.max_instances, generic=generic
            )
            return g.eval().to(self.device)

        self._make_graph = graph  # the generic variant shares the network; made on first use
        self.graphs = {False: graph(False)}
        self.graph = self.graphs[False]
        self.generic = False
        self.precision = "fp16" if fp16 else "fp32"
        self.info = info
        self.input_size = tuple(input_size or info.input_size)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, tuple] = {}
        self.name = f"torch-{self.device.type}{'-fp16' if fp16 else ''}{'-graphs' if self.cuda_graphs else ''}"
        self.max_keypoints = info.max_keypoints if coke else len(manifest.keypoint_names)
        self.prototypes = self.clutter = self.active = None
        if coke:
            self.set_prototypes(protos.numpy(), clutter.numpy())

    def _graph(self, generic: bool):
        """The plain or the generic graph (rtkp.graphs.prototypes)."""
        if generic not in self.graphs:
            self.graphs[generic] = self._make_graph(generic)
        return self.graphs[generic]

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> None:
        """(K, W) rows and the clutter summary; the generic graph runs while some row has a generic part."""
        torch = self.torch
        d = self.info.manifest.feature_dim
        self.generic = uses_generic(prototypes, d)
        self.graph = self._graph(self.generic)
        width = graph_width(d, self.generic)
        padded, active = (torch.from_numpy(a) for a in pad_prototypes(prototypes, self.max_keypoints, width))
        clutter = torch.as_tensor(np.asarray(clutter, np.float32))
        self.k = len(prototypes)
        same = self.prototypes is not None and padded.shape == self.prototypes.shape
        if same and clutter.shape == self.clutter.shape:
            # copy_ keeps the tensors' addresses, which captured CUDA graphs depend on (the padded shapes never change)
            self.prototypes.copy_(padded)
            self.active.copy_(active)
            self.clutter.copy_(clutter)
        else:
            self.prototypes, self.active = padded.to(self.device), active.to(self.device)
            self.clutter = clutter.to(self.device)
            self._graphs.clear()

    def _run(self, images, generic: bool | None = None):
        """-> keypoints (B, K_max, 4) and, for CoKe, features (B, D, h, w) ((B, D + G, h, w) from the generic
        graph: generic=True asks for it whatever the rows in use need)."""
        if not self.info.is_coke:
            return (self.graph(images),)
        if generic is None or generic == self.generic:
            return self.graph(images, self.prototypes, self.clutter, self.active)
        width = graph_width(self.info.manifest.feature_dim, generic)
        protos = self.torch.from_numpy(with_width(self.prototypes.cpu().numpy(), width)).to(self.device)
        return self._graph(generic)(images, protos, self.clutter, self.active)

    def infer(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, np.uint8))
            if not self.cuda_graphs:
                kp = self._run(x.to(self.device, non_blocking=True))[0]
            else:
                kp = self._replay(x)[0]
            return kp[:, : self.k].cpu().numpy() if self.info.is_coke else kp.cpu().numpy()

    def features(self, images: np.ndarray, generic: bool = False) -> np.ndarray:
        if not self.info.is_coke:
            raise EngineError("a heatmap model has no feature output (only CoKe models match prototypes)")
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(images, np.uint8)).to(self.device)
            return self._run(x, generic or self.generic)[1].float().cpu().numpy()

    def shot_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.info.is_coke:
            raise EngineError("a heatmap model has no feature output (only CoKe models match prototypes)")
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(images, np.uint8)).to(self.device)
            out = self._run(x, True)  # keypoints, features, and the centres for several animals
            return out[1].float().cpu().numpy(), (out[2].float().cpu().numpy() if len(out) > 2 else None)

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

    def resized(self, input_size: tuple[int, int]) -> TorchBackend:
        """The same network at another input size: the graph is size-agnostic, so the copy shares it (its own bank
        and CUDA graphs)."""
        other = copy.copy(self)
        other.input_size = tuple(input_size)
        other._graphs = {}
        return other

    def close(self) -> None:
        self._graphs.clear()
