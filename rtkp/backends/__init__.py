"""Inference backends, one file per runtime, behind one interface (backends.base.Backend).

open_backend(model, prefer="auto", precision=None) picks TensorRT > PyTorch CUDA > ONNX Runtime CPU by what works
here; `doctor()` reports every backend and why it does or does not. Each backend runs rtkp.model.graph.InferenceGraph:
PyTorch directly, the others as its ONNX export (rtkp.graphs); `backend.name` and `backend.precision` say which.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rtkp.backends.base import Backend, ModelInfo, read_model_info
from rtkp.errors import ConfigError, EngineError

CHOICES = ("auto", "tensorrt", "torch", "torch-cuda", "onnxruntime", "onnxruntime-cuda")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    detail: str


def _nvidia_driver_absent() -> bool:
    """True when this Linux machine certainly has no NVIDIA GPU (no driver loaded): then torch need not be imported
    to ask, which saves about a second per process at start and 0.2 s at exit."""
    return sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version")


def _cuda() -> tuple[bool, str]:
    if _nvidia_driver_absent():
        return False, "no NVIDIA driver loaded (/proc/driver/nvidia/version is absent)"
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


def doctor(only: tuple[str, ...] | None = None) -> list[BackendStatus]:
    """Whether each backend can run here, and why not. `only`: ask just about these names (and import nothing the
    others would need: `rtkp run --backend onnxruntime` never imports torch)."""
    want = lambda *names: only is None or any(n in only for n in names)
    out = []
    if want("onnxruntime", "onnxruntime-cuda"):
        out += _onnxruntime_statuses()
    cuda = _cuda() if want("torch-cuda", "tensorrt") else (False, "")
    if want("torch"):
        if importlib.util.find_spec("torch") is not None:
            from importlib.metadata import version

            out.append(BackendStatus("torch", True, f"PyTorch {version('torch')}, CPU"))
        else:
            out.append(BackendStatus("torch", False, "PyTorch not installed"))
    if want("torch-cuda"):
        out.append(BackendStatus("torch-cuda", *cuda))
    if want("tensorrt"):
        out.append(_tensorrt_status(*cuda))
    return [s for s in out if only is None or s.name in only]


def _onnxruntime_statuses() -> list[BackendStatus]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return [
            BackendStatus("onnxruntime", False, f"not importable: {exc}"),
            BackendStatus("onnxruntime-cuda", False, f"not importable: {exc}"),
        ]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return [
        BackendStatus("onnxruntime", True, f"onnxruntime {ort.__version__}, CPU"),
        BackendStatus(
            "onnxruntime-cuda",
            has_cuda,
            "CUDA provider present" if has_cuda else "no CUDA provider (pip install onnxruntime-gpu)",
        ),
    ]


def _tensorrt_status(cuda: bool, detail: str) -> BackendStatus:
    if importlib.util.find_spec("tensorrt") is None:
        hint = "pip install 'rtkp[tensorrt]' on a CUDA machine"
        return BackendStatus("tensorrt", False, f"tensorrt not installed ({hint})")
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken TensorRT install raises all sorts of errors at import
        return BackendStatus("tensorrt", False, f"import failed: {str(exc).splitlines()[0]}")
    return BackendStatus("tensorrt", cuda, f"TensorRT {trt.__version__}" + ("" if cuda else f"; {detail}"))


def open_backend(
    model: str | Path,
    prefer: str = "auto",
    threads: int = 0,
    precision: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> Backend:
    """Open a backend for a model folder.

    prefer: "auto" (TensorRT > PyTorch CUDA > ONNX Runtime CPU, first that works), or one name from CHOICES.
    precision: "fp32" or "fp16"; None is each backend's natural choice (fp16 on GPUs, fp32 on the CPU). FP16 on the
    CPU is ONNX Runtime running the FP16 graph (the one TensorRT 11 builds from), to check its figures without a GPU.
    """
    if prefer not in CHOICES:
        raise ConfigError(f"`backend` must be one of {', '.join(CHOICES)}, got {prefer!r}")
    if precision not in (None, *PRECISIONS):
        raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    info = read_model_info(model)
    order = ["tensorrt", "torch-cuda", "onnxruntime"] if prefer == "auto" else [prefer]
    status = {s.name: s for s in doctor(tuple(order))}
    errors = []
    for name in order:
        if not status[name].available:
            errors.append(f"{name}: {status[name].detail}")
            continue
        try:
            return _open(name, info, threads, precision, input_size)
        except EngineError as exc:
            if prefer != "auto":
                raise
            errors.append(f"{name}: {exc}")
    raise EngineError(f"no usable backend for {prefer!r} ({'; '.join(errors)})")


def _open(name: str, info: ModelInfo, threads: int, precision: str | None, input_size) -> Backend:
    gpu = name in ("tensorrt", "torch-cuda", "onnxruntime-cuda")
    half = gpu if precision is None else precision == "fp16"
    if name == "tensorrt":
        from rtkp.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(info, fp16=half, input_size=input_size)
    if name in ("torch", "torch-cuda"):
        from rtkp.backends.torch import TorchBackend

        return TorchBackend(info, "cuda" if gpu else "cpu", half, threads=threads, input_size=input_size)
    from rtkp.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(info, threads, "cuda" if gpu else "cpu", half, input_size)


__all__ = ["Backend", "BackendStatus", "CHOICES", "PRECISIONS", "doctor", "open_backend", "read_model_info"]
