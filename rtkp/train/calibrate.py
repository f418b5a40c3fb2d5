"""Choose the visibility margins on occluded *training* frames (never on test data).

A keypoint is reported visible when score − clutter_score > its margin (the rule: rtkp.visibility). Each keypoint's
margin is the threshold that maximises balanced accuracy (mean of the visible and the hidden recall) over training
frames with occluders pasted on, where the labels say which keypoints are covered or absent.
"""

from __future__ import annotations

import numpy as np
import torch

from rtkp.config import Config
from rtkp.data.occlude import covered, object_box, paste_occluders
from rtkp.geometry import Letterbox
from rtkp.model.graph import InferenceGraph
from rtkp.train.batches import BatchMaker
from rtkp.train.recipe import peak_decoding
from rtkp.visibility import evidence as visibility_evidence


def best_threshold(evidence: np.ndarray, visible: np.ndarray, hidden_weight: float = 0.5) -> float:
    """The threshold t maximising (1 − w)·(visible recall) + w·(hidden recall) of (evidence > t) against `visible`
    (both (N,)), w = hidden_weight; 0.5 is balanced accuracy."""
    if visible.all() or not visible.any():
        return 0.0
    order = np.sort(np.unique(evidence))
    candidates = np.concatenate([[order[0] - 1e-3], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-3]])
    pos, neg = evidence[visible], evidence[~visible]
    tpr = (pos[None, :] > candidates[:, None]).mean(1)
    tnr = (neg[None, :] <= candidates[:, None]).mean(1)
    return float(candidates[np.argmax((1 - hidden_weight) * tpr + hidden_weight * tnr)])


def hidden_weights(visible: np.ndarray) -> np.ndarray:
    """(F, K) labels of the training frames -> (K,) the weight of the hidden side of each keypoint's threshold.

    Balanced accuracy (0.5) where a keypoint is labelled in at least half the frames: there, hidden keypoints come
    from the pasted occluders, whose frequency is ours to choose. A keypoint the labels leave absent in more of the
    frames than not (the reaching mouse's tongue: 32 of 44) weighs the hidden side by that share, because a false
    "visible" costs as often as the keypoint is really absent: the balanced point let 5 of 10 absent test keypoints
    through on that model (docs/MODEL.md).
    """
    return np.maximum(0.5, 1 - visible.mean(0))


MAX_FRAMES = 300  # whole frames calibrated on, spread evenly: more changes little and costs a graph run each


def calibration_samples(maker: BatchMaker) -> list[int]:
    """The samples whose frames are calibrated on: one per frame (its first animal, whose box gets the occluders),
    at most MAX_FRAMES frames spread evenly over the training data. One sample per frame and fewer frames than that
    (every single-instance data set so far): all of them, in order."""
    firsts = [i for i in range(len(maker.images)) if all(j > i for j in maker.companions[i])]
    if len(firsts) <= MAX_FRAMES:
        return firsts
    return [firsts[int(i)] for i in np.linspace(0, len(firsts) - 1, MAX_FRAMES).round()]


@torch.no_grad()
def calibrate_margins(
    net,
    maker: BatchMaker,
    cfg: Config,
    prototypes,
    clutter,
    variants: int = 2,
    seed: int = 12345,
    weigh_absent: bool = True,
) -> tuple[float, list[float]]:
    """(one margin for all keypoints, one per keypoint (K,)) from whole training frames, as the model sees them.

    Each training frame is run `variants` times with occluders covering 20–80 % of its keypoint box (synthetic
    textures and, when the recipe has them, training photos, alternately): a covered or unlabelled keypoint should be
    hidden, an uncovered labelled one visible. The training frames' empty scene (rtkp.data.background), when the
    recipe uses one, is run with sensor noise: every keypoint should be hidden there.
    Whole frames, not training crops: in a crop most hidden keypoints are simply outside it, which is easy, and a
    margin chosen there came out far too low for occluded keypoints in full frames (measured: 0.1–0.18 below the
    threshold that separated them best on validation frames). A keypoint whose frames are all visible or all hidden
    gets the common margin; a keypoint absent in most frames weighs its hidden side by that share (hidden_weights;
    weigh_absent=False: balanced accuracy for every keypoint, the rule before issue 29). Frames with several animals
    are run once, occluders on one animal (calibration_samples), and a keypoint counts as in view when any animal
    shows it (the single-peak row reads the best of them).
    """
    # the FP32 inference graph that the backends run, so the margin is chosen on the figures they report
    graph = InferenceGraph(net, peak=peak_decoding(cfg)).eval()
    size = tuple(cfg.model.input_size)
    evidence, visible = [], []

    def run(image: np.ndarray, vis: np.ndarray) -> None:
        box = Letterbox.fit(image.shape[1::-1], size)
        rows = graph(torch.from_numpy(box.apply(image))[None], prototypes, clutter)[0]  # (K, 4)
        evidence.append(visibility_evidence(rows).numpy())
        visible.append(vis)

    samples = calibration_samples(maker)
    for i in samples:
        image, kp, vis = maker.images[i], maker.keypoints[i], maker.visible[i]
        for v in range(variants):
            rng = np.random.default_rng([seed, i, v])
            photos = maker.photos if maker.photos and v % 2 else None
            occluded, mask = paste_occluders(rng, image, object_box(kp, vis), (0.2, 0.8), photos)
            shown = vis & ~covered(mask, kp)
            for j in maker.companions[i]:  # several animals: keypoint k is in view when any animal shows it
                shown = shown | (maker.visible[j] & ~covered(mask, maker.keypoints[j]))
            run(occluded, shown)
    if maker.empty is not None:
        for v in range(8):
            rng = np.random.default_rng([seed, len(maker.images), v])
            noisy = maker.empty.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 2 + v, maker.empty.shape)
            run(np.clip(noisy, 0, 255).astype(np.uint8), np.zeros(len(maker.keypoints[0]), bool))
    evidence, visible = np.stack(evidence), np.stack(visible)  # (N, K)
    common = round(best_threshold(evidence.flatten(), visible.flatten()), 5)
    labelled = np.stack([maker.visible[i] for i in samples])  # (F, K) before any occluder
    weight = hidden_weights(labelled) if weigh_absent else np.full(labelled.shape[1], 0.5)
    per_keypoint = [
        round(best_threshold(evidence[:, k], visible[:, k], weight[k]), 5)
        if 0 < visible[:, k].sum() < len(visible)
        else common
        for k in range(evidence.shape[1])
    ]
    return common, per_keypoint
