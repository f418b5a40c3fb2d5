"""`rtkp export --ray`: the local export's records, tracked by a pool of Ray actors over chunks of the inputs.

The driver (this process) checks each input's outputs as the local export does (complete ones are skipped), connects
to the cluster and runs the scheduler (rtkp.export.ray_driver), whose workers (rtkp.export.ray_worker) track chunks
with the local export's own loop (rtkp.export.track) into the same partial folder (rtkp.export.partial) and finish
them with its own code (rtkp.export.finish): the records are byte for byte the local export's (tests/test_cluster.py).

Inputs, the model folder and the outputs are paths on storage every node sees. Each worker loads the model once: with
a GPU where the cluster has them (requested as a Ray resource; backend "auto": TensorRT, else PyTorch CUDA, else ONNX
Runtime) and ONNX Runtime on the CPU elsewhere. SIGINT/SIGTERM stop the job: the workers are killed, complete chunks
stay in `<stem>.partial/`, and the same command resumes from them.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

from rtkp.errors import ConfigError, ExportFailed, require
from rtkp.export.chunks import CHUNK_FRAMES, ChunkFolder
from rtkp.export.local import ExportOptions
from rtkp.export.ray_driver import Driver, InputJob, WorkerPool, log
from rtkp.export.targets import is_complete, plan_targets, release, skipped


def connect(ray, address: str) -> bool:
    """Connect to the cluster; True when this call did (and the caller disconnects). An already connected process
    (tests, notebooks) is left as it is. auto: the cluster `ray start` runs on this machine, else a new local one."""
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=None if address == "auto" else address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0]})") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ConfigError unless something listens at HOST:PORT (Ray itself retries an unreachable head for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray must be auto or HOST:PORT (the head's address), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: cannot reach the head ({exc.strerror or exc})") from None


def worker_options(resources: dict, opts: ExportOptions, workers: int | None) -> list[dict]:
    """Ray actor options per worker: one GPU each while the cluster has GPUs (and the backend may use them), then
    `threads` CPUs each (ONNX Runtime threads: run.threads, or 1). workers None: one per GPU, else one per CPU share.
    """
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    threads = opts.cfg.run.threads or 1
    gpus = gpus if opts.backend not in ("onnxruntime", "torch") else 0
    room = gpus + max(cpus - gpus, 0) // threads
    want = workers if workers is not None else (gpus or max(cpus // threads, 1))
    if want > room:
        log(f"--workers {want}: the cluster has room for {room} ({cpus} CPUs, {gpus} GPUs usable); using {room}")
        want = max(room, 1)
    on_gpu = min(want, gpus)
    return [{"num_cpus": 1, "num_gpus": 1}] * on_gpu + [{"num_cpus": threads}] * (want - on_gpu)


def _prepare(sources: list[str], opts: ExportOptions, weights_sha256: str) -> list[InputJob]:
    """Each input's targets and folder, named and checked as the local export does (plan_targets: no two inputs share
    an output name; outputs of other settings refused unless --overwrite); complete inputs skipped."""
    items = []
    for source, targets in zip(sources, plan_targets(sources, opts, weights_sha256)):
        item = InputJob(source, targets, ChunkFolder(opts.out / f"{targets.stem}.partial"))
        items.append(item)
        if not opts.overwrite and is_complete(targets):
            item.status, item.result = "skipped", skipped(source)
    return items


def export_on_ray(
    sources: list[str],
    opts: ExportOptions,
    address: str,
    workers: int | None = None,
    chunk_frames: int | None = None,
) -> int:
    """`rtkp export --ray`: export every input on the cluster; prints a line per input and a summary.

    Raises ExportFailed (after the others are done) when inputs failed, Interrupted on SIGINT/SIGTERM,
    MissingDependencyError without Ray, ConfigError for an address that cannot be reached.
    """
    ray = require("ray", "cluster")
    from rtkp.backends import read_model_info

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers}")
    chunk_frames = chunk_frames or CHUNK_FRAMES
    if chunk_frames < 1:
        raise ConfigError(f"--chunk-frames must be a positive integer, got {chunk_frames}")
    info = read_model_info(opts.model)  # a bad model folder fails here, in one line, before any worker starts
    items = _prepare(sources, opts, info.weights_sha256)
    for item in items:
        if item.status == "skipped":
            print(f"{item.source}: skipped, {item.result['reason']}")
        elif item.status == "failed":
            print(f"rtkp export: error: {item.note}", file=sys.stderr)
    todo = [i for i in items if i.status == "pending"]
    t0, pool, count, backends = time.monotonic(), None, 0, ""
    if todo:
        started = connect(ray, address)
        previous = {}
        try:
            options = worker_options(ray.cluster_resources(), opts, workers)
            count = len(options)
            pool = WorkerPool(ray, opts, options)
            driver = Driver(ray, opts, todo, pool, chunk_frames)

            def on_signal(signum, _frame):
                driver.stop.append(signal.Signals(signum).name)

            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            for item in todo:
                release(item.targets)  # as the local export: no outputs of other settings left beside the new ones
                driver.enqueue(item)
            driver.run()
            backends = ", ".join(sorted(pool.backends))
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if pool is not None:
                pool.close()
            if started:
                ray.shutdown()
    return _summary(items, time.monotonic() - t0, count, backends)


def _summary(items: list[InputJob], seconds: float, workers: int, backends: str) -> int:
    done = [i for i in items if i.status == "done"]
    failed = [i for i in items if i.status in ("failed", "pending")]
    frames = sum(i.result["frames"] for i in done)
    skipped = sum(i.status == "skipped" for i in items)
    rate = f" ({frames / seconds:.1f} fps)" if done and seconds > 0 else ""
    print(
        f"exported {len(done) + skipped} input(s) ({skipped} skipped), {frames} frames in {seconds:.1f} s{rate} "
        f"on {workers} worker(s){f' ({backends})' if backends else ''}; {len(failed)} failed"
    )
    if failed:
        names = ", ".join(i.source for i in failed)
        raise ExportFailed(f"{len(failed)} of {len(items)} input(s) failed: {names}")
    return 0


__all__ = ["connect", "export_on_ray", "worker_options"]
