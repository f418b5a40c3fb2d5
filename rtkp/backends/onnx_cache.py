"""Find or make the ONNX export a backend needs (export needs torch; using an existing file does not)."""

from __future__ import annotations

from pathlib import Path

from rtkp.backends.base import ModelInfo


def ensure_onnx(info: ModelInfo, input_size: tuple[int, int], fp16: bool, generic: bool = False) -> Path:
    """Path of an up-to-date ONNX export for these settings (generic: the variant with the generic branch),
    exporting it first when missing or stale."""
    from rtkp.graphs.exports_index import find_export

    found = find_export(info.path, info.manifest, input_size, fp16, generic=generic)
    if found is not None:
        return found
    from rtkp.graphs.onnx import export_onnx

    return export_onnx(info.path, input_size, fp16, generic=generic)
