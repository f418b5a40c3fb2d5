"""Two mice in one open-field frame with exact labels: the mouse of one labelled frame pasted into another.

    python tools/composite_mice.py --data ../shared/data/dlc_openfield_mouse \\
        --split ../shared/data/dlc_openfield_mouse/split.json --out runs/two_mice \\
        --region 20,50,620,455 [--per-frame 1] [--seed 0]

(--region 20,50,620,455 is the open field's floor: mice are taken from it and put on it. On that data this writes 92
train and 23 test images, one test host skipped for want of room, in about 20 s.)

The DLC open-field data has one mouse per frame. For every labelled frame of a part (the host), a donor frame of the
same part is picked at random (one whose box lies inside --region: a mouse at the wall would bring the wall along);
the donor's mouse is cut out (a box around its keypoints, padded by --pad of its size, with a soft mask) and pasted
into the host, turned by a random angle, at a random place where its keypoints lie inside --region and its box stays
--gap px away from the host's mouse. The pasted keypoints are the donor's labels moved by the same rotation and shift,
so both mice's labels are exact; the host's mouse is never covered.

The soft mask: where the part's median frame (rtkp.data.background, the arena without the mouse) is usable, the
pixels that differ from it by more than --threshold grey levels (the mouse and its tail; dilated, blurred) inside the
feathered box; otherwise the feathered box itself.

Parts are never mixed: train hosts get train donors and the train median, test hosts test ones, so a model trained on
`train` never sees a test mouse. Writes out/images/<part>_<n>.png (lossless), out/annotations.json (COCO keypoints:
two annotations per image, track_id 0 = the host's mouse, 1 = the pasted one; each image records its host, donor
and the affine that moved the donor's mouse) and out/split.json (the train and test images), so that

    rtkp train --data out/annotations.json --split out/split.json

trains on two-mice frames made from training frames only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rtkp.data.background import empty_background  # noqa: E402
from rtkp.data.load import load_split  # noqa: E402
from rtkp.errors import RtkpError  # noqa: E402

TRIES = 300  # random placements per donor before another donor is tried
DONORS = 10  # donors tried per composite before the host frame is skipped


def padded_box(kps: np.ndarray, vis: np.ndarray, pad: float) -> np.ndarray:
    """(4,) x0, y0, x1, y1: the visible keypoints' box grown by `pad` × its larger side (at least 4 px) each way."""
    lo, hi = kps[vis].min(0), kps[vis].max(0)
    grow = max(pad * float((hi - lo).max()), 4.0)
    return np.concatenate([lo - grow, hi + grow])


def soft_mask(image, median, box, threshold: float, feather: float) -> np.ndarray:
    """(H, W) float32 alpha in [0, 1] of the mouse inside `box` (see the module docstring)."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = np.round(box).astype(int)
    window = np.zeros((h, w), np.float32)
    window[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1
    window = cv2.GaussianBlur(window, (0, 0), feather) if feather > 0 else window
    if median is None:
        return window
    diff = np.abs(image.astype(np.float32).mean(2) - median.astype(np.float32).mean(2)) > threshold
    grown = cv2.dilate(diff.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    return window * cv2.GaussianBlur(grown, (0, 0), 1.0)


def placement(rng, donor_kps, donor_vis, support, host_box, region, gap: float):
    """A 2×3 affine (rotation about the donor mouse's centre, then a shift) that puts the donor's visible keypoints
    inside `region` and the corners of `support` (its mask's box) `gap` px clear of `host_box`; None if TRIES fail."""
    centre = donor_kps[donor_vis].mean(0)
    x0, y0, x1, y1 = support
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    hx0, hy0, hx1, hy1 = host_box[0] - gap, host_box[1] - gap, host_box[2] + gap, host_box[3] + gap
    rx0, ry0, rx1, ry1 = region
    for _ in range(TRIES):
        angle = rng.uniform(-np.pi, np.pi)
        to = rng.uniform([rx0, ry0], [rx1, ry1])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        affine = np.concatenate([rot, (to - rot @ centre)[:, None]], 1)
        moved = donor_kps[donor_vis] @ rot.T + affine[:, 2]
        if not ((moved >= [rx0, ry0]) & (moved <= [rx1, ry1])).all():
            continue
        box = corners @ rot.T + affine[:, 2]
        bx0, by0 = box.min(0)
        bx1, by1 = box.max(0)
        if bx1 < hx0 or bx0 > hx1 or by1 < hy0 or by0 > hy1:  # no overlap with the host's mouse
            return affine
    return None


def composite(host, host_kps, host_vis, donor, donor_kps, donor_vis, median, args, rng):
    """(image, pasted keypoints (K, 2), affine) or None when no placement was found."""
    import cv2

    h, w = host.shape[:2]
    region = args.region or (0, 0, w - 1, h - 1)
    box = padded_box(donor_kps, donor_vis, args.pad)
    alpha = soft_mask(donor, median, box, args.threshold, args.feather)
    ys, xs = np.nonzero(alpha > 0.01)
    if not len(xs):
        return None
    support = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    host_box = padded_box(host_kps, host_vis, args.pad)
    affine = placement(rng, donor_kps, donor_vis, support, host_box, region, args.gap)
    if affine is None:
        return None
    # the same affine moves pixels and labels: OpenCV's pixel-centre coordinates are the labels' (origin at the
    # top-left pixel's centre), so a keypoint lands on the pixel its label names
    warped = cv2.warpAffine(donor, affine, (w, h), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, affine, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    image = (host.astype(np.float32) * (1 - a) + warped.astype(np.float32) * a).round().astype(np.uint8)
    return image, donor_kps @ affine[:, :2].T + affine[:, 2], affine


def coco_keypoints(kps: np.ndarray, vis: np.ndarray) -> list[float]:
    flat = []
    for (x, y), v in zip(kps, vis):
        flat += [float(x), float(y), 2] if v else [0.0, 0.0, 0]
    return flat


def write_part(data, part: str, args, out: Path, images: list, anns: list, rng) -> list[str]:
    """Composite the frames of one part; returns the file names written."""
    import cv2

    samples = [s for s in data.samples if s.visible.any()]
    if len(samples) < 2:
        raise RtkpError(f"{args.split or args.data} ({part}): needs at least 2 labelled frames, has {len(samples)}")
    frames = [s.load_image() for s in samples]
    median, why = empty_background(frames, [s.keypoints for s in samples], [s.visible for s in samples])
    source = "the part's median" if why is None else f"boxes ({why})"
    print(f"{part}: {len(samples)} frames; soft mask from {source}")
    h, w = frames[0].shape[:2]
    x0, y0, x1, y1 = args.region or (0, 0, w - 1, h - 1)
    donors = []  # a mouse at the wall would bring the wall along: donors lie inside the region
    for j, s in enumerate(samples):
        bx0, by0, bx1, by1 = padded_box(s.keypoints, s.visible, args.pad)
        if bx0 >= x0 and by0 >= y0 and bx1 <= x1 and by1 <= y1:
            donors.append(j)
    if not donors:
        raise RtkpError(f"{part}: no frame's mouse box lies inside --region {args.region}; widen it or lower --pad")
    names, skipped = [], 0
    for i, host in enumerate(samples):
        choices = [j for j in donors if j != i]
        for _copy in range(args.per_frame):
            made = None
            for _ in range(DONORS if choices else 0):
                j = choices[int(rng.integers(len(choices)))]
                donor = samples[j]
                made = composite(frames[i], host.keypoints, host.visible, frames[j], donor.keypoints, donor.visible,
                                 median, args, rng)  # fmt: skip
                if made is not None:
                    break
            if made is None:
                skipped += 1
                continue
            image, pasted, affine = made
            name = f"{part}_{len(names):04d}.png"
            cv2.imwrite(str(out / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            image_id = len(images) + 1
            images.append(
                {"id": image_id, "file_name": name, "width": image.shape[1], "height": image.shape[0], "part": part,
                 "host": host.name, "donor": donor.name, "affine": np.round(affine, 6).tolist()}
            )  # fmt: skip
            for track, (kps, vis) in enumerate(((host.keypoints, host.visible), (pasted, donor.visible))):
                x0, y0, x1, y1 = padded_box(kps, vis, args.pad)
                anns.append(
                    {"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "track_id": track,
                     "keypoints": coco_keypoints(kps, vis), "num_keypoints": int(vis.sum()),
                     "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                     "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0}
                )  # fmt: skip
            names.append(name)
    print(f"{part}: wrote {len(names)} two-mice images" + (f", {skipped} skipped (no room)" if skipped else ""))
    return names


def parse_region(text: str | None):
    if text is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise RtkpError(f"--region {text!r}: give X0,Y0,X1,Y1 in pixels, e.g. 20,50,620,455") from None
    if not (x0 < x1 and y0 < y1):
        raise RtkpError(f"--region {text!r}: X0 < X1 and Y0 < Y1 are needed")
    return x0, y0, x1, y1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a DeepLabCut project folder (one labelled mouse per frame)")
    p.add_argument("--split", help="split JSON (train/test); without it, all frames are one part, `train`")
    p.add_argument("--out", required=True, help="output folder (images/, annotations.json, split.json)")
    p.add_argument("--per-frame", type=int, default=1, help="composites per host frame (default 1)")
    p.add_argument("--region", help="X0,Y0,X1,Y1: where pasted keypoints may land (default: the whole image)")
    p.add_argument("--pad", type=float, default=0.35, help="box padding, share of the keypoints' extent (0.35)")
    p.add_argument("--gap", type=float, default=8.0, help="px between the pasted box and the host's mouse box (8)")
    p.add_argument("--threshold", type=float, default=25.0, help="grey levels that tell mouse from median (25)")
    p.add_argument("--feather", type=float, default=3.0, help="blur (px) of the box edge (3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        args.region = parse_region(args.region)
        if args.per_frame < 1 or args.pad < 0 or args.gap < 0:
            raise RtkpError("--per-frame must be >= 1, --pad and --gap >= 0")
        out = Path(args.out)
        (out / "images").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(args.seed)
        images, anns, split, data = [], [], {}, None
        for part in ("train", "test") if args.split else ("train",):
            data = load_split(args.data, args.split, part, several=False)
            split[part] = write_part(data, part, args, out, images, anns, rng)
        split.setdefault("test", [])
        category = {"id": 1, "name": "mouse", "keypoints": data.keypoint_names,
                    "skeleton": [[a + 1, b + 1] for a, b in data.skeleton]}  # fmt: skip
        doc = {"info": {"description": "two mice composited from single-mouse frames (tools/composite_mice.py)",
                        "data": str(args.data), "seed": args.seed}, "images": images, "annotations": anns,
               "categories": [category]}  # fmt: skip
        (out / "annotations.json").write_text(json.dumps(doc))
        (out / "split.json").write_text(json.dumps({"about": "composites of train frames / of test frames", **split}))
    except RtkpError as exc:
        print(f"composite_mice: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {out / 'annotations.json'} and {out / 'split.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
