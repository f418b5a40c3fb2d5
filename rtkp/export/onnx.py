"""Export a model folder to ONNX.

Graph contract (ARCHITECTURE.md §3):
  inputs   images      (B, H, W, 3) uint8 RGB at the model size (B dynamic; normalisation is inside the graph)
           prototypes  (K, D) float32   (CoKe only: swap keypoints at run time without re-exporting)
           clutter     (S, D) float32   (CoKe only: the clutter summary; S dynamic)
  outputs  keypoints   (B, K, 4) float32 = x, y (model-input pixels, sub-pixel refined), score, clutter_score
           similarity  (B, K, H/4, W/4) float32, only in a debug export

The FP16 variant runs the backbone and the decoder's merge in half precision between float32 inputs and outputs
(TensorRT 11 builds strongly typed networks only, so precision must be in the graph); the final projection,
normalisation, matching, peak finding and sub-pixel refinement stay float32, because the peak and the quadratic fit
depend on small differences of similarities near 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..model.checkpoint import load_model
from ..model.decode import coke_keypoints, heatmap_keypoints
from ..model.network import STRIDE, KeypointNet
from .registry import OPSET, onnx_name, record_export


class ExportGraph(nn.Module):
    """The exported computation; see the module docstring for inputs and outputs."""

    def __init__(self, net: KeypointNet, fp16: bool = False, debug: bool = False):
        super().__init__()
        self.net = net.float()
        if fp16:
            # half precision for the body only; the last 1×1 projection, normalisation and heads stay float32.
            # Measured on the 96 DLC test keypoints: all-FP16 moved one by 4.2 px; this split moves two by 3.3 px
            # (a near-tie between two cells of CoKe's flat similarity peak), the other 94 by < 0.5 px (median
            # 0.03 px); keeping the decoder float32 as well changed nothing, so it runs in FP16 too.
            self.net.backbone.half()
            self.net.decoder.half()
            self.net.decoder.project.float()
            self.net.mean, self.net.std = self.net.mean.half(), self.net.std.half()
        self.debug = debug

    def forward(
        self, images: torch.Tensor, prototypes: torch.Tensor | None = None, clutter: torch.Tensor | None = None
    ):
        out = self.net.head_out(self.net.body(images).float())
        if self.net.head == "heatmap":
            kp = heatmap_keypoints(out, STRIDE)
            return (kp, out) if self.debug else kp
        kp, sim = coke_keypoints(out, prototypes, clutter, STRIDE)
        return (kp, sim) if self.debug else kp


def export_onnx(
    model_dir: str | Path,
    input_size: tuple[int, int] | None = None,
    fp16: bool = False,
    debug: bool = False,
    out_dir: Path | None = None,
) -> Path:
    """Write the ONNX graph for `model_dir` (into `model_dir/onnx/` by default) and record it in exports.json."""
    model_dir = Path(model_dir)
    net, manifest, protos, clutter = load_model(model_dir)
    size = tuple(input_size or manifest["input_size"])
    out_dir = Path(out_dir or model_dir / "onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / onnx_name(size, fp16, debug)
    graph = ExportGraph(net, fp16, debug).eval()
    images = torch.zeros(1, size[1], size[0], 3, dtype=torch.uint8)
    coke = manifest["head"] == "coke"
    args = (images, protos.float(), clutter.float()) if coke else (images,)
    inputs = ["images", "prototypes", "clutter"] if coke else ["images"]
    outputs = ["keypoints", "similarity"] if debug else ["keypoints"]
    axes = {"images": {0: "batch"}, "keypoints": {0: "batch"}}
    if coke:
        axes["clutter"] = {0: "clutter"}
    if debug:
        axes["similarity"] = {0: "batch"}
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export; it is the one this graph's parity tests
        # were run with, and it is still part of torch 2.x.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            args,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    tmp.replace(path)
    record_export(model_dir, path, manifest, size, "fp16" if fp16 else "fp32", debug, torch.__version__)
    return path
