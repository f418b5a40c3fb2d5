"""Teach a keypoint from shots: a few clicked points (image, x, y) become a prototype and a visibility margin.

A prototype is what CoKe matches every frame's features against (rtkp.model.graph), so a keypoint can be added by
reading the features at the clicked points through the same graph the tracker runs (the backend's `features` output)
and averaging them. Each shot is seen in a few views (a full turn of rotations and two scalings about the clicked
point, which stays put), so that the prototype averages over the appearance changes the tracker will meet, like the
training prototypes do over augmented crops. A taught keypoint is matched on the trained features and on generic
ImageNet taps (rtkp.teach.features), kept within a reach of the trained keypoints and at the distances from the
nearest of them that its shots showed (teach, rings).

The margin (a keypoint is visible when score − clutter_score > margin, rtkp.visibility) is set from two evidences,
both measured with the clutter summary exactly as the graph measures them:
  E  visible: the keypoint's own evidence on views it was not taught from: each view against the prototype of the
     other shots (leave one shot out; with a single shot, of the other views of it); the low end (20th percentile)
  H  look-alike: the evidence of the best cell of the shots' frames away from the click (when the keypoint is
     hidden, the peak lands on such a cell)
margin = (E + H) / 2, midway between them, kept within [E/2, 3E/4]. E/2 is the contrastive boundary: midway between
the keypoint and a feature as similar to the clutter as to the prototype; the margin never goes below it. 3E/4 keeps
most of the keypoint's own views visible when a look-alike scores as high as they do: on the DLC mouse, a spot of
the arena 130 cells from the tail base scores 0.16 against a tail-base prototype taught from one shot, whose own
held-out evidence is 0.10, and a midway margin (0.13) hid the keypoint on 75 % of the test frames where it is in view.
Such a look-alike cannot be told from the keypoint in these frames: the lesson says so (`warning`); more shots from
other frames (or a retraining) are the remedy. numpy and OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtkp.errors import ControlError
from rtkp.graphs.prototypes import ANCHOR_EVIDENCE, ANCHOR_SCORE, RING_ANCHORS, RING_FIELDS
from rtkp.teach.features import compose, keypoint_rows, sample_features
from rtkp.teach.keypoint_set import KeypointSet, Taught
from rtkp.visibility import evidence

# (rotation in degrees, scale) of each view of a shot, about the clicked point; the first is the shot itself. A full
# turn in 45° steps: the ImageNet taps a taught keypoint is matched on are not rotation-invariant, and animals turn
# (mouse tail base from 5 shots, validation split: PCK@0.1 0.78 with ±20° views, 0.94 with these; docs/FEWSHOT.md).
VIEWS = tuple((float(a), 1.0) for a in range(0, 360, 45)) + ((0.0, 0.85), (0.0, 1.2))
LOOKALIKES = 16  # strongest other cells kept per shot (enough to recompute the look-alike after more shots)
EXCLUDE_CELLS = 3.0  # cells this close to the click are the keypoint itself, not look-alikes
VISIBLE_QUANTILE = 0.2
# reach = REACH_FACTOR × the farthest shot's distance from its click to the nearest trained keypoint + REACH_PAD_CELLS
REACH_FACTOR = 1.5
REACH_PAD_CELLS = 4
# a ring's tolerance = RING_SLACK × its distance + RING_PAD_CELLS cells + half the shots' spread (rings); set
# beforehand, not tuned: the mouse bends (ear to tail base varies by ~20 % between frames) and peaks sit on a grid
RING_SLACK = 0.25
RING_PAD_CELLS = 1
# a side is kept when the keypoint lies at least this far off its axis in every shot (sine of the angle at a: ~12°);
# set beforehand, not tuned: nearer the line, a bent animal may cross it
SIDE_MIN_SIN = 0.2


@dataclass(frozen=True)
class Lesson:
    """A taught keypoint: prototype (W,) its row (rtkp.graphs.prototypes: trained and generic parts, then its reach
    and rings); margin; visible and lookalike evidence (see the module docstring); warning: a sentence when the two do
    not separate, else None; reach: model-input px (0: anywhere); rings: see `rings`."""

    prototype: np.ndarray
    margin: float
    visible: float
    lookalike: float
    warning: str | None = None
    reach: float = 0.0
    rings: tuple[tuple[str, float, float], ...] = ()  # (anchor name, distance px, tolerance px) of each ring
    side: tuple[str, str, int] | None = None  # (from, to, ±1): the side of the line from → to it keeps to

    def placement(self) -> dict:
        """Where the keypoint may be found, as replies give it: {"reach_px", "rings": [{"anchor", "distance_px",
        "tolerance_px"}], "side": {"from", "to", "sign"} or None} (model-input px at the shots' scale; sign +1: the
        side where (to − from) × (point − from) > 0 in image coordinates, y down: to the right of from → to)."""
        rings = [{"anchor": a, "distance_px": d, "tolerance_px": t} for a, d, t in self.rings]
        side = None if self.side is None else dict(zip(("from", "to", "sign"), self.side))
        return {"reach_px": self.reach, "rings": rings, "side": side}


def shot_views(image: np.ndarray, point, views=VIEWS, pad_value: int = 114) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 model input and a point (x, y) -> (views (V, H, W, 3) uint8, points (V, 2) float32).

    Each view rotates and scales the image about the point, so the point is the same pixel in every view; uncovered
    corners get the letterbox's padding grey.
    """
    import cv2

    h, w = image.shape[:2]
    x, y = float(point[0]), float(point[1])
    out = []
    for angle, scale in views:
        if angle == 0 and scale == 1:
            out.append(image)
            continue
        m = cv2.getRotationMatrix2D((x, y), angle, scale)
        out.append(
            cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(pad_value,) * 3)  # type: ignore
        )
    return np.stack(out), np.tile(np.array([[x, y]], np.float32), (len(views), 1))


def lookalikes(
    features: np.ndarray,
    point,
    prototype: np.ndarray,
    clutter: np.ndarray,
    stride: int,
    m: int = LOOKALIKES,
    exclude_cells: float = EXCLUDE_CELLS,
) -> np.ndarray:
    """The m strongest cells of one frame's features (W, h, w) for `prototype`, away from the clicked point (model
    px): (m, W) features (fewer when the map is smaller)."""
    d, h, w = features.shape
    flat = features.reshape(d, h * w).T  # (h·w, D)
    ev = evidence(keypoint_rows(flat, prototype, clutter))
    gy, gx = np.divmod(np.arange(h * w), w)
    cx, cy = (float(point[0]) + 0.5) / stride - 0.5, (float(point[1]) + 0.5) / stride - 0.5
    ev[(gx - cx) ** 2 + (gy - cy) ** 2 <= exclude_cells**2] = -np.inf
    order = np.argsort(-ev)[: min(m, int(np.isfinite(ev).sum()))]
    return flat[order].astype(np.float32)


def anchor_offsets(
    features: np.ndarray,
    point,
    trained: np.ndarray | None,
    stride: int,
    clutter: np.ndarray | None = None,
    peaks: int = 1,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """(T, 2) model px from `point` to each trained keypoint found in this frame, as the graph finds them
    (rtkp.model.generic.placement_penalty): the `peaks` best local maxima (3 × 3) of each (T, D) prototype in the
    (D, h, w) features (several animals: one per animal), those reaching ANCHOR_SCORE and (given the (S, D) clutter
    summary) evidence ANCHOR_EVIDENCE, and of these the clicked animal's; NaN where none.

    The clicked animal's: given the centre head's (2, h, w) offsets (input px, rtkp.model.graph `centres`), the peak
    whose centre vote lies nearest the click's own vote (the peaks of one animal and the click on it point to the same
    centre, as the instance stage groups peaks); without them, the peak nearest the click. On the two flies, 40 shots
    per keypoint spread over the training frames, read against their labels: the nearest peak was the other fly's in
    38 / 42 / 36 of 200 offsets (left eye, wing tip, mid-leg tip; flies side by side), the vote's in none
    (tools/shot_offsets.py)."""
    if trained is None or not len(trained):
        return np.zeros((0, 2), np.float32)
    d, h, w = features.shape
    flat = features.reshape(d, h * w)
    sim = np.asarray(trained, np.float32) @ flat  # (T, h·w)
    padded = np.pad(sim.reshape(-1, h, w), ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    around = np.max([padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)
    ranked = np.where(sim >= around.reshape(-1, h * w), sim, sim - 4.0)
    best = np.argsort(-ranked, axis=1, kind="stable")[:, :peaks]  # (T, P)
    score = np.take_along_axis(sim, best, 1)
    found = score >= ANCHOR_SCORE
    if clutter is not None:
        at = flat[:, best.ravel()]  # (D, T·P)
        found &= score - (np.asarray(clutter, np.float32) @ at).max(0).reshape(best.shape) >= ANCHOR_EVIDENCE
    cy, cx = np.divmod(best, w)
    xy = np.stack([(cx + 0.5) * stride - 0.5, (cy + 0.5) * stride - 0.5], -1) - np.asarray(point, np.float64)
    apart = xy  # (T, P, 2) from the click to each peak
    if centres is not None and peaks > 1:
        # each peak's vote against the click's, both taken at their cells (the click's: the cell it falls in)
        gx, gy = (np.asarray(point, np.float64) + 0.5) / stride - 0.5
        ci, cj = int(np.clip(round(gy), 0, h - 1)), int(np.clip(round(gx), 0, w - 1))
        apart = xy + np.moveaxis(centres[:, cy, cx], 0, -1) - centres[:, ci, cj]
    dist = np.where(found, np.linalg.norm(apart, axis=-1), np.inf)  # (T, P)
    nearest = dist.argmin(1)
    xy = xy[np.arange(len(xy)), nearest]
    return np.where(found.any(1)[:, None], xy, np.nan).astype(np.float32)


def rings(taught: Taught, rows: dict[str, int] | None, stride: int) -> tuple[list, tuple[int, int, float, float]]:
    """The taught keypoint's rings and axis (rtkp.graphs.prototypes).

    Rings: [(anchor name, row, distance px, tolerance px)] for the RING_ANCHORS trained keypoints nearest to it on
    average among those found in at least half of its shots and in use (`rows`: {name: row}); tolerance =
    RING_SLACK × distance (the animal bends and turns) + RING_PAD_CELLS cells (the peaks' grid) + half the spread of
    the shots' distances. Axis: (row a, row b, distance px, side) of the two ring anchors farthest apart on average in
    the shots that found both (the longest bar measures the animal's size best on the peaks' grid), and the side of
    the line a → b the keypoint lies on in every such shot, at least SIDE_MIN_SIN off it (0: not in all);
    (0, 0, 0.0, 0.0) with fewer than two rings."""
    offsets, names = taught.anchor_offsets()
    table, _ = taught.anchor_table()
    out = []
    for j, name in enumerate(names):
        seen = table[np.isfinite(table[:, j]), j]
        if name not in (rows or {}) or not len(seen) or 2 * len(seen) < len(table):
            continue
        centre = float(seen.mean())
        tolerance = RING_SLACK * centre + RING_PAD_CELLS * stride + float(np.ptp(seen)) / 2
        out.append((j, name, rows[name], centre, tolerance))
    out = sorted(out, key=lambda r: r[3])[:RING_ANCHORS]
    axis = (0, 0, 0.0, 0.0)
    for i, first in enumerate(out):
        for second in out[i + 1 :]:
            a, b = offsets[:, first[0]], offsets[:, second[0]]  # (N, 2) from the click to each
            both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
            if not both.any() or float(np.linalg.norm(a - b, axis=1)[both].mean()) <= axis[2]:
                continue
            a, b = a[both].astype(np.float64), b[both].astype(np.float64)
            # sine of the angle at a between a → b and a → the click: (b − a) × (click − a) / lengths
            cross = (b[:, 0] - a[:, 0]) * -a[:, 1] - (b[:, 1] - a[:, 1]) * -a[:, 0]
            sine = cross / np.maximum(np.linalg.norm(b - a, axis=1) * np.linalg.norm(a, axis=1), 1e-9)
            side = (
                float(np.sign(sine[0]))
                if (np.abs(sine) >= SIDE_MIN_SIN).all() and len(set(np.sign(sine))) == 1
                else 0.0
            )
            axis = (first[2], second[2], float(np.linalg.norm(a - b, axis=1).mean()), side)
    return [r[1:] for r in out], axis


def teach(
    taught: Taught,
    clutter: np.ndarray,
    stride: int = 4,
    rows: dict[str, int] | None = None,
    reach_from: dict[str, int] | None = None,
) -> Lesson:
    """The prototype, margin, reach and rings of a keypoint taught from these shots (see the module docstring);
    stride: the features' (the reach's margin is REACH_PAD_CELLS of them); rows: {name: row} of the trained keypoints
    in use that its rings may anchor on (KeypointSet.ring_rows; None or empty: no rings); reach_from: those its reach
    is measured from (KeypointSet.reach_rows; None: every trained keypoint found in the shots)."""
    views = taught.views.astype(np.float64)  # (N, V, W)
    n, v, _ = views.shape
    d = clutter.shape[1]
    prototype = compose(views.reshape(n * v, -1).sum(0), d)
    total = views.sum((0, 1))
    if n >= 2:
        held_out = compose(total[None] - views.sum(1), d)[:, None]  # (N, 1, W): the prototype of the other shots
    elif v >= 2:
        held_out = compose(total[None] - views[0], d)[None]  # (1, V, W): the prototype of the other views
    else:
        held_out = views  # one view of one shot: nothing held out; its self-similarity (optimistic)
    visible_ev = evidence(keypoint_rows(views, held_out, clutter))  # (N, V)
    visible = float(np.quantile(visible_ev, VISIBLE_QUANTILE))
    looks = taught.lookalikes.reshape(-1, views.shape[-1])
    lookalike = float(evidence(keypoint_rows(looks, prototype, clutter)).max()) if len(looks) else -1.0
    if visible > 0:
        margin = min(max((visible + lookalike) / 2, visible / 2), 0.75 * visible)
    else:
        margin = visible  # no better than the clutter on its own views: the keypoint shows where it scores best
    reach, kept = 0.0, []
    if views.shape[-1] > d:  # with generic parts: the row carries its reach and rings (rtkp.graphs.prototypes)
        nearest = taught.nearest_anchor(tuple(reach_from) if reach_from else None)
        if np.isfinite(nearest).any():
            reach = float(REACH_FACTOR * np.nanmax(nearest) + REACH_PAD_CELLS * stride)
        kept, axis = rings(taught, rows, stride)
        fields = np.zeros((RING_ANCHORS, RING_FIELDS))
        for i, (_, row, centre, tolerance) in enumerate(kept):
            fields[i] = row, centre, tolerance
        prototype = np.concatenate([prototype, [reach], fields.ravel(), axis])
    warning = None
    if visible <= 0:
        warning = f"the keypoint's own evidence is {visible:.2f}: its features are no closer to it than to the clutter"
    elif lookalike >= visible:
        warning = (
            f"a look-alike in the shots' frames scores as high as the keypoint (evidence {lookalike:.2f} against "
            f"{visible:.2f}): it may be reported hidden or found on the look-alike; add shots from other frames"
        )
    named = {row: name for name, row in (rows or {}).items()}
    side = (named[axis[0]], named[axis[1]], int(axis[3])) if kept and axis[3] else None
    kept = tuple((name, round(centre, 2), round(tol, 2)) for name, _, centre, tol in kept)
    return Lesson(
        prototype.astype(np.float32),
        round(margin, 5),
        round(visible, 5),
        round(lookalike, 5),
        warning,
        round(reach, 2),
        kept,
        side,
    )


class ShotReader:
    """Shots through a backend: model-input images and points -> Taught (views' and look-alikes' features).

    backend: anything with `features(images (B, h, w, 3) uint8, generic) -> (B, W, h/s, w/s)` (rtkp.backends);
    stride: s. The shots are read with the generic taps (W = D + G, rtkp.graphs.prototypes). peaks: how many peaks of
    each trained keypoint the graph anchors on (the manifest's max_instances; 1 for one animal per frame).
    """

    def __init__(self, backend, stride: int, views=VIEWS, peaks: int = 1):
        self.backend, self.stride, self.views, self.peaks = backend, stride, views, peaks

    @classmethod
    def for_model(cls, backend, manifest) -> ShotReader:
        """The reader of a model's shots: its feature stride, one anchor peak per animal it finds."""
        return cls(backend, manifest.stride, peaks=manifest.max_instances or 1)

    def read(
        self,
        images: list[np.ndarray],
        points: np.ndarray,
        clutter: np.ndarray,
        source: str = "live",
        trained: np.ndarray | None = None,
        names: tuple[str, ...] = (),
    ) -> Taught:
        """images: N model inputs (h, w, 3) uint8; points: (N, 2) model px -> Taught with N shots. trained: (T, D)
        prototypes of the trained keypoints in use, named `names`, which anchor the taught one (reach, rings)."""
        all_views, all_looks, anchors = [], [], []
        for image, point in zip(images, np.asarray(points, np.float32)):
            batch, pts = shot_views(image, point, self.views)
            feats, centres = self.backend.shot_maps(batch)  # one graph run for the shot's views
            d = clutter.shape[1]
            v = sample_features(feats, pts, self.stride, d)  # (V, W)
            all_views.append(v)
            all_looks.append(lookalikes(feats[0], point, compose(v.sum(0), d), clutter, self.stride))
            votes = None if centres is None else centres[0]
            anchors.append(anchor_offsets(feats[0, :d], point, trained, self.stride, clutter, self.peaks, votes))
        m = min(len(x) for x in all_looks)
        looks = np.stack([x[:m] for x in all_looks])
        table = np.asarray(anchors, np.float32).reshape(len(anchors), -1, 2)
        return Taught(np.stack(all_views), looks, source, table, tuple(names) if table.shape[1] else ())


def teach_keypoint(
    kset: KeypointSet, reader: ShotReader, name: str, images, points, source: str = "live", extend: bool = False
) -> tuple[int, Lesson]:
    """Add keypoint `name` to the set from shots (model-input images and points (N, 2)), or with extend=True give the
    added keypoint `name` these shots as well; returns (its index, the lesson). ControlError (and the set unchanged)
    when the name is taken or unknown, or the set is full."""
    if extend:
        kset.index(name)
        if name not in kset.taught:
            raise ControlError("bad_request", f"{name!r} was trained, not added from shots: it takes no more shots")
    else:
        kset.check_new(name)  # before the graph runs: a full set or a taken name costs nothing
    d = kset.clutter.shape[1]
    rows = kset.anchor_rows()
    trained = kset.prototypes[list(rows.values()), :d]
    taught = reader.read(images, points, kset.clutter, source, trained, tuple(rows))
    if extend:
        taught = kset.taught[name].plus(taught)
    lesson = teach(taught, kset.clutter, reader.stride, kset.ring_rows(), kset.reach_rows())
    if extend:
        return kset.update(name, lesson.prototype, lesson.margin, taught), lesson
    return kset.add(name, lesson.prototype, lesson.margin, taught), lesson
