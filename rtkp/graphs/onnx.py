"""Export a model folder to ONNX.

The graph is rtkp.model.graph.InferenceGraph (its docstring has the contract: uint8 images, K_max prototype rows, the
clutter summary and the mask of rows in use in; (B, K_max, 4) keypoint rows and the dense features out, and the centre
votes that tell a shot's animal (rtkp.graphs.outputs.output_names); the FP16 and debug variants). The batch and the
clutter summary's size are dynamic axes; K_max is fixed (rtkp.graphs.prototypes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from rtkp.graphs.exports_index import OPSET, onnx_name, record_export
from rtkp.graphs.outputs import output_names
from rtkp.graphs.prototypes import graph_width, max_keypoints, pad_prototypes
from rtkp.model.checkpoint import load_model
from rtkp.model.graph import InferenceGraph


def export_onnx(
    model_dir: str | Path,
    input_size: tuple[int, int] | None = None,
    fp16: bool = False,
    debug: bool = False,
    out_dir: Path | None = None,
    generic: bool = False,
) -> Path:
    """Write the ONNX graph for `model_dir` (into `model_dir/onnx/` by default) and record it in exports.json.
    generic: the variant with the generic branch (prototype rows D + GENERIC_DIM + 1 wide, rtkp.graphs.prototypes)."""
    model_dir = Path(model_dir)
    net, manifest, protos, clutter = load_model(model_dir)
    size = tuple(input_size or manifest.input_size)
    out_dir = Path(out_dir or model_dir / "onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    coke = manifest.head == "coke"
    generic = generic and coke
    path = out_dir / onnx_name(size, fp16, debug, generic)
    graph = InferenceGraph(
        net, fp16, debug, manifest.peak, features=coke, instances=manifest.max_instances, generic=generic
    ).eval()
    images = torch.zeros(1, size[1], size[0], 3, dtype=torch.uint8)
    if coke:
        # example values for tracing: the trained parts (a saved set's rows may be wider)
        trained = protos.float().numpy()[:, : manifest.feature_dim]
        width = graph_width(manifest.feature_dim, generic)
        padded, active = (torch.from_numpy(a) for a in pad_prototypes(trained, max_keypoints(manifest), width))
        args = (images, padded, clutter.float(), active)
    else:
        args = (images,)
    inputs = ["images", "prototypes", "clutter", "active"] if coke else ["images"]
    outputs = output_names(manifest, generic, debug)
    axes = {"images": {0: "batch"}, "keypoints": {0: "batch"}}
    if coke:
        axes["clutter"] = {0: "clutter"}
        axes["features"] = {0: "batch"}
    if "centres" in outputs:
        axes["centres"] = {0: "batch"}
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
    record_export(model_dir, path, manifest, size, "fp16" if fp16 else "fp32", debug, torch.__version__, generic)
    return path
