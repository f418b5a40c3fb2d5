"""A stand-in for the `tensorrt` module (TensorRT cannot be installed here).

It follows the TensorRT 10/11 Python API closely enough to check how rtkp drives it — network creation flags per
version, ONNX parsing, builder flags, the optimisation profile, serialisation, tensor addresses and execution — and it
really executes: a "serialised engine" carries the ONNX bytes, and execute_async_v3 reads the inputs from the
addresses it was given (host memory), runs the graph in ONNX Runtime and writes the output to its address.
"""

from __future__ import annotations

import ctypes
import json
import types
from enum import IntEnum

import numpy as np

MAGIC = b"FAKETRT1"


def make_fake_tensorrt(version: str = "10.3.0") -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple] = []
    trt.calls = calls

    class Logger:
        WARNING, INFO, ERROR = 2, 3, 1

        def __init__(self, level=2):
            self.level = level

    class NetworkDefinitionCreationFlag(IntEnum):
        STRONGLY_TYPED = 1 if major >= 11 else 1

    if major < 11:

        class BuilderFlag(IntEnum):
            FP16 = 0
            INT8 = 1

        trt.BuilderFlag = BuilderFlag
    else:

        class BuilderFlag(IntEnum):  # TensorRT 11 removed the precision flags
            REFIT = 5

        trt.BuilderFlag = BuilderFlag

    class MemoryPoolType(IntEnum):
        WORKSPACE = 0

    class TensorIOMode(IntEnum):
        NONE, INPUT, OUTPUT = 0, 1, 2

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.onnx = None

        @property
        def strongly_typed(self):
            return bool(self.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.errors: list[str] = []

        def parse(self, data: bytes) -> bool:
            import onnx

            try:
                model = onnx.load_from_string(data)
                onnx.checker.check_model(model)
            except Exception as exc:
                self.errors.append(str(exc))
                return False
            self.network.onnx = data
            calls.append(("parse", len(data)))
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class OptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class BuilderConfig:
        def __init__(self):
            self.flags = set()
            self.profiles = []
            self.pools = {}

        def set_flag(self, flag):
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            if major >= 11 and not flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)):
                raise TypeError("TensorRT 11 builds strongly typed networks only")
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            assert network.onnx is not None, "build before a successful parse"
            assert len(config.profiles) == 1 and "images" in config.profiles[0].shapes
            header = {
                "flags": sorted(int(f) for f in config.flags),
                "strongly_typed": network.strongly_typed,
                "profile": {k: [list(s) for s in v] for k, v in config.profiles[0].shapes.items()},
            }
            calls.append(("build", header))
            head = json.dumps(header).encode()
            return MAGIC + len(head).to_bytes(4, "little") + head + network.onnx

    class Engine:
        def __init__(self, header, onnx_bytes):
            import onnxruntime as ort

            self.header = header
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self.inputs = {i.name: i for i in self.session.get_inputs()}
            self.outputs = {o.name: o for o in self.session.get_outputs()}
            self.names = list(self.inputs) + list(self.outputs)

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(MAGIC):
                return None  # what TensorRT does with a corrupt plan (after logging)
            n = int.from_bytes(data[8:12], "little")
            try:
                header = json.loads(data[12 : 12 + n])
                engine = Engine(header, data[12 + n :])
            except Exception:
                return None
            calls.append(("deserialize", len(data)))
            return engine

    _dtypes = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.shapes = {}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.header["profile"][name]
            assert all(a <= s <= b for a, s, b in zip(lo, shape, hi)), f"{name} shape {shape} outside profile"
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            assert name in self.engine.names, f"unknown tensor {name}"
            self.addresses[name] = int(ptr)
            return True

        def _shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            shape = self.engine.inputs[name].shape
            assert all(isinstance(d, int) for d in shape), f"{name} has a dynamic shape but no set_input_shape"
            return tuple(shape)

        def execute_async_v3(self, stream_handle):
            missing = [n for n in self.engine.names if n not in self.addresses]
            assert not missing, f"no address for {missing}"
            feeds = {}
            for name, meta in self.engine.inputs.items():
                dtype = np.dtype(_dtypes[meta.type])
                shape = self._shape(name)
                nbytes = int(np.prod(shape)) * dtype.itemsize
                buf = (ctypes.c_char * nbytes).from_address(self.addresses[name])
                feeds[name] = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
            results = self.engine.session.run(list(self.engine.outputs), feeds)
            for name, value in zip(self.engine.outputs, results):
                value = np.ascontiguousarray(value)
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            calls.append(("execute", stream_handle, {k: v.shape for k, v in feeds.items()}))
            return True

    for name, obj in dict(
        Logger=Logger,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        MemoryPoolType=MemoryPoolType,
        TensorIOMode=TensorIOMode,
        OnnxParser=OnnxParser,
        Builder=Builder,
        Runtime=Runtime,
    ).items():
        setattr(trt, name, obj)
    return trt
