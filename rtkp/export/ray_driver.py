"""The driver of `rtkp export --ray` (rtkp.export.ray): the worker pool and the scheduler of its tasks.

Each input goes through these tasks, one task at a time per worker (rtkp.export.ray_worker.ExportWorker):

    plan    the input's frame table and its chunks, split at keyframes (rtkp.export.chunks.plan_input)
    chunk   frames [start, end) tracked by the one export loop into `<stem>.partial/chunks/` (rtkp.export.track)
    finish  the chunks joined in order, then the local export's finishing (rtkp.export.finish)

Faults: a worker that dies (killed, out of memory, node lost) is replaced and its task runs again on a free worker:
a chunk only counts once its summary is written, after its records, so a retried chunk is neither lost nor doubled
(MAX_ATTEMPTS per task). A bad input fails alone, with its one-line reason. A chunk that cannot show its frames are a
full decode's (or whose boundary frames disagree) makes its input be tracked as one chunk.
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field

from rtkp.errors import EngineError, ExportFailed, Interrupted
from rtkp.export.chunks import Chunk, ChunkFolder, boundaries_agree, chunks_of
from rtkp.export.local import ExportOptions, ExportTargets
from rtkp.export.partial import Partial
from rtkp.export.ray_worker import ExportWorker

MAX_ATTEMPTS = 3  # runs of one task before its input fails (a chunk that kills every worker it reaches)
POLL_S = 0.5  # progress bar refresh
ACTOR_PREFIX = "rtkp-export-"  # actor names: prefix, job id, worker number (tests find the workers by name)


@dataclass
class InputJob:
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
class Task:
    kind: str  # ready | plan | chunk | finish
    item: InputJob | None
    chunk: Chunk | None = None
    attempt: int = 1


def log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"rtkp export: {message}", file=sys.stderr)


def say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stdout)


class WorkerPool:
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


class Driver:
    """The scheduler: a queue of tasks, one per idle worker, results handled as they come (module docstring)."""

    def __init__(self, ray, opts: ExportOptions, items: list[InputJob], pool: WorkerPool, chunk_frames: int):
        from tqdm import tqdm

        self.ray, self.opts, self.items, self.pool, self.chunk_frames = ray, opts, items, pool, chunk_frames
        self.queue: collections.deque[Task] = collections.deque()
        self.running: dict = {}  # ObjectRef -> (worker number, Task)
        self.stop: list[str] = []
        self.bar = tqdm(
            total=0, unit="frame", desc="rtkp export", disable=not opts.progress, file=sys.stderr, smoothing=0.1
        )
        self.live = 0  # frames done in running chunks, at the last poll
        self.polled = 0.0  # time.monotonic() of the last poll

    # --- queueing -------------------------------------------------------------------------------------------------

    def enqueue(self, item: InputJob) -> None:
        """An input's next tasks, from what its partial folder holds (a resumed job skips what is complete; a local
        export's folder of the input is finished when tracked, else replaced by a plan)."""
        partial = Partial(item.folder.folder, item.targets.settings, ("raw",))
        if self.opts.overwrite or not partial.matches():
            partial.reset()
        if partial.tracked:
            self.queue.appendleft(Task("finish", item))
            return
        item.plan = item.folder.plan()
        if item.plan is None:
            self.queue.append(Task("plan", item))
            return
        self._queue_chunks(item, resumed=True)

    def _queue_chunks(self, item: InputJob, resumed: bool = False) -> None:
        for chunk in item.chunks:
            summary = item.folder.summary(chunk)
            if summary is not None:
                item.done[chunk.name] = summary
            else:
                self.queue.append(Task("chunk", item, chunk))
        if resumed:
            item.resumed = len(item.done)
        if len(item.done) == len(item.chunks):
            self._all_chunks_done(item)

    def _submit(self, n: int, task: Task) -> None:
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
                f"stopped by {self.stop[0]}; complete chunks are kept in {self.opts.out}/*.partial: "
                "run the same command again to resume"
            )

    def _loop(self) -> None:
        first, n = self.pool.start(0)
        self.running[first] = (n, Task("ready", None))
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
                        self.running[ref] = (m, Task("ready", None))
                    pending_starts = []
            self._progress()

    def _handle(self, ref, n: int, task: Task) -> None:
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
                log(str(exc))
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
                    log(f"a worker could not start: {value['error']}")
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

    def _chunk_done(self, item: InputJob, chunk: Chunk, value: dict) -> None:
        if "inexact" in value:
            self._one_chunk(item, value["inexact"])
            return
        item.done[chunk.name] = value
        if len(item.done) == len(item.chunks):
            self._all_chunks_done(item)

    def _all_chunks_done(self, item: InputJob) -> None:
        reason = boundaries_agree(item.chunks, [item.done[c.name] for c in item.chunks])
        if reason is None:
            self.queue.appendleft(Task("finish", item))
        else:
            self._one_chunk(item, reason)

    def _one_chunk(self, item: InputJob, reason: str) -> None:
        """A chunk could not prove its frames are the full decode's: track the input in one piece instead."""
        item.note = f"tracked as one chunk ({reason})"
        item.plan, item.done = {"frames": (item.plan or {}).get("frames"), "chunks": [[0, None]]}, {}
        item.folder.write_plan(item.plan)
        self.queue = collections.deque(t for t in self.queue if t.item is not item)
        self._queue_chunks(item)

    def _lost(self, n: int, task: Task, exc: Exception, moot: bool) -> None:
        """Worker n died while running `task`: replace it, and run the task again (up to MAX_ATTEMPTS)."""
        spec = self.pool.spec[n]
        self.pool.kill(n)
        if self.pool.replaced >= 2 * len(self.pool.options) + 2:
            raise ExportFailed(f"workers died {self.pool.replaced + 1} times; the last: {str(exc).splitlines()[0]}")
        self.pool.replaced += 1
        ref, m = self.pool.start(spec)
        self.running[ref] = (m, Task("ready", None))
        if task.kind == "ready" or moot:
            return
        if task.attempt >= MAX_ATTEMPTS:
            where = f"frames {task.chunk.start}..{task.chunk.end or 'end'}" if task.chunk else task.kind
            self._fail(task.item, f"{task.item.source}: a worker died {task.attempt} times on {where}")
            return
        task.item.retried += 1
        self.queue.appendleft(Task(task.kind, task.item, task.chunk, task.attempt + 1))

    def _fail(self, item: InputJob, reason: str) -> None:
        item.status, item.note = "failed", reason
        self.queue = collections.deque(t for t in self.queue if t.item is not item)
        if not item.done:  # nothing to resume from: leave no litter
            shutil.rmtree(item.folder.folder, ignore_errors=True)
        log(f"error: {reason}")

    def _done(self, item: InputJob, result: dict) -> None:
        item.status = "done"
        item.result = dict(result, chunks=len(item.chunks), retried=item.retried, resumed_chunks=item.resumed)
        say(describe_result(item))

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


def describe_result(item: InputJob) -> str:
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
