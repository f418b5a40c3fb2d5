"""Records on their way to disk: the raw record, the writer that streams records into a partial folder, and the
published records read back (smoothed) when an export finishes.

The raw record is the one serialisation that resume and chunks keep: a measurement at full precision, so that
smoothing, the formats not written live and the annotated video can be built from it at the end, byte for byte as if
they had been written while tracking.

A multi-instance model's raw record (RecordWriter(multi_instance=True)) also holds every instance under "inst": track,
score and per keypoint x, y, score, visible, state; a record without "inst" (a single-instance model's, as ever, or one
written before instances existed) reads back as one instance, track 0, of the frame's own arrays.
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
from rtkp.export.instances import CausalTracks, moved, with_instances
from rtkp.messages import Instance, KeypointFrame
from rtkp.smoothing import MEASURED, MISSING, SteadyClock

FLUSH_S = 0.2  # how often the bodies reach the disk: what a crash can lose, and what a reader waits at most


def smoother_time(kf: KeypointFrame) -> float | None:
    """The time the smoother gets for a frame: its PTS, None when the source has none (as rtkp.tracker.KeypointStage
    gives it; rtkp.smoothing.SteadyClock makes that one nominal step, never the moment the frame was read)."""
    return kf.pts


def raw_line(kf: KeypointFrame, multi_instance: bool = False) -> str:
    """A measurement as one JSON line, exactly: float32 values go through Python floats, whose repr round-trips.
    multi_instance: also every instance, under "inst" (module docstring)."""
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
    if multi_instance:
        rec["inst"] = [
            {
                "track": int(inst.track),
                "score": float(inst.score),
                "xy": np.asarray(inst.keypoints, np.float32).ravel().tolist(),
                "s": np.asarray(inst.scores, np.float32).tolist(),
                "v": np.asarray(inst.visible).astype(np.uint8).tolist(),
                "state": np.asarray(inst.state).astype(np.uint8).tolist(),
            }
            for inst in kf.instances
        ]
    return json.dumps(rec) + "\n"


def _instance(r: dict) -> Instance:
    xy = np.array(r["xy"], np.float32).reshape(-1, 2)
    scores, visible = np.array(r["s"], np.float32), np.array(r["v"], bool)
    return Instance(r["track"], r["score"], xy, scores, visible, np.array(r["state"], np.uint8))


def read_raw(path: Path):
    """(t, KeypointFrame) per line of a raw body; keypoints (K, 2) float32, state MEASURED/MISSING as tracked.
    A record with instances ("inst") keeps them, each with its state as tracked, and the frame's arrays are its
    first instance's (rtkp.messages.KeypointFrame); one without is a single instance of the frame's arrays."""
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            visible = np.array(r["v"], bool)
            state = np.where(visible, MEASURED, MISSING).astype(np.uint8)
            xy = np.array(r["xy"], np.float32).reshape(-1, 2)
            scores = np.array(r["s"], np.float32)
            size = tuple(r["size"])
            instances = None
            if "inst" in r:
                instances = tuple(_instance(i) for i in r["inst"])
                if instances:
                    first = instances[0]
                    xy, scores, visible, state = first.keypoints, first.scores, first.visible, first.state
            kf = KeypointFrame(r["i"], r["pts"], 0, size, xy, scores, visible, state, name=r["name"])
            yield r["t"], kf if instances is None else dataclasses.replace(kf, instances=instances)


def track_ids(path: Path) -> list[int]:
    """Every track id in a raw body, in increasing order ([0] for a single-instance model's records)."""
    return sorted({inst.track for _, kf in read_raw(path) for inst in kf.instances})


class RecordWriter:
    """Appends each frame's record to every body of a partial folder, then its index to the ledger; flushes every
    FLUSH_S. A context manager: leaving it flushes and closes (ExportFailed when a write failed).

    bodies: raw, jsonl, csv, coco (rtkp.export.partial); names: the keypoint names; scorer: the CSV's scorer row;
    source: the input, as COCO names its frames; first_number: the COCO id of the first record written (records
    already in the folder + 1); multi_instance: the model finds several animals per frame (manifest.multi_instance):
    the raw record keeps every instance and COCO writes one annotation per instance (a multi-instance CSV cannot be
    streamed: its header needs every track id, formats.multi_csv_lines). A write that fails (a full disk) raises
    ExportFailed at once and the writer writes nothing more, so the ledger never gets ahead of a body that missed a
    record.
    """

    def __init__(
        self,
        folder: Path,
        bodies,
        names: list[str],
        scorer: str = "",
        source: str = "",
        first_number=1,
        multi_instance: bool = False,
    ):
        self.folder, self.bodies, self.names, self.source = Path(folder), tuple(bodies), names, source
        self.multi_instance = multi_instance
        if multi_instance and "csv" in self.bodies:
            raise ValueError("a multi-instance CSV is built at the end (formats.multi_csv_lines), not streamed")
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
            "raw": lambda: raw_line(kf, self.multi_instance),
            "jsonl": lambda: jsonl_line(kf, self.names),
            "csv": lambda: csv_line(kf, self.names),
            "coco": lambda: coco_line(kf, self.number, self.names, self.source, self.multi_instance),
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
    the first, as the tracker runs it live) or offline (smoothed here, once, over the whole track). Both smooth each
    track on its own (rtkp.export.instances.CausalTracks, rtkp.export.offline_smoothing.smooth_by_track), never across
    tracks; a single-instance model's records are one track. Offline holds arrays, never frames: about 350 bytes per
    keypoint per instance while rts_smooth runs (float64 means and covariances: 36 values per keypoint and frame, plus
    inputs and outputs), e.g. one animal of 12 keypoints over an hour at 30 fps: 450 MB; afterwards 10 bytes per
    keypoint per instance (xy float32, visible, state).
    """

    def __init__(self, raw: Path, n: int, num_keypoints: int, smooth: str, cfg: SmoothingConfig):
        from rtkp.export.offline_smoothing import smooth_by_track

        self.raw, self.k, self.smooth, self.cfg = raw, num_keypoints, smooth, cfg
        self.smoothed = self.first_row = None
        if smooth == "offline":
            clock, times, first_row = SteadyClock(), np.zeros(n), np.zeros(n + 1, np.int64)
            rows, tracks, xy, vis = [], [], [], []
            for i, (_, kf) in enumerate(read_raw(self.raw)):
                times[i], first_row[i + 1] = clock(kf.pts), first_row[i] + len(kf.instances)
                rows += [i] * len(kf.instances)
                tracks += [inst.track for inst in kf.instances]
                xy += [inst.keypoints for inst in kf.instances]
                vis += [inst.visible for inst in kf.instances]
            xy_m = np.array(xy, np.float64).reshape(-1, self.k, 2)
            vis_m = np.array(vis, bool).reshape(-1, self.k)
            del xy, vis
            self.smoothed = smooth_by_track(times, np.array(rows), np.array(tracks), xy_m, vis_m, cfg)
            self.first_row = first_row

    def __iter__(self):
        causal = CausalTracks(self.k, self.cfg) if self.smooth == "causal" else None
        for i, (t, kf) in enumerate(read_raw(self.raw)):
            if self.smoothed is not None:
                rows = range(self.first_row[i], self.first_row[i + 1])
                out = (moved(inst, *(a[m] for a in self.smoothed)) for inst, m in zip(kf.instances, rows))
                yield with_instances(kf, out)
            elif causal is not None:
                yield causal.update(t, kf)
            else:
                yield kf
