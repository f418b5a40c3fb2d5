"""The partial folder: an input's export while it is in progress, for the local export and `--ray` alike.

`<out>/<stem>.partial/` (no name in it can pass for a finished output):

    settings.json    what the records belong to: input path and fingerprint, model, formats, smoothing; a re-run with
                     anything else starts over
    frames.partial   the ledger: one line per frame written, its index (the resume point comes from it)
    raw.partial      the raw records (rtkp.export.records.raw_line), full precision, one per frame: what smoothing,
                     the formats not written live, and the annotated video are built from at the end
    jsonl.partial    } the outputs as they will be published, one record per frame, written live by a local export
    csv.partial      } without smoothing (smoothing needs the records in order from the first frame, so it runs at
    coco.partial     } the end); COCO as one `image TAB annotation` line per frame
    segments.jsonl   one line per tracking run that added frames: start frame, frames, seconds, decode summary
    tracked.json     tracking reached the end of the input
    plan.json        (--ray) the chunks, [start, end] frame indices (end None: to the end of the input)
    chunks/S-E/      (--ray) chunk S..E's records: a partial folder of its own (raw + ledger), written by the same
                     loop (rtkp.export.track) as the whole input's
    chunks/S-E.json  (--ray) the chunk's summary, written last: the chunk is complete
    ready.*          finished outputs, built here and then renamed into place

A local export tracks the input as one chunk straight into the top of the folder, and a resumed one is the chunk
[done, end) appended to it; a Ray export tracks its chunks under chunks/ and joins them, in order, into the top
(rtkp.export.chunks.join_chunks). Either way the top then holds the records of frames 0..N in order, and one finishing
step (rtkp.export.finish) builds the outputs from it.

Bodies are appended to and flushed a few times a second, so a crash loses at most that much and leaves each body with
at most one torn last line. `Partial.resume()` cuts every body back to the records all of them hold complete and
returns the index of the frame to decode next.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rtkp.files import write_json_atomic

HEADER_LINES = {"csv": 3}  # lines before the first record
CHUNK = 1 << 20  # bytes read at a time when counting lines: memory does not grow with a body's length


class Partial:
    """A partial folder (module docstring). bodies: which record files the tracking loop writes to it."""

    def __init__(self, folder: Path, settings: dict, bodies: tuple[str, ...]):
        self.folder, self.settings, self.bodies = Path(folder), settings, bodies

    def path(self, body: str) -> Path:
        return self.folder / f"{body}.partial"

    @property
    def tracked(self) -> bool:
        return (self.folder / "tracked.json").is_file()

    def matches(self) -> bool:
        try:
            return json.loads((self.folder / "settings.json").read_text()) == self.settings
        except (OSError, ValueError):
            return False

    def reset(self) -> None:
        """Start over: an empty folder with this export's settings."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        write_json_atomic(self.folder / "settings.json", self.settings)

    def clear_records(self) -> None:
        """Remove every record, chunk and finished output, keeping settings.json (a new plan starts)."""
        for path in self.folder.iterdir():
            if path.name != "settings.json":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def resume(self) -> tuple[int, int]:
        """Cut every body to the records all of them hold complete; (records kept, index of the next frame).

        A reset folder, or one whose records cannot be matched up, gives (0, 0) and is reset.
        """
        lines = {b: count_lines(self.path(b)) for b in (*self.bodies, "frames")}
        kept = min(n - HEADER_LINES.get(b, 0) for b, n in lines.items())
        try:
            if kept <= 0:
                raise ValueError("no record")
            with open(self.path("frames"), "rb") as fh:
                fh.seek(end_of_line(self.path("frames"), kept - 1))
                next_index = int(fh.readline()) + 1
        except ValueError:
            self.reset()
            return 0, 0
        for body in lines:
            with open(self.path(body), "r+b") as fh:
                fh.truncate(end_of_line(self.path(body), HEADER_LINES.get(body, 0) + kept))
        return kept, next_index

    def add_segment(self, segment: dict) -> None:
        # appended, not replaced: a log whose torn last line (a crash) is skipped when read
        with open(self.folder / "segments.jsonl", "a") as fh:
            fh.write(json.dumps(segment) + "\n")

    def segments(self) -> list[dict]:
        try:
            text = (self.folder / "segments.jsonl").read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def mark_tracked(self) -> None:
        write_json_atomic(self.folder / "tracked.json", {"records": self.records()})

    def records(self) -> int:
        return count_lines(self.path("frames"))


def count_lines(path: Path) -> int:
    """Complete (newline-terminated) lines in a file; 0 when there is no file."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(CHUNK), b""))
    except FileNotFoundError:
        return 0


def end_of_line(path: Path, n: int) -> int:
    """The byte offset just past the n-th line (0 for n = 0); ValueError when the file has fewer lines."""
    pos = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            count = chunk.count(b"\n")
            if n <= count:
                end = -1
                for _ in range(n):
                    end = chunk.index(b"\n", end + 1)
                return pos + end + 1
            n, pos = n - count, pos + len(chunk)
    raise ValueError(f"{path} has fewer lines")
