"""The one export tracking loop: frames [start, end) of an input → Tracker → records in a partial folder.

`rtkp export` tracks a whole input as the chunk [0, end) and a resumed export as the chunk [done, end), in its own
process (rtkp.export.local); `rtkp export --ray` tracks chunks [S, E) in Ray actors (rtkp.export.ray). Both call
`track_chunk`, with the same Tracker (smoothing "none": smoothing runs over the whole track when the export finishes,
rtkp.export.records.PublishedRecords), the same decode (`Source(start=N)`: frames N.. with the index and PTS of a full
decode) and the same RecordWriter, into the one partial-folder layout (rtkp.export.partial).

Why not the multi-process runner (rtkp.pipeline) for the local export: a Ray actor holds its model for many chunks
and cannot spawn a pipeline per chunk, and an export needs none of the runner's live machinery (policies, drops,
display, control). Decoding in a thread overlaps inference just as well (PyAV and ONNX Runtime release the GIL): the
one-worker Ray export, which always ran this loop, matched the pipeline's local export within 1 % (docs/SCALING.md).

What a chunk checks when `verify` is set (Ray chunks that start after frame 0 or end before the last frame), since a
seek can go wrong in ways a PTS does not show: every frame's PTS is the one the frame table lists for its index; no
packet failed and no frame was flagged corrupt (concealed errors depend on what was decoded before); and its first
frame's pixels and the frame after its end are hashed (first_hash, next_hash) so that neighbouring chunks can be
compared (rtkp.export.chunks.boundaries_agree). A resumed local export trusts `Source(start=N)` as it always did and
reports decode errors in its segment.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from rtkp.export.chunks import Chunk
from rtkp.export.records import RecordWriter
from rtkp.manifest import Manifest


def prefetch(frames: Iterator, depth: int = 8) -> Iterator:
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

    thread = threading.Thread(target=run, name="rtkp-export-decode", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(5.0)


def open_tracker(
    model: str,
    backend: str,
    threads: int,
    precision: str | None,
    manifest: Manifest,
    max_instances: int | None = None,
    follow: bool = True,
):
    """The export's Tracker: the model folder through a backend (rtkp.backends.open_backend), smoothing off (it runs
    over the whole track when the export finishes); max_instances: --max-instances; follow: a video's frames may be
    looked at only where the animal is (not --whole-frame; track_chunk turns it off for image folders). Raises
    RtkpError in one line."""
    from rtkp.backends import open_backend
    from rtkp.config import SmoothingConfig
    from rtkp.tracker import Tracker

    backend = open_backend(model, backend, threads=threads, precision=precision)
    return Tracker(backend, manifest, SmoothingConfig(filter="none"), max_instances=max_instances, follow=follow)


def pixel_hash(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()


def _expected_pts(table) -> tuple[np.ndarray, float] | None:
    """(pts seconds per frame of the table, tolerance): a decoded frame must be within tolerance of its index's."""
    if table is None or not table.exact or len(table) < 2:
        return None
    seconds = table.pts.astype(np.float64) * float(table.time_base)
    return seconds, float(np.diff(seconds).min()) / 4


def track_chunk(
    tracker,
    source: str,
    chunk: Chunk,
    writer: RecordWriter,
    batch: int = 1,
    table=None,
    verify: bool = False,
    on_frames: Callable[[int], None] | None = None,
    stop: Callable[[], str | None] | None = None,
) -> dict:
    """Track frames [chunk.start, chunk.end) of `source`, each record through `writer`; returns the chunk's summary.

    tracker: an rtkp.tracker.Tracker with smoothing "none". batch: frames per graph call. table: the video's
    frame_table (pins every frame's PTS when verify is set). verify: check that the chunk holds the frames a full
    decode gives them (module docstring); {"inexact": reason} when it cannot show it. on_frames(n): called with the
    frames done so far. stop(): a reason to stop (a signal's name) or None; a stopped chunk's summary has "stopped".
    Summary: start, end, frames, last_index, seconds, backend, skipped, errors (decode), first_hash, next_hash.
    """
    from rtkp.pipeline.source_spec import parse_source
    from rtkp.pipeline.sources import Source

    t0 = time.monotonic()
    spec = parse_source(source)
    video = spec.kind == "file"
    length = None if chunk.end is None else chunk.end - chunk.start
    strict = verify and video and not (chunk.start == 0 and chunk.end is None)
    # a video chunk decodes one frame more, the next chunk's first: its pixels, decoded here without a seek, must be
    # those the next chunk decodes after its seek (boundaries_agree)
    more = 1 if video and length is not None else 0
    # a Tracker that follows the animal (rtkp.follow) starts at the last refresh frame before the chunk and tracks
    # the frames up to it without writing them, so that the chunk's records are those of an uninterrupted run;
    # an image folder's images are unrelated and never followed
    tracker.model.new_sequence(consecutive=spec.consecutive)
    follower = tracker.model.follower
    following = follower is not None and follower.enabled
    begin = follower.warm_up_start(chunk.start) if following else chunk.start
    limit = None if length is None else length + more + chunk.start - begin
    # no frame threads: a decoder that conceals errors conceals them the same way on every decode (Source)
    src = Source(spec, max_frames=limit, reconnect=False, start=begin, table=table)
    expected = _expected_pts(table) if strict else None
    summary = {"start": chunk.start, "end": chunk.end, "frames": 0, "last_index": None}
    summary.update(backend=tracker.model.backend_name, first_hash=None, next_hash=None)
    pending: list = []

    def flush() -> None:
        for kf in tracker.process_batch(pending):
            writer.write(kf)
            summary["last_index"] = kf.index
        summary["frames"] += len(pending)
        pending.clear()
        if on_frames is not None:
            on_frames(summary["frames"])

    with contextlib.closing(prefetch(iter(src))) as frames:  # the decode thread stops on every way out
        for frame in frames:
            if chunk.end is not None and frame.index >= chunk.end:
                summary["next_hash"] = pixel_hash(frame.image) if video and frame.index == chunk.end else None
                break  # (image folders: skipped files do not count towards max_frames)
            if expected is not None:
                seconds, tol = expected
                if frame.index >= len(seconds) or frame.pts is None or abs(frame.pts - seconds[frame.index]) > tol:
                    return {"inexact": f"frame {frame.index} is not where the frame table puts it"}
            if frame.index < chunk.start:  # warming up the Follower: tracked, not written
                tracker.process(frame)
                continue
            if video and chunk.start > 0 and summary["first_hash"] is None:
                summary["first_hash"] = pixel_hash(frame.image)
            pending.append(frame)
            if len(pending) >= batch:
                flush()
                reason = stop() if stop is not None else None
                if reason is not None:
                    summary["stopped"] = reason
                    break
    if pending:
        flush()
    summary.update(seconds=round(time.monotonic() - t0, 3), skipped=src.skipped, errors=src.errors[:20])
    if strict and (src.skipped or src.errors):  # frames after an undecodable packet shift in a full decode only
        return {"inexact": f"undecodable packets in frames {chunk.start}..{chunk.end or 'end'}"}
    if strict and src.corrupt:  # concealed errors: what they show depends on what was decoded before
        return {"inexact": f"{src.corrupt} frame(s) in {chunk.start}..{chunk.end or 'end'} decoded with errors"}
    if strict and length is not None and summary["frames"] != length and "stopped" not in summary:
        return {"inexact": f"frames {chunk.start}..{chunk.end}: {summary['frames']} decoded, {length} listed"}
    return summary
