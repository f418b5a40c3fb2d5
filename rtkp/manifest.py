"""A model folder's manifest: its file names, format version and the reader every runtime uses.

Kept free of torch (and of numpy) on purpose: the parent of `rtkp run`, the post stage and an ONNX Runtime inference
stage only need the manifest, and importing torch costs each of them about a second at start and 0.2 s at exit
(measured; docs/RELIABILITY.md), which is what made shutdown slow under load.
"""

from __future__ import annotations

import json
from pathlib import Path

from rtkp.errors import ModelError

MANIFEST_VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def read_manifest(model_dir: str | Path) -> dict:
    """The manifest of a model folder, checked for the fields inference needs."""
    path = Path(model_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: not found; --model must be a folder made by `rtkp train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path}: corrupt manifest (not valid JSON)") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder; --model must be a folder made by `rtkp train`") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: corrupt manifest (not a JSON object)")
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ModelError(
            f"{path}: manifest version {manifest.get('manifest_version')!r}, this rtkp reads version {MANIFEST_VERSION}"
        )
    for key in ("head", "keypoint_names", "input_size", "feature_dim", "decoder_channels", "backbone"):
        if key not in manifest:
            raise ModelError(f"{path}: manifest lacks `{key}`")
    return manifest
