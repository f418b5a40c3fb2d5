"""What every inference backend offers, and the model facts they share (read without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from rtkp.errors import ModelError
from rtkp.graphs.prototypes import max_keypoints
from rtkp.manifest import Manifest, read_manifest, read_weights


class Backend(Protocol):
    """One runtime executing the inference graph (rtkp.model.graph.InferenceGraph, or its ONNX export).

    name says runtime, device and precision (e.g. "onnxruntime-cpu-fp16"); precision is "fp32" or "fp16". info: the
    ModelInfo it was opened with (read_model_info: the weights read and checked once), for whoever needs the model's
    manifest or banks beside the backend, so that nobody reads and hashes the weights again.
    infer: images (B, H, W, 3) uint8 RGB at `input_size` -> (B, K, 4) float32 (x, y, score, clutter_score) in
    model-input pixels, one row per keypoint in use. set_prototypes swaps the keypoint prototypes (K, D), any
    K <= max_keypoints, and the clutter summary (S, D) without rebuilding anything (the graph has K_max prototype rows
    and a mask of those in use); rows (K, D + G + 1) with a generic part (keypoints taught from shots) switch it to the
    graph's generic variant, and back when none is left (rtkp.graphs.prototypes). features (CoKe): images ->
    (B, D, H/4, W/4) float32, the unit features the prototypes are matched against, from the same graph run;
    (B, D + G, H/4, W/4) from the generic variant, in use or asked for (generic=True). shot_maps: what teaching reads
    from a shot's views, from one run of the generic variant: its features (B, D + G, H/4, W/4) and, for a model of
    several animals, the centre votes (B, 2, H/4, W/4) input px (rtkp.model.graph; None for one animal).
    resized(size): the same model, runtime and settings at another input size (W, H) (the window a Tracker follows
    the animal with, rtkp.follow).
    """

    name: str
    precision: str
    info: ModelInfo
    input_size: tuple[int, int]
    max_keypoints: int

    def infer(self, images: np.ndarray) -> np.ndarray: ...

    def features(self, images: np.ndarray, generic: bool = False) -> np.ndarray: ...

    def shot_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> None: ...

    def resized(self, input_size: tuple[int, int]) -> Backend: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelInfo:
    """A model folder's manifest plus its CoKe banks as numpy (prototypes (K, D), or (K, D + G + 1) for a saved set
    with taught keypoints (rtkp.graphs.prototypes); clutter (S, D); None for heatmap).

    weights_bytes: the weights file's bytes as read and checked against the manifest's sha256 (read_model_info), so
    a backend that needs the whole network (PyTorch) builds it from them instead of reading and hashing the file again.
    """

    path: Path
    manifest: Manifest
    prototypes: np.ndarray | None
    clutter: np.ndarray | None
    weights_bytes: bytes = field(default=b"", repr=False, compare=False)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input_size

    @property
    def is_coke(self) -> bool:
        return self.manifest.head == "coke"

    @property
    def weights_sha256(self) -> str:
        return self.manifest.weights_sha256

    @property
    def max_keypoints(self) -> int:
        """K_max: prototype rows of the model's graph (rtkp.graphs.prototypes.max_keypoints)."""
        return max_keypoints(self.manifest)


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """Manifest and banks of a model folder, via safetensors' numpy reader (no torch import).

    The weights are read once and checked against the manifest's sha256 (rtkp.manifest.read_weights) before anything
    else of the folder is used: a cached ONNX graph or TensorRT engine is only ever used together with the weights
    (the banks) that were checked here, and the graphs and engines are checked against their own records (exports.json,
    trt/*.json) which name these weights' hash.
    """
    from safetensors.numpy import load

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    data = read_weights(model_dir, manifest)
    protos = clutter = None
    if manifest.head == "coke":
        path = model_dir / manifest.weights
        try:
            tensors = load(data)
            protos = tensors["prototypes"].astype(np.float32)
            clutter = tensors["clutter_summary"].astype(np.float32)
        except KeyError as exc:
            raise ModelError(f"{path}: a CoKe model needs the {exc} tensor, and this weights file has none") from None
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ModelError(f"{path}: cannot read prototypes and clutter summary ({exc})") from None
    return ModelInfo(model_dir, manifest, protos, clutter, data)
