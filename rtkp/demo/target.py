"""The printable target: an A4 page with 12 uniquely identifiable keypoints.

Each keypoint is the junction of a 2×2 block of coloured squares (a checkerboard corner localises to a fraction of a
pixel), and every block has its own colour quadruple and its own surround, so no two keypoints look alike — CoKe keeps
one prototype per keypoint, which only makes sense for unique points. The rest of the page is a seeded, non-repeating
scatter of shapes so the page has texture everywhere (clutter for the clutter bank) but no second junction of the
same colours. Everything is deterministic: the same page, keypoints and names on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAGE_MM = (210.0, 297.0)  # A4 portrait
SQUARE_MM = 11.0
SEED = 20261129
PALETTE = {
    "red": (215, 40, 40),
    "green": (40, 160, 70),
    "blue": (40, 80, 200),
    "yellow": (240, 200, 30),
    "black": (25, 25, 25),
    "cyan": (30, 180, 200),
    "magenta": (190, 50, 160),
    "orange": (240, 130, 30),
}


@dataclass(frozen=True)
class Target:
    """The page as an RGB image at `px_per_mm`, its keypoints in page pixels and mm, and their names."""

    image: np.ndarray
    keypoints_px: np.ndarray  # (K, 2), pixel-centre convention
    keypoints_mm: np.ndarray  # (K, 2)
    names: list[str]
    px_per_mm: float

    @property
    def size_px(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def keypoint_layout() -> tuple[np.ndarray, list[str], list[tuple[str, str, str, str]]]:
    """(K, 2) keypoint positions in mm, names, and each junction's colours (top-left, top-right, bottom-left,
    bottom-right). A jittered 3×4 grid keeps every keypoint at least 30 mm from the page edge and from each other."""
    rng = np.random.default_rng(SEED)
    colours = list(PALETTE)
    xs, ys = np.linspace(40, 170, 3), np.linspace(45, 252, 4)
    pts, names, quads, used = [], [], [], set()
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            pts.append([x + rng.uniform(-8, 8), y + rng.uniform(-8, 8)])
            while True:
                quad = tuple(rng.choice(colours, 4, replace=False))
                if quad not in used:
                    used.add(quad)
                    break
            quads.append(quad)
            names.append(f"{'abcd'[r]}{c + 1}_{quad[0]}_{quad[3]}")
    return np.array(pts), names, quads


def render_target(px_per_mm: float = 4.0) -> Target:
    """Draw the page. The junction of keypoint k is exactly at keypoints_px[k] (a corner between pixel centres
    when the square size in pixels is whole)."""
    import cv2

    w, h = int(round(PAGE_MM[0] * px_per_mm)), int(round(PAGE_MM[1] * px_per_mm))
    img = np.full((h, w, 3), 245, np.uint8)
    rng = np.random.default_rng(SEED + 1)
    pts_mm, names, quads = keypoint_layout()
    # background scatter: shapes that avoid the keypoint blocks
    for _ in range(260):
        cx, cy = rng.uniform(0, PAGE_MM[0]), rng.uniform(0, PAGE_MM[1])
        if np.min(np.hypot(pts_mm[:, 0] - cx, pts_mm[:, 1] - cy)) < 2.2 * SQUARE_MM + 4:
            continue
        colour = tuple(int(v) for v in rng.integers(90, 230, 3))
        size = rng.uniform(2, 9) * px_per_mm
        p = (int(cx * px_per_mm), int(cy * px_per_mm))
        kind = rng.integers(4)
        if kind == 0:
            cv2.circle(img, p, int(size), colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(
                img, (int(p[0] - size), int(p[1] - size / 2)), (int(p[0] + size), int(p[1] + size / 2)), colour, -1
            )
        elif kind == 2:
            ang = rng.uniform(0, np.pi)
            d = np.array([np.cos(ang), np.sin(ang)]) * size * 1.5
            cv2.line(
                img,
                (int(p[0] - d[0]), int(p[1] - d[1])),
                (int(p[0] + d[0]), int(p[1] + d[1])),
                colour,
                max(int(px_per_mm), 1),
                cv2.LINE_AA,
            )
        else:
            tri = np.array([[0, -size], [size * 0.9, size * 0.6], [-size * 0.9, size * 0.6]]) + p
            cv2.fillPoly(img, [tri.astype(np.int32)], colour, cv2.LINE_AA)
    s = int(round(SQUARE_MM * px_per_mm))
    kp_px = []
    for (x_mm, y_mm), quad, k in zip(pts_mm, quads, range(len(names))):
        # junction at a whole-pixel boundary: between pixel columns j0-1 and j0, i.e. at x = j0 - 0.5
        j0, i0 = int(round(x_mm * px_per_mm)), int(round(y_mm * px_per_mm))
        border = 3 + (k % 3)  # a surround whose width differs between neighbours
        cv2.rectangle(
            img,
            (j0 - s - border * 2, i0 - s - border * 2),
            (j0 + s + border * 2 - 1, i0 + s + border * 2 - 1),
            (255, 255, 255),
            -1,
        )
        cv2.rectangle(
            img,
            (j0 - s - border, i0 - s - border),
            (j0 + s + border - 1, i0 + s + border - 1),
            PALETTE[quad[(k + 1) % 4]] if k % 2 else (60, 60, 60),
            max(border // 2, 1),
        )
        img[i0 - s : i0, j0 - s : j0] = PALETTE[quad[0]]
        img[i0 - s : i0, j0 : j0 + s] = PALETTE[quad[1]]
        img[i0 : i0 + s, j0 - s : j0] = PALETTE[quad[2]]
        img[i0 : i0 + s, j0 : j0 + s] = PALETTE[quad[3]]
        kp_px.append([j0 - 0.5, i0 - 0.5])
    kp_px = np.array(kp_px, np.float64)
    cv2.putText(
        img,
        "rtkp target v1 - print at 100% on A4",
        (int(12 * px_per_mm), h - int(8 * px_per_mm)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.1 * px_per_mm,
        (90, 90, 90),
        max(int(px_per_mm / 4), 1),
        cv2.LINE_AA,
    )
    return Target(img, kp_px, (kp_px + 0.5) / px_per_mm, names, px_per_mm)


def write_png(target: Target, path) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(target.image, cv2.COLOR_RGB2BGR)):
        from rtkp.errors import ConfigError

        raise ConfigError(f"--out {path}: cannot write the image")


def write_pdf(target: Target, path, page_mm: tuple[float, float] = PAGE_MM) -> None:
    """A one-page PDF with the target as a JPEG image filling the page at its true size (print at 100 %)."""
    import cv2

    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(target.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    h, w = target.image.shape[:2]
    pw, ph = page_mm[0] / 25.4 * 72, page_mm[1] / 25.4 * 72
    content = f"q {pw:.2f} 0 0 {ph:.2f} 0 0 cm /Im0 Do Q".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {pw:.2f} {ph:.2f}] /Resources << /XObject << /Im0 4 0 R >> >> "
        f"/Contents 5 0 R >>".encode(),
        f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceRGB /BitsPerComponent 8 "
        f"/Filter /DCTDecode /Length {len(jpeg)} >>\nstream\n".encode()
        + jpeg.tobytes()
        + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    with open(path, "wb") as fh:
        fh.write(bytes(out))
