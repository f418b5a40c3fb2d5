"""`rtkp eval`: RMSE, PCK and per-keypoint figures, and PCK / visibility accuracy under occlusion levels L0..L3.

PCK threshold: a fraction of the larger side of the object's box, the box of its labelled keypoints.
Occlusion: occluders cover 0, 20–40, 40–60, 60–80 % of the object's box (padded keypoint box, see data/occlude.py);
PCK is measured on the keypoints left uncovered, visibility accuracy on the covered ones (reported hidden = correct).
Each image is occluded OCCLUSION_DRAWS times per level (more samples than the few test images give), from generators
seeded by (image index, level, draw), so every model sees exactly the same occluded images. The occluders' pixels are
synthetic textures, or cut from real photographs (`photos`, `rtkp eval --occluders DIR`); the report says which.

Predictions go through the same backend and Tracker as `rtkp run` and `rtkp export` (rtkp.backends.open_backend,
rtkp.tracker.Tracker), so the figures are those of the graph and precision that actually run; the report names both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rtkp.data.occlude import LEVELS, covered, object_box, paste_occluders
from rtkp.data.sample import Dataset
from rtkp.eval.names import match_keypoints, not_scored_lines
from rtkp.manifest import Manifest

THRESHOLDS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
OCCLUSION_DRAWS = 4


def predict_all(backend, manifest: Manifest, images: list[np.ndarray], cols=None) -> tuple[np.ndarray, np.ndarray]:
    """images: list of (H, W, 3) uint8 RGB, any sizes -> (keypoints (N, K, 2) source px, visible (N, K) bool), for the
    model's keypoints at indices `cols` (None: all of them)."""
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    xy, visible = [], []
    cols = slice(None) if cols is None else cols
    for i, image in enumerate(images):
        # a fresh Tracker per image: test images are unrelated, so no smoothing state may carry over between them
        result = Tracker(backend, manifest).process(Frame(i, None, 0, image))
        xy.append(result.keypoints[cols])
        visible.append(result.visible[cols])
    return np.stack(xy), np.stack(visible)


def _pck(errors: np.ndarray, scale: np.ndarray, thr: float) -> float:
    return float((errors <= thr * scale).mean()) if errors.size else float("nan")


def position_figures(pred_xy: np.ndarray, gt_xy: np.ndarray, labelled: np.ndarray, scale: np.ndarray, names):
    """pred_xy, gt_xy: (N, K, 2); labelled: (N, K) bool; scale: (N,) box side -> rmse, pck, per_keypoint."""
    err = np.linalg.norm(pred_xy - gt_xy, axis=-1)
    scale_nk = np.broadcast_to(scale[:, None], err.shape)
    e, s = err[labelled], scale_nk[labelled]
    report = {
        "rmse_px": float(np.sqrt(np.mean(e**2))) if e.size else float("nan"),
        "mean_error_px": float(e.mean()) if e.size else float("nan"),
        "pck": {f"{t:g}": _pck(e, s, t) for t in THRESHOLDS},
        "per_keypoint": {},
    }
    for k, name in enumerate(names):
        ek, sk = err[:, k][labelled[:, k]], scale_nk[:, k][labelled[:, k]]
        report["per_keypoint"][name] = {
            "rmse_px": float(np.sqrt(np.mean(ek**2))) if ek.size else float("nan"),
            "pck": {f"{t:g}": _pck(ek, sk, t) for t in (0.05, 0.1)},
            "count": int(ek.size),
        }
    return report


def evaluate(
    model_dir: Path,
    data: Dataset,
    occlusion: bool = False,
    progress: bool = True,
    backend: str = "auto",
    precision: str | None = None,
    threads: int = 0,
    photos: list[np.ndarray] | None = None,
    photos_source: str | Path | None = None,
) -> dict:
    """Figures for `model_dir` on `data` (use the test split). See the module docstring for definitions.

    backend, precision, threads: as for rtkp.backends.open_backend ("auto": what `rtkp run` would pick).
    photos: (h, w, 3) uint8 RGB images (rtkp.data.occlude.load_photos) to cut occluders from; None: synthetic
    textures. photos_source: where they came from (a folder), for the report's "occluders" entry.
    """
    from rtkp.backends import open_backend, read_model_info

    manifest = read_model_info(model_dir).manifest
    names = list(manifest.keypoint_names)
    # keypoints are matched by name: the data may have more (a model trained on a subset, `rtkp train --keypoints`),
    # the model may have more (keypoints added from shots; the data's subset given with `rtkp eval --keypoints`), and
    # the order may differ (added keypoints come last); what both have is evaluated, in the data's order
    common, left_out = match_keypoints(names, data.keypoint_names)
    if not common:
        from rtkp.errors import DataError

        raise DataError(f"the model's keypoints {names} and the data's {data.keypoint_names} have none in common")
    if common != data.keypoint_names:
        data = data.select_keypoints(common, "the keypoints that model and data share")
    cols = [names.index(n) for n in common]
    runtime = open_backend(model_dir, backend, threads=threads, precision=precision)
    try:
        report = _figures(runtime, manifest, str(model_dir), data, occlusion, progress, photos, photos_source, cols)
    finally:
        runtime.close()
    if left_out:
        report["not_scored"] = left_out
    return report


def object_size(points: np.ndarray) -> float:
    """PCK's reference length: the larger side of the box of the object's labelled keypoints (M, 2); at least 1 px
    (also for a frame where none is labelled, where it is not used)."""
    return max(float(np.ptp(points, 0).max()), 1.0) if len(points) else 1.0


def _occluders_label(photos: list[np.ndarray] | None, source: str | Path | None) -> str:
    """The report's "occluders" entry: "synthetic", or "photos:<folder>" (the count when no folder was named)."""
    if photos is None:
        return "synthetic"
    return f"photos:{source}" if source is not None else f"photos:<{len(photos)} images>"


def _figures(
    backend,
    manifest: Manifest,
    model: str,
    data: Dataset,
    occlusion: bool,
    progress: bool,
    photos: list[np.ndarray] | None = None,
    photos_source: str | Path | None = None,
    cols: list[int] | None = None,
) -> dict:
    """The report; cols: the model's keypoints that are the data's, in the data's order (None: the same list)."""
    from tqdm import tqdm

    images = [s.load_image() for s in tqdm(data.samples, desc="load", disable=not progress, file=sys.stderr)]
    gt = np.stack([s.keypoints for s in data.samples])
    labelled = np.stack([s.visible for s in data.samples])
    scale = np.array([object_size(s.object_points()) for s in data.samples])
    pred_xy, pred_visible = predict_all(backend, manifest, images, cols)
    report = {
        "model": model,
        "head": manifest.head,
        "backend": backend.name,
        "precision": backend.precision,
        "images": len(images),
        "keypoints": list(data.keypoint_names),
    }
    report.update(position_figures(pred_xy, gt, labelled, scale, data.keypoint_names))
    report["visible_rate"] = float(pred_visible[labelled].mean())
    # keypoints the labels leave empty are absent from the frame (DeepLabCut's convention): they should be hidden
    report["absent"] = int((~labelled).sum())
    report["hidden_rate_absent"] = float((~pred_visible[~labelled]).mean()) if (~labelled).any() else None
    if occlusion:
        report["occluders"] = _occluders_label(photos, photos_source)
        report["occlusion"] = {}
        for li, (level, cov) in enumerate(
            tqdm(LEVELS.items(), desc="occlusion", disable=not progress, file=sys.stderr)
        ):
            draws = 1 if level == "L0" else OCCLUSION_DRAWS
            hidden, pxy, vis = [], [], []
            for d in range(draws):  # one draw's occluded images at a time: memory stays at one copy of the data
                occ_images = []
                for i, (im, s) in enumerate(zip(images, data.samples)):
                    rng = np.random.default_rng([1234, i, li, d])
                    pts = s.object_points()
                    im2, mask = paste_occluders(rng, im, object_box(pts, np.ones(len(pts), bool)), cov, photos)
                    occ_images.append(im2)
                    hidden.append(covered(mask, s.keypoints) & s.visible)
                xy, v = predict_all(backend, manifest, occ_images, cols)
                pxy.append(xy)
                vis.append(v)
            hidden, pxy, vis = np.stack(hidden), np.concatenate(pxy), np.concatenate(vis)
            lab, g, sc = np.tile(labelled, (draws, 1)), np.tile(gt, (draws, 1, 1)), np.tile(scale, draws)
            uncovered = lab & ~hidden
            fig = position_figures(pxy, g, uncovered, sc, data.keypoint_names)
            report["occlusion"][level] = {
                "coverage": list(cov),
                "images": len(pxy),
                "pck": {k: fig["pck"][k] for k in ("0.05", "0.1")},
                "rmse_px": fig["rmse_px"],
                "uncovered": int(uncovered.sum()),
                "covered": int(hidden.sum()),
                "visibility_accuracy_covered": float((~vis[hidden]).mean()) if hidden.any() else None,
                "visible_rate_uncovered": float(vis[uncovered].mean()) if uncovered.any() else None,
            }
        l0 = report["occlusion"]["L0"]["pck"]["0.1"]
        for level in LEVELS:
            cur = report["occlusion"][level]
            cur["pck_0.1_kept"] = cur["pck"]["0.1"] / l0 if l0 else None
    return report


def format_report(report: dict) -> str:
    """A short human-readable table."""
    # reports recorded before evaluation ran through a backend name neither
    ran = f" ({report['backend']}, {report['precision']})" if "backend" in report else ""
    lines = [
        f"{report['head']} on {report['images']} images{ran}: RMSE {report['rmse_px']:.2f} px, "
        f"PCK@0.05 {report['pck']['0.05']:.3f}, PCK@0.1 {report['pck']['0.1']:.3f}",
    ]
    lines += not_scored_lines(report)
    if report.get("absent"):
        lines.append(
            f"  labelled keypoints reported visible: {report['visible_rate']:.1%}; "
            f"absent ones ({report['absent']}) reported hidden: {report['hidden_rate_absent']:.1%}"
        )
    for name, k in report["per_keypoint"].items():
        lines.append(
            f"  {name:>12}: RMSE {k['rmse_px']:6.2f} px  PCK@0.05 {k['pck']['0.05']:.3f}  PCK@0.1 {k['pck']['0.1']:.3f}"
        )
    if "occlusion" in report:
        # reports recorded before photo occluders existed used synthetic textures
        lines.append(f"  occluders: {report.get('occluders', 'synthetic')}")
    for level, o in report.get("occlusion", {}).items():
        acc, kept = o["visibility_accuracy_covered"], o["pck_0.1_kept"]
        lines.append(
            f"  {level} ({o['coverage'][0]:.0%}-{o['coverage'][1]:.0%}): PCK@0.1 {o['pck']['0.1']:.3f} "
            f"(kept {'n/a' if kept is None else f'{kept:.1%}'}), "
            f"hidden flagged on covered: {'n/a' if acc is None else f'{acc:.1%}'}"
        )
    return "\n".join(lines)


def record_in_manifest(model_dir: Path, report: dict, data, split) -> None:
    """Store the held-out figures in the model's manifest (its `evaluation` entry), through its one writer."""
    from rtkp.manifest import read_manifest, write_manifest

    evaluation = dict(report, data=str(data), split=str(split) if split else None)
    evaluation.pop("model", None)
    write_manifest(model_dir, read_manifest(model_dir).updated(evaluation=evaluation))


def plot_report(report: dict, path: Path) -> None:
    """PCK against threshold, and PCK@0.1 against occlusion level."""
    from rtkp.errors import require

    require("matplotlib", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    thr = [float(t) for t in report["pck"]]
    axes[0].plot(thr, list(report["pck"].values()), "o-")
    axes[0].set(xlabel="threshold (fraction of box side)", ylabel="PCK", ylim=(0, 1.02), title="PCK vs threshold")
    if "occlusion" in report:
        levels = list(report["occlusion"])
        axes[1].plot(levels, [report["occlusion"][lv]["pck"]["0.1"] for lv in levels], "o-", label="PCK@0.1")
        axes[1].plot(levels, [report["occlusion"][lv]["pck"]["0.05"] for lv in levels], "s--", label="PCK@0.05")
        axes[1].set(xlabel="occlusion level", ylabel="PCK (uncovered keypoints)", ylim=(0, 1.02), title="Occlusion")
        axes[1].legend()
    fig.suptitle(f"{report['head']} ({report['images']} images)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
