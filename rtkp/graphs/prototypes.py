"""The inference graph's prototype input (rtkp.model.graph): K_max rows, the K in use first, and a mask of them.

K_max is a shape of the graph, fixed when it is exported or built into an engine, so it is the model folder's
(manifest `max_keypoints`) and every backend pads the K prototypes in use to it. numpy only: the inference stages of
`rtkp run` use it without importing torch.

A row is [trained part (D) | generic part (GENERIC_DIM) | reach (1) | rings (RING_ANCHORS × 3) | axis (4)]:
- the trained part is matched against the model's unit features, the generic part against frozen ImageNet taps
  (rtkp.model.generic; keypoints taught from shots use it);
- the reach, in model-input px, keeps a taught keypoint within that distance of a keypoint the network was trained on
  (0: anywhere);
- each ring (anchor row, distance px, tolerance px) keeps it at the distance from that trained keypoint that its shots
  showed (tolerance 0: no ring), scaled by the animal's size: the distance between two trained keypoints now against
  their distance in the shots;
- the axis (row a, row b, their distance in the shots px, side) holds those two keypoints (distance 0: not measured,
  scale 1), and the side of the line from a to b the keypoint lies on in every shot (+1 or −1 as the sign of
  (b − a) × (p − a) in image coordinates; 0: none kept), which tells a left ear from a right one.
A trained keypoint's row is its prototype with zeros after it, and a set of such rows may be given D wide. The graph
with the generic branch (the `generic` variant) takes rows of width graph_width(D, True); the plain graph, width D,
runs whenever no row in use has more than a trained part (uses_generic), so models without taught keypoints pay
nothing.
"""

from __future__ import annotations

import numpy as np

from rtkp.errors import ModelError
from rtkp.manifest import Manifest

DEFAULT_MAX_KEYPOINTS = 32  # prototype rows of an exported graph when the manifest does not set `max_keypoints`
# channels of the generic taps, in row order (rtkp.model.generic.GENERIC_CHANNELS; a test checks they agree)
GENERIC_CHANNELS = (32, 96, 320)
GENERIC_DIM = sum(GENERIC_CHANNELS)
# a trained keypoint's peak anchors taught ones when its similarity reaches this (rtkp.model.generic.ANCHOR_SCORE)
ANCHOR_SCORE = 0.5
ANCHOR_EVIDENCE = 0.0  # ... and its evidence this (rtkp.model.generic.ANCHOR_EVIDENCE)
# a taught keypoint keeps its distance to this many trained keypoints (the nearest in its shots; rtkp.teach.shots)
RING_ANCHORS = 3
RING_FIELDS = 3  # anchor row, distance px, tolerance px
AXIS_FIELDS = 4  # row a, row b, their distance in the shots px, side


def row_parts(d: int) -> list[slice]:
    """The feature parts of a full-width row for trained features of width d: [trained, generic tap 1, 2, 3] (the
    reach and the rings follow them, at reach_index and ring_columns)."""
    edges = [0, d]
    for c in GENERIC_CHANNELS:
        edges.append(edges[-1] + c)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def reach_index(d: int) -> int:
    """The column of a full-width row that holds its reach."""
    return d + GENERIC_DIM


def ring_columns(d: int) -> slice:
    """The columns of a full-width row that hold its rings: RING_ANCHORS × (anchor row, distance px, tolerance px),
    then its axis (row a, row b, their distance in the shots px, side)."""
    start = reach_index(d) + 1
    return slice(start, start + RING_ANCHORS * RING_FIELDS + AXIS_FIELDS)


def graph_width(d: int, generic: bool) -> int:
    """Row width of the plain graph (d, the trained features') or of the generic variant (d + GENERIC_DIM + 1 +
    RING_ANCHORS × 3 + 4)."""
    return ring_columns(d).stop if generic else d


def renumber_rings(prototypes: np.ndarray, d: int, removed: int) -> np.ndarray:
    """(K, W) rows after row `removed` left the set: rings anchored on it are dropped (zeros), those on a later row
    point one row earlier. Rows without rings are returned unchanged."""
    prototypes = np.array(prototypes, np.float32)
    cols = ring_columns(d)
    if prototypes.shape[1] < cols.stop:
        return prototypes
    rings = prototypes[:, cols.start : cols.stop - AXIS_FIELDS].reshape(len(prototypes), RING_ANCHORS, RING_FIELDS)
    axis = prototypes[:, cols.stop - AXIS_FIELDS : cols.stop]
    on = rings[..., 2] > 0
    row = np.round(rings[..., 0])
    rings[on & (row == removed)] = 0
    rings[..., 0] -= (on & (row > removed)).astype(np.float32)
    pair = np.round(axis[:, :2])
    gone = (pair == removed).any(1)
    axis[:, :2] -= ((axis[:, 2:3] > 0) & (pair > removed)).astype(np.float32)
    axis[gone] = 0  # one of its keypoints left: no scale, no side
    prototypes[:, cols] = np.concatenate([rings.reshape(len(prototypes), -1), axis], 1)
    return prototypes


def features_width(d: int, generic: bool) -> int:
    """Channels of the graph's `features` output: d, or d + GENERIC_DIM from the generic variant (no reach, no
    rings)."""
    return d + GENERIC_DIM if generic else d


def uses_generic(prototypes: np.ndarray, d: int) -> bool:
    """True when some row of (K, W) prototypes has a non-zero generic part, reach or ring (the generic variant is
    needed)."""
    prototypes = np.asarray(prototypes)
    return prototypes.shape[1] > d and bool(np.any(prototypes[:, d:] != 0))


def with_width(prototypes: np.ndarray, width: int) -> np.ndarray:
    """(K, W) prototypes as (K, width) float32: zero generic parts appended, or dropped (only zero parts can be)."""
    prototypes = np.asarray(prototypes, np.float32)
    k, w = prototypes.shape
    if w == width:
        return prototypes
    if w < width:
        return np.concatenate([prototypes, np.zeros((k, width - w), np.float32)], 1)
    if np.any(prototypes[:, width:] != 0):
        raise ModelError(f"prototypes of width {w} have generic parts: the graph of width {width} cannot match them")
    return np.ascontiguousarray(prototypes[:, :width])


def max_keypoints(manifest: Manifest) -> int:
    """K_max of a model: the manifest's `max_keypoints`, else max(DEFAULT_MAX_KEYPOINTS, K)."""
    k = len(manifest.keypoint_names)
    declared = manifest.max_keypoints
    if declared is None:
        return max(DEFAULT_MAX_KEYPOINTS, k)
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < max(k, 1):
        raise ModelError(f"manifest `max_keypoints` must be an integer >= its {k} keypoints, got {declared!r}")
    return declared


def pad_prototypes(prototypes: np.ndarray, k_max: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(K, W) prototypes -> (padded (K_max, width) float32 with zero rows after K, active (K_max,) float32 1/0);
    width: the graph's row width (default W; see with_width)."""
    prototypes = with_width(prototypes, width or np.shape(prototypes)[1])
    k, d = prototypes.shape
    if k > k_max:
        raise ModelError(f"{k} prototypes, but this model's graph holds at most {k_max} (manifest `max_keypoints`)")
    padded = np.zeros((k_max, d), np.float32)
    padded[:k] = prototypes
    active = np.zeros(k_max, np.float32)
    active[:k] = 1.0
    return padded, active
