"""`rtkp export`: annotate recorded videos and image folders, every frame, in the formats labs use.

Each input runs through the multi-process runner with the `lossless` policy (decode and inference overlap; one record
per decoded frame, in order) and the same Tracker as `rtkp run`. Smoothing: `none`, `causal` (the live filter) or
`offline` (forward Kalman + Rauch–Tung–Striebel backward pass, which uses future frames). Outputs are written under
temporary names and renamed when complete; a `<stem>.done.json` marker written last lets a re-run skip finished inputs.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .annotate import FORMATS, SUFFIX, write_coco, write_dlc_csv, write_jsonl
from .config import Config
from .errors import ConfigError, RtkpError
from .messages import KeypointFrame


def expand_inputs(items: list[str]) -> list[str]:
    """Video files and folders as given; a glob of videos becomes one input per file, a glob of images stays one."""
    from .pipeline.sources import IMAGE_SUFFIXES

    out = []
    for item in items:
        if any(c in item for c in "*?[") and not Path(item).exists():
            matches = sorted(glob.glob(item))
            if matches and all(Path(m).suffix.lower() in IMAGE_SUFFIXES for m in matches):
                out.append(item)
            else:
                out.extend(matches or [item])
        else:
            out.append(item)
    return out


def output_stem(source: str) -> str:
    p = Path(source.rstrip("/"))
    if any(c in source for c in "*?["):
        return (p.parent.name or "images") + "_glob"
    return p.stem if p.suffix else p.name


def _fingerprint(source: str) -> dict:
    p = Path(source)
    if p.is_file():
        st = p.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = sorted(glob.glob(source) if not p.exists() else [str(f) for f in p.iterdir()])
    return {"files": len(files), "newest_ns": max((os.stat(f).st_mtime_ns for f in files), default=0)}


def _outputs(out_dir: Path, stem: str, formats: list[str], video: bool) -> dict[str, Path]:
    paths = {f: out_dir / f"{stem}{SUFFIX[f]}" for f in formats}
    if video:
        paths["video"] = out_dir / f"{stem}.annotated.mp4"
    return paths


def _complete(marker: Path, outputs: dict[str, Path], settings: dict) -> bool:
    try:
        done = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return done.get("settings") == settings and all(p.is_file() for p in outputs.values())


def offline_smooth(frames: list[KeypointFrame], cfg) -> list[KeypointFrame]:
    """Replace positions/visibility/state by the RTS smoother's (see pipeline/offline_smooth.py)."""
    from .pipeline.offline_smooth import rts_smooth

    if not frames:
        return frames
    t = np.array([kf.pts if kf.pts is not None else i / 30.0 for i, kf in enumerate(frames)])
    xy = np.stack([kf.keypoints for kf in frames]).astype(np.float64)
    vis = np.stack([kf.visible for kf in frames])
    out, v, st = rts_smooth(t, xy, vis, cfg.accel_noise, cfg.meas_noise, cfg.hold_s)
    return [dataclasses.replace(kf, keypoints=out[i], visible=v[i], state=st[i]) for i, kf in enumerate(frames)]


def _total_frames(source: str) -> int | None:
    try:
        import av

        with av.open(source) as c:
            n = c.streams.video[0].frames
            return n or None
    except Exception:
        return None


def _write_video(source: str, path: Path, frames: list[KeypointFrame], names, skeleton, step=None) -> None:
    """Re-decode the source and draw the final (possibly offline-smoothed) keypoints on every frame.

    The MP4 keeps the source's rate and timestamps (VideoWriter.for_source). step(): called after each frame written.
    """
    from .pipeline.record import VideoWriter
    from .pipeline.sources import Source, parse_source
    from .viz import draw_keypoints

    by_index = {kf.index: kf for kf in frames}
    writer = None
    ok = False
    try:
        for frame in Source(parse_source(source)):
            kf = by_index.get(frame.index)
            if kf is None:
                continue
            if writer is None:
                writer = VideoWriter.for_source(path, frame.image.shape[1::-1], source)
            writer.write(draw_keypoints(frame.image, kf, names, skeleton), frame.pts)
            if step is not None:
                step()
        ok = True
    finally:
        if writer is not None:
            writer.close(keep=ok)


class _Progress:
    """One bar over all of an input's work, so it reaches 100 % only when everything is written.

    Steps: one per frame tracked, one for offline smoothing, one per annotation file, one per frame drawn into the
    annotated video, and a last one for finishing (the encoder's flush, the renames, the .done.json marker). The
    description names the phase in progress ("tracking", "smoothing", "writing clip.csv", "encoding video").
    """

    def __init__(self, stem: str, frames: int | None, after: int, video: bool, enabled: bool):
        from tqdm import tqdm

        self.stem, self.after, self.video = stem, after, video
        total = self._total(frames) if frames else None
        self.bar = tqdm(total=total, desc=f"{stem} tracking", unit="step", disable=not enabled, file=sys.stderr)

    def _total(self, frames: int) -> int:
        return frames * (2 if self.video else 1) + self.after + 1

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def phase(self, name: str, frames: int | None = None) -> None:
        """Enter a phase; `frames` (after tracking): the frames actually tracked, which fixes the total."""
        if frames is not None:
            self.bar.total = self._total(frames)
        self.bar.set_description(f"{self.stem} {name}")  # refreshes the bar

    def close(self) -> None:
        self.bar.close()


def export_one(
    source: str,
    out_dir: Path,
    model: str,
    cfg: Config,
    formats: list[str],
    video: bool,
    smooth: str,
    backend: str,
    overwrite: bool,
    progress: bool,
) -> dict:
    """Export one input; returns its summary (or raises RtkpError with a one-line reason)."""
    from .backends import read_model_info
    from .pipeline.run import RunOptions, run_pipeline

    info = read_model_info(model)
    names = list(info.manifest["keypoint_names"])
    skeleton = [tuple(p) for p in info.manifest.get("skeleton", [])]
    stem = output_stem(source)
    outputs = _outputs(out_dir, stem, formats, video)
    marker = out_dir / f"{stem}.done.json"
    settings = {
        "source": str(Path(source).resolve()),
        "input": _fingerprint(source),
        "model": info.weights_sha256,
        "formats": formats,
        "video": video,
        "smooth": smooth,
    }
    if not overwrite and _complete(marker, outputs, settings):
        return {"source": source, "skipped": True, "reason": "outputs complete (use --overwrite to redo)"}
    marker.unlink(missing_ok=True)
    smoothing = cfg.smoothing if smooth == "causal" else dataclasses.replace(cfg.smoothing, filter="none")
    frames: list[KeypointFrame] = []
    expected = _total_frames(source)
    after = (1 if smooth == "offline" else 0) + sum(f in outputs for f in FORMATS)
    bar = _Progress(stem, expected, after, video, progress)

    def collect(kf: KeypointFrame) -> None:
        frames.append(kf)
        bar.step()

    t0 = time.monotonic()
    opts = RunOptions(
        source=source,
        model=model,
        backend=backend,
        policy="lossless",
        collect=True,
        smoothing=smoothing,
        run=cfg.run,
        threads=cfg.run.threads,
    )
    try:
        summary = run_pipeline(opts, on_frame=collect)
        elapsed = time.monotonic() - t0
        decode = summary.get("decode", {})
        if not frames:
            raise RtkpError(
                f"{source}: no frame could be decoded" + (f" ({decode['errors'][0]})" if decode.get("errors") else "")
            )
        if smooth == "offline":
            bar.phase("smoothing", len(frames))
            frames = offline_smooth(frames, cfg.smoothing)
            bar.step()
        model_id = info.weights_sha256[:12]
        writers = {
            "coco": lambda path: write_coco(path, frames, names, skeleton, source, model_id),
            "jsonl": lambda path: write_jsonl(path, frames, names),
            "csv": lambda path: write_dlc_csv(path, frames, names, f"rtkp_{model_id}"),
        }
        for fmt in FORMATS:
            if fmt in outputs:
                bar.phase(f"writing {outputs[fmt].name}", len(frames))
                writers[fmt](outputs[fmt])
                bar.step()
        if video:
            bar.phase("encoding video", len(frames))
            _write_video(source, outputs["video"], frames, names, skeleton, bar.step)
        result = {
            "source": source,
            "frames": len(frames),
            "skipped_frames": decode.get("skipped", 0),
            # frames the container header lists but that never decoded (a truncated file)
            "missing_frames": max(expected - len(frames), 0) if expected else 0,
            "skipped_errors": decode.get("errors", []),
            "seconds": round(elapsed, 2),
            "fps": round(len(frames) / max(elapsed, 1e-9), 2),
            "backend": summary.get("backend"),
            "outputs": {k: str(v) for k, v in outputs.items()},
        }
        marker.write_text(json.dumps({"settings": settings, "result": result}, indent=1) + "\n")
        bar.phase("done", len(frames))
        bar.step()
    finally:
        bar.close()
    return result


def check_out_dir(out: Path) -> None:
    """Create the output folder and prove it is writable, or raise ConfigError in one line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".rtkp_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: not writable ({exc.strerror or exc})") from None


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"--format must be a comma-separated subset of {', '.join(FORMATS)}, got {text!r}")
    return formats
