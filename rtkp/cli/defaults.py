"""Defaults shared by the command line and the tools: shipped models, backend names, the demo cache."""

from __future__ import annotations

import os
from pathlib import Path

# the names of rtkp.backends.CHOICES, repeated here so that `rtkp --help` needs no backend import
BACKENDS = ("auto", "tensorrt", "torch", "torch-cuda", "onnxruntime", "onnxruntime-cuda")
ENGINES = Path(__file__).resolve().parents[2] / "engines"  # rtkp/cli/defaults.py -> the repository's engines/
DEFAULT_MODEL = ENGINES / "target_coke"  # the demo target model; the DLC mouse model is engines/dlc_mouse_coke


def cache_dir() -> Path:
    """Where generated demo videos are cached ($XDG_CACHE_HOME/rtkp or ~/.cache/rtkp)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtkp"


def resolve_source(source: str, quiet: bool = False) -> tuple[str, bool]:
    """`demo` becomes the cached demo video (rendered on first use) played in real time; others pass through."""
    if source != "demo":
        return source, False
    from rtkp.demo.video import demo_video

    return str(demo_video(cache_dir(), progress=not quiet)), True
