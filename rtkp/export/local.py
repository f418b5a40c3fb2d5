"""`rtkp export`: annotate recorded videos and image folders, every frame, in the formats labs use.

Each input runs through the multi-process runner with the `lossless` policy (decode and inference overlap; one record
per decoded frame, in order) and the same Tracker as `rtkp run`. The writer sink (pipeline/export_sinks.py) streams
the records to `<out>/<stem>.partial/` as frames are tracked, so memory stays flat however long the video, and an
interrupted export resumes from the frame after the last one written (same input, model and settings; otherwise it
starts over). When tracking reaches the end, the outputs are finished in that folder (COCO joined, smoothing, the
annotated video), renamed into place, and a `<stem>.done.json` marker written last lets a re-run skip the input.

Smoothing: `none`, `causal` (the live filter, run in the writer sink so that a resume can replay it) or `offline`
(forward Kalman + Rauch–Tung–Striebel backward pass over the whole track, which uses future frames).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rtkp.config import Config
from rtkp.errors import ConfigError, ExportFailed, Interrupted, RtkpError
from rtkp.export.formats import FORMATS, SUFFIX, coco_line, csv_header, csv_line, join_coco, jsonl_line
from rtkp.messages import KeypointFrame


@dataclass(frozen=True)
class ExportOptions:
    """How `rtkp export` treats every input. formats: a subset of annotate.FORMATS; video: also an annotated MP4;
    smooth: none | causal | offline; overwrite: redo complete outputs and ignore partial ones; progress: show bars."""

    out: Path
    model: str
    cfg: Config = field(default_factory=Config)
    formats: tuple[str, ...] = FORMATS
    video: bool = False
    smooth: str = "none"
    backend: str = "auto"
    overwrite: bool = False
    progress: bool = True
    precision: str | None = None  # fp32 | fp16 | None: the backend's own choice (see rtkp.backends.open_backend)


def expand_inputs(items: list[str]) -> list[str]:
    """Video files and folders as given; a glob of videos becomes one input per file, a glob of images stays one."""
    from rtkp.pipeline.sources import IMAGE_SUFFIXES

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


def _outputs(out_dir: Path, stem: str, formats, video: bool) -> dict[str, Path]:
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
    """Replace positions/visibility/state by the RTS smoother's (see offline_smoothing.py)."""
    from rtkp.export.offline_smoothing import rts_smooth

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


def _write_video(source: str, path: Path, frames: Iterable[KeypointFrame], names, skeleton, step=None) -> None:
    """Re-decode the source and draw the final (possibly smoothed) keypoints on each frame that has a record.

    frames: the records in index order (a stream, merged with the decoded frames by index). The MP4 keeps the source's
    rate and timestamps (VideoWriter.for_source). step(): called after each frame written.
    """
    from rtkp.pipeline.sources import Source, parse_source
    from rtkp.sinks.draw import draw_keypoints
    from rtkp.sinks.video import VideoWriter

    records = iter(frames)
    kf = next(records, None)
    writer = None
    ok = False
    try:
        for frame in Source(parse_source(source)):
            while kf is not None and kf.index < frame.index:
                kf = next(records, None)
            if kf is None:
                break
            if kf.index != frame.index:
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

    Steps: one per frame tracked (a resumed export starts at the frames already written), one for offline smoothing,
    one per annotation file, one per frame drawn into the annotated video, and a last one for finishing (the renames,
    the .done.json marker). The description names the phase ("tracking", "smoothing", "writing clip.csv",
    "encoding video").
    """

    def __init__(self, stem: str, frames: int | None, after: int, video: bool, enabled: bool, done: int = 0):
        from tqdm import tqdm

        self.stem, self.after, self.video = stem, after, video
        total = self._total(frames) if frames else None
        self.bar = tqdm(
            total=total, initial=done, desc=f"{stem} tracking", unit="step", disable=not enabled, file=sys.stderr
        )

    def _total(self, frames: int) -> int:
        return frames * (2 if self.video else 1) + self.after + 1

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def to(self, n: int) -> None:
        """Tracking: `n` frames done in all."""
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def phase(self, name: str, frames: int | None = None) -> None:
        """Enter a phase; `frames` (after tracking): the frames actually tracked, which fixes the total."""
        if frames is not None:
            self.bar.total = self._total(frames)
        self.bar.set_description(f"{self.stem} {name}")  # refreshes the bar

    def close(self) -> None:
        self.bar.close()


def _settings(source: str, weights_sha256: str, opts: ExportOptions) -> dict:
    """What outputs (finished or partial) belong to: reused only when a re-run has the same."""
    settings = {
        "source": str(Path(source).resolve()),
        "input": _fingerprint(source),
        "model": weights_sha256,
        "formats": list(opts.formats),
        "video": opts.video,
        "smooth": opts.smooth,
    }
    if opts.smooth != "none":
        settings["smoothing"] = dataclasses.asdict(opts.cfg.smoothing)
    if opts.precision is not None:  # another precision gives other numbers: never mixed with, or skipped as, these
        settings["precision"] = opts.precision
    return settings


class ExportTargets(NamedTuple):
    """Where an input's export goes: output stem, {format or "video": path}, the .done.json marker, and the
    settings the outputs belong to (a re-run with other settings redoes them)."""

    stem: str
    outputs: dict[str, Path]
    marker: Path
    settings: dict


def export_targets(source: str, opts: ExportOptions, weights_sha256: str) -> ExportTargets:
    """The local export and `rtkp export --ray` (rtkp.export.ray) name and check outputs the same way."""
    stem = output_stem(source)
    marker = opts.out / f"{stem}.done.json"
    outputs = _outputs(opts.out, stem, opts.formats, opts.video)
    return ExportTargets(stem, outputs, marker, _settings(source, weights_sha256, opts))


def is_complete(targets: ExportTargets) -> bool:
    """The marker is there, with these settings, and so is every output."""
    return _complete(targets.marker, targets.outputs, targets.settings)


def skipped(source: str) -> dict:
    return {"source": source, "skipped": True, "reason": "outputs complete (use --overwrite to redo)"}


def export_one(source: str, opts: ExportOptions) -> dict:
    """Export one input (resuming its partial outputs when they match); returns its summary.

    Raises RtkpError with a one-line reason; Interrupted (SIGINT/SIGTERM, Ctrl-C) keeps the partial folder.
    """
    from rtkp.backends import read_model_info
    from rtkp.sinks.writers import Partial

    info = read_model_info(opts.model)
    stem, outputs, marker, settings = export_targets(source, opts, info.weights_sha256)
    if not opts.overwrite and _complete(marker, outputs, settings):
        return skipped(source)
    marker.unlink(missing_ok=True)
    live = () if opts.smooth == "offline" else tuple(f for f in FORMATS if f in opts.formats)
    raw = ("raw",) if opts.smooth != "none" or opts.video else ()
    partial = Partial(opts.out / f"{stem}.partial", settings, live + raw)
    if opts.overwrite or not partial.matches():
        partial.reset()
    kept, start = (partial.records(), None) if partial.tracked else partial.resume()
    expected = _total_frames(source)
    after = (1 if opts.smooth == "offline" else 0) + len(opts.formats)
    bar = _Progress(stem, expected, after, opts.video, opts.progress, kept)
    try:
        if not partial.tracked:
            _track(source, opts, info, partial, kept, start, bar)
        return finish_outputs(source, opts, info, partial, outputs, marker, expected, bar)
    except KeyboardInterrupt:  # outside the runner (which turns signals into Interrupted): finishing, probing
        raise Interrupted(_resume_hint(source, partial)) from None
    except Interrupted:
        raise
    except RtkpError:
        if partial.folder.is_dir() and not partial.records():
            shutil.rmtree(partial.folder, ignore_errors=True)  # nothing to resume from: leave no litter
        raise
    finally:
        bar.close()


def _resume_hint(source: str, partial) -> str:
    done = partial.records() if partial.folder.is_dir() else 0
    return (
        f"interrupted during {source} after {done} frame(s); they are kept in {partial.folder}: "
        "run the same command again to resume"
    )


def _track(source: str, opts: ExportOptions, info, partial, kept: int, start: int, bar: _Progress) -> None:
    """Run the pipeline from frame `start` with the writer sink appending to the partial folder."""
    from rtkp.pipeline.run import RunOptions, run_pipeline
    from rtkp.sinks.writers import ExportSpec

    causal = opts.smooth == "causal"
    spec = ExportSpec(
        str(partial.folder),
        partial.bodies,
        source,
        f"rtkp_{info.weights_sha256[:12]}",
        kept + 1,
        opts.cfg.smoothing if causal else None,
        replay=causal and kept > 0,
    )
    run = RunOptions(
        source=source,
        model=opts.model,
        backend=opts.backend,
        precision=opts.precision,
        policy="lossless",
        smoothing=dataclasses.replace(opts.cfg.smoothing, filter="none"),  # causal: in the sink (ExportSpec)
        run=opts.cfg.run,
        threads=opts.cfg.run.threads,
        sinks=(spec,),
        start_frame=start,
    )
    t0 = time.monotonic()
    summary: dict = {}
    try:
        summary = run_pipeline(run, on_progress=lambda n: bar.to(kept + n))
    except Interrupted as exc:
        summary = exc.summary
        raise Interrupted(_resume_hint(source, partial), exc.summary) from None
    finally:
        decode, seconds = summary.get("decode", {}), round(time.monotonic() - t0, 2)
        segment = {"start": start, "frames": summary.get("post", {}).get("frames", 0), "seconds": seconds}
        segment.update(backend=summary.get("backend"), skipped=decode.get("skipped", 0))
        partial.add_segment(dict(segment, errors=decode.get("errors", [])))
    partial.mark_tracked()


def finish_outputs(source: str, opts: ExportOptions, info, partial, outputs: dict, marker: Path, expected, bar) -> dict:
    """Build every output in the partial folder (`ready.*`), rename them into place, write the marker, remove the
    folder. Each step is skipped when a previous, interrupted run already did it.

    partial: a tracked Partial; a format not among its bodies is written here from the raw records (offline
    smoothing, and `rtkp export --ray`, whose chunks hold raw records only). bar: a _Progress (disabled: no output).
    """
    from rtkp.sinks.writers import PublishedRecords

    frames, segments = partial.records(), partial.segments()
    skipped = sum(s["skipped"] for s in segments)
    errors = [e for s in segments for e in s["errors"]]
    if not frames:
        shutil.rmtree(partial.folder, ignore_errors=True)
        raise ExportFailed(f"{source}: no frame could be decoded" + (f" ({errors[0]})" if errors else ""))
    names = list(info.manifest["keypoint_names"])
    skeleton = [tuple(p) for p in info.manifest.get("skeleton", [])]
    folder, offline = partial.folder, opts.smooth == "offline"
    bar.phase("smoothing" if offline else "writing", frames)
    # offline: the RTS pass over the whole track runs here, once (arrays only, see PublishedRecords)
    final = PublishedRecords(partial.path("raw"), frames, len(names), opts.smooth, opts.cfg.smoothing)
    bar.step(1 if offline else 0)
    model_id = info.weights_sha256[:12]
    for fmt in (f for f in FORMATS if f in opts.formats):
        bar.phase(f"writing {outputs[fmt].name}", frames)
        ready, body = folder / f"ready{SUFFIX[fmt]}", partial.path(fmt)
        if not ready.exists():
            if fmt not in partial.bodies:  # not written while tracking: the records are written now, from raw
                lines = {
                    "jsonl": lambda: (jsonl_line(kf, names) for kf in final),
                    "csv": lambda: (csv_header(names, f"rtkp_{model_id}"), *(csv_line(kf, names) for kf in final)),
                    "coco": lambda: (coco_line(kf, i + 1, names, source) for i, kf in enumerate(final)),
                }[fmt]()
                _write_atomic(body, lambda fh, lines=lines: fh.writelines(lines))
            if fmt == "coco":
                _write_atomic(ready, lambda fh, lines=body: join_coco(lines, fh, names, skeleton, source, model_id))
            elif body.exists():
                os.replace(body, ready)
            # else: renamed into place already, by a run interrupted while publishing
        bar.step()
    if opts.video:
        bar.phase("encoding video", frames)
        ready = folder / "ready.annotated.mp4"
        if ready.exists():
            bar.step(frames)
        else:
            _write_video(source, ready, final, names, skeleton, bar.step)
    for key, path in outputs.items():
        ready = folder / ("ready.annotated.mp4" if key == "video" else f"ready{SUFFIX[key]}")
        if ready.exists():
            os.replace(ready, path)
    result = {
        "source": source,
        "frames": frames,
        "skipped_frames": skipped,
        # frames the container header lists but that never decoded (a truncated file)
        "missing_frames": max(expected - frames, 0) if expected else 0,
        "skipped_errors": errors,
        "seconds": round(sum(s["seconds"] for s in segments), 2),
        "fps": round(sum(s["frames"] for s in segments) / max(sum(s["seconds"] for s in segments), 1e-9), 2),
        "backend": next((s["backend"] for s in reversed(segments) if s["backend"]), None),
        "segments": [{"start": s["start"], "frames": s["frames"]} for s in segments],
        "outputs": {k: str(v) for k, v in outputs.items()},
    }
    marker.write_text(json.dumps({"settings": partial.settings, "result": result}, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    bar.phase("done", frames)
    bar.step()
    return result


def _write_atomic(path: Path, write) -> None:
    """write(fh) into a temporary name, renamed to `path` when it returns (a half-built file never has the name)."""
    tmp = path.with_name(path.name + ".building")
    with open(tmp, "w", newline="") as fh:
        write(fh)
    os.replace(tmp, path)


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
