"""The inference backends of this machine: `rtkp build-engine` (a model's graphs and engines), `rtkp doctor`
(which backends work here) and `rtkp bench` (how fast they run; the measurements are in rtkp.cli.bench).

Heavy packages are imported inside each command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import sys

from rtkp.cli.defaults import resolve_source
from rtkp.cli.paths import input_file, input_folder, output_file, write_text
from rtkp.errors import ConfigError, EngineError, ModelError, require


def cmd_build_engine(args) -> int:
    from rtkp.backends import read_model_info
    from rtkp.graphs.onnx import export_onnx

    input_folder(args.model, "--model", ModelError, must_exist=False)  # a missing one: read_model_info says more
    info = read_model_info(args.model)
    if args.backend == "tensorrt":
        tensorrt_usable()  # before the ONNX export, which takes a while and is only a step towards the engine
    size = args.input_size or info.input_size
    # --generic: also the variant that keypoints taught from shots run (rtkp.graphs.prototypes), made ahead so that
    # the first one taught to a running tracker does not wait for its export
    variants = (False, True) if args.generic and info.is_coke else (False,)
    for generic in variants:
        for fp16 in (False, True) if args.fp16 else (False,):
            path = export_onnx(args.model, size, fp16=fp16, generic=generic)
            print(f"onnx: {path}")
    if args.debug:
        print(f"onnx: {export_onnx(args.model, size, debug=True)}")
    if args.backend == "tensorrt":
        from dataclasses import replace

        from rtkp.backends.tensorrt import TensorRTBackend
        from rtkp.graphs.exports_index import GENERIC_VERSION

        backend = TensorRTBackend(info, fp16=args.fp16, input_size=size)
        for generic in variants:
            if generic:
                backend.set_prototypes(generic_rows(info), info.clutter)  # builds (or loads) its engine
            engine, _ = backend.cache.paths(replace(backend.key, generic=GENERIC_VERSION if generic else 0))
            print(f"tensorrt engine: {engine}")
    return 0


def generic_rows(info):
    """The model's prototypes with one row that has a generic part: what makes a backend run the generic variant."""
    import numpy as np

    from rtkp.graphs.prototypes import graph_width, with_width

    rows = with_width(info.prototypes, graph_width(info.manifest.feature_dim, True))
    probe = np.zeros((1, rows.shape[1]), np.float32)
    probe[0, -1] = 1.0
    return np.concatenate([rows, probe])


def tensorrt_usable() -> None:
    """MissingDependencyError without the tensorrt package, EngineError when TensorRT cannot run here (no CUDA)."""
    from rtkp.backends import doctor

    require("tensorrt", "tensorrt")
    status = doctor(("tensorrt",))[0]
    if not status.available:
        raise EngineError(f"--backend tensorrt: TensorRT cannot build an engine here ({status.detail})")


def cmd_doctor(args) -> int:
    from rtkp.backends import doctor

    statuses = doctor()
    for s in statuses:
        print(f"{s.name:18} {'ok' if s.available else 'no':3} {s.detail}")
    if not any(s.available for s in statuses):
        raise EngineError("no inference backend works here: pip install onnxruntime (see the list above)")
    return 0


def cmd_bench(args) -> int:
    from rtkp.backends import read_model_info
    from rtkp.cli.bench import format_table, run_bench
    from rtkp.config import load_config

    if args.seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {args.seconds}")
    if args.json:
        output_file(args.json, "--json")  # written after the measurements
    if args.config:
        input_file(args.config, "--config")
    cfg = load_config(args.config)
    input_folder(args.model, "--model", ModelError, must_exist=False)
    info = read_model_info(args.model)
    from rtkp.instances.stage import check_max_instances

    check_max_instances(info.manifest, args.max_instances)
    source, _ = resolve_source(args.source)
    log = lambda msg: print(msg, file=sys.stderr)
    result = run_bench(
        args.model,
        source,
        args.backend,
        args.seconds,
        args.threads,
        cfg,
        log,
        args.precision,
        args.max_instances,
        args.whole_frame,
    )
    print(format_table(result))
    if args.json:
        write_text(args.json, "--json", json.dumps(result, indent=1) + "\n")
    return 0
