"""TensorRT engine building and the engine cache (TensorRT 10 and 11 APIs; `tensorrt` is imported lazily).

Precision: TensorRT 10 builds FP16 from the FP32 graph with `BuilderFlag.FP16`. TensorRT 11 removed precision flags
and builds strongly typed networks only, so FP16 there comes from the FP16 ONNX graph (half precision inside, float32
inputs and outputs). Engines are cached under `<model>/trt/`, keyed by the model's weights hash, GPU name, TensorRT
version, input shape, batch range and precision; each engine has a JSON manifest with its own sha256, and an engine is
deserialised only after both match. A mismatched or corrupt engine is refused with a message and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rtkp.errors import EngineError
from rtkp.files import sha256, write_json_atomic

WORKSPACE_BYTES = 1 << 30
MAX_CLUTTER = 1024  # largest clutter summary an engine accepts without a rebuild


def trt_major(trt) -> int:
    """Major version of the imported tensorrt module."""
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; a cached engine is used only when all of it matches."""

    model_sha256: str
    gpu: str
    tensorrt: str
    input_size: tuple[int, int]
    max_batch: int
    precision: str
    clutter: tuple[int, int] | None = None  # (S, D) the profile is optimised for; None for heatmap models
    max_keypoints: int | None = None  # K_max prototype rows (rtkp.graphs.prototypes); None for heatmap models
    graph: int = 1  # rtkp.graphs.exports_index.GRAPH_VERSION of the ONNX graph it was built from
    generic: int = 0  # built from the generic variant: its GENERIC_VERSION (rtkp.graphs.exports_index); 0 plain

    def digest(self) -> str:
        fields = asdict(self)
        if not self.generic:
            del fields["generic"]  # plain engines keep the digests they were cached under
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def build_serialized(trt, onnx_path: Path, key: EngineKey) -> bytes:
    """Parse the ONNX graph and build a serialised engine with a dynamic-batch optimisation profile."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = trt_major(trt)
    if major >= 11:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:
        flags = 0  # TensorRT 10: explicit batch is the only mode; the flag is deprecated
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse the graph ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key.precision == "fp16" and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    w, h = key.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, h, w, 3), (1, h, w, 3), (key.max_batch, h, w, 3))
    if key.clutter is not None:
        s, d = key.clutter
        profile.set_shape("clutter", (1, d), (s, d), (max(s, MAX_CLUTTER), d))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    return bytes(serialized)


def onnx_precision_for(trt, precision: str) -> bool:
    """Whether the FP16 ONNX graph is the one to build from (TensorRT 11 strongly typed FP16)."""
    return precision == "fp16" and trt_major(trt) >= 11


class EngineCache:
    """`<model>/trt/<digest>.engine` + `<digest>.json` pairs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        d = key.digest()
        return self.folder / f"{d}.engine", self.folder / f"{d}.json"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine's bytes when its manifest matches `key` and its sha256 is intact; else None (and why)."""
        engine_path, meta_path = self.paths(key)
        if not engine_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return self._refuse(engine_path, "its manifest is missing or corrupt")
        want = json.loads(json.dumps(asdict(key)))
        if meta.get("key") != want:
            diff = [k for k in want if meta.get("key", {}).get(k) != want[k]]
            return self._refuse(engine_path, f"it was built for another {', '.join(diff) or 'configuration'}")
        try:
            data = engine_path.read_bytes()
        except OSError:
            data = None
        # the bytes handed to TensorRT are the bytes checked, read once
        if data is None or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            return self._refuse(engine_path, "its checksum does not match (corrupt or truncated)")
        return data

    def store(self, key: EngineKey, data: bytes, onnx_path: Path) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        engine_path, meta_path = self.paths(key)
        tmp = engine_path.with_name(engine_path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, engine_path)
        write_json_atomic(
            meta_path,
            {
                "key": asdict(key),
                "sha256": sha256(engine_path),
                "onnx": str(onnx_path),
                "onnx_sha256": sha256(onnx_path),
            },
        )
        return engine_path

    @staticmethod
    def _refuse(path: Path, why: str) -> None:
        print(f"rtkp: refusing cached TensorRT engine {path}: {why}; rebuilding", file=sys.stderr)
        return None
