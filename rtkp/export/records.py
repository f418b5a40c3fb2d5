"""Records on their way to disk: the raw record, the writer that streams records into a partial folder, and the
published records read back (smoothed) when an export finishes.

The raw record is the one serialisation that resume and chunks keep: a measurement at full precision, so that
smoothing, the formats not written live and the annotated video can be built from it at the end, byte for byte as if
they had been written while tracking.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from rtkp.config import SmoothingConfig
from rtkp.errors import ExportFailed
from rtkp.export.formats import coco_line, csv_header, csv_line, jsonl_line
from rtkp.messages import KeypointFrame
from rtkp.smoothing import MEASURED, MISSING, KeypointSmoother

FLUSH_S = 0.2  # how often the bodies reach the disk: what a crash can lose, and what a reader waits at most


def smoother_time(kf: KeypointFrame) -> float | None:
    """The time the smoother gets for a frame: its PTS, None when the source has none (as rtkp.tracker.KeypointStage
    gives it; rtkp.smoothing.SteadyClock makes that one nominal step, never the moment the frame was read)."""
    return kf.pts


def raw_line(kf: KeypointFrame) -> str:
    """A measurement as one JSON line, exactly: float32 values go through Python floats, whose repr round-trips."""
    rec = {
        "i": kf.index,
        "pts": kf.pts,
        "t": smoother_time(kf),
        "name": kf.name,
        "size": list(kf.source_size),
        "xy": kf.keypoints.ravel().tolist(),
        "s": kf.scores.tolist(),
        "v": kf.visible.astype(np.uint8).tolist(),
    }
    return json.dumps(rec) + "\n"


def read_raw(path: Path):
    """(t, KeypointFrame) per line of a raw body; keypoints (K, 2) float32, state MEASURED/MISSING as tracked."""
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            visible = np.array(r["v"], bool)
            state = np.where(visible, MEASURED, MISSING).astype(np.uint8)
            xy = np.array(r["xy"], np.float32).reshape(-1, 2)
            scores = np.array(r["s"], np.float32)
            size = tuple(r["size"])
            yield r["t"], KeypointFrame(r["i"], r["pts"], 0, size, xy, scores, visible, state, name=r["name"])


class RecordWriter:
    """Appends each frame's record to every body of a partial folder, then its index to the ledger; flushes every
    FLUSH_S. A context manager: leaving it flushes and closes (ExportFailed when a write failed).

    bodies: raw, jsonl, csv, coco (rtkp.export.partial); names: the keypoint names; scorer: the CSV's scorer row;
    source: the input, as COCO names its frames; first_number: the COCO id of the first record written (records
    already in the folder + 1). A write that fails (a full disk) raises ExportFailed at once and the writer writes
    nothing more, so the ledger never gets ahead of a body that missed a record.
    """

    def __init__(self, folder: Path, bodies, names: list[str], scorer: str = "", source: str = "", first_number=1):
        self.folder, self.bodies, self.names, self.source = Path(folder), tuple(bodies), names, source
        try:
            self.files = {b: open(self.folder / f"{b}.partial", "a", newline="") for b in (*self.bodies, "frames")}
        except OSError as exc:
            raise ExportFailed(f"cannot write to {self.folder}: {exc.strerror or exc}") from None
        if "csv" in self.files and self.files["csv"].tell() == 0:
            self.files["csv"].write(csv_header(names, scorer))
        self.number, self.written, self.error = first_number, 0, None
        self.last_flush = time.monotonic()

    def write(self, kf: KeypointFrame) -> None:
        if self.error is not None:
            raise ExportFailed(self.error)
        lines = {
            "raw": lambda: raw_line(kf),
            "jsonl": lambda: jsonl_line(kf, self.names),
            "csv": lambda: csv_line(kf, self.names),
            "coco": lambda: coco_line(kf, self.number, self.names, self.source),
        }
        try:
            for body in self.bodies:
                self.files[body].write(lines[body]())
            self.files["frames"].write(f"{kf.index}\n")
            if time.monotonic() - self.last_flush >= FLUSH_S:
                self.flush()
        except OSError as exc:
            self.error = f"cannot write to {self.folder}: {exc.strerror or exc}"
            raise ExportFailed(self.error) from None  # tracking on would be wasted
        self.number += 1
        self.written += 1

    def flush(self) -> None:
        # the ledger last: it may lag the bodies, never lead them
        for body in (*self.bodies, "frames"):
            self.files[body].flush()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        try:
            if self.error is None:
                self.flush()
        except OSError as exc:
            self.error = f"cannot write to {self.folder}: {exc.strerror or exc}"
        finally:
            for fh in self.files.values():
                try:
                    fh.close()
                except OSError:
                    pass
        if self.error is not None:
            raise ExportFailed(self.error)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PublishedRecords:
    """The raw body's records with the keypoints that get published, in order, one at a time (iterable, re-iterable).

    smooth: none (as measured), causal (the live smoother, rtkp.smoothing.KeypointSmoother, run over the records from
    the first, as the tracker runs it live) or offline (smoothed here, once, over the whole track). Offline holds
    arrays, never frames: about 350 bytes per keypoint per frame while rts_smooth runs (float64 means and
    covariances: 36 values per keypoint and frame, plus inputs and outputs), e.g. 12 keypoints over an hour at 30 fps:
    450 MB; afterwards 10 bytes per keypoint per frame (xy float32, visible, state).
    """

    def __init__(self, raw: Path, n: int, num_keypoints: int, smooth: str, cfg: SmoothingConfig):
        from rtkp.export.offline_smoothing import smooth_track

        self.raw, self.k, self.smooth, self.cfg = raw, num_keypoints, smooth, cfg
        self.smoothed = None
        if smooth == "offline":
            pts, xy, vis = [None] * n, np.zeros((n, self.k, 2)), np.zeros((n, self.k), bool)
            for i, (_, kf) in enumerate(read_raw(self.raw)):
                pts[i], xy[i], vis[i] = kf.pts, kf.keypoints, kf.visible
            self.smoothed = smooth_track(pts, xy, vis, cfg)

    def __iter__(self):
        causal = KeypointSmoother(self.k, self.cfg) if self.smooth == "causal" else None
        for i, (t, kf) in enumerate(read_raw(self.raw)):
            if self.smoothed is not None:
                xy, visible, state = (a[i] for a in self.smoothed)
            elif causal is not None:
                xy, visible, state = causal.update(t, kf.keypoints, kf.visible)
            else:
                yield kf
                continue
            yield dataclasses.replace(kf, keypoints=xy, visible=visible, state=state)
