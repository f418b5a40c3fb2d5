"""`rtkp export`: annotate recorded videos and image folders, every frame, in the formats labs use.

Each input is tracked in this process by the one export tracking loop (rtkp.export.track: the Tracker of `rtkp run`,
decoding in a thread), as the chunk [0, end) of the input, into `<out>/<stem>.partial/` (rtkp.export.partial) as frames
are tracked, so memory stays flat however long the video. An interrupted export resumes as the chunk [done, end):
from the frame after the last one written (same input, model and settings; otherwise it starts over). A multi-instance
model's interrupted tracking starts over instead: its track ids depend on every frame before (the Tracker's identity
state is not saved), and a resumed export would restart them mid-input. When tracking
reaches the end, the outputs are finished in that folder (rtkp.export.finish: smoothing, the files, the annotated
video), renamed into place, and a `<stem>.done.json` marker written last lets a re-run skip the input.
`<stem>` is the input's output name, unique among the command's inputs, and a finished export made with other
settings is refused unless --overwrite (rtkp.export.targets). `rtkp export --ray` (rtkp.export.ray) tracks chunks of
the same inputs on a cluster with the same loop, into the same folder, and finishes them with the same code; it names
and checks outputs with the same `plan_targets`, `is_complete` and `release`.

Smoothing: `none`, `causal` (the live filter, rtkp.smoothing.KeypointSmoother) or `offline` (forward Kalman +
Rauch–Tung–Striebel backward pass over the whole track, which uses future frames); both run over the records in
order when the export finishes, so a resumed or chunked export smooths exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rtkp.config import Config
from rtkp.errors import ConfigError, Interrupted, RtkpError, SourceError
from rtkp.export.chunks import Chunk
from rtkp.export.finish import finish_outputs
from rtkp.export.formats import DEFAULT_FORMATS, FORMATS, STREAMED, missing_packages
from rtkp.export.partial import Partial
from rtkp.export.progress import Progress, total_frames
from rtkp.export.records import RecordWriter
from rtkp.export.targets import ExportTargets as ExportTargets  # the Ray export's modules name them from here
from rtkp.export.targets import check_owned, export_targets, is_complete, release, skipped


@dataclass(frozen=True)
class ExportOptions:
    """How `rtkp export` treats every input. formats: a subset of formats.FORMATS; video: also an annotated MP4;
    smooth: none | causal | offline; overwrite: redo complete outputs, replace those of other settings and ignore
    partial ones; progress: show bars."""

    out: Path
    model: str
    cfg: Config = field(default_factory=Config)
    formats: tuple[str, ...] = DEFAULT_FORMATS
    video: bool = False
    smooth: str = "none"
    backend: str = "auto"
    overwrite: bool = False
    progress: bool = True
    precision: str | None = None  # fp32 | fp16 | None: the backend's own choice (see rtkp.backends.open_backend)
    max_instances: int | None = None  # animals per frame of a multi-instance model (None: the model's default)
    whole_frame: bool = False  # --whole-frame: never follow the animal with a window (rtkp.follow)


def expand_inputs(items: list[str]) -> list[str]:
    """Video files and folders as given; a glob of videos becomes one input per file, a glob of images stays one.
    An input given twice (also as another spelling of the same path, or by a glob too) is kept once."""
    from rtkp.pipeline.source_spec import IMAGE_SUFFIXES

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
    seen, unique = set(), []
    for item in out:
        key = os.path.realpath(item) if Path(item).exists() else os.path.abspath(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def check_inputs(sources: list[str]) -> None:
    """Before anything is written: SourceError (one line, exit code 4, as `rtkp run` for the same source) for an
    input that names nothing: no such file or folder, a folder or glob without images. Inputs that exist but cannot
    be decoded fail on their own when their turn comes (export_one), and the others still run."""
    from rtkp.pipeline.source_spec import image_files, parse_source

    for source in sources:
        if any(c in source for c in "*?[") and not Path(source).exists() and not glob.glob(source):
            raise SourceError(f"source {source!r}: the pattern matches no file")
        spec = parse_source(source)
        if spec.kind == "images":
            image_files(spec)


def export_one(source: str, opts: ExportOptions, targets: ExportTargets | None = None, info=None) -> dict:
    """Export one input (resuming its partial outputs when they match); returns its summary.

    targets: the input's ExportTargets from rtkp.export.targets.plan_targets (default: named by its stem, as the only
    input); info: the model's ModelInfo (default: read here). Raises RtkpError with a one-line reason (ConfigError
    when --out holds this name's outputs made with other settings and not opts.overwrite); Interrupted
    (SIGINT/SIGTERM, Ctrl-C) keeps the partial folder.
    """
    from rtkp.backends import read_model_info
    from rtkp.pipeline.sources import check_source

    info = info or read_model_info(opts.model)
    targets = targets or export_targets(source, opts, info.weights_sha256)
    if not opts.overwrite and is_complete(targets):
        return skipped(source)
    check_owned([source], [targets], opts.overwrite)
    check_source(source)  # a source that cannot be opened: its one line, before any bar or folder
    release(targets)  # the outputs of other settings (--overwrite) or incomplete ones: never left beside new ones
    # the streamed formats are written live unless smoothed (smoothing runs over the whole track at the end, from raw)
    live = live_formats(opts.formats, info.manifest.multi_instance) if opts.smooth == "none" else ()
    partial = Partial(opts.out / f"{targets.stem}.partial", targets.settings, (*live, "raw"))
    if opts.overwrite or not partial.matches():
        partial.reset()
    if partial.tracked:
        kept, start = partial.records(), None
    elif info.manifest.multi_instance:  # track ids carry state from frame 0: an interrupted one tracks it all again
        partial.reset()
        kept, start = 0, 0
    else:
        kept, start = partial.resume()
    expected = total_frames(source)
    after = (1 if opts.smooth == "offline" else 0) + len(opts.formats)
    bar = Progress(targets.stem, expected, after, opts.video, opts.progress, kept)
    try:
        if not partial.tracked:
            with stop_on_signals() as stop:
                _track(source, opts, info, partial, kept, start, bar, stop)
        return finish_outputs(source, opts, info, partial, targets, expected, bar)
    except KeyboardInterrupt:  # outside the tracking loop (which turns signals into Interrupted): finishing, probing
        raise Interrupted(_resume_hint(source, partial, info.manifest.multi_instance)) from None
    except Interrupted:
        raise
    except RtkpError:
        if partial.folder.is_dir() and not partial.records():
            shutil.rmtree(partial.folder, ignore_errors=True)  # nothing to resume from: leave no litter
        raise
    finally:
        bar.close()


def _resume_hint(source: str, partial: Partial, multi_instance: bool = False) -> str:
    done = partial.records() if partial.folder.is_dir() else 0
    if multi_instance and not partial.tracked:  # (the tracking starts over: see export_one)
        return f"interrupted during {source} after {done} frame(s); run the same command again to export it"
    return (
        f"interrupted during {source} after {done} frame(s); they are kept in {partial.folder}: "
        "run the same command again to resume"
    )


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM set a stop reason instead of ending the process, so that the tracking loop stops between
    frames with every record written whole; yields a function that returns the reason (a signal's name) or None.
    Outside the main thread (where no handler can be installed) nothing is caught."""
    reasons: list[str] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, lambda signum, _frame: reasons.append(signal.Signals(signum).name))
    try:
        yield lambda: reasons[0] if reasons else None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _track(source: str, opts: ExportOptions, info, partial: Partial, kept: int, start: int, bar, stop) -> None:
    """Track the chunk [start, end) of the input into the partial folder, in this process (rtkp.export.track), and
    log it as a segment (also when stopped); mark the folder tracked when the input's end is reached."""
    from rtkp.export.track import open_tracker, track_chunk

    tracker = open_tracker(
        opts.model,
        opts.backend,
        opts.cfg.run.threads,
        opts.precision,
        info.manifest,
        opts.max_instances,
        not opts.whole_frame,
    )
    multi = info.manifest.multi_instance
    if stop() is not None:  # a signal while the model loaded
        raise Interrupted(_resume_hint(source, partial, multi))
    names = list(info.manifest.keypoint_names)
    scorer = f"rtkp_{info.weights_sha256[:12]}"
    summary: dict = {}
    writer = RecordWriter(partial.folder, partial.bodies, names, scorer, source, kept + 1, multi)
    try:
        with writer:
            on_frames = lambda n: bar.to(kept + n)  # noqa: E731
            summary = track_chunk(
                tracker, source, Chunk(start, None), writer, opts.cfg.run.batch, on_frames=on_frames, stop=stop
            )
    finally:  # after the writer's last flush: the segment never claims records the ledger lacks
        segment = {"start": start, "frames": writer.written, "seconds": summary.get("seconds", 0.0)}
        segment.update(backend=tracker.model.backend_name, skipped=summary.get("skipped", 0))
        partial.add_segment(dict(segment, errors=summary.get("errors", [])))
    if "stopped" in summary:
        raise Interrupted(_resume_hint(source, partial, multi))
    partial.mark_tracked()


def live_formats(formats, multi_instance: bool) -> tuple[str, ...]:
    """Which of `formats` are written while tracking (when nothing is smoothed): the streamed ones, less a
    multi-instance model's CSV (the multi-animal table's header needs every track id: built at the end,
    formats.multi_csv_lines)."""
    return tuple(f for f in STREAMED if f in formats and not (multi_instance and f == "csv"))


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
    missing = missing_packages(formats)
    if missing:
        raise ConfigError(missing)
    return formats
