"""Finishing an input's export, local or Ray alike: from the tracked partial folder to the published files.

In the partial folder (rtkp.export.partial) every output is built under a `ready.*` name: smoothing over the whole track
(PublishedRecords), each streamed format not written live from the raw records, the COCO document joined from its lines,
the formats that cannot be streamed (DeepLabCut .h5, SLEAP .slp, NWB: formats.BUILT) built whole from the published
records, the annotated MP4 drawn on a second decode; then they are renamed into place and the `<stem>.done.json` marker
is written last, and the folder is removed. Each step is skipped when an interrupted run already did it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from rtkp.errors import ExportFailed
from rtkp.export.formats import (
    BUILT,
    FORMATS,
    SUFFIX,
    coco_line,
    csv_header,
    csv_line,
    join_coco,
    jsonl_line,
    multi_csv_lines,
)
from rtkp.export.partial import Partial
from rtkp.export.progress import Progress
from rtkp.export.records import PublishedRecords, track_ids
from rtkp.files import atomic, write_json_atomic
from rtkp.messages import KeypointFrame


def write_video(
    source: str, path: Path, frames: Iterable[KeypointFrame], names, skeleton, step=None, multi_instance: bool = False
) -> None:
    """Re-decode the source and draw the final (possibly smoothed) keypoints on each frame that has a record.

    frames: the records in index order (a stream, merged with the decoded frames by index). The MP4 keeps the source's
    rate and timestamps (rtkp.sinks.video.VideoWriter, the recorder of `rtkp run --record` too). step(): called after
    each frame written. multi_instance: every instance drawn in its track's colour, labelled (rtkp.sinks.draw).
    """
    from rtkp.pipeline.source_spec import parse_source
    from rtkp.pipeline.sources import Source
    from rtkp.sinks.draw import draw_keypoints
    from rtkp.sinks.video import VideoWriter

    records = iter(frames)
    kf = next(records, None)
    writer = None
    ok = False
    try:
        for frame in Source(parse_source(source)):  # the frames tracked (track.py)
            while kf is not None and kf.index < frame.index:
                kf = next(records, None)
            if kf is None:
                break
            if kf.index != frame.index:
                continue
            if writer is None:
                writer = VideoWriter.for_source(path, frame.image.shape[1::-1], source)
            writer.write(draw_keypoints(frame.image, kf, names, skeleton, by_track=multi_instance), frame.pts)
            if step is not None:
                step()
        ok = True
    finally:
        if writer is not None:
            writer.close(keep=ok)


def _lines(fmt: str, final: PublishedRecords, names: list[str], source: str, scorer: str, multi: bool) -> Iterable[str]:
    """A format's body from the published records (what the writer would have written while tracking); multi: the
    model is multi-instance (its CSV is the multi-animal table, whose header needs every track id: never streamed)."""
    if fmt == "jsonl":
        return (jsonl_line(kf, names) for kf in final)
    if fmt == "csv" and multi:
        return multi_csv_lines(final, names, scorer, table_tracks(final))
    if fmt == "csv":
        return (csv_header(names, scorer), *(csv_line(kf, names) for kf in final))
    return (coco_line(kf, i + 1, names, source, multi) for i, kf in enumerate(final))


def table_tracks(final: PublishedRecords) -> list[int]:
    """The individuals of a multi-instance model's DeepLabCut tables: every track id, in increasing order; [0] (one
    individual, empty in every frame) when no animal was found at all, since a table without columns cannot be read
    back (pandas)."""
    return track_ids(final.raw) or [0]


def write_built(fmt: str, final: PublishedRecords, frames: int, info, source: str, expected, path: Path) -> None:
    """Build one of formats.BUILT (h5, slp, nwb) at `path` from the published records (`frames` of them): through
    pandas/PyTables (rtkp.export.dlc_table) or sleap-io (rtkp.export.sleap_files), imported only here. ExportFailed
    (one line) when the writer fails: its package missing where the export finishes (a Ray node), a full disk."""
    names = list(info.manifest.keypoint_names)
    skeleton = [tuple(p) for p in info.manifest.skeleton]
    scorer = f"rtkp_{info.weights_sha256[:12]}"
    multi = info.manifest.multi_instance
    try:
        if fmt == "h5":
            from rtkp.export.dlc_table import write_h5

            write_h5(final, frames, names, scorer, path, table_tracks(final) if multi else None)
            return
        from rtkp.export.sleap_files import track_arrays, write_nwb, write_slp

        arrays = track_arrays(final, frames, len(names), multi)
        if fmt == "slp":
            write_slp(arrays, names, skeleton, source, expected, path, scorer)
        else:
            write_nwb(arrays, names, skeleton, source, path, scorer)
    except ImportError as exc:
        raise ExportFailed(f"{source}: the {fmt} output needs {exc.name or exc}: pip install 'rtkp[formats]'") from None
    except Exception as exc:  # a third-party writer's failure: one line, the partial folder kept for a re-run
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ExportFailed(f"{source}: cannot write its {fmt} output: {reason}") from None


def finish_outputs(source: str, opts, info, partial: Partial, targets, expected: int | None, bar: Progress) -> dict:
    """Build every output in the tracked partial folder, rename them into place, write the marker, remove the folder;
    returns the input's result (as the marker holds it).

    opts: the ExportOptions; info: the model's ModelInfo; targets: the input's ExportTargets; expected: the frames the
    input lists (None: unknown); bar: a Progress (disabled: no output).
    """
    frames, segments = partial.records(), partial.segments()
    skipped = sum(s["skipped"] for s in segments)
    errors = [e for s in segments for e in s["errors"]]
    if not frames:
        shutil.rmtree(partial.folder, ignore_errors=True)
        raise ExportFailed(f"{source}: no frame could be decoded" + (f" ({errors[0]})" if errors else ""))
    names = list(info.manifest.keypoint_names)
    skeleton = [tuple(p) for p in info.manifest.skeleton]
    multi = info.manifest.multi_instance  # several animals per frame: the writers are told (formats, records)
    folder, offline, outputs = partial.folder, opts.smooth == "offline", targets.outputs
    bar.phase("smoothing" if offline else "writing", frames)
    # offline: the RTS pass over the whole track runs here, once (arrays only, see PublishedRecords)
    final = PublishedRecords(partial.path("raw"), frames, len(names), opts.smooth, opts.cfg.smoothing)
    bar.step(1 if offline else 0)
    model_id = info.weights_sha256[:12]
    for fmt in (f for f in FORMATS if f in opts.formats):
        bar.phase(f"writing {outputs[fmt].name}", frames)
        ready, body = folder / f"ready{SUFFIX[fmt]}", partial.path(fmt)
        if fmt in BUILT:
            if not ready.exists():  # built under another name, then renamed: a crash never leaves a torn ready.*
                building = folder / f"building{SUFFIX[fmt]}"
                write_built(fmt, final, frames, info, source, expected, building)
                os.replace(building, ready)
        elif not ready.exists():
            if not body.exists():  # not written while tracking (smoothing, --ray), or renamed already: from raw
                with atomic(body, "wb") as fh:  # bytes: the CSV's \r\n line ends stay as the csv module wrote them
                    for line in _lines(fmt, final, names, source, f"rtkp_{model_id}", multi):
                        fh.write(line.encode())
            if fmt == "coco":
                with atomic(ready) as fh:
                    join_coco(body, fh, names, skeleton, source, model_id, multi)
            else:
                os.replace(body, ready)
        bar.step()
    if opts.video:
        bar.phase("encoding video", frames)
        ready = folder / "ready.annotated.mp4"
        if ready.exists():
            bar.step(frames)
        else:
            write_video(source, ready, final, names, skeleton, bar.step, multi)
    for key, path in outputs.items():
        ready = folder / ("ready.annotated.mp4" if key == "video" else f"ready{SUFFIX[key]}")
        if ready.exists():
            os.replace(ready, path)
    seconds = sum(s["seconds"] for s in segments)
    result = {
        "source": source,
        "frames": frames,
        "skipped_frames": skipped,
        # frames the container header lists but that never decoded (a truncated file)
        "missing_frames": max(expected - frames, 0) if expected else 0,
        "skipped_errors": errors,
        "seconds": round(seconds, 2),
        "fps": round(sum(s["frames"] for s in segments) / max(seconds, 1e-9), 2),
        "backend": next((s["backend"] for s in reversed(segments) if s["backend"]), None),
        "segments": [{"start": s["start"], "frames": s["frames"]} for s in segments],
        "outputs": {k: str(v) for k, v in outputs.items()},
    }
    write_json_atomic(targets.marker, {"settings": partial.settings, "result": result})  # last: the input is done
    shutil.rmtree(folder, ignore_errors=True)
    bar.phase("done", frames)
    bar.step()
    return result
