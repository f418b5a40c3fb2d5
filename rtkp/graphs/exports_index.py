"""exports.json: which ONNX files exist for a model folder and which weights they came from (no torch needed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rtkp.files import sha256, write_json_atomic
from rtkp.graphs.prototypes import max_keypoints
from rtkp.manifest import Manifest

OPSET = 17
EXPORTS = "exports.json"
# The inference graph's contract (rtkp.model.graph). 2: a (K_max, D) prototype input with an `active` mask and a
# `features` output (CoKe). 3: matching as a MatMul instead of an Einsum (same outputs, faster on the CPU: an export
# of version 2 still works but keeps the slow op). Exports recorded with another version (or none: version 1) are
# stale and made again.
GRAPH_VERSION = 3
# The generic variant's own contract (rtkp.model.generic): recorded as the entry's `generic`; 1: centred taps; 2: rows
# with rings and an axis (rtkp.graphs.prototypes); 3: anchors need evidence too (rtkp.model.generic.ANCHOR_EVIDENCE);
# 4: several animals: each cell is placed against its nearest animal's axis and scale; 5: the same outputs from a graph
# 1.7× faster (one animal's rings without per-cell gathers, no Pow): remade so that cached exports speed up too; 6:
# several animals: an animal's axis pairs its a with the b at the shots' distance, not the nearest b; 7: several
# animals: a `centres` output (the centre votes a shot's animal is told by)
GENERIC_VERSION = 7


def onnx_name(input_size: tuple[int, int], fp16: bool, debug: bool = False, generic: bool = False) -> str:
    """File name of an export: model_<W>x<H>_<fp32|fp16>[_debug][_generic].onnx (generic: the variant whose
    prototype rows have a generic part, rtkp.graphs.prototypes)."""
    w, h = input_size
    return f"model_{w}x{h}_{'fp16' if fp16 else 'fp32'}{'_debug' if debug else ''}{'_generic' if generic else ''}.onnx"


def graph_max_keypoints(manifest: Manifest) -> int | None:
    """The prototype rows of the model's graph (K_max), or None for a heatmap model (no prototype input)."""
    return max_keypoints(manifest) if manifest.head == "coke" else None


def record_export(
    model_dir: Path,
    path: Path,
    manifest: Manifest,
    size,
    precision: str,
    debug: bool,
    torch_version: str,
    generic: bool = False,
) -> None:
    """Add or replace the exports.json entry for `path`."""
    index_path = model_dir / EXPORTS
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"exports": []}
    rel = str(path.relative_to(model_dir)) if path.is_relative_to(model_dir) else str(path)
    index["exports"] = [e for e in index["exports"] if e.get("file") != rel]
    index["exports"].append(
        {
            "file": rel,
            "kind": "onnx",
            "sha256": sha256(path),
            "model_sha256": manifest.weights_sha256,
            "input_size": list(size),
            "precision": precision,
            "debug": debug,
            "generic": GENERIC_VERSION if generic else False,
            "graph": GRAPH_VERSION,
            "max_keypoints": graph_max_keypoints(manifest),
            "opset": OPSET,
            "torch": torch_version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    write_json_atomic(index_path, index)


def find_export(
    model_dir: Path, manifest: Manifest, input_size, fp16: bool, debug: bool = False, generic: bool = False
) -> Path | None:
    """An existing, intact ONNX export of the current weights (`manifest`, the folder's) and graph contract with these
    settings, or None: none recorded, a stale one (other weights or contract), or one whose bytes no longer match their
    recorded sha256 (said on stderr; the caller exports it again). Checked on every call, i.e. on every load."""
    model_dir = Path(model_dir)
    try:
        index = json.loads((model_dir / EXPORTS).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    k_max = graph_max_keypoints(manifest)
    want = onnx_name(tuple(input_size), fp16, debug, generic)
    for entry in index.get("exports", []):
        path = model_dir / entry.get("file", "")
        # a heatmap graph has no prototype input: its contract did not change with version 2
        graph_ok = entry.get("graph") == GRAPH_VERSION or (k_max is None and entry.get("graph", 1) == 1)
        same_graph = graph_ok and entry.get("max_keypoints") == k_max
        same_graph = same_graph and (entry.get("generic") == GENERIC_VERSION if generic else not entry.get("generic"))
        if path.name == want and (entry.get("model_sha256") or "") == manifest.weights_sha256 and same_graph:
            if not path.is_file():
                continue
            if sha256(path) == entry.get("sha256"):
                return path
            print(
                f"rtkp: refusing cached ONNX graph {path}: its checksum does not match {EXPORTS} (changed or corrupt);"
                " exporting it again",
                file=sys.stderr,
            )
    return None
