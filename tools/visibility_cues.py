"""How well each per-keypoint cue tells covered from uncovered keypoints, on a validation split carved from `train`.

    python tools/visibility_cues.py runs/abl/E2000 --split runs/splits/mouse_val.json \
        [--data ../shared/data/dlc_openfield_mouse] [--occluders ../shared/data/opencv_samples] [--draws 3]

Every frame of the split's `train` and `test` (validation) lists gets occluders over 40–60 % of its keypoint box
(synthetic textures and training photos, alternately: never the evaluation photos), runs through the model's FP32
inference graph, and each labelled keypoint gives its cues: the graph's score − clutter score (the visibility rule's
evidence), the score alone, the peak's share of the similarity map's soft-max mass (5×5 cells), and the pose residual:
how far the peak lies from where the other keypoints the model reports visible put it (the mean pose of the training
frames' labels, rtkp.instances.pose.fit_template, placed on them by a similarity transform; in mean-pose units).
Printed: AUC (covered against uncovered) on the validation frames per cue, and the rates that per-keypoint thresholds
chosen on the training frames (rtkp.train.calibrate.best_threshold, hidden side weighted w) reach on the validation
frames, for each cue and for the evidence less a multiple of the pose residual.

--learned adds two cues learned on the model's frozen features (a visibility head that leaves the keypoint features
as they are): a logistic regression on the peak's unit feature and the evidence (fitted on the training frames'
cues), and an occluder map: a small head (3×3 depthwise + 1×1 convolutions) fitted on the frozen hypercolumn of
training frames to tell occluded cells (whose mask it is given) from the rest, read at each keypoint's peak and
subtracted from the evidence (× α). The head is fitted with other occluder photos (--fit-occluders: dlib faces) than
the cues are measured with, so that it is judged on occluders it never saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """P(cue of a random positive > cue of a random negative), ties counting half."""
    pos, neg = x[y], x[~y]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def pose_residual(xy: np.ndarray, shown: np.ndarray, k: int, mean: np.ndarray) -> float:
    """How far keypoint k's peak is from where the other shown keypoints put it: the mean pose (K, 2) placed on
    them by a similarity transform; in mean-pose units (NaN with fewer than two others shown)."""
    from rtkp.instances.pose import similarity

    others = [j for j in range(len(xy)) if j != k and shown[j]]
    if len(others) < 2:
        return float("nan")
    scale, rot, t = similarity(mean[others], xy[others])
    return float(np.linalg.norm(scale * rot @ mean[k] + t - xy[k]) / max(scale, 1e-9))


def cues(graph, protos, clutter, samples, size, photos, draws: int, seed: int, t: float, margins, mean, learned=None):
    """-> (N, 5) rows (evidence, score, peak mass, pose residual, keypoint index) and (N,) True where the keypoint
    is uncovered; margins: the model's, which say which other keypoints are shown; mean: the mean pose (K, 2).
    learned: an OccluderMap, or None; given, the graph returns the features too, and each row gains the occluder
    map's value at the peak and the peak's unit feature (D columns)."""
    from rtkp.data.occlude import covered, object_box, paste_occluders
    from rtkp.geometry import Letterbox

    rows, labels = [], []
    for i, s in enumerate(samples):
        image = s.load_image()
        for d in range(draws):
            rng = np.random.default_rng([seed, i, d])
            pts = s.object_points()
            box = object_box(pts, np.ones(len(pts), bool))
            occluded, mask = paste_occluders(rng, image, box, (0.4, 0.6), photos if d % 2 else None)
            hidden = covered(mask, s.keypoints) & s.visible
            fit = Letterbox.fit(occluded.shape[1::-1], size)
            image_in = torch.from_numpy(fit.apply(occluded))[None]
            with torch.no_grad():
                if learned is None:
                    kp, sim = graph(image_in, protos, clutter)
                else:
                    kp, feats, sim = graph(image_in, protos, clutter)
                    occ, feats = learned(image_in), feats[0].numpy()
            kp, sim = kp[0].numpy(), sim[0].numpy()
            shown = kp[:, 2] - kp[:, 3] > margins
            for k in np.flatnonzero(s.visible):
                m = sim[k]
                y, x = np.unravel_index(m.argmax(), m.shape)
                z = np.exp((m - m.max()) / t)
                mass = z[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].sum() / z.sum()
                residual = pose_residual(kp[:, :2], shown, k, mean)
                row = [kp[k, 2] - kp[k, 3], kp[k, 2], np.log(mass), residual, k]
                if learned is not None:
                    row += [occ[y, x], *feats[:, y, x]]
                rows.append(row)
                labels.append(not hidden[k])
    return np.array(rows), np.array(labels)


class OccluderMap:
    """A head on a frozen model's hypercolumn that tells occluded cells from the rest: (C, h, w) -> (h, w) in 0..1.

    Fitted on training frames with occluders pasted over 20–80 % of the animal (a third synthetic textures, the rest
    `photos`), on a 64 × 64-cell window around the animal (binary cross-entropy, covered cells weighted up to balance
    them); the model's own weights do not change.
    """

    WINDOW = 64  # cells

    def __init__(self, net, samples, photos, size, variants: int = 6, steps: int = 600, seed: int = 99):
        from torch import nn

        from rtkp.data.occlude import object_box, paste_occluders
        from rtkp.geometry import Letterbox
        from rtkp.model.network import STRIDE

        self.net = net
        x, y = [], []
        for i, s in enumerate(samples):
            image = s.load_image()
            box = object_box(s.keypoints, s.visible)
            for v in range(variants):
                rng = np.random.default_rng([seed, i, v])
                occluded, mask = paste_occluders(rng, image, box, (0.2, 0.8), None if v % 3 == 0 else photos)
                fit = Letterbox.fit(occluded.shape[1::-1], size)  # the model input, as the cues see it
                merged = self._hypercolumn(torch.from_numpy(fit.apply(occluded))[None])[0]
                mask = fit.apply(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, 2), pad_value=0)[..., 0] / 255
                c, h, w = merged.shape
                cell = mask[: h * STRIDE, : w * STRIDE].reshape(h, STRIDE, w, STRIDE).mean((1, 3))
                n = self.WINDOW
                centre = fit.to_model(np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]))[0] / STRIDE
                x0 = int(np.clip(centre[0] - n / 2, 0, max(w - n, 0)))
                y0 = int(np.clip(centre[1] - n / 2, 0, max(h - n, 0)))
                x.append(merged[:, y0 : y0 + n, x0 : x0 + n])
                y.append(torch.from_numpy(cell[y0 : y0 + n, x0 : x0 + n]).float())
        x, y = torch.stack(x), torch.stack(y)[:, None]
        torch.manual_seed(seed)
        c = x.shape[1]
        self.head = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, 32, 1), nn.ReLU(), nn.Conv2d(32, 1, 1)
        )
        optimizer = torch.optim.Adam(self.head.parameters(), 1e-3)
        share = float(y.mean())
        weight = torch.tensor((1 - share) / max(share, 1e-6))
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (16,), generator=gen)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.head(x[idx]), y[idx], pos_weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.head.eval()

    @torch.no_grad()
    def _hypercolumn(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.body(images).float()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """(1, H, W, 3) uint8 model input -> (h, w) occluder probability per cell."""
        return torch.sigmoid(self.head(self._hypercolumn(images)))[0, 0].numpy()


def logistic(x: np.ndarray, y: np.ndarray, lam: float = 1.0, iterations: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method: (N, F), (N,) bool -> (F + 1,) weights, bias last."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    ridge = lam * np.eye(x.shape[1])
    ridge[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-x @ w))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge
        w -= np.linalg.solve(hessian, x.T @ (p - y) + ridge @ w)
    return w


def main() -> None:
    from rtkp.config import config_from_dict
    from rtkp.data.load import load_dataset
    from rtkp.data.occlude import load_photos
    from rtkp.instances.pose import fit_template
    from rtkp.model.checkpoint import load_model
    from rtkp.model.graph import InferenceGraph
    from rtkp.train.calibrate import best_threshold
    from rtkp.train.recipe import peak_decoding
    from rtkp.visibility import manifest_margin

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/dlc_openfield_mouse"))
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--occluders", type=Path, default=Path("../shared/data/opencv_samples"))
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--learned", action="store_true", help="add the cues learned on the frozen features")
    ap.add_argument("--fit-occluders", type=Path, default=Path("../shared/data/dlib_faces_68pt"))
    a = ap.parse_args()
    net, manifest, protos, clutter = load_model(a.model)
    cfg = config_from_dict(manifest.extra["training"]["config"])
    graph = InferenceGraph(net, debug=True, features=a.learned, peak=peak_decoding(cfg)).eval()
    names = json.loads(a.split.read_text())
    full = load_dataset(a.data)
    photos = load_photos(a.occluders)
    size, t = tuple(cfg.model.input_size), cfg.coke.temperature
    parts = {p: full.subset(names[p], p).samples for p in ("train", "test")}
    template = fit_template([s.keypoints for s in parts["train"]], [s.visible for s in parts["train"]])
    mean, margins = np.asarray(template["mean"]), manifest_margin(manifest)
    learned = OccluderMap(graph.net, parts["train"], load_photos(a.fit_occluders), size) if a.learned else None
    tr, ytr = cues(graph, protos, clutter, parts["train"], size, photos, a.draws, 7, t, margins, mean, learned)
    va, yva = cues(graph, protos, clutter, parts["test"], size, photos, a.draws, 8, t, margins, mean, learned)
    # a keypoint with fewer than two others shown has no residual: counted as half a mean-pose unit off
    tr[:, 3], va[:, 3] = np.nan_to_num(tr[:, 3], nan=0.5), np.nan_to_num(va[:, 3], nan=0.5)
    out = {"model": str(a.model), "covered": int((~yva).sum()), "uncovered": int(yva.sum()), "auc": {}, "rates": {}}
    for j, name in enumerate(["score - clutter", "score", "peak mass"]):
        out["auc"][name] = round(auc(va[:, j], yva), 3)
    out["auc"]["- pose residual"] = round(auc(-va[:, 3], yva), 3)
    combined = {f"score - clutter - {f} x residual": lambda x, f=f: x[:, 0] - f * x[:, 3] for f in (0.05, 0.1, 0.2)}
    for name, rule in combined.items():
        out["auc"][name] = round(auc(rule(va), yva), 3)
    rules = {"score - clutter": lambda x: x[:, 0], "score": lambda x: x[:, 1], **combined}
    if learned is not None:
        out["auc"]["- occluder map"] = round(auc(-va[:, 5], yva), 3)
        for f in (0.05, 0.1, 0.2):
            rules[f"score - clutter - {f} x occluder map"] = lambda x, f=f: x[:, 0] - f * x[:, 5]
        inputs = lambda x: np.hstack([x[:, 6:], x[:, :1]])  # the peak's unit feature and the evidence
        coef = logistic(inputs(tr), ytr)
        rules["logistic(peak feature, evidence)"] = lambda x: inputs(x) @ coef[:-1] + coef[-1]
        for name in list(rules)[-4:]:
            out["auc"][name] = round(auc(rules[name](va), yva), 3)
    for name, rule in rules.items():
        for w in (0.3, 0.4, 0.5):
            ch, uv = [], []
            for k in np.unique(tr[:, 4]).astype(int):
                t_k = best_threshold(rule(tr)[tr[:, 4] == k], ytr[tr[:, 4] == k], w)
                ev, yv = rule(va)[va[:, 4] == k], yva[va[:, 4] == k]
                ch += list(ev[~yv] <= t_k)
                uv += list(ev[yv] > t_k)
            out["rates"][f"{name}, w={w}"] = {
                "covered_hidden": round(np.mean(ch), 3),
                "uncovered_visible": round(np.mean(uv), 3),
            }
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
