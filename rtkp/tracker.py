"""The synchronous Tracker: the single definition of what a frame becomes.

    letterbox → graph (through a backend) → keypoints in source pixels → visibility → smoothing → KeypointFrame
    └──────────── ModelStage ───────────┘   └──────────────── KeypointStage ──────────────────┘

Every caller runs the whole Tracker in one process: `rtkp eval`, `rtkp bench`'s naive loop, `rtkp export` and tests
through `process` / `process_batch`; the multi-process runner's inference process through `prepare` then `track` (the
same two steps `process_batch` takes, split so the frames' ring slots may go back in between). So the keypoint state
(the bank the graph runs with, the names and margins its rows are read with, the smoothing tracks, recent model
inputs a control request may name) lives in one object, and a change of keypoints (`change_keypoints`) reaches the
graph and the reading of its rows at once. The two stages are its parts; tools that replay stored graph rows use
them apart.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from rtkp.errors import ControlError
from rtkp.follow import Follower, Window
from rtkp.geometry import Letterbox
from rtkp.instances.stage import InstanceStage, check_max_instances
from rtkp.manifest import Manifest
from rtkp.messages import Frame, KeypointFrame, ModelResult, missing_keypoints
from rtkp.smoothing import KeypointSmoother, SmoothingConfig
from rtkp.visibility import manifest_margin, visible


class KeypointMapper:
    """The graph's (K, 4) rows in model-input pixels → source-pixel keypoints, scores and the visibility rule.

    The visibility rule is rtkp.visibility's, with the manifest's margin.
    """

    def __init__(self, manifest: Manifest):
        self.margin = manifest_margin(manifest)
        self.input_size = tuple(manifest.input_size)
        self._boxes: dict[tuple[int, int], Letterbox] = {}

    def letterbox(self, size: tuple[int, int]) -> Letterbox:
        """Cached Letterbox for a source size (w, h)."""
        if size not in self._boxes:
            self._boxes[size] = Letterbox.fit(size, self.input_size)
        return self._boxes[size]

    def __call__(self, rows: np.ndarray, size: tuple[int, int]):
        """rows: (K, 4) -> (keypoints (K, 2) source px, scores (K,), visible (K,))."""
        xy = self.letterbox(size).to_source(rows[:, :2])
        return xy, rows[:, 2].astype(np.float32), visible(rows, self.margin)


@dataclass(frozen=True)
class RecentInput:
    """One frame as the model saw it: seq (its place among the stage's results, 1, 2, 3, …), source frame index,
    model input (h, w, 3) uint8, and the letterbox from its source size."""

    seq: int
    frame: int
    model_input: np.ndarray
    box: Letterbox


@dataclass(frozen=True)
class ModelBatch:
    """B frames made ready for one graph call: inputs (B, h, w, 3) uint8 — a copy, so the frames' pixels may be reused
    once it exists; frames: their metadata (`image` None); sizes: (W, H) each; preprocess_ms: (B,) per frame;
    dropped: (B,) frames the live policy skipped before each (KeypointFrame.dropped)."""

    inputs: np.ndarray
    frames: list[Frame]
    sizes: list[tuple[int, int]]
    preprocess_ms: list[float]
    dropped: list[int]


class ModelStage:
    """Frames → ModelResults: the letterbox and the backend (the first half of the Tracker).

    It owns the keypoint bank the graph runs with (`set_prototypes`, `bank_version`) and, with `history` > 0, the
    last `history` model inputs, so that a control request may name a recent frame (`recent`) to teach a keypoint
    on; `shot_maps` reads what teaching needs from shots (features, centre votes). The control editor uses only these.

    follow: consecutive frames of one video or camera, so the graph may look only where the animal is (rtkp.follow):
    on when the manifest has a `crop_size` and the backend runs on the CPU (on a GPU the whole frame costs about a
    millisecond, and a window that misses would cost a second pass). `follower` is then the Follower (its `stats`
    count the windows and whole-input looks), else None.
    """

    def __init__(self, backend, manifest: Manifest, history: int = 0, follow: bool = False):
        self._backend = backend
        self.mapper = KeypointMapper(manifest)
        self.follower: Follower | None = None
        self._window_backend = None
        if follow and following_applies(backend, manifest):
            self._window_backend = backend.resized(manifest.crop_size)
            self.follower = Follower(manifest.input_size, manifest.crop_size, self.mapper.margin)
        self.bank_version = 0  # bumped whenever the prototypes change (set_prototypes)
        self._recent: deque[RecentInput] = deque(maxlen=history)
        self._results = 0  # ModelResults made so far: the seq of the last one

    @property
    def backend_name(self) -> str:
        """The backend's name (it says the precision too)."""
        return self._backend.name

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 model input (the image itself when nothing changes)."""
        return self.mapper.letterbox((image.shape[1], image.shape[0])).apply(image)

    def prepare(self, frames: list[Frame], dropped: list[int] | None = None) -> ModelBatch:
        """(B,) Frames -> their model inputs, stacked (a copy: frames in shared memory may go back after this).
        dropped: (B,) frames the live policy skipped before each (none by default)."""
        inputs, ms = [], []
        for frame in frames:
            t0 = time.perf_counter()
            inputs.append(self.preprocess(frame.image))
            ms.append((time.perf_counter() - t0) * 1e3)
        sizes = [(f.image.shape[1], f.image.shape[0]) for f in frames]
        metadata = [dataclasses.replace(f, image=None) for f in frames]
        return ModelBatch(np.stack(inputs), metadata, sizes, ms, list(dropped or [0] * len(frames)))

    def run(self, batch: ModelBatch | list[Frame]) -> list[ModelResult]:
        """One graph call for a batch (or for frames, prepared first): (B,) -> (B,) ModelResults, in order.

        timings_ms of each: decode (the frame's), preprocess (its own), inference (the batch's), batch (B)."""
        if not isinstance(batch, ModelBatch):
            batch = self.prepare(batch)
        t0 = time.perf_counter()
        following = self.follower is not None and self.follower.enabled
        rows = self._follow(batch.inputs, batch.frames) if following else self.infer(batch.inputs)
        infer_ms = (time.perf_counter() - t0) * 1e3
        out = []
        for i, (frame, size, r) in enumerate(zip(batch.frames, batch.sizes, rows)):
            timings = {
                "decode": frame.decode_ms,
                "preprocess": batch.preprocess_ms[i],
                "inference": infer_ms,
                "batch": len(batch.frames),
            }
            out.append(ModelResult(frame, size, r, timings, batch.dropped[i], self.bank_version))
            self._results += 1
            if self._recent.maxlen:
                # a view into the batch (no copy): a request may name this frame by seq for a while
                self._recent.append(
                    RecentInput(self._results, frame.index, batch.inputs[i], self.mapper.letterbox(size))
                )
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, K, 4)."""
        return self._backend.infer(batch)

    def new_sequence(self, consecutive: bool) -> None:
        """Frames of another input (or another chunk of one) come next: a Tracker that follows the animal forgets
        it; consecutive: they are frames of a video or camera (False: unrelated images, each run on the whole
        input)."""
        if self.follower is not None:
            self.follower.reset()
            self.follower.enabled = consecutive

    def _follow(self, inputs: np.ndarray, frames: list[Frame]) -> np.ndarray:
        """`infer` frame by frame through the Follower: each frame's graph looks at the window the previous frame's
        keypoints give, or at the whole input (rtkp.follow). (B, h, w, 3) -> (B, K, 4) in model-input px."""
        rows = []
        for image, frame in zip(inputs, frames):
            window: Window | None = self.follower.window(frame.index)
            if window is not None:
                found = window.to_input(self._window_backend.infer(window.cut(image)[None])[0])
                if self.follower.accept(found, window):
                    self.follower.update(found, whole=False)
                    rows.append(found)
                    continue
            found = self._backend.infer(image[None])[0]
            self.follower.update(found, whole=True, rejected=window is not None)
            rows.append(found)
        return np.stack(rows)

    def shot_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, h, w, 3) uint8 model inputs -> what teaching reads from them (Backend.shot_maps)."""
        return self._backend.shot_maps(images)

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> int:
        """Swap the keypoint bank, (K, W) for any K up to the graph's K_max, without rebuilding anything; returns the
        new bank version. Rows of every later `infer` follow the new prototypes."""
        self._backend.set_prototypes(prototypes, clutter)
        if self._window_backend is not None:
            self._window_backend.set_prototypes(prototypes, clutter)
        self.bank_version += 1
        return self.bank_version

    def recent(self, seq: int | None = None, frame: int | None = None) -> RecentInput:
        """The recent frame with this seq (or source frame index); ControlError when it is no longer held."""
        for r in reversed(self._recent):
            if (seq is not None and r.seq == seq) or (frame is not None and r.frame == frame):
                return r
        what = f"seq {seq}" if seq is not None else f"frame {frame}"
        held = f"seq {self._recent[0].seq}..{self._recent[-1].seq}" if self._recent else "none yet"
        raise ControlError("bad_image", f"{what} is not among the recent frames held ({held}); send the image instead")

    def close(self) -> None:
        self._backend.close()
        if self._window_backend is not None:
            self._window_backend.close()


def following_applies(backend, manifest: Manifest) -> bool:
    """Whether a Tracker built with follow=True follows the animal with a window (ModelStage): the manifest names a
    `crop_size` smaller than its input, and the backend runs on the CPU."""
    crop = manifest.crop_size
    if crop is None or crop[0] > manifest.input_size[0] or crop[1] > manifest.input_size[1]:
        return False
    return str(getattr(backend, "device", "cpu")) == "cpu"  # torch and TensorRT hold a torch.device


class KeypointStage:
    """Graph rows → KeypointFrame: source pixels, visibility, smoothing (the second half of the Tracker).

    Stateful (the smoother): call in frame order. A multi-instance model's rows go through an InstanceStage
    (grouping, track ids, a smoother per track); max_instances: how many animals it reports (check_max_instances).
    """

    def __init__(self, manifest: Manifest, smoothing: SmoothingConfig | None = None, max_instances: int | None = None):
        self.mapper = KeypointMapper(manifest)
        self.keypoint_names = list(manifest.keypoint_names)
        smoothing = smoothing or SmoothingConfig(filter="none")
        self.max_instances = check_max_instances(manifest, max_instances)
        self.smoother = KeypointSmoother(len(self.keypoint_names), smoothing)
        self.instances = None
        if manifest.multi_instance:
            self.instances = InstanceStage(manifest, self.mapper.margin, self.max_instances, smoothing)

    def change_keypoints(self, names: list[str], margins: np.ndarray, previous: list[int]) -> None:
        """Read the rows of every later result as these keypoints: names (K,) and visibility margins (K,) are
        replaced; previous (K,): each keypoint's row before, −1 for a new one — a keypoint that stays keeps its
        smoothing track, whatever its new row."""
        self.smoother.remap(previous)
        self.keypoint_names = list(names)
        self.mapper.margin = np.asarray(margins, np.float32)
        if self.instances is not None:
            self.instances.change_keypoints(self.mapper.margin, previous)

    def finish(self, result: ModelResult) -> KeypointFrame:
        if self.instances is not None:
            return self._finish_instances(result)
        t0 = time.perf_counter()
        xy, scores, visible = self.mapper(result.rows, result.source_size)
        t1 = time.perf_counter()
        frame = result.frame
        latency = (time.monotonic_ns() - frame.capture_ns) / 1e9
        xy, visible, state = self.smoother.update(frame.pts, xy, visible, latency)  # no PTS: a nominal step
        t2 = time.perf_counter()
        timings = dict(result.timings_ms, match=(t1 - t0) * 1e3, smooth=(t2 - t1) * 1e3)
        return KeypointFrame(
            frame.index,
            frame.pts,
            frame.capture_ns,
            result.source_size,
            xy,
            scores,
            visible,
            state,
            timings,
            result.dropped,
            frame.name,
            result.bank_version,
        )

    def _finish_instances(self, result: ModelResult) -> KeypointFrame:
        """finish() for a multi-instance model: its animals, and the first one's arrays as the frame's own."""
        t0 = time.perf_counter()
        frame = result.frame
        latency = (time.monotonic_ns() - frame.capture_ns) / 1e9
        box = self.mapper.letterbox(result.source_size)
        instances = self.instances(result.rows, box, frame.pts, latency)
        first = instances[0] if instances else None
        arrays = (
            (first.keypoints, first.scores, first.visible, first.state)
            if first is not None
            else missing_keypoints(len(self.keypoint_names))
        )
        timings = dict(result.timings_ms, match=(time.perf_counter() - t0) * 1e3, smooth=0.0)
        return KeypointFrame(
            frame.index,
            frame.pts,
            frame.capture_ns,
            result.source_size,
            *arrays,
            timings,
            result.dropped,
            frame.name,
            result.bank_version,
            tuple(instances),
        )


class Tracker:
    """Both stages in one object, in the process that runs it. `process(frame)` runs every step for one frame.

    history: how many recent model inputs to keep for control requests that name a frame (`recent`); 0: none.
    max_instances: how many animals a frame may report (--max-instances; None: the model's default, 1 for a
    single-instance model); ConfigError for a number the model cannot give. follow: the frames are consecutive frames
    of one video or camera, so the graph may look only where the animal is (ModelStage, rtkp.follow); never for
    unrelated images.
    """

    def __init__(
        self,
        backend,
        manifest,
        smoothing: SmoothingConfig | None = None,
        history: int = 0,
        max_instances: int | None = None,
        follow: bool = False,
    ):
        self.manifest = manifest
        self.keypoints = KeypointStage(manifest, smoothing, max_instances)
        self.model = ModelStage(backend, manifest, history, follow)

    @property
    def keypoint_names(self) -> list[str]:
        """(K,) the names of the rows of every KeypointFrame made from now on."""
        return self.keypoints.keypoint_names

    @property
    def backend_name(self) -> str:
        return self.model.backend_name

    @property
    def bank_version(self) -> int:
        """The keypoint set's version (the stream's `bank`): bumped by every `change_keypoints`."""
        return self.model.bank_version

    def process(self, frame: Frame) -> KeypointFrame:
        return self.process_batch([frame])[0]

    def process_batch(self, frames: list[Frame]) -> list[KeypointFrame]:
        """`process` for B frames in order, with one graph call for all of them: (B,) Frames -> (B,) KeypointFrames.

        The same numbers as B `process` calls when the backend is batch-invariant (ONNX Runtime on the CPU is:
        tests/test_cluster.py), and the lossless runner batches the same way.
        """
        return self.track(self.prepare(frames))

    def prepare(self, frames: list[Frame], dropped: list[int] | None = None) -> ModelBatch:
        """The letterbox of B frames, copied into one batch (ModelStage.prepare): their pixels may be reused after."""
        return self.model.prepare(frames, dropped)

    def track(self, batch: ModelBatch) -> list[KeypointFrame]:
        """A prepared batch → (B,) KeypointFrames, in order: one graph call, then source pixels, visibility and
        smoothing per frame. timings_ms of each: decode, preprocess, inference (the batch's), batch (B), match,
        smooth."""
        return [self.keypoints.finish(r) for r in self.model.run(batch)]

    def change_keypoints(self, prototypes: np.ndarray, clutter: np.ndarray, names, margins, previous) -> int:
        """A new keypoint set, for every frame tracked from now on: the graph's bank (prototypes (K, W) and clutter,
        K up to the graph's K_max; no rebuild) and the reading of its rows (names (K,), margins (K,); previous (K,):
        each keypoint's row before, −1 for a new one, so a keypoint that stays keeps its smoothing track). Returns
        the new bank version."""
        version = self.model.set_prototypes(prototypes, clutter)
        self.keypoints.change_keypoints(names, margins, previous)
        if self.model.follower is not None:
            self.model.follower.change_keypoints(self.keypoints.mapper.margin)
        return version

    def shot_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, h, w, 3) uint8 model inputs -> what teaching reads from them (ModelStage.shot_maps)."""
        return self.model.shot_maps(images)

    def recent(self, seq: int | None = None, frame: int | None = None) -> RecentInput:
        """A recent model input by seq or source frame index (ModelStage.recent; ControlError when not held)."""
        return self.model.recent(seq, frame)

    def close(self) -> None:
        self.model.close()
