"""File helpers shared by model folders, exports and engine caches (no heavy imports)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file and rename it into place, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
