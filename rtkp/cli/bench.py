"""`rtkp bench`: end-to-end figures measured in one run, on one model and one source.

decode-only throughput; model-only latency and throughput per available backend; the pipeline in `lossless` mode
(throughput) and in `live` mode at the source's rate (capture→publish percentiles, drops, per-stage breakdown); a naive
single-process loop (decode → infer → publish) for comparison; and the machine it ran on.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from rtkp.backends import doctor, open_backend, read_model_info
from rtkp.config import Config
from rtkp.pipeline.run import RunOptions, run_pipeline
from rtkp.pipeline.source_spec import parse_source
from rtkp.pipeline.sources import Source


def machine_info() -> dict:
    import av
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "av": av.__version__,
        "platform": platform.platform(),
    }


def decode_only(source: str, seconds: float) -> dict:
    n, t0 = 0, time.perf_counter()
    for _ in Source(parse_source(source)):
        n += 1
        if time.perf_counter() - t0 >= seconds:
            break
    dt = time.perf_counter() - t0
    return {"fps": round(n / dt, 2), "frames": n}


def first_frames(source: str, n: int) -> list[np.ndarray]:
    """The source's first `n` decoded frames, (H, W, 3) uint8 RGB each."""
    return [f.image for f in Source(parse_source(source), max_frames=n)]


def model_only(
    model: str,
    backend_name: str,
    images: list[np.ndarray],
    seconds: float,
    threads: int,
    batch_size: int = 4,
    precision: str | None = None,
) -> dict:
    """Batch-1 latency of backend.infer on preprocessed frames (after a warm-up)."""
    from rtkp.tracker import ModelStage

    backend = open_backend(model, backend_name, threads=threads, precision=precision)
    stage = ModelStage(backend, read_model_info(model).manifest)
    inputs = [stage.preprocess(im)[None] for im in images]
    for x in inputs[:5]:
        backend.infer(x)
    lat, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or len(lat) < 10:
        s = time.perf_counter()
        backend.infer(inputs[i % len(inputs)])
        lat.append((time.perf_counter() - s) * 1e3)
        i += 1
    # throughput at the lossless runner's batch size, for comparison with the pipeline's batched mode
    batch = np.concatenate(inputs[:batch_size])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2 or n < 3:
        backend.infer(batch)
        n += 1
    batch_fps = n * len(batch) / (time.perf_counter() - t0)
    backend.close()
    return {
        "backend": backend.name,
        "precision": backend.precision,
        "fps": round(1000 / float(np.mean(lat)), 2),
        "batch": len(batch),
        "fps_batch": round(batch_fps, 2),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3)},
        "runs": len(lat),
    }


def naive_loop(
    model: str,
    backend_name: str,
    source: str,
    seconds: float,
    threads: int,
    cfg: Config,
    precision: str | None = None,
    max_instances: int | None = None,
    whole_frame: bool = False,
) -> dict:
    """Everything in one process, one frame at a time: what a quick script would do."""
    from rtkp.tracker import Tracker
    from rtkp.wire.publisher import Publisher

    manifest = read_model_info(model).manifest
    backend = open_backend(model, backend_name, threads=threads, precision=precision)
    follow = not whole_frame and parse_source(source).consecutive  # as `rtkp run` (rtkp.follow)
    tracker = Tracker(backend, manifest, cfg.smoothing, max_instances=max_instances, follow=follow)
    pub = Publisher("tcp://127.0.0.1:*", "bench", "naive", {"keypoints": list(manifest.keypoint_names)})
    n, t0 = 0, time.perf_counter()
    for frame in Source(parse_source(source)):
        pub.publish(tracker.process(frame))
        n += 1
        if time.perf_counter() - t0 >= seconds:
            break
    dt = time.perf_counter() - t0
    pub.close()
    backend.close()
    return {"fps": round(n / dt, 2), "frames": n}


def pipeline(
    model: str,
    backend: str,
    source: str,
    seconds: float,
    threads: int,
    cfg: Config,
    live: bool,
    fps_hint: float,
    precision: str | None = None,
    max_instances: int | None = None,
    whole_frame: bool = False,
) -> dict:
    frames = max(int(seconds * fps_hint), 30)
    opts = RunOptions(
        source=source,
        model=model,
        backend=backend,
        policy="live" if live else "lossless",
        realtime=live,
        max_frames=frames,
        publish="tcp://127.0.0.1:*",
        threads=threads,
        precision=precision,
        smoothing=cfg.smoothing,
        run=cfg.run,
        max_instances=max_instances,
        whole_frame=whole_frame,
    )
    summary = run_pipeline(opts)
    post = summary["post"]
    stages = post["stages_ms"]
    out = {
        "fps": round(post["frames"] / max(post["seconds"], 1e-9), 2),
        "frames": post["frames"],
        "dropped": post["dropped"],
        "stages_ms": stages,
        "mean_batch": post.get("mean_batch", 1),
        "counts": summary["counts"],
    }
    lat = stages.get("capture_to_publish", {})
    out["latency_ms"] = {k: lat.get(k) for k in ("p50", "p95", "p99")}
    if summary.get("infer", {}).get("follow"):  # frames looked at through the window around the animal (rtkp.follow)
        out["follow"] = summary["infer"]["follow"]
    return out


def source_rate(source: str) -> float:
    try:
        import av

        spec = parse_source(source)
        if spec.kind == "lavfi":
            with av.open(spec.target, format="lavfi") as c:
                return float(c.streams.video[0].average_rate or 30)
        with av.open(source) as c:
            return float(c.streams.video[0].average_rate or 30)
    except Exception:
        return 30.0


def run_bench(
    model: str,
    source: str,
    backend: str,
    seconds: float,
    threads: int,
    cfg: Config,
    log=print,
    precision: str | None = None,
    max_instances: int | None = None,
    whole_frame: bool = False,
) -> dict:
    """Every measurement of the module docstring. precision: "fp32", "fp16" or None (each backend's own), for every
    backend measured (a backend that cannot run it is reported with its error, like one that does not work here).
    max_instances: --max-instances for the Tracker of every measurement that tracks (None: the model's default);
    whole_frame: --whole-frame for them (model-only always runs the whole frame)."""
    images = first_frames(source, 30)
    result: dict = {"model": model, "source": source, "seconds_per_test": seconds, "machine": machine_info()}
    result["precision"] = precision
    log("decode only ...")
    result["decode_fps"] = decode_only(source, seconds)["fps"]
    names = [backend] if backend != "auto" else [s.name for s in doctor() if s.available]
    per_backend = {}
    for name in names:
        log(f"model only: {name} ...")
        try:
            per_backend[name] = model_only(model, name, images, seconds, threads, cfg.run.batch, precision)
        except Exception as exc:  # report and go on: one broken backend must not hide the others
            per_backend[name] = {"error": str(exc).splitlines()[0]}
    chosen = backend
    if backend == "auto":
        probe = open_backend(model, backend, threads=threads, precision=precision)
        chosen = probe.name
        probe.close()
    key = next((n for n, v in per_backend.items() if v.get("backend") == chosen), names[0])
    result["backends"] = per_backend
    result["model_only"] = per_backend[key]
    run_backend = key
    log(f"pipeline lossless ({run_backend}) ...")
    result["lossless"] = pipeline(
        model,
        run_backend,
        source,
        seconds,
        threads,
        cfg,
        False,
        result["model_only"].get("fps", 30),
        precision,
        max_instances,
        whole_frame,
    )
    log(f"naive single-process loop ({run_backend}) ...")
    result["naive"] = naive_loop(
        model, run_backend, source, seconds, threads, cfg, precision, max_instances, whole_frame
    )
    rate = source_rate(source)
    log(f"pipeline live at {rate:g} fps ({run_backend}) ...")
    result["live"] = pipeline(
        model, run_backend, source, seconds, threads, cfg, True, rate, precision, max_instances, whole_frame
    )
    result["live"]["source_fps"] = rate
    mo = result["model_only"]
    result["ratios"] = {
        "lossless_over_model_only": round(result["lossless"]["fps"] / mo["fps"], 3),
        "lossless_over_model_only_same_batch": round(result["lossless"]["fps"] / mo["fps_batch"], 3),
        "lossless_over_naive": round(result["lossless"]["fps"] / result["naive"]["fps"], 3),
        "live_p50_minus_model_p50_ms": round(result["live"]["latency_ms"]["p50"] - mo["latency_ms"]["p50"], 2),
        "live_p99_over_p50": round(result["live"]["latency_ms"]["p99"] / result["live"]["latency_ms"]["p50"], 3),
    }
    return result


def format_table(r: dict) -> str:
    mo, ll, nv, lv = r["model_only"], r["lossless"], r["naive"], r["live"]
    rows = [
        ("decode only", f"{r['decode_fps']:.1f} fps", ""),
    ]
    for name, b in r["backends"].items():
        if "error" in b:
            rows.append((f"model only [{name}]", "n/a", b["error"][:60]))
        else:
            rows.append(
                (
                    f"model only [{b['backend']}]",
                    f"{b['fps']:.1f} fps",
                    f"batch 1 latency p50 {b['latency_ms']['p50']:.2f} ms, p99 {b['latency_ms']['p99']:.2f} ms; "
                    f"{b['fps_batch']:.1f} fps at batch {b['batch']}",
                )
            )
    rows += [
        (
            "pipeline lossless",
            f"{ll['fps']:.1f} fps",
            f"{r['ratios']['lossless_over_model_only']:.2f}x model-only (batch 1), "
            f"{r['ratios']['lossless_over_model_only_same_batch']:.2f}x at batch {mo['batch']}, "
            f"{r['ratios']['lossless_over_naive']:.2f}x naive; mean batch {ll['mean_batch']}",
        ),
        ("naive single process", f"{nv['fps']:.1f} fps", ""),
        (
            f"pipeline live @{lv['source_fps']:g} fps",
            f"{lv['fps']:.1f} fps",
            f"capture->publish p50 {lv['latency_ms']['p50']:.1f} / p95 {lv['latency_ms']['p95']:.1f} / "
            f"p99 {lv['latency_ms']['p99']:.1f} ms, dropped {lv['dropped']}",
        ),
    ]
    stage = ", ".join(f"{k} {v.get('p50', 0):.2f}" for k, v in lv["stages_ms"].items() if k != "capture_to_publish")
    lines = [f"{a:<28} {b:>12}  {c}" for a, b, c in rows]
    lines.append(f"live per-stage p50 ms: {stage}")
    m = r["machine"]
    lines.append(
        f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}; model-only p50 "
        f"{mo['latency_ms']['p50']:.2f} ms"
    )
    return "\n".join(lines)
