"""A worker of `rtkp export --ray`: a Ray actor (made one by rtkp.export.ray_driver.WorkerPool) that loads the model
once and runs the tasks the driver hands it: plan an input, track a chunk with the one export loop
(rtkp.export.track.track_chunk), finish an input (rtkp.export.finish, as the local export does).

A multi-instance model's track ids depend on every frame before: its inputs are planned as one chunk each, and each
input is tracked by a tracker of its own (opened again), so that the ids are those of a local export.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
from pathlib import Path

from rtkp.errors import RtkpError
from rtkp.export.chunks import Chunk, ChunkFolder, join_chunks
from rtkp.export.local import ExportOptions, ExportTargets
from rtkp.export.partial import Partial
from rtkp.export.records import RecordWriter
from rtkp.files import write_json_atomic


class ExportWorker:
    """A Ray actor's state (made an actor class by WorkerPool): the model, loaded once, and the tasks it runs.

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

        from rtkp.backends import read_model_info
        from rtkp.export.track import open_tracker

        self.opts, self.batch, self.error, self.tracker = opts, batch, None, None
        self.doing: tuple[str | None, int] = (None, 0)
        self.tables: collections.OrderedDict = collections.OrderedDict()
        # a worker without a GPU of its own runs ONNX Runtime on the CPU, even on a node with a GPU
        backend = opts.backend if opts.backend != "auto" or ray.get_gpu_ids() else "onnxruntime"
        self.open_tracker = lambda: open_tracker(
            opts.model, backend, threads, opts.precision, self.info.manifest, opts.max_instances, not opts.whole_frame
        )
        self.fresh, self.info = True, None  # fresh: the tracker has tracked nothing yet
        try:
            self.info = read_model_info(opts.model)
            self.tracker = self.open_tracker()
        except RtkpError as exc:
            self.error = str(exc)

    @property
    def multi_instance(self) -> bool:
        return self.info is not None and self.info.manifest.multi_instance

    def ready(self) -> dict:
        backend = self.tracker.model.backend_name if self.tracker is not None else None
        return {"pid": os.getpid(), "backend": backend, "error": self.error}

    def pid(self) -> int:
        return os.getpid()

    def progress(self) -> tuple[str | None, int]:
        """(task, frames done in it): what the driver's progress bar shows while a chunk runs."""
        return self.doing

    def _table(self, source: str):
        """The video's frame table, demuxed once per worker and file (kept for the last few files)."""
        from rtkp.pipeline.containers import frame_table
        from rtkp.pipeline.source_spec import parse_source

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

        if self.multi_instance:  # track ids depend on every frame before: one chunk per input
            chunk_frames = sys.maxsize
        try:
            return plan_input(source, chunk_frames, self._table(source))
        except RtkpError as exc:
            return {"error": str(exc)}

    def chunk(self, source: str, folder: str, start: int, end: int | None) -> dict:
        """Track frames [start, end) into the chunk's folder (rtkp.export.track, verified); its summary, written last
        (a chunk already complete is not tracked again), or {"inexact": reason}, or {"error": one line}."""
        from rtkp.export.track import track_chunk

        chunk, chunks = Chunk(start, end), ChunkFolder(Path(folder))
        done = chunks.summary(chunk)
        if done is not None:
            return done
        self.doing = (chunk.name, 0)
        part = chunks.partial(chunk)
        try:
            if self.multi_instance and not self.fresh:
                # the identity tracker's state belongs to the input tracked before: a new tracker starts its ids
                self.tracker.close()
                self.tracker = self.open_tracker()
            self.fresh = False
            part.reset()  # a retried chunk starts over: its checks need the whole decode from its keyframe
            on_frames = lambda n: setattr(self, "doing", (chunk.name, n))  # noqa: E731
            names, multi = list(self.tracker.keypoint_names), self.info.manifest.multi_instance
            with RecordWriter(part.folder, part.bodies, names, multi_instance=multi) as writer:
                table = self._table(source)
                summary = track_chunk(self.tracker, source, chunk, writer, self.batch, table, True, on_frames)
            if "inexact" in summary:
                shutil.rmtree(part.folder, ignore_errors=True)
            else:
                write_json_atomic(chunks.summary_path(chunk), summary)  # last: the chunk is complete
            return summary
        except RtkpError as exc:
            return {"error": str(exc)}
        finally:
            self.doing = (None, 0)

    def finish(self, source: str, folder: str, targets: ExportTargets, plan: dict) -> dict:
        """Join the chunks into the input's partial folder and finish it as the local export does."""
        from rtkp.export.finish import finish_outputs
        from rtkp.export.local import is_complete
        from rtkp.export.progress import Progress, total_frames

        if not Path(folder).is_dir() and is_complete(targets):  # done by a worker that died before it could say so
            return json.loads(targets.marker.read_text())["result"]
        try:
            partial = Partial(Path(folder), targets.settings, ("raw",))
            join_chunks(ChunkFolder(Path(folder)), plan, partial)
            bar = Progress(targets.stem, None, 0, False, enabled=False)
            return finish_outputs(source, self.opts, self.info, partial, targets, total_frames(source), bar)
        except RtkpError as exc:
            return {"error": str(exc)}
