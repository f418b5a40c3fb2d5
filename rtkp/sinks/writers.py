"""`rtkp export`'s writer sink, and the partial folder it streams to, which makes an export resumable.

`<out>/<stem>.partial/` holds an input's export while it is in progress (no name in it can pass for a finished output):

    settings.json    what the records belong to: input path and fingerprint, model, formats, smoothing; a re-run with
                     anything else starts over
    frames.partial   the ledger: one line per frame written, its index (the resume point comes from it)
    jsonl.partial    the JSON-lines output as it will be published       } written live, one line per frame,
    csv.partial      the CSV: header, then one row per frame              } unless --smooth offline (which needs
    coco.partial     one `image TAB annotation` line per frame            } every frame first)
    raw.partial      full-precision measurements, one JSON line per frame: what smoothing and drawing use at the end
    segments.jsonl   one line per pipeline run that added frames: start frame, frames, decode summary
    tracked.json     tracking reached the end of the input

Files are appended to and flushed a few times a second, so a crash loses at most that much and leaves each body with
at most one torn last line. `Partial.resume()` cuts every body back to the records all of them hold complete and
returns the index of the frame to decode next.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtkp.config import SmoothingConfig
from rtkp.errors import ExportFailed
from rtkp.export.formats import coco_line, csv_header, csv_line, jsonl_line
from rtkp.messages import KeypointFrame

FLUSH_S = 0.2  # how often the bodies reach the disk: what a crash can lose, and what a reader waits at most
HEADER_LINES = {"csv": 3}  # lines before the first record


def raw_line(kf: KeypointFrame, t: float) -> str:
    """A measurement as one JSON line, exactly: float32 values go through Python floats, whose repr round-trips.

    t: the smoother's time for this frame (pts, or the capture time when the source has none).
    """
    rec = {
        "i": kf.index,
        "pts": kf.pts,
        "t": t,
        "name": kf.name,
        "size": list(kf.source_size),
        "xy": kf.keypoints.ravel().tolist(),
        "s": kf.scores.tolist(),
        "v": kf.visible.astype(np.uint8).tolist(),
    }
    return json.dumps(rec) + "\n"


def read_raw(path: Path):
    """(t, KeypointFrame) per line of a raw body; keypoints (K, 2) float32, state MEASURED/MISSING as in the run."""
    from rtkp.smoothing import MEASURED, MISSING

    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            visible = np.array(r["v"], bool)
            state = np.where(visible, MEASURED, MISSING).astype(np.uint8)
            xy = np.array(r["xy"], np.float32).reshape(-1, 2)
            scores = np.array(r["s"], np.float32)
            size = tuple(r["size"])
            yield r["t"], KeypointFrame(r["i"], r["pts"], 0, size, xy, scores, visible, state, name=r["name"])


class CausalReplay:
    """The live (causal) smoother, run here rather than in the post stage so that a resumed export can rebuild its
    state exactly: by replaying the raw measurements already written (tracks then match an uninterrupted export)."""

    def __init__(self, num_keypoints: int, cfg: SmoothingConfig):
        from rtkp.smoothing import KeypointSmoother

        self.smoother = KeypointSmoother(num_keypoints, cfg)

    def __call__(self, kf: KeypointFrame, t: float, latency_s: float = 0.0) -> KeypointFrame:
        xy, visible, state = self.smoother.update(t, kf.keypoints, kf.visible, latency_s)
        return dataclasses.replace(kf, keypoints=xy, visible=visible, state=state)


class PublishedRecords:
    """The raw body's records with the keypoints that get published, in order, one at a time (iterable, re-iterable).

    smooth: none (as measured), causal (the filter replayed from the first record) or offline (smoothed here, once,
    over the whole track). Offline holds arrays, never frames: about 350 bytes per keypoint per frame while
    rts_smooth runs (float64 means and covariances: 36 values per keypoint and frame, plus inputs and outputs), e.g.
    12 keypoints over an hour at 30 fps: 450 MB; afterwards 10 bytes per keypoint per frame (xy float32, visible,
    state).
    """

    def __init__(self, raw: Path, n: int, num_keypoints: int, smooth: str, cfg: SmoothingConfig):
        self.raw, self.k, self.smooth, self.cfg = raw, num_keypoints, smooth, cfg
        self.smoothed = self._rts(n) if smooth == "offline" else None

    def _rts(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xy (n, K, 2) float32, visible (n, K) bool, state (n, K) uint8) for the n records (offline_smoothing)."""
        from rtkp.export.offline_smoothing import rts_smooth

        t, xy, vis = np.zeros(n), np.zeros((n, self.k, 2)), np.zeros((n, self.k), bool)
        for i, (_, kf) in enumerate(read_raw(self.raw)):
            t[i] = kf.pts if kf.pts is not None else i / 30.0  # (image folders: 30 fps, as offline_smooth)
            xy[i], vis[i] = kf.keypoints, kf.visible
        c = self.cfg
        return rts_smooth(t, xy, vis, c.accel_noise, c.meas_noise, c.hold_s)

    def __iter__(self):
        causal = CausalReplay(self.k, self.cfg) if self.smooth == "causal" else None
        for i, (t, kf) in enumerate(read_raw(self.raw)):
            if self.smoothed is not None:
                xy, visible, state = (a[i] for a in self.smoothed)
                kf = dataclasses.replace(kf, keypoints=xy, visible=visible, state=state)
            yield causal(kf, t) if causal is not None else kf


class Partial:
    """An input's partial folder (module docstring). bodies: which record files this export writes."""

    def __init__(self, folder: Path, settings: dict, bodies: tuple[str, ...]):
        self.folder, self.settings, self.bodies = folder, settings, bodies

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
        (self.folder / "settings.json").write_text(json.dumps(self.settings, indent=1) + "\n")

    def resume(self) -> tuple[int, int]:
        """Cut every body to the records all of them hold complete; (records kept, index of the next frame).

        A reset folder, or one whose records cannot be matched up, gives (0, 0). Files are read in chunks: memory does
        not grow with their length.
        """
        lines = {b: _count_lines(self.path(b)) for b in (*self.bodies, "frames")}
        kept = min(n - HEADER_LINES.get(b, 0) for b, n in lines.items())
        try:
            if kept <= 0:
                raise ValueError("no record")
            with open(self.path("frames"), "rb") as fh:
                fh.seek(_end_of_line(self.path("frames"), kept - 1))
                next_index = int(fh.readline()) + 1
        except ValueError:
            self.reset()
            return 0, 0
        for body in lines:
            with open(self.path(body), "r+b") as fh:
                fh.truncate(_end_of_line(self.path(body), HEADER_LINES.get(body, 0) + kept))
        return kept, next_index

    def add_segment(self, segment: dict) -> None:
        with open(self.folder / "segments.jsonl", "a") as fh:
            fh.write(json.dumps(segment) + "\n")

    def segments(self) -> list[dict]:
        try:
            text = (self.folder / "segments.jsonl").read_text()
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def mark_tracked(self) -> None:
        (self.folder / "tracked.json").write_text(json.dumps({"records": self.records()}) + "\n")

    def records(self) -> int:
        return _count_lines(self.path("frames"))


CHUNK = 1 << 20


def _count_lines(path: Path) -> int:
    """Complete (newline-terminated) lines in a file; 0 when there is no file."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(CHUNK), b""))
    except FileNotFoundError:
        return 0


def _end_of_line(path: Path, n: int) -> int:
    """The byte offset just past the n-th line (0 for n = 0)."""
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


@dataclass(frozen=True)
class ExportSpec:
    """The writer sink's recipe (picklable; opened in the post process).

    folder: the partial folder; bodies: the record files to append to (jsonl, csv, coco, raw); first_number: the COCO
    id of the first frame this run writes (records kept + 1); smoothing: the causal filter's settings, or None;
    replay: raw records to run the causal filter over before the first frame (a resumed export).
    """

    folder: str
    bodies: tuple[str, ...]
    source: str
    scorer: str
    first_number: int = 1
    smoothing: SmoothingConfig | None = None
    replay: bool = False

    def open(self, context) -> ExportSink:
        return ExportSink(self, context.names)


class ExportSink:
    """Appends each frame's record to every body, then its index to the ledger; flushes every FLUSH_S.

    A write that fails (a full disk) is not retried: the sink stops writing and close() raises ExportFailed, so the
    ledger never gets ahead of a body that missed a record.
    """

    name, needs_pixels = "export", False

    def __init__(self, spec: ExportSpec, names: list[str]):
        self.spec, self.names = spec, names
        folder = Path(spec.folder)
        try:
            self.files = {b: open(folder / f"{b}.partial", "a", newline="") for b in (*spec.bodies, "frames")}
        except OSError as exc:
            raise ExportFailed(f"cannot write to {folder}: {exc.strerror or exc}") from None
        self.causal = CausalReplay(len(names), spec.smoothing) if spec.smoothing is not None else None
        if self.causal is not None and spec.replay:
            for t, kf in read_raw(folder / "raw.partial"):
                self.causal(kf, t)
        if "csv" in self.files and self.files["csv"].tell() == 0:
            self.files["csv"].write(csv_header(names, spec.scorer))
        self.number, self.written, self.error = spec.first_number, 0, None
        self.last_flush = time.monotonic()

    def write(self, item) -> None:
        if self.error is not None:
            return
        raw = item.kf
        t = raw.pts if raw.pts is not None else raw.capture_ns / 1e9  # as the post stage's smoother would
        kf = raw if self.causal is None else self.causal(raw, t, (time.monotonic_ns() - raw.capture_ns) / 1e9)
        lines = {
            "raw": lambda: raw_line(raw, t),
            "jsonl": lambda: jsonl_line(kf, self.names),
            "csv": lambda: csv_line(kf, self.names),
            "coco": lambda: coco_line(kf, self.number, self.names, self.spec.source),
        }
        try:
            for body in self.spec.bodies:
                self.files[body].write(lines[body]())
            self.files["frames"].write(f"{kf.index}\n")
            if time.monotonic() - self.last_flush >= FLUSH_S:
                self._flush()
        except OSError as exc:
            self.error = f"cannot write to {self.spec.folder}: {exc.strerror or exc}"
            raise ExportFailed(self.error) from None  # the post stage stops the run: tracking on would be wasted
        self.number += 1
        self.written += 1

    def _flush(self) -> None:
        # the ledger last: it may lag the bodies, never lead them
        for body in (*self.spec.bodies, "frames"):
            self.files[body].flush()
        self.last_flush = time.monotonic()

    def close(self, complete: bool) -> dict:
        try:
            if self.error is None:
                self._flush()
        except OSError as exc:
            self.error = f"cannot write to {self.spec.folder}: {exc.strerror or exc}"
        finally:
            for fh in self.files.values():
                try:
                    fh.close()
                except OSError:
                    pass
        if self.error is not None:
            raise ExportFailed(self.error)
        return {"exported": self.written}
