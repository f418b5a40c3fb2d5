"""Chunks of an input for `rtkp export --ray` (rtkp/export/ray.py): plan them at keyframes, track one, join them.

Nothing here imports Ray: a chunk is tracked by whoever calls `track_chunk` (a Ray actor in rtkp.export.ray, or a test).

An input's chunked export lives in `<out>/<stem>.ray.partial/` (the local export's is `<stem>.partial/`, a layout of
its own; neither resumes the other's):

    settings.json        what the records belong to (offline.export_targets), as the local export's
    plan.json            the chunks, [start, end] frame indices (end None: to the end of the input), and the frames
    chunks/S-E.raw       chunk S..E's records as raw lines (export_sinks.raw_line), renamed into place when complete
    chunks/S-E.json      its summary (frames, decode errors, seconds, backend, boundary hashes), written last: the
                         chunk is done
    raw.partial, frames.partial, segments.jsonl, tracked.json
                         the chunks joined in order (join_chunks): the local export's partial layout, from which
                         offline.finish_outputs builds every output exactly as it does for a local export

A chunk starts at a keyframe and decodes with `Source(start=N)`, which gives frames N.. with the index and PTS of a full
decode. What a chunk checks, since a seek can go wrong in ways a PTS does not show: every frame's PTS is the one the
frame table lists for its index; no packet failed and no frame was flagged corrupt (concealed errors depend on what
was decoded before); and its first frame has the pixels the chunk before it decoded for that frame, without a seek
(boundaries_agree: each chunk decodes one frame beyond its end). When any check fails, the input is tracked as one
chunk from frame 0, like the local export: slower, never different.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_FRAMES = 3000  # default chunk length (frames): about 100 s of 30 fps video, minutes of CPU work


@dataclass(frozen=True)
class Chunk:
    """Frames [start, end) of an input; end None: to the end (the last chunk decodes whatever the file still has)."""

    start: int
    end: int | None

    @property
    def name(self) -> str:
        return f"{self.start:010d}-{'end' if self.end is None else f'{self.end:010d}'}"


def chunks_of(plan: dict | None) -> list[Chunk]:
    """The chunks of a plan (plan_input's), in order."""
    return [Chunk(s, e) for s, e in plan["chunks"]] if plan else []


def split_at_keyframes(keyframe: np.ndarray, chunk_frames: int) -> list[Chunk]:
    """Chunks of at least `chunk_frames` frames that start at keyframes; keyframe: (N,) bool per frame.

    A keyframe starts a new chunk when the current one has `chunk_frames` frames and at least a quarter of that is
    left after it (no tiny last chunk). The last chunk runs to the end of the input.
    """
    n = len(keyframe)
    starts = [0]
    for k in np.flatnonzero(keyframe):
        if k - starts[-1] >= chunk_frames and n - k >= max(chunk_frames // 4, 1):
            starts.append(int(k))
    return [Chunk(s, e) for s, e in zip(starts, starts[1:])] + [Chunk(starts[-1], None)]


def plan_input(source: str, chunk_frames: int, table=None) -> dict:
    """{"frames": frames the input lists (None: unknown), "chunks": [[start, end], ...]} (JSON-able).

    Video files with an exact frame table are split at keyframes; image folders at any file; other inputs (and files
    whose packets lack distinct timestamps) are one chunk. Raises SourceError in one line for an unreadable input.
    table: the file's frame_table, when the caller has it.
    """
    from rtkp.pipeline.sources import _image_files, frame_table, parse_source

    spec = parse_source(source)
    if spec.kind == "file":
        table = table if table is not None else frame_table(source)
        # no exact table (e.g. a truncated file's index): one chunk, which decodes what it can, as the local export
        chunks = split_at_keyframes(table.keyframe, chunk_frames) if table.exact else [Chunk(0, None)]
        frames = len(table) or None
    elif spec.kind == "images":
        frames = len(_image_files(spec))
        chunks = split_at_keyframes(np.ones(frames, bool), chunk_frames)
    else:
        frames, chunks = None, [Chunk(0, None)]
    return {"frames": frames, "chunks": [[c.start, c.end] for c in chunks]}


class ChunkFolder:
    """An input's `<stem>.ray.partial/` folder (module docstring) on storage every worker sees."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.chunks_dir = self.folder / "chunks"

    def raw(self, chunk: Chunk) -> Path:
        return self.chunks_dir / f"{chunk.name}.raw"

    def summary_path(self, chunk: Chunk) -> Path:
        return self.chunks_dir / f"{chunk.name}.json"

    def summary(self, chunk: Chunk) -> dict | None:
        """The summary of a complete chunk, or None."""
        try:
            return json.loads(self.summary_path(chunk).read_text())
        except (OSError, ValueError):
            return None

    def plan(self) -> dict | None:
        try:
            plan = json.loads((self.folder / "plan.json").read_text())
        except (OSError, ValueError):
            return None
        return plan if isinstance(plan, dict) and plan.get("chunks") else None

    def write_plan(self, plan: dict) -> None:
        """Set (or replace) the plan; chunk files of another plan are removed (they may overlap this one's)."""
        shutil.rmtree(self.chunks_dir, ignore_errors=True)
        self.chunks_dir.mkdir(parents=True)
        _write_atomic(self.folder / "plan.json", json.dumps(plan) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prefetch(frames: Iterator, depth: int = 8) -> Iterator:
    """Decode in a thread while the caller runs the model (PyAV and ONNX Runtime both release the GIL). An error in
    the thread is raised in the caller; when the caller stops early, the thread stops too and closes `frames`."""
    q: queue.Queue = queue.Queue(depth)
    done, stop = object(), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for item in frames:
                if not put(item):
                    break
            else:
                put(done)
        except BaseException as exc:  # handed to the caller, who raises it
            put(exc)
        finally:
            getattr(frames, "close", lambda: None)()

    thread = threading.Thread(target=run, name="rtkp-chunk-decode", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(5.0)


def _expected_pts(table, chunk: Chunk) -> tuple[np.ndarray, float] | None:
    """(pts seconds per frame of the table, tolerance): a decoded frame must be within tolerance of its index's."""
    if table is None or not table.exact or len(table) < 2:
        return None
    seconds = table.pts.astype(np.float64) * float(table.time_base)
    return seconds, float(np.diff(seconds).min()) / 4


def track_chunk(
    tracker,
    source: str,
    chunk: Chunk,
    folder: ChunkFolder,
    batch: int = 1,
    table=None,
    on_frames: Callable[[int], None] | None = None,
) -> dict:
    """Track frames [chunk.start, chunk.end) of `source` into the chunk's raw file; returns its summary.

    tracker: an rtkp.tracker.Tracker with smoothing "none" (smoothing runs over the joined records, never per chunk).
    batch: frames per graph call. table: the video's frame_table (file inputs), which pins every frame's PTS.
    on_frames(n): called with the frames done so far. A chunk already complete is not tracked again: its summary is
    returned. {"inexact": reason} when the chunk cannot be shown to hold the frames a full decode would give them.
    """
    from rtkp.pipeline.sources import Source, parse_source
    from rtkp.sinks.writers import raw_line

    done = folder.summary(chunk)
    if done is not None:
        return done
    t0 = time.monotonic()
    spec = parse_source(source)
    video = spec.kind == "file"
    length = None if chunk.end is None else chunk.end - chunk.start
    # a video chunk decodes one frame more, the next chunk's first: its pixels, decoded here without a seek, must be
    # those the next chunk decodes after its seek (boundaries_agree)
    more = 1 if video and length is not None else 0
    src = Source(
        spec, max_frames=None if length is None else length + more, reconnect=False, start=chunk.start, table=table
    )
    whole = chunk.start == 0 and chunk.end is None  # the whole input: exactly the local export's decode
    expected = _expected_pts(table, chunk) if video and not whole else None
    tmp = folder.raw(chunk).with_name(f"{folder.raw(chunk).name}.{os.getpid()}.tmp")
    frames, last, backend = 0, None, getattr(tracker.model.backend, "name", None)
    first_hash = next_hash = None
    pending: list = []

    def flush(fh) -> None:
        nonlocal frames, last
        for kf in tracker.process_batch(pending):
            t = kf.pts if kf.pts is not None else kf.capture_ns / 1e9  # as the local export's writer sink
            fh.write(raw_line(kf, t))
            last = kf.index
        frames += len(pending)
        pending.clear()
        if on_frames is not None:
            on_frames(frames)

    with open(tmp, "w") as fh:
        for frame in _prefetch(iter(src)):
            if chunk.end is not None and frame.index >= chunk.end:
                next_hash = pixel_hash(frame.image) if video and frame.index == chunk.end else None
                break  # (image folders: skipped files do not count towards max_frames)
            if video and chunk.start > 0 and first_hash is None:
                first_hash = pixel_hash(frame.image)
            if expected is not None:
                seconds, tol = expected
                if frame.index >= len(seconds) or frame.pts is None or abs(frame.pts - seconds[frame.index]) > tol:
                    tmp.unlink(missing_ok=True)
                    return {"inexact": f"frame {frame.index} is not where the frame table puts it"}
            pending.append(frame)
            if len(pending) >= batch:
                flush(fh)
        if pending:
            flush(fh)
    if video and not whole and (src.skipped or src.errors):
        tmp.unlink(missing_ok=True)  # frames after an undecodable packet shift in a full decode, not in a chunk
        return {"inexact": f"undecodable packets in frames {chunk.start}..{chunk.end or 'end'}"}
    if video and not whole and src.corrupt:  # concealed errors: what they show depends on what was decoded before
        tmp.unlink(missing_ok=True)
        return {"inexact": f"{src.corrupt} frame(s) in {chunk.start}..{chunk.end or 'end'} decoded with errors"}
    if video and length is not None and frames != length:
        tmp.unlink(missing_ok=True)
        return {"inexact": f"frames {chunk.start}..{chunk.end}: {frames} decoded, {length} listed"}
    os.replace(tmp, folder.raw(chunk))
    summary = {
        "start": chunk.start,
        "end": chunk.end,
        "frames": frames,
        "last_index": last,
        "seconds": round(time.monotonic() - t0, 3),
        "backend": backend,
        "skipped": src.skipped,
        "errors": src.errors[:20],
        "first_hash": first_hash,
        "next_hash": next_hash,
    }
    _write_atomic(folder.summary_path(chunk), json.dumps(summary) + "\n")
    return summary


def pixel_hash(image: np.ndarray) -> str:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()


def boundaries_agree(chunks: list[Chunk], summaries: list[dict]) -> str | None:
    """None when every chunk's first frame, decoded after its seek, has the pixels the chunk before it decoded for that
    frame without one; else the reason (a decoder that needs more than a keyframe, e.g. an encoder workaround that
    FFmpeg only applies after seeing the stream's start). Image folders and single chunks have nothing to compare."""
    for b, sa, sb in zip(chunks[1:], summaries, summaries[1:]):
        if sb.get("first_hash") is None and sa.get("next_hash") is None:
            continue  # not a video
        if sa.get("next_hash") != sb.get("first_hash"):
            return f"frame {b.start} decodes differently after a seek"
    return None


def join_chunks(folder: ChunkFolder, plan: dict, partial) -> None:
    """Concatenate the plan's chunks, in order, into the partial folder's raw body, ledger and segments, then mark it
    tracked. partial: an export_sinks.Partial on `folder` with bodies ("raw",). Idempotent: a join interrupted
    midway is redone, a finished one is left alone."""
    if partial.tracked:
        return
    chunks = chunks_of(plan)
    summaries = [folder.summary(c) for c in chunks]
    missing = [c.name for c, s in zip(chunks, summaries) if s is None]
    if missing:
        raise RuntimeError(f"join before chunks {missing} were done")  # a bug in the caller, not the user's
    raw_tmp, frames_tmp = (partial.path(b).with_name(partial.path(b).name + ".tmp") for b in ("raw", "frames"))
    with open(raw_tmp, "w") as raw, open(frames_tmp, "w") as ledger:
        for chunk in chunks:
            with open(folder.raw(chunk)) as fh:
                for line in fh:
                    raw.write(line)
                    ledger.write(f"{json.loads(line)['i']}\n")
    os.replace(raw_tmp, partial.path("raw"))
    os.replace(frames_tmp, partial.path("frames"))
    segments = "".join(
        json.dumps({k: s[k] for k in ("start", "frames", "seconds", "backend", "skipped", "errors")}) + "\n"
        for s in summaries
    )
    _write_atomic(partial.folder / "segments.jsonl", segments)
    partial.mark_tracked()
