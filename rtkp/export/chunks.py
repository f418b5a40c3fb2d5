"""Chunks of an input for `rtkp export --ray` (rtkp/export/ray.py): plan them at keyframes, keep them, join them.

Nothing here imports Ray. A chunk is frames [start, end) of an input, tracked by the one export loop
(rtkp.export.track.track_chunk) into `chunks/S-E/` of the input's partial folder (layout: rtkp.export.partial); its
summary `chunks/S-E.json`, written last, says it is complete. When every chunk is, `join_chunks` concatenates them in
order into the top of the partial folder, which then holds what a local export of the input tracks there itself, and
the same finishing step builds the outputs (rtkp.export.finish).

A chunk starts at a keyframe and decodes with `Source(start=N)`, which gives frames N.. with the index and PTS of a
full decode; what it checks is in rtkp.export.track. `boundaries_agree` compares neighbouring chunks' boundary frames.
When any check fails, the input is tracked as one chunk from frame 0, like the local export: slower, never different.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtkp.export.partial import Partial
from rtkp.files import atomic, write_atomic, write_json_atomic

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
    from rtkp.pipeline.containers import frame_table
    from rtkp.pipeline.source_spec import image_files, parse_source

    spec = parse_source(source)
    if spec.kind == "file":
        table = table if table is not None else frame_table(source)
        # no exact table (e.g. a truncated file's index): one chunk, which decodes what it can, as the local export
        chunks = split_at_keyframes(table.keyframe, chunk_frames) if table.exact else [Chunk(0, None)]
        frames = len(table) or None
    elif spec.kind == "images":
        frames = len(image_files(spec))
        chunks = split_at_keyframes(np.ones(frames, bool), chunk_frames)
    else:
        frames, chunks = None, [Chunk(0, None)]
    return {"frames": frames, "chunks": [[c.start, c.end] for c in chunks]}


class ChunkFolder:
    """The chunks of an input's partial folder (rtkp.export.partial), on storage every worker sees."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.chunks_dir = self.folder / "chunks"

    def partial(self, chunk: Chunk) -> Partial:
        """The chunk's own partial folder: raw records and their ledger."""
        return Partial(self.chunks_dir / chunk.name, {"chunk": [chunk.start, chunk.end]}, ("raw",))

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
        """Set (or replace) the plan; every record of another plan (or of a local export) is removed first."""
        for path in self.folder.iterdir():
            if path.name != "settings.json":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.chunks_dir.mkdir(parents=True)
        write_json_atomic(self.folder / "plan.json", plan)


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


def join_chunks(folder: ChunkFolder, plan: dict, partial: Partial) -> None:
    """Concatenate the plan's chunks, in order, into the partial folder's raw body, ledger and segments, then mark it
    tracked. partial: the input's Partial on `folder`. Idempotent: a join interrupted midway is redone, a finished one
    is left alone."""
    if partial.tracked:
        return
    chunks = chunks_of(plan)
    summaries = [folder.summary(c) for c in chunks]
    missing = [c.name for c, s in zip(chunks, summaries) if s is None]
    if missing:
        raise RuntimeError(f"join before chunks {missing} were done")  # a bug in the caller, not the user's
    for body in ("raw", "frames"):
        with atomic(partial.path(body)) as out:
            for chunk in chunks:
                with open(folder.partial(chunk).path(body)) as fh:
                    shutil.copyfileobj(fh, out)
    keys = ("start", "frames", "seconds", "backend", "skipped", "errors")
    write_atomic(partial.folder / "segments.jsonl", (json.dumps({k: s[k] for k in keys}) + "\n" for s in summaries))
    partial.mark_tracked()
