"""`rtkp export --ray`: the local export's records, tracked by a pool of Ray actors over chunks of the inputs.

The driver (this process) checks each input's outputs as the local export does (complete ones are skipped), then
hands the workers one task at a time each, in this order per input:

    plan    the input's frame table and its chunks, split at keyframes (rtkp.export.chunks.plan_input)
    chunk   frames [start, end) tracked into a chunk file (rtkp.export.chunks.track_chunk), renamed into place when done
    finish  the chunks joined in order, then offline.finish_outputs, as for a local export: smoothing over the whole
            sequence, COCO/JSONL/CSV, the annotated MP4, the .done.json marker

Inputs, the model folder and the outputs are paths on storage every node sees. Each worker (ExportWorker, a Ray actor)
loads the model once: with a GPU where the cluster has them (requested as a Ray resource; backend "auto": TensorRT,
else PyTorch CUDA, else ONNX Runtime) and ONNX Runtime on the CPU elsewhere.

Faults: a worker that dies (killed, out of memory, node lost) is replaced and its task runs again on a free worker:
a chunk's file only gets its name when complete, so a retried chunk is neither lost nor doubled (MAX_ATTEMPTS per
task). A bad input fails alone, with its one-line reason. SIGINT/SIGTERM stop the job: the workers are killed, complete
chunks stay in `<stem>.ray.partial/`, and the same command resumes from them.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rtkp.errors import ConfigError, EngineError, ExportFailed, Interrupted, RtkpError, require
from rtkp.export.chunks import CHUNK_FRAMES, Chunk, ChunkFolder, boundaries_agree, chunks_of
from rtkp.export.local import ExportOptions, ExportTargets

MAX_ATTEMPTS = 3  # runs of one task before its input fails (a chunk that kills every worker it reaches)
POLL_S = 0.5  # progress bar refresh
ACTOR_PREFIX = "rtkp-export-"  # actor names: prefix, job id, worker number (tests find the workers by name)


class ExportWorker:
    """A Ray actor's state (made an actor class by _Pool): the model, loaded once, and the tasks it runs.

    Methods return plain dicts; {"error": one line} for an RtkpError (a bad input), so that only bugs raise. Two
    threads (max_concurrency=2): one runs the tasks, the other answers progress() and pid() meanwhile.
    cwd: the driver's working directory, where relative paths start (when this node has it).
    """

    def __init__(self, opts: ExportOptions, threads: int, batch: int, cwd: str):
        import ray

        # the records name an input as it was given (as the local export's do), so relative paths are kept as they
        # are and resolved here as on the driver; this process serves this job only
        if os.path.isdir(cwd):
            os.chdir(cwd)

        from rtkp.backends import open_backend, read_model_info
        from rtkp.config import SmoothingConfig
        from rtkp.tracker import Tracker

        self.opts, self.batch, self.error, self.tracker = opts, batch, None, None
        self.doing: tuple[str | None, int] = (None, 0)
        self.tables: collections.OrderedDict = collections.OrderedDict()
        # a worker without a GPU of its own runs ONNX Runtime on the CPU, even on a node with a GPU
        backend = opts.backend if opts.backend != "auto" or ray.get_gpu_ids() else "onnxruntime"
        try:
            self.info = read_model_info(opts.model)
            model = open_backend(opts.model, backend, threads=threads, precision=opts.precision)
            self.tracker = Tracker(model, self.info.manifest, SmoothingConfig(filter="none"))
        except RtkpError as exc:
            self.error = str(exc)

    def ready(self) -> dict:
        backend = self.tracker.model.backend.name if self.tracker is not None else None
        return {"pid": os.getpid(), "backend": backend, "error": self.error}

    def pid(self) -> int:
        return os.getpid()

    def progress(self) -> tuple[str | None, int]:
        """(task, frames done in it): what the driver's progress bar shows while a chunk runs."""
        return self.doing

    def _table(self, source: str):
        """The video's frame table, demuxed once per worker and file (kept for the last few files)."""
        from rtkp.pipeline.sources import frame_table, parse_source

        if parse_source(source).kind != "file":
            return None
        st = os.stat(source)
        key = (source, st.st_size, st.st_mtime_ns)
        if key not in self.tables:
            self.tables[key] = frame_table(source)
            while len(self.tables) > 4:
                self.tables.popitem(last=False)
        self.tables.move_to_end(key)
        return self.tables[key]

    def plan(self, source: str, chunk_frames: int) -> dict:
        from rtkp.export.chunks import plan_input

        try:
            return plan_input(source, chunk_frames, self._table(source))
        except RtkpError as exc:
            return {"error": str(exc)}

    def chunk(self, source: str, folder: str, start: int, end: int | None) -> dict:
        from rtkp.export.chunks import track_chunk

        chunk = Chunk(start, end)
        self.doing = (chunk.name, 0)
        try:
            on_frames = lambda n: setattr(self, "doing", (chunk.name, n))
            table = self._table(source)
            return track_chunk(self.tracker, source, chunk, ChunkFolder(folder), self.batch, table, on_frames)
        except RtkpError as exc:
            return {"error": str(exc)}
        finally:
            self.doing = (None, 0)

    def finish(self, source: str, folder: str, targets: ExportTargets, plan: dict) -> dict:
        from rtkp.export.chunks import join_chunks
        from rtkp.export.local import _Progress, _total_frames, finish_outputs, is_complete
        from rtkp.sinks.writers import Partial

        if not Path(folder).is_dir() and is_complete(targets):  # done by a worker that died before it could say so
            return json.loads(targets.marker.read_text())["result"]
        try:
            partial = Partial(Path(folder), targets.settings, ("raw",))
            join_chunks(ChunkFolder(folder), plan, partial)
            bar = _Progress(targets.stem, None, 0, False, enabled=False)
            expected = _total_frames(source)
            return finish_outputs(source, self.opts, self.info, partial, targets.outputs, targets.marker, expected, bar)
        except RtkpError as exc:
            return {"error": str(exc)}


@dataclass
class _Input:
    """The driver's view of one input."""

    source: str
    targets: ExportTargets
    folder: ChunkFolder
    plan: dict | None = None
    done: dict = field(default_factory=dict)  # chunk name -> summary
    resumed: int = 0  # chunks already done when the job started
    retried: int = 0
    note: str = ""
    status: str = "pending"  # pending | done | failed | skipped
    result: dict | None = None

    @property
    def chunks(self) -> list[Chunk]:
        return chunks_of(self.plan)

    @property
    def frames_done(self) -> int:
        return sum(s["frames"] for s in self.done.values())

    @property
    def frames_total(self) -> int:
        return (self.plan or {}).get("frames") or self.frames_done


@dataclass
class _Task:
    kind: str  # ready | plan | chunk | finish
    item: _Input | None
    chunk: Chunk | None = None
    attempt: int = 1


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"rtkp export: {message}", file=sys.stderr)


def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stdout)


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
        _log(f"--workers {want}: the cluster has room for {room} ({cpus} CPUs, {gpus} GPUs usable); using {room}")
        want = max(room, 1)
    on_gpu = min(want, gpus)
    return [{"num_cpus": 1, "num_gpus": 1}] * on_gpu + [{"num_cpus": threads}] * (want - on_gpu)


class _Pool:
    """The workers: started (the first alone, so that caches such as the ONNX export are built once), replaced when
    they die, killed at the end. options: Ray actor options per worker (worker_options)."""

    def __init__(self, ray, opts: ExportOptions, options: list[dict]):
        self.ray, self.opts, self.options = ray, opts, options
        self.cls = ray.remote(ExportWorker)
        self.job = uuid.uuid4().hex[:8]
        self.handles: dict[int, object] = {}  # worker number -> actor handle
        self.spec: dict[int, int] = {}  # worker number -> index in options
        self.idle: list[int] = []
        self.backends: collections.Counter = collections.Counter()
        self.replaced = 0
        self.errors: list[str] = []

    def start(self, spec: int) -> tuple:
        """Start a worker with options[spec]; (its ready() ref, its number)."""
        n = len(self.spec)
        opts = dict(self.options[spec], max_concurrency=2, max_restarts=0)
        name = f"{ACTOR_PREFIX}{self.job}-{n}"
        self.handles[n] = self.cls.options(name=name, **opts).remote(
            self.opts, opts["num_cpus"], self.opts.cfg.run.batch, os.getcwd()
        )
        self.spec[n] = spec
        return self.handles[n].ready.remote(), n

    def kill(self, n: int) -> None:
        handle = self.handles.pop(n, None)
        if n in self.idle:
            self.idle.remove(n)
        if handle is not None:
            try:
                self.ray.kill(handle, no_restart=True)
            except Exception:  # already gone, or the cluster is
                pass

    def close(self) -> None:
        for n in list(self.handles):
            self.kill(n)


class _Driver:
    """The scheduler: a queue of tasks, one per idle worker, results handled as they come (module docstring)."""

    def __init__(self, ray, opts: ExportOptions, items: list[_Input], pool: _Pool, chunk_frames: int):
        from tqdm import tqdm

        self.ray, self.opts, self.items, self.pool, self.chunk_frames = ray, opts, items, pool, chunk_frames
        self.queue: collections.deque[_Task] = collections.deque()
        self.running: dict = {}  # ObjectRef -> (worker number, _Task)
        self.stop: list[str] = []
        self.bar = tqdm(
            total=0, unit="frame", desc="rtkp export", disable=not opts.progress, file=sys.stderr, smoothing=0.1
        )
        self.live = 0  # frames done in running chunks, at the last poll
        self.polled = 0.0  # time.monotonic() of the last poll

    # --- queueing -------------------------------------------------------------------------------------------------

    def enqueue(self, item: _Input) -> None:
        """An input's next tasks, from what its folder holds (a resumed job skips what is complete)."""
        from rtkp.sinks.writers import Partial

        partial = Partial(item.folder.folder, item.targets.settings, ("raw",))
        if self.opts.overwrite or not partial.matches():
            partial.reset()
        # a local export's partial folder of this input would only be litter once this one is done
        shutil.rmtree(self.opts.out / f"{item.targets.stem}.partial", ignore_errors=True)
        if partial.tracked:
            self.queue.appendleft(_Task("finish", item))
            return
        item.plan = item.folder.plan()
        if item.plan is None:
            self.queue.append(_Task("plan", item))
            return
        self._queue_chunks(item, resumed=True)

    def _queue_chunks(self, item: _Input, resumed: bool = False) -> None:
        for chunk in item.chunks:
            summary = item.folder.summary(chunk)
            if summary is not None:
                item.done[chunk.name] = summary
            else:
                self.queue.append(_Task("chunk", item, chunk))
        if resumed:
            item.resumed = len(item.done)
        if len(item.done) == len(item.chunks):
            self._all_chunks_done(item)

    def _submit(self, n: int, task: _Task) -> None:
        handle, item = self.pool.handles[n], task.item
        folder = str(item.folder.folder)
        if task.kind == "plan":
            ref = handle.plan.remote(item.source, self.chunk_frames)
        elif task.kind == "chunk":
            ref = handle.chunk.remote(item.source, folder, task.chunk.start, task.chunk.end)
        else:
            ref = handle.finish.remote(item.source, folder, item.targets, item.plan)
        self.running[ref] = (n, task)

    # --- the loop -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
            self._progress(force=True)
        finally:
            self.bar.close()
        if self.stop:
            raise Interrupted(
                f"stopped by {self.stop[0]}; complete chunks are kept in {self.opts.out}/*.ray.partial: "
                "run the same command again to resume"
            )

    def _loop(self) -> None:
        first, n = self.pool.start(0)
        self.running[first] = (n, _Task("ready", None))
        pending_starts = list(range(1, len(self.pool.options)))
        while (self.queue or any(t.kind != "ready" for _, t in self.running.values())) and not self.stop:
            while self.pool.idle and self.queue:
                task = self.queue.popleft()
                if task.item.status == "pending":
                    self._submit(self.pool.idle.pop(0), task)
            if not self.running:
                if not self.pool.handles:  # every worker failed to start: nothing can run the queue
                    reason = self.pool.errors[-1] if self.pool.errors else "no worker could start"
                    raise EngineError(f"no export worker could start: {reason}")
                continue
            ready, rest = self.ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
            if ready and rest:  # and whatever else is ready now
                ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                n, task = self.running.pop(ref)
                self._handle(ref, n, task)
                if task.kind == "ready" and pending_starts:  # the first worker is up: caches exist, start the rest
                    for spec in pending_starts:
                        ref, m = self.pool.start(spec)
                        self.running[ref] = (m, _Task("ready", None))
                    pending_starts = []
            self._progress()

    def _handle(self, ref, n: int, task: _Task) -> None:
        ray = self.ray
        item = task.item
        # the input failed meanwhile, or its plan was replaced (_one_chunk): the result, even an error, is moot
        moot = item is not None and (item.status != "pending" or task.kind == "chunk" and task.chunk not in item.chunks)
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # a bug in a worker: its input fails, with the traceback
            if moot:
                value = {}
            else:
                _log(str(exc))
                value = {"error": f"internal error in a worker: {type(exc.cause).__name__}: {exc.cause}"}
        except (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.OutOfMemoryError,
        ) as exc:
            self._lost(n, task, exc, moot)
            return
        if task.kind == "ready":
            if value["error"]:
                if value["error"] not in self.pool.errors:  # (once, not once per worker)
                    _log(f"a worker could not start: {value['error']}")
                self.pool.errors.append(value["error"])
                self.pool.kill(n)
            else:
                self.pool.idle.append(n)
                self.pool.backends[value["backend"]] += 1
            return
        self.pool.idle.append(n)
        if moot:
            return
        if "error" in value:
            self._fail(item, value["error"])
        elif task.kind == "plan":
            item.plan = value
            item.folder.write_plan(value)
            self._queue_chunks(item)
        elif task.kind == "chunk":
            self._chunk_done(item, task.chunk, value)
        else:
            self._done(item, value)

    def _chunk_done(self, item: _Input, chunk: Chunk, value: dict) -> None:
        if "inexact" in value:
            self._one_chunk(item, value["inexact"])
            return
        item.done[chunk.name] = value
        if len(item.done) == len(item.chunks):
            self._all_chunks_done(item)

    def _all_chunks_done(self, item: _Input) -> None:
        reason = boundaries_agree(item.chunks, [item.done[c.name] for c in item.chunks])
        if reason is None:
            self.queue.appendleft(_Task("finish", item))
        else:
            self._one_chunk(item, reason)

    def _one_chunk(self, item: _Input, reason: str) -> None:
        """A chunk could not prove its frames are the full decode's: track the input in one piece instead."""
        item.note = f"tracked as one chunk ({reason})"
        item.plan, item.done = {"frames": (item.plan or {}).get("frames"), "chunks": [[0, None]]}, {}
        item.folder.write_plan(item.plan)
        self.queue = collections.deque(t for t in self.queue if t.item is not item)
        self._queue_chunks(item)

    def _lost(self, n: int, task: _Task, exc: Exception, moot: bool) -> None:
        """Worker n died while running `task`: replace it, and run the task again (up to MAX_ATTEMPTS)."""
        spec = self.pool.spec[n]
        self.pool.kill(n)
        if self.pool.replaced >= 2 * len(self.pool.options) + 2:
            raise ExportFailed(f"workers died {self.pool.replaced + 1} times; the last: {str(exc).splitlines()[0]}")
        self.pool.replaced += 1
        ref, m = self.pool.start(spec)
        self.running[ref] = (m, _Task("ready", None))
        if task.kind == "ready" or moot:
            return
        if task.attempt >= MAX_ATTEMPTS:
            where = f"frames {task.chunk.start}..{task.chunk.end or 'end'}" if task.chunk else task.kind
            self._fail(task.item, f"{task.item.source}: a worker died {task.attempt} times on {where}")
            return
        task.item.retried += 1
        self.queue.appendleft(_Task(task.kind, task.item, task.chunk, task.attempt + 1))

    def _fail(self, item: _Input, reason: str) -> None:
        item.status, item.note = "failed", reason
        self.queue = collections.deque(t for t in self.queue if t.item is not item)
        if not item.done:  # nothing to resume from: leave no litter
            shutil.rmtree(item.folder.folder, ignore_errors=True)
        _log(f"error: {reason}")

    def _done(self, item: _Input, result: dict) -> None:
        item.status = "done"
        item.result = dict(result, chunks=len(item.chunks), retried=item.retried, resumed_chunks=item.resumed)
        _say(describe_result(item))

    def _progress(self, force: bool = False) -> None:
        """Frames of complete chunks, plus those of running chunks (asked of their workers, every POLL_S)."""
        if not force and time.monotonic() - self.polled < POLL_S:
            return
        self.polled = time.monotonic()
        total = sum(i.frames_total for i in self.items if i.status in ("pending", "done"))
        done = sum(i.frames_done for i in self.items if i.status in ("pending", "done"))
        busy = {n for n, t in self.running.values() if t.kind == "chunk"}
        live = 0
        if busy:
            try:
                got = self.ray.get([self.pool.handles[n].progress.remote() for n in busy], timeout=POLL_S)
                live = sum(frames for _, frames in got)
            except Exception:  # a worker that died answers nothing: its task's result says so
                live = self.live
        self.live = live
        self.bar.total = max(total, done + live)
        if done + live >= self.bar.n:
            self.bar.update(done + live - self.bar.n)  # (update: the bar's rate and ETA follow)
        else:  # a worker died: its chunk starts over
            self.bar.n = done + live
        finished = sum(i.status in ("done", "failed") for i in self.items)
        self.bar.set_postfix_str(f"{finished}/{len(self.items)} inputs", refresh=False)
        self.bar.refresh()


def describe_result(item: _Input) -> str:
    """One line per finished input (the local export's, with the chunks, retries and resumption)."""
    r = item.result
    extra = f", {r['skipped_frames']} undecodable packet(s) skipped" if r["skipped_frames"] else ""
    if r["missing_frames"]:
        extra += f", {r['missing_frames']} frame(s) listed in the file could not be read (truncated?)"
    if r["resumed_chunks"]:
        extra += f", resumed with {r['resumed_chunks']} chunk(s) done"
    if r["retried"]:
        extra += f", {r['retried']} task(s) retried after a worker died"
    if item.note:
        extra += f", {item.note}"
    return (
        f"{item.source}: {r['frames']} frames in {r['chunks']} chunk(s), {r['seconds']:.1f} s of worker time "
        f"({r['fps']:.1f} fps per worker, {r['backend']}){extra}"
    )


def _prepare(sources: list[str], opts: ExportOptions, weights_sha256: str) -> list[_Input]:
    """Each input's targets and folder; complete inputs skipped, a second input with the same output name failed."""
    from rtkp.export.local import export_targets, is_complete, skipped

    items, stems = [], {}
    for source in sources:
        targets = export_targets(source, opts, weights_sha256)
        item = _Input(source, targets, ChunkFolder(opts.out / f"{targets.stem}.ray.partial"))
        items.append(item)
        if targets.stem in stems:
            item.status = "failed"
            item.note = f"{source}: same output name as {stems[targets.stem]} ({targets.stem}.*): use another --out"
            continue
        stems[targets.stem] = source
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
            pool = _Pool(ray, opts, options)
            driver = _Driver(ray, opts, todo, pool, chunk_frames)

            def on_signal(signum, _frame):
                driver.stop.append(signal.Signals(signum).name)

            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            for item in todo:
                item.targets.marker.unlink(missing_ok=True)
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


def _summary(items: list[_Input], seconds: float, workers: int, backends: str) -> int:
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


__all__ = ["ExportWorker", "connect", "export_on_ray", "worker_options"]
