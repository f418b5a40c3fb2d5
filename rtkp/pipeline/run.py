"""The multi-process runner: decode -> [shared-memory ring] -> infer -> post (match, smooth, publish, show, record).

It only moves frames and results; what a frame becomes is the Tracker's business (tracker.py), so `rtkp run` and the
offline exporter agree. Processes use the `spawn` start method (CUDA needs it). Stop: a stop event makes the decoder
end the stream; the end travels down the stages as a sentinel; the parent joins with a timeout, terminates stragglers,
and unlinks the ring it owns. A stage that dies is noticed within the parent's poll period and stops the run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import RunConfig, SmoothingConfig
from ..errors import RtkpError, SourceError
from .shm import FrameRing, LatestChannel, LosslessChannel, sweep_stale

POLL_S = 0.1
# After a stop, the stages have this long to finish before they are terminated (then killed 0.5 s later). The promise
# is "SIGINT/SIGTERM -> exit within 3 s"; this leaves room for the terminate/kill steps and the parent's own exit.
JOIN_S = 1.5


@dataclass(frozen=True)
class RunOptions:
    """Everything a run needs, picklable for spawned processes."""

    source: str
    model: str
    backend: str = "auto"
    policy: str = "lossless"  # or "live"
    realtime: bool = False
    max_frames: int | None = None
    publish: str | None = None
    display: bool = False
    record: str | None = None
    threads: int = 0
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    collect: bool = False  # send every KeypointFrame back to the parent (tests, export)


def _child_setup() -> None:
    # The parent decides when to stop: a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_worker(opts: RunOptions, channel, stop, ready, report) -> None:
    """Read the source into the channel until it ends or `stop` is set.

    Waits until the inference stage has its model loaded: a live source read earlier would only be dropped.
    """
    _child_setup()
    from .sources import Source, parse_source

    source = Source(parse_source(opts.source), realtime=opts.realtime, max_frames=opts.max_frames)
    produced = 0
    while not ready.wait(0.1):
        if stop.is_set():
            channel.end()
            return
    try:
        for frame in source:
            channel.put(frame)
            produced += 1
            if stop.is_set():
                source.stopped = True
                break
    except RtkpError as exc:
        report.put(("error", "decode", str(exc)))
    finally:
        channel.end()
        report.put(
            (
                "decode",
                {
                    "frames": produced,
                    "ring_full": channel.dropped_at_decode(),
                    "skipped": source.skipped,
                    "errors": source.errors[:20],
                    "reconnects": source.reconnects,
                },
            )
        )


def infer_worker(opts: RunOptions, channel, results, ready, report, pixels_downstream: bool) -> None:
    """Preprocess and run the model on each frame the channel hands out; results go to the post stage."""
    _child_setup()
    from ..backends import open_backend, read_model_info
    from ..tracker import Tracker

    try:
        backend = open_backend(opts.model, opts.backend, threads=opts.threads)
        tracker = Tracker(backend, read_model_info(opts.model).manifest)
    except RtkpError as exc:
        report.put(("error", "infer", str(exc)))
        ready.set()
        _drain(channel)
        results.put(None)
        return
    report.put(("backend", backend.name))
    ready.set()
    taken = superseded = 0
    for batch in _batches(channel, opts.run.batch):
        inputs, rows = [], []
        taken += len(batch)
        for frame, slot, dropped in batch:
            superseded += dropped
            t0 = time.perf_counter()
            inputs.append(tracker.preprocess(frame.image))
            size = (frame.image.shape[1], frame.image.shape[0])
            meta = type(frame)(frame.index, frame.pts, frame.capture_ns, None, frame.name, frame.decode_ms)
            oversize = frame.image if slot < 0 and pixels_downstream else None
            timings = {"decode": frame.decode_ms, "preprocess": (time.perf_counter() - t0) * 1e3}
            rows.append((meta, size, timings, dropped, slot if pixels_downstream else None, oversize))
        # np.stack copies: only after it may the slots go back, because a letterbox that changes nothing returns
        # the frame itself, a view into shared memory that the decoder will overwrite
        batch_input = np.stack(inputs)
        if not pixels_downstream:
            for _, slot, _ in batch:
                channel.release(slot)
        t1 = time.perf_counter()
        raw = tracker.infer(batch_input)
        infer_ms = (time.perf_counter() - t1) * 1e3
        for (meta, size, timings, dropped, slot, oversize), r in zip(rows, raw):
            timings.update(inference=infer_ms, batch=len(rows))
            results.put((meta, size, r, timings, dropped, slot, oversize))
    results.put(None)
    report.put(("infer", {"frames": taken, "superseded": superseded, "unconsumed": channel.unconsumed()}))
    backend.close()


def _items(channel):
    """(frame, slot, dropped) from a channel until its end (waiting in 1 s steps on a live channel)."""
    while True:
        try:
            item = channel.get(timeout=1.0)
        except TimeoutError:
            continue
        if item is None:
            return
        yield item


def _batches(channel, max_batch: int):
    """Lists of up to `max_batch` items: the first is waited for, the rest only taken if already queued.

    Batching never delays a frame: on the live channel (nothing queued by design) every batch has one frame; in
    lossless mode, frames that piled up while the model ran go through it together, which is cheaper per frame.
    """
    items = _items(channel)
    for first in items:
        batch = [first]
        while len(batch) < max_batch and channel.queued():
            item = next(items, None)
            if item is None:
                break
            batch.append(item)
        yield batch


def _drain(channel) -> None:
    """Consume and release until the end, so a producer blocked on a full ring can finish."""
    for _, slot, _ in _items(channel):
        channel.release(slot)


def post_worker(opts: RunOptions, results, channel, ring, report, stop) -> None:
    """Match, smooth, publish, show and record, in frame order; reports a summary at the end."""
    _child_setup()
    from ..backends import read_model_info
    from ..tracker import Tracker
    from .stats import RollingStats

    manifest = read_model_info(opts.model).manifest
    tracker = Tracker(None, manifest, opts.smoothing)
    names, skeleton = tracker.keypoint_names, [tuple(p) for p in manifest.get("skeleton", [])]
    stats = RollingStats(opts.run.stats_window)
    publisher = writer = None
    try:
        if opts.publish:
            from .publish import Publisher

            meta = {
                "keypoints": names,
                "skeleton": skeleton,
                "input_size": manifest["input_size"],
                "head": manifest["head"],
            }
            publisher = Publisher(
                opts.publish,
                opts.run.stream,
                manifest.get("weights_sha256", "")[:12],
                meta,
                opts.run.send_hwm,
                curve_key=opts.run.curve_key or None,
                curve_clients=opts.run.curve_clients or None,
            )
    except RtkpError as exc:
        report.put(("error", "post", str(exc)))
        stop.set()
    frames = dropped = batch_sum = 0
    first_ns = last_status = None
    t_start = time.monotonic()
    while True:
        item = results.get()
        if item is None:
            break
        meta, size, raw, timings, skipped, slot, oversize = item
        kf = tracker.finish(meta, size, raw, timings, skipped)
        t0 = time.perf_counter()
        if publisher is not None:
            publisher.publish(kf)
        t1 = time.perf_counter()
        now_ns = time.monotonic_ns()
        stats.add_all({k: v for k, v in kf.timings_ms.items() if k != "batch"})
        batch_sum += kf.timings_ms.get("batch", 1)
        stats.add("publish", (t1 - t0) * 1e3)
        stats.add("capture_to_publish", (now_ns - kf.capture_ns) / 1e6)
        frames += 1
        dropped += skipped
        first_ns = first_ns or now_ns
        if slot is not None or oversize is not None:
            image = oversize if oversize is not None else ring.read(slot)[0].image
            fps = frames / max((now_ns - first_ns) / 1e9, 1e-9) if frames > 1 else 0.0
            hud = f"{fps:5.1f} fps  {stats.percentiles('capture_to_publish').get('p50', 0):5.1f} ms  drops {dropped}"
            writer = _show_and_record(opts, image, kf, names, skeleton, hud, writer, stop)
            if slot is not None:
                channel.release(slot)
        if opts.collect:
            report.put(("frame", kf))
        if publisher is not None and (last_status is None or time.monotonic() - last_status >= 1.0):
            last_status = time.monotonic()
            publisher.status(
                {
                    "fps": frames / max(last_status - t_start, 1e-9),
                    "frames": frames,
                    "dropped": dropped,
                    "latency_ms": stats.percentiles("capture_to_publish"),
                }
            )
    if writer is not None:
        writer.close()
    elapsed = time.monotonic() - t_start
    summary = {
        "frames": frames,
        "dropped": dropped,
        "seconds": round(elapsed, 3),
        "stages_ms": stats.summary(),
        "mean_batch": round(batch_sum / max(frames, 1), 2),
        "published": publisher.sent if publisher else 0,
        "publish_dropped": publisher.dropped if publisher else 0,
    }
    if publisher is not None:
        publisher.close()
    if opts.display:
        import cv2

        cv2.destroyAllWindows()
    report.put(("post", summary))


def _show_and_record(opts, image, kf, names, skeleton, hud, writer, stop):
    from ..viz import draw_keypoints

    drawn = draw_keypoints(image, kf, names, skeleton, hud)
    if opts.record:
        if writer is None:
            from .record import VideoWriter

            writer = VideoWriter.for_source(opts.record, (image.shape[1], image.shape[0]), opts.source)
        writer.write(drawn, kf.pts)
    if opts.display:
        import cv2

        cv2.imshow("rtkp", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            stop.set()
    return writer


def probe_frame_bytes(source: str) -> int:
    """Bytes of the source's first frame (the ring's slot size), opening it once; SourceError when it cannot."""
    from .sources import Source, parse_source

    src = Source(parse_source(source), max_frames=1, reconnect=False)
    for frame in src:
        return frame.image.size
    raise SourceError(f"source {source!r}: no decodable frame" + (f" ({src.errors[0]})" if src.errors else ""))


class PipelineError(RtkpError):
    """A stage failed or died."""


class Interrupted(RtkpError):
    """SIGINT or SIGTERM stopped the run; `summary` holds what was done until then."""

    exit_code = 130

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def run_pipeline(opts: RunOptions, on_frame=None, on_backend=None, frame_bytes: int | None = None) -> dict:
    """Run until the source ends, `max_frames`, a stop signal, or a failure; returns the summary.

    on_frame: called in the parent with each KeypointFrame when opts.collect is set.
    on_backend: called in the parent with the backend's name once the inference stage has loaded the model.
    frame_bytes: the source's frame size when the caller has already probed it (see probe_frame_bytes).
    """
    from ..backends import read_model_info

    sweep_stale()
    read_model_info(opts.model)  # a bad model folder fails here, in one line, before any process starts
    frame_bytes = frame_bytes or probe_frame_bytes(opts.source)
    ctx = mp.get_context("spawn")
    slot_bytes = max(frame_bytes, 1920 * 1080 * 3) if Path(opts.source).is_dir() else frame_bytes
    ring = FrameRing(opts.run.slots, slot_bytes)
    channel = (LatestChannel if opts.policy == "live" else LosslessChannel)(ctx, ring)
    stop, ready, report, results = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.SimpleQueue()
    pixels = opts.display or bool(opts.record)
    procs = {
        "decode": ctx.Process(target=decode_worker, args=(opts, channel, stop, ready, report), name="rtkp-decode"),
        "infer": ctx.Process(
            target=infer_worker, args=(opts, channel, results, ready, report, pixels), name="rtkp-infer"
        ),
        "post": ctx.Process(target=post_worker, args=(opts, results, channel, ring, report, stop), name="rtkp-post"),
    }
    interrupted = []

    def on_signal(signum, _frame):
        interrupted.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    summary: dict = {"policy": opts.policy, "source": opts.source}
    errors: list[str] = []
    try:
        for p in procs.values():
            p.start()
        stop_deadline = None
        while any(p.is_alive() for p in procs.values()):
            _collect(report, summary, errors, on_frame, timeout=POLL_S, on_backend=on_backend)
            dead = [n for n, p in procs.items() if not p.is_alive() and p.exitcode not in (0, None)]
            if dead:
                errors.append(f"the {dead[0]} process died (exit code {procs[dead[0]].exitcode})")
                stop.set()
                # the stream cannot complete without that stage: a short grace for the others, then terminate
                _shutdown(procs, grace_s=0.5)
                break
            if errors:
                stop.set()
            if stop.is_set():
                # a stop (signal, error, window closed) must end the run within the promise, however busy the stages
                stop_deadline = stop_deadline or time.monotonic() + JOIN_S
                if time.monotonic() > stop_deadline:
                    break
        stop.set()
        _shutdown(procs, grace_s=0.0 if stop_deadline else JOIN_S)
        _collect(report, summary, errors, on_frame, timeout=0.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _shutdown(procs)
        ring.close()
    summary["counts"] = frame_counts(summary)
    if errors:
        raise PipelineError(errors[0])
    if interrupted:
        raise Interrupted(f"stopped by {interrupted[0]}", summary)
    return summary


def _collect(report, summary: dict, errors: list, on_frame, timeout: float, on_backend=None) -> None:
    """Handle every report queued now, waiting up to `timeout` s for the first (0: take what is there, return)."""
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            kind, *payload = report.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            return
        deadline = time.monotonic()  # more only if already queued
        if kind == "error":
            errors.append(f"{payload[0]} stage: {payload[1]}")
        elif kind == "frame":
            if on_frame is not None:
                on_frame(payload[0])
        else:
            summary[kind] = payload[0]
            if kind == "backend" and on_backend is not None:
                on_backend(payload[0])


def _shutdown(procs: dict, grace_s: float = JOIN_S) -> None:
    """Join every process within `grace_s` in all; terminate, then kill, whatever is left."""
    deadline = time.monotonic() + grace_s
    for p in procs.values():
        if p.pid is not None:
            p.join(max(deadline - time.monotonic(), 0))
    for p in procs.values():
        if p.is_alive():
            p.terminate()
            p.join(0.5)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(0.5)


def frame_counts(summary: dict) -> dict:
    """Where every decoded frame went: tracked (through the post stage: published, shown, recorded), dropped (and by
    which stage) or still in flight when the run ended. Each figure is counted where it happens, so they add up only
    if no frame is lost unaccounted for."""
    dec, inf, post = summary.get("decode", {}), summary.get("infer", {}), summary.get("post", {})
    return {
        "decoded": dec.get("frames", 0),
        "tracked": post.get("frames", 0),
        "dropped_ring_full": dec.get("ring_full", 0),  # live: every slot busy when the decoder had a new frame
        "dropped_superseded": inf.get("superseded", 0),  # live: a newer frame arrived before inference took it
        # taken by inference but never finished by the post stage, or written but never taken
        "in_flight_at_end": max(inf.get("frames", 0) - post.get("frames", 0), 0) + inf.get("unconsumed", 0),
    }


def describe(summary: dict) -> str:
    """One paragraph for the terminal. Stage times are per frame, except inference: per batch (mean size given)."""
    post = summary.get("post", {})
    frames, secs = post.get("frames", 0), post.get("seconds", 0) or 1e-9
    lat = post.get("stages_ms", {}).get("capture_to_publish", {})
    c = frame_counts(summary)
    dropped = c["dropped_ring_full"] + c["dropped_superseded"]
    lines = [
        f"{frames} frames in {secs:.1f} s ({frames / secs:.1f} fps), policy {summary.get('policy')}, "
        f"backend {summary.get('backend', '?')}",
        f"{c['decoded']} decoded = {c['tracked']} tracked + {dropped} dropped "
        f"({c['dropped_ring_full']} ring full at decode, {c['dropped_superseded']} superseded before inference) "
        f"+ {c['in_flight_at_end']} in flight at the end",
        "capture->publish ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in lat.items()),
    ]
    for stage, pct in post.get("stages_ms", {}).items():
        if stage != "capture_to_publish" and pct:
            unit = f"ms per batch (mean batch {post.get('mean_batch', 1)})" if stage == "inference" else "ms per frame"
            lines.append(f"  {stage:>10} {unit}: " + ", ".join(f"{k} {v:.2f}" for k, v in pct.items()))
    if post.get("publish_dropped"):
        lines.append(f"the publisher refused {post['publish_dropped']} message(s) (send buffer full)")
    dec = summary.get("decode", {})
    if dec.get("skipped"):
        lines.append(f"skipped {dec['skipped']} undecodable frame(s): {dec['errors'][0]}")
    return "\n".join(lines)


def pick_policy(source: str, realtime: bool) -> str:
    """live for cameras, streams and --realtime; lossless for files and folders."""
    from .sources import parse_source

    return "live" if realtime or parse_source(source).live else "lossless"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `rtkp run`")
