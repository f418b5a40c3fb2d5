"""Inference backends, one file per runtime, behind one interface (backends.base.Backend).

open_backend(model, prefer="auto") picks TensorRT > PyTorch CUDA > ONNX Runtime CPU by what works here; `doctor()`
reports every backend and why it does or does not.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, EngineError
from .base import Backend, ModelInfo, read_model_info

CHOICES = ("auto", "tensorrt", "torch", "torch-cuda", "onnxruntime", "onnxruntime-cuda")


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    detail: str


def _cuda() -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


def doctor() -> list[BackendStatus]:
    """Whether each backend can run here, and why not."""
    out = []
    try:
        import onnxruntime as ort

        out.append(BackendStatus("onnxruntime", True, f"onnxruntime {ort.__version__}, CPU"))
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        out.append(
            BackendStatus(
                "onnxruntime-cuda",
                has_cuda,
                "CUDA provider present" if has_cuda else "no CUDA provider (pip install onnxruntime-gpu)",
            )
        )
    except ImportError as exc:
        out.append(BackendStatus("onnxruntime", False, f"not importable: {exc}"))
    cuda, detail = _cuda()
    if importlib.util.find_spec("torch") is not None:
        import torch

        out.append(BackendStatus("torch", True, f"PyTorch {torch.__version__}, CPU"))
    else:
        out.append(BackendStatus("torch", False, "PyTorch not installed"))
    out.append(BackendStatus("torch-cuda", cuda, detail))
    if importlib.util.find_spec("tensorrt") is None:
        out.append(
            BackendStatus("tensorrt", False, "tensorrt not installed (pip install 'rtkp[tensorrt]' on a CUDA machine)")
        )
    else:
        try:
            import tensorrt as trt

            ok = cuda
            out.append(BackendStatus("tensorrt", ok, f"TensorRT {trt.__version__}" + ("" if ok else f"; {detail}")))
        except Exception as exc:  # a broken TensorRT install raises all sorts of errors at import
            out.append(BackendStatus("tensorrt", False, f"import failed: {str(exc).splitlines()[0]}"))
    return out


def open_backend(
    model: str | Path,
    prefer: str = "auto",
    threads: int = 0,
    fp16: bool | None = None,
    input_size: tuple[int, int] | None = None,
) -> Backend:
    """Open a backend for a model folder.

    prefer: "auto" (TensorRT > PyTorch CUDA > ONNX Runtime CPU, first that works), or one name from CHOICES.
    fp16: default True on GPUs, False on the CPU.
    """
    if prefer not in CHOICES:
        raise ConfigError(f"`backend` must be one of {', '.join(CHOICES)}, got {prefer!r}")
    info = read_model_info(model)
    status = {s.name: s for s in doctor()}
    order = ["tensorrt", "torch-cuda", "onnxruntime"] if prefer == "auto" else [prefer]
    errors = []
    for name in order:
        if not status[name].available:
            errors.append(f"{name}: {status[name].detail}")
            continue
        try:
            return _open(name, info, threads, fp16, input_size)
        except EngineError as exc:
            if prefer != "auto":
                raise
            errors.append(f"{name}: {exc}")
    raise EngineError(f"no usable backend for {prefer!r} ({'; '.join(errors)})")


def _open(name: str, info: ModelInfo, threads: int, fp16: bool | None, input_size) -> Backend:
    gpu = name in ("tensorrt", "torch-cuda", "onnxruntime-cuda")
    half = gpu if fp16 is None else fp16
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(info, fp16=half, input_size=input_size)
    if name in ("torch", "torch-cuda"):
        from .torch import TorchBackend

        return TorchBackend(info, "cuda" if gpu else "cpu", half, threads=threads, input_size=input_size)
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(info, threads, "cuda" if gpu else "cpu", half, input_size)


__all__ = ["Backend", "BackendStatus", "CHOICES", "doctor", "open_backend", "read_model_info"]
