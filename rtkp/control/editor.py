"""Carry control requests out inside the inference stage, between two batches (rtkp.control.server queues them).

The inference stage owns the model and so the keypoint set: a change is made there, the backend gets the new
prototypes (no rebuild: rtkp.model.graph's K_max rows and mask), and a KeypointsChanged message goes to the post stage
on the same queue as the frames, right before the first frame inferred with it, so names and rows never disagree.
Recent frames are kept (their model inputs, which the batch made anyway) so that a request may name one by `seq`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rtkp.control import protocol
from rtkp.control.server import check_inside
from rtkp.errors import ControlError, RtkpError
from rtkp.geometry import Letterbox
from rtkp.messages import KeypointsChanged
from rtkp.teach.keypoint_set import KeypointSet
from rtkp.teach.saved import read_taught, save_keypoint_set
from rtkp.teach.shots import ShotReader, teach, teach_keypoint

HISTORY_FRAMES = 60  # recent frames a request may name by seq or frame index (2 s at 30 fps)


@dataclass(frozen=True)
class Recent:
    """One frame as the model saw it: seq (the keypoints message that will carry it), source frame index, model input
    (h, w, 3) uint8, and the letterbox from its source size."""

    seq: int
    frame: int
    model_input: np.ndarray
    box: Letterbox


class FrameHistory:
    """The last `size` frames, by seq and by frame index. The inference stage numbers its results 1, 2, 3, … in
    the order it sends them; the post stage publishes each result once, in that order, so these numbers are the
    publisher's `seq`."""

    def __init__(self, size: int = HISTORY_FRAMES):
        self.frames: deque[Recent] = deque(maxlen=size)
        self.seq = 0

    def add(self, frame_index: int, model_input: np.ndarray, box: Letterbox) -> None:
        self.seq += 1
        self.frames.append(Recent(self.seq, frame_index, model_input, box))

    def find(self, seq: int | None = None, frame: int | None = None) -> Recent:
        for r in reversed(self.frames):
            if (seq is not None and r.seq == seq) or (frame is not None and r.frame == frame):
                return r
        what = f"seq {seq}" if seq is not None else f"frame {frame}"
        held = f"seq {self.frames[0].seq}..{self.frames[-1].seq}" if self.frames else "none yet"
        raise ControlError("bad_image", f"{what} is not among the recent frames held ({held}); send the image instead")


class KeypointEditor:
    """Applies control requests to the running model. stage: rtkp.tracker.ModelStage; info: its ModelInfo."""

    def __init__(self, stage, info, model_id: str, history: int = HISTORY_FRAMES):
        self.stage, self.info, self.model_id = stage, info, model_id
        self.history = FrameHistory(history)
        self.coke = info.is_coke
        if self.coke:
            taught = read_taught(info.path, info.manifest)
            self.kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter, taught)
            self.reader = ShotReader(stage.backend, int(info.manifest.get("stride", 4)))

    def handle(self, job) -> KeypointsChanged | None:
        """Carry out one job and answer it (job.done); returns the change to send downstream, if any."""
        try:
            change, fields = self._apply(job)
            job.done(protocol.reply(job.request_id, **fields))
            return change
        except ControlError as exc:
            job.done(protocol.error_reply(job.request_id, exc))
        except RtkpError as exc:  # e.g. a backend that cannot run the batch: this request fails, the run goes on
            job.done(protocol.error_reply(job.request_id, ControlError("failed", str(exc))))
        except Exception as exc:  # a bug must cost one request, not the run
            job.done(protocol.error_reply(job.request_id, ControlError("failed", f"internal error: {exc!r:.200}")))
        return None

    def _apply(self, job) -> tuple[KeypointsChanged | None, dict]:
        r = job.request
        if isinstance(r, protocol.List):
            return None, self._listing()
        if not self.coke:
            raise ControlError("unsupported", "this is a heatmap model: it has no prototypes to add keypoints to")
        before = list(self.kset.names)
        if isinstance(r, protocol.Save):
            path = save_keypoint_set(self.info.path, self.info.manifest, self.kset, r.out, r.overwrite)
            return None, {"path": str(path.resolve()), "keypoints": list(self.kset.names)}
        fields: dict = {}
        if isinstance(r, protocol.Add):
            images, points = self._shots(r, job.images)
            k, lesson = teach_keypoint(self.kset, self.reader, r.name, images, points, "live", r.extend)
            fields = {"name": r.name, "index": k, "shots": self.kset.taught[r.name].shots, "margin": lesson.margin}
            fields.update(visible_evidence=lesson.visible, lookalike_evidence=lesson.lookalike)
            if lesson.warning:
                fields["warning"] = lesson.warning
        elif isinstance(r, protocol.Remove):
            if r.shot:
                self._drop_shot(r.name)
                fields = {"name": r.name, "shots": self.kset.taught[r.name].shots}
            else:
                self.kset.remove(r.name)
                fields = {"name": r.name}
        elif isinstance(r, protocol.Rename):
            self.kset.rename(r.name, r.to)
            fields = {"name": r.to, "was": r.name}
            before[before.index(r.name)] = r.to  # the same row under its new name
        change = self._commit(before)
        return change, dict(fields, bank=change.bank_version, keypoints=list(self.kset.names))

    def _drop_shot(self, name: str) -> None:
        self.kset.index(name)
        taught = self.kset.taught.get(name)
        if taught is None or taught.shots < 2:
            raise ControlError("bad_request", f"{name!r} has no shot to spare (remove the keypoint instead)")
        rest = taught.minus_last()
        lesson = teach(rest, self.kset.clutter)
        self.kset.update(name, lesson.prototype, lesson.margin, rest)

    def _commit(self, before: list[str]) -> KeypointsChanged:
        """Give the backend the set's prototypes and describe the change for the post stage."""
        version = self.stage.set_prototypes(self.kset.prototypes, self.kset.clutter)
        row = {name: k for k, name in enumerate(before)}
        return KeypointsChanged(
            version,
            tuple(self.kset.names),
            self.kset.margins.copy(),
            tuple(row.get(n, -1) for n in self.kset.names),
            tuple(self.kset.skeleton),
            self.kset.shots(),
        )

    def _shots(self, r: protocol.Add, images: list) -> tuple[list[np.ndarray], np.ndarray]:
        """The samples as model inputs and model-input points (checked to lie on their images)."""
        size = self.info.input_size
        inputs, points = [], []
        for s, image in zip(r.samples, images):
            if image is not None:
                box = Letterbox.fit((image.shape[1], image.shape[0]), size)
                inputs.append(box.apply(image))
            else:
                recent = self.history.find(s.seq, s.frame)
                box = recent.box
                check_inside(s.x, s.y, box.src_size, f"frame {recent.frame} (seq {recent.seq})")
                inputs.append(recent.model_input)
            points.append(box.to_model(np.array([s.x, s.y], np.float32)))
        return inputs, np.stack(points)

    def _listing(self) -> dict:
        if not self.coke:
            names = list(self.info.manifest["keypoint_names"])
            keypoints = [{"name": n, "index": k, "added": False} for k, n in enumerate(names)]
            return {"keypoints": keypoints, "max_keypoints": len(names), "bank": self.stage.bank_version}
        return {
            "keypoints": self.kset.describe(),
            "max_keypoints": self.kset.k_max,
            "bank": self.stage.bank_version,
            "model": self.model_id,
            "input_size": list(self.info.input_size),
        }
