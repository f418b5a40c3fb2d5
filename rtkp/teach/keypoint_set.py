"""The keypoints a model tracks, as a mutable set: names, prototypes, margins, and which were added from shots.

Every runtime matches features against a prototype input of K_max rows with a mask of those in use (rtkp.model.graph),
so keypoints can be added, removed and renamed while a tracker runs, with no re-export and no engine rebuild. The set is
compact: keypoint k sits in prototype row k, rows K..K_max−1 are free (that contract: rtkp.graphs.prototypes). numpy
only (the inference and post processes of `rtkp run` never import torch for it).

An added keypoint keeps what it was taught from: per shot, the features of its views (V, D) and of the
strongest look-alikes in the shot's frame (M, D), so that more shots can be added later and its prototype and margin
recomputed from all of them, also after the set is saved as a model folder and loaded again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtkp.errors import ControlError
from rtkp.graphs.prototypes import max_keypoints, pad_prototypes, renumber_rings, uses_generic, with_width
from rtkp.instances.pose import template_spread
from rtkp.manifest import Manifest
from rtkp.visibility import manifest_margin

NAME_MAX_CHARS = 64


def check_name(name) -> str:
    """A keypoint name as given, or ControlError("bad_request"): 1..64 printable characters, no outer spaces."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX_CHARS:
        raise ControlError("bad_request", f"a keypoint name must be a string of 1 to {NAME_MAX_CHARS} characters")
    if not name.isprintable() or name.strip() != name:
        raise ControlError(
            "bad_request", f"keypoint name {name!r}: printable characters only, no leading/trailing space"
        )
    return name


@dataclass(frozen=True)
class Taught:
    """What an added keypoint was taught from. views: (N, V, W) features of each shot's views (each part unit,
    rtkp.teach.features.sample_features); lookalikes: (N, M, W) features of the strongest other cells in each
    shot's frame (W = D + G with the generic parts, rtkp.graphs.prototypes; D for keypoints taught before them);
    source: "live" (clicks) or "data" (labelled frames, `rtkp keypoints add --data`); anchors: (N, T, 2) model-input
    px from each click to each trained keypoint of `anchor_names` (T) found in its frame (NaN: not found), what the
    keypoint's reach and rings are set from (rtkp.teach.shots.teach). Shots saved before the names were kept have
    (N,) anchors, the nearest one's distance (reach only); None: not measured."""

    views: np.ndarray
    lookalikes: np.ndarray
    source: str = "live"
    anchors: np.ndarray | None = None
    anchor_names: tuple[str, ...] | None = None

    @property
    def shots(self) -> int:
        return len(self.views)

    def anchor_offsets(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """((N, T, 2) px from each click to each named trained keypoint, NaN where not found; the T names). Older
        shots' nearest distances come as one column named "" (as an offset along x)."""
        if self.anchors is None:
            return np.full((self.shots, 0, 2), np.nan, np.float32), ()
        a = np.asarray(self.anchors, np.float32)
        if a.ndim == 1:
            return np.stack([a, np.zeros_like(a)], 1)[:, None], ("",)
        return a, tuple(self.anchor_names or ())

    def anchor_table(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """((N, T) px from each click to each named trained keypoint, NaN where not found; the T names)."""
        offsets, names = self.anchor_offsets()
        return np.linalg.norm(offsets, axis=2), names

    def nearest_anchor(self, among=None) -> np.ndarray:
        """(N,) px from each click to the nearest trained keypoint found in its frame (NaN: none found); only those
        named in `among` when given (older shots' single column always counts)."""
        table, names = self.anchor_table()
        if among is not None:
            table = table[:, [j for j, n in enumerate(names) if n in among or n == ""]]
        found = np.isfinite(table)
        return np.where(found.any(1), np.where(found, table, np.inf).min(1, initial=np.inf), np.nan).astype(np.float32)

    def plus(self, other: Taught) -> Taught:
        """These shots and another's, in that order. Shots of a keypoint taught without generic parts (saved before
        they existed) keep that width: the new shots' trained parts join them."""
        m = min(self.lookalikes.shape[1], other.lookalikes.shape[1])
        w = min(self.views.shape[-1], other.views.shape[-1])
        looks = np.concatenate([self.lookalikes[:, :m, :w], other.lookalikes[:, :m, :w]])
        views = np.concatenate([self.views[..., :w], other.views[..., :w]])
        (a, an), (b, bn) = self.anchor_offsets(), other.anchor_offsets()
        names = an + tuple(n for n in bn if n not in an)
        table = np.full((len(a) + len(b), len(names), 2), np.nan, np.float32)  # the same keypoint, the same column
        table[: len(a), [names.index(n) for n in an]] = a
        table[len(a) :, [names.index(n) for n in bn]] = b
        return Taught(views, looks, self.source, table, names)

    def minus_last(self) -> Taught:
        table, names = self.anchor_offsets()
        return Taught(self.views[:-1], self.lookalikes[:-1], self.source, table[:-1], names)

    def renamed(self, name: str, to: str) -> Taught:
        """The same shots with trained keypoint `name` (an anchor) now called `to`."""
        table, names = self.anchor_offsets()
        return Taught(self.views, self.lookalikes, self.source, table, tuple(to if n == name else n for n in names))


class KeypointSet:
    """names (K,), prototypes (K, W), margins (K,) of the keypoints in use, plus the clutter summary (S, D), the
    skeleton (index pairs), flip pairs (name pairs) and `taught` {name: Taught} for added keypoints.

    Changes raise ControlError (with the reply's code) and leave the set as it was."""

    def __init__(
        self,
        names: list[str],
        prototypes: np.ndarray,
        margins: np.ndarray,
        clutter: np.ndarray,
        k_max: int,
        skeleton=(),
        flip_pairs=(),
        taught: dict[str, Taught] | None = None,
        several: bool = False,
        spread: dict[str, float] | None = None,
    ):
        self.names = list(names)
        # copies: the set changes them in place (update), and a model folder's arrays may be read-only views
        self.prototypes = np.array(prototypes, np.float32).reshape(len(self.names), -1)
        self.margins = np.array(margins, np.float32).reshape(len(self.names))
        self.clutter = np.asarray(clutter, np.float32)
        self.k_max = k_max
        self.skeleton = [(int(a), int(b)) for a, b in skeleton]
        self.flip_pairs = [(str(a), str(b)) for a, b in flip_pairs]
        self.taught = dict(taught or {})
        self.several = several  # a multi-instance model's set (ring_rows)
        # {name: how far it strays from the animal's mean pose} of the pose template's rows, in their order
        self.spread = dict(spread or {})

    @classmethod
    def from_model(cls, manifest: Manifest, prototypes: np.ndarray, clutter: np.ndarray, taught=None) -> KeypointSet:
        """The set a model folder describes (its manifest and banks; `taught` from rtkp.teach.saved.read_taught)."""
        names = list(manifest.keypoint_names)
        margins = np.broadcast_to(np.asarray(manifest_margin(manifest), np.float32), (len(names),))
        k_max = max_keypoints(manifest)
        several = manifest.max_instances is not None
        spread = template_spread(manifest.pose_template, names)
        return cls(
            names, prototypes, margins, clutter, k_max, manifest.skeleton, manifest.flip_pairs, taught, several, spread
        )

    def __len__(self) -> int:
        return len(self.names)

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """(prototypes (K_max, W), active (K_max,)) for the graph."""
        return pad_prototypes(self.prototypes, self.k_max)

    def index(self, name) -> int:
        check_name(name)
        if name not in self.names:
            raise ControlError("unknown_keypoint", f"no keypoint named {name!r} (known: {', '.join(self.names)})")
        return self.names.index(name)

    def check_new(self, name) -> None:
        """ControlError unless `name` could be added now: a valid, unused name and a free prototype row."""
        check_name(name)
        if name in self.names:
            raise ControlError("duplicate", f"a keypoint named {name!r} exists already (rename or remove it first)")
        if len(self.names) >= self.k_max:
            raise ControlError(
                "full", f"this model tracks at most {self.k_max} keypoints (manifest `max_keypoints`); remove one first"
            )

    def _fit(self, prototype: np.ndarray) -> np.ndarray:
        """A (W,) row as wide as the set's rows, widening the set when the row is wider (a generic part,
        rtkp.graphs.prototypes: trained rows get a zero one)."""
        prototype = np.asarray(prototype, np.float32)
        width = max(self.prototypes.shape[1], len(prototype))
        self.prototypes = with_width(self.prototypes, width)
        return with_width(prototype[None], width)[0]

    def add(self, name: str, prototype: np.ndarray, margin: float, taught: Taught) -> int:
        """Append a keypoint; returns its index."""
        self.check_new(name)
        prototype = self._fit(prototype)
        self.names.append(name)
        self.prototypes = np.concatenate([self.prototypes, prototype[None]])
        self.margins = np.append(self.margins, np.float32(margin))
        self.taught[name] = taught
        return len(self.names) - 1

    def update(self, name: str, prototype: np.ndarray, margin: float, taught: Taught) -> int:
        """Replace an added keypoint's prototype, margin and shots (more shots, or one fewer); returns its index."""
        k = self.index(name)
        if name not in self.taught:
            raise ControlError("bad_request", f"{name!r} was trained, not added from shots: its shots cannot change")
        self.prototypes[k] = self._fit(prototype)
        self.margins[k] = margin
        self.taught[name] = taught
        return k

    def remove(self, name: str) -> None:
        k = self.index(name)
        if len(self.names) == 1:
            raise ControlError("bad_request", f"{name!r} is the last keypoint; a model tracks at least one")
        del self.names[k]
        self.prototypes = renumber_rings(np.delete(self.prototypes, k, axis=0), self.clutter.shape[1], k)
        if not uses_generic(self.prototypes, self.clutter.shape[1]):
            self.prototypes = with_width(self.prototypes, self.clutter.shape[1])  # the plain graph serves the rest
        self.margins = np.delete(self.margins, k)
        self.taught.pop(name, None)
        # the skeleton's pairs are indices: drop the pairs that used k, renumber those after it
        shift = lambda i: i - (i > k)
        self.skeleton = [(shift(a), shift(b)) for a, b in self.skeleton if k not in (a, b)]
        self.flip_pairs = [p for p in self.flip_pairs if name not in p]

    def rename(self, name: str, to: str) -> None:
        k = self.index(name)
        check_name(to)
        if to in self.names:
            raise ControlError("duplicate", f"a keypoint named {to!r} exists already")
        self.names[k] = to
        if name in self.taught:
            self.taught[to] = self.taught.pop(name)
        self.taught = {n: t.renamed(name, to) for n, t in self.taught.items()}  # a trained one may anchor them
        # in the pose template's row order (rtkp.teach.saved.kept_template names the rows from it)
        self.spread = {(to if n == name else n): v for n, v in self.spread.items()}
        self.flip_pairs = [tuple(to if n == name else n for n in p) for p in self.flip_pairs]

    def anchor_rows(self) -> dict[str, int]:
        """{name: row} of the trained keypoints in use: what a taught keypoint's reach anchors on."""
        return {n: k for k, n in enumerate(self.names) if n not in self.taught}

    def reach_rows(self) -> dict[str, int]:
        """The trained keypoints a taught keypoint's reach is measured from: anchor_rows; for a multi-instance model
        with a pose template only its steady ones, those whose spread about the animal's mean pose is at most the
        median of the trained keypoints in use (the flies: head, thorax, abdomen, right wing tip and eye, not the leg
        tips): a fly's mid-leg tip, taught in a shot where another leg tip lay 4 px from it, got a 22 px reach from
        it, 61 px from the steady ones."""
        rows = self.anchor_rows()
        known = {n: self.spread[n] for n in rows if n in self.spread}
        if not self.several or not known:
            return rows
        steady = float(np.median(list(known.values())))
        return {n: rows[n] for n, v in known.items() if v <= steady}

    def ring_rows(self) -> dict[str, int]:
        """The trained keypoints a taught keypoint's rings and side may anchor on: anchor_rows; for a multi-instance
        model its steady ones (reach_rows). On the two flies, rings on any trained keypoint anchored a wing tip on a
        foreleg tip and hid it in every validation frame; on the steady ones they found the male's mid-leg tip in all
        125 validation frames where the reach alone found it in none. They rest on each shot's offsets to the clicked
        animal's keypoints, which the centre votes tell apart (rtkp.teach.shots.anchor_offsets; the peak nearest the
        click was the other fly's in 1 of 5 shots, and the test frames lost the left eye from one shot, 0.95 -> 0.26,
        docs/FEWSHOT.md)."""
        return self.reach_rows() if self.several else self.anchor_rows()

    def shots(self) -> dict[str, int]:
        """{name: number of shots} of the added keypoints, in keypoint order."""
        return {n: self.taught[n].shots for n in self.names if n in self.taught}

    def describe(self) -> list[dict]:
        """One map per keypoint, in order: name, index, margin, added (bool) and shots (added ones)."""
        out = []
        for k, name in enumerate(self.names):
            entry = {"name": name, "index": k, "margin": round(float(self.margins[k]), 5), "added": name in self.taught}
            if name in self.taught:
                entry["shots"] = self.taught[name].shots
            out.append(entry)
        return out
