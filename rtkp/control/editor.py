"""Carry control requests out inside the inference process, between two batches (rtkp.control.server queues them).

The inference process runs the whole Tracker and so owns the keypoint set: a change is made there, at once for the
graph (new prototypes, no rebuild: rtkp.model.graph's K_max rows and mask) and for the reading of its rows (names,
visibility margins, smoothing tracks) — `Tracker.change_keypoints`. A KeypointsChanged message then goes to the post
process on the same queue as the finished frames, right before the first frame tracked with it, so the sinks (the
publisher's `.meta`) learn the new names before any keypoints that have them. The Tracker keeps the recent frames
(their model inputs, which the batch made anyway), so that a request may name one by `seq`; the editor reaches the
model only through the Tracker's interface.
"""

from __future__ import annotations

import numpy as np

from rtkp.control import protocol
from rtkp.control.server import check_inside
from rtkp.errors import ControlError, RtkpError
from rtkp.geometry import Letterbox
from rtkp.messages import KeypointsChanged
from rtkp.teach.keypoint_set import KeypointSet
from rtkp.teach.saved import read_taught, save_keypoint_set
from rtkp.teach.shots import ShotReader, teach, teach_keypoint

HISTORY_FRAMES = 60  # recent frames a request may name by seq or frame index (2 s at 30 fps): Tracker(history=)


class KeypointEditor:
    """Applies control requests to the running model. tracker: rtkp.tracker.Tracker (built with history=
    HISTORY_FRAMES), used only through its interface: shot_maps, change_keypoints, bank_version, recent; info: its
    ModelInfo."""

    def __init__(self, tracker, info, model_id: str):
        self.tracker, self.info, self.model_id = tracker, info, model_id
        self.coke = info.is_coke
        if self.coke:
            taught = read_taught(info.path, info.manifest)
            self.kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter, taught)
            self.reader = ShotReader.for_model(tracker, info.manifest)

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
            fields.update(placement=lesson.placement())
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
        lesson = teach(rest, self.kset.clutter, self.reader.stride, self.kset.ring_rows(), self.kset.reach_rows())
        self.kset.update(name, lesson.prototype, lesson.margin, rest)

    def _commit(self, before: list[str]) -> KeypointsChanged:
        """Give the Tracker the set (bank, names, margins, the rows that stay) and tell the post process."""
        row = {name: k for k, name in enumerate(before)}
        previous = [row.get(n, -1) for n in self.kset.names]
        k = self.kset
        version = self.tracker.change_keypoints(k.prototypes, k.clutter, list(k.names), k.margins.copy(), previous)
        return KeypointsChanged(version, tuple(k.names), tuple(k.skeleton), k.shots())

    def _shots(self, r: protocol.Add, images: list) -> tuple[list[np.ndarray], np.ndarray]:
        """The samples as model inputs and model-input points (checked to lie on their images)."""
        size = self.info.input_size
        inputs, points = [], []
        for s, image in zip(r.samples, images):
            if image is not None:
                box = Letterbox.fit((image.shape[1], image.shape[0]), size)
                inputs.append(box.apply(image))
            else:
                recent = self.tracker.recent(s.seq, s.frame)
                box = recent.box
                check_inside(s.x, s.y, box.src_size, f"frame {recent.frame} (seq {recent.seq})")
                inputs.append(recent.model_input)
            points.append(box.to_model(np.array([s.x, s.y], np.float32)))
        return inputs, np.stack(points)

    def _listing(self) -> dict:
        if not self.coke:
            names = list(self.info.manifest.keypoint_names)
            keypoints = [{"name": n, "index": k, "added": False} for k, n in enumerate(names)]
            return {"keypoints": keypoints, "max_keypoints": len(names), "bank": self.tracker.bank_version}
        return {
            "keypoints": self.kset.describe(),
            "max_keypoints": self.kset.k_max,
            "bank": self.tracker.bank_version,
            "model": self.model_id,
            "input_size": list(self.info.input_size),
        }
