"""The multi-process runner: decode -> [shared-memory ring] -> inference (the whole Tracker) -> post (the sinks).

It only starts, watches and stops the processes (decode.py, infer.py, post.py); what a frame becomes is the Tracker's
business (tracker.py) and where it goes the sinks' (rtkp.sinks), so `rtkp run` and `rtkp export` agree. The decode
process alone opens the source; the ring is sized from its first frame (FrameSize), so a camera is opened once.
Processes use the `spawn` start method (CUDA needs it). Stop: a stop event makes the decoder end the stream; the end
travels down the stages as a sentinel; the parent gives them JOIN_S, then terminates stragglers, and unlinks the ring
it owns. A stage that dies is noticed within the parent's poll period and stops the run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rtkp.config import RunConfig, SmoothingConfig
from rtkp.errors import Interrupted, PipelineError, RtkpError, SourceError
from rtkp.messages import BackendReady, FrameSize, KeypointFrame, Progress, StageError, StageSummary
from rtkp.pipeline.decode import decode_worker
from rtkp.pipeline.infer import infer_worker
from rtkp.pipeline.post import post_worker
from rtkp.pipeline.shm import Flag, FrameRing, LatestChannel, LosslessChannel, sweep_stale

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
    collect: bool = False  # send every KeypointFrame back to the parent (tests, bench)
    precision: str | None = None  # fp32 | fp16 | None: the backend's own choice (fp16 on GPUs, fp32 on the CPU)
    sinks: tuple = ()  # extra SinkSpecs (sinks.py), opened in the post process: `rtkp export`'s writers
    start_frame: int = 0  # the first frame to decode, with its full-decode index and PTS (sources.Source start)
    control: str | None = None  # the control socket's endpoint (rtkp.control): teach the running model keypoints
    window_control: str | None = None  # the live window's private control endpoint (ipc://), set with display
    max_instances: int | None = None  # animals per frame (--max-instances; None: the model's default)
    whole_frame: bool = False  # --whole-frame: never follow the animal with a window (rtkp.follow); image folders too


def run_pipeline(opts: RunOptions, on_frame=None, on_backend=None, on_progress=None) -> dict:
    """Run until the source ends, `max_frames`, a stop signal, or a failure; returns the summary.

    on_frame: called in the parent with each KeypointFrame when opts.collect is set.
    on_backend: called in the parent with the backend's name once the inference stage has loaded the model.
    on_progress: called in the parent with the number of frames finished so far (a few times a second).
    A source that fails before its first frame raises SourceError (check it first with sources.check_source to fail
    before the model loads); a stage's RtkpError its own class (e.g. ModelError, EngineError), naming the stage; any
    other failure (a stage that died) PipelineError.
    """
    from rtkp.backends import read_model_info

    sweep_stale()
    info = read_model_info(opts.model)  # a bad model folder fails here, in one line, before any process starts
    if opts.display and info.is_coke and not opts.window_control:
        # the window teaches keypoints through a private control endpoint of its own (a socket file only this user
        # can reach), so that clicks work with or without --control
        import dataclasses
        import tempfile

        ipc = Path(tempfile.gettempdir()) / f"rtkp-{os.getpid()}-window.ctl"
        opts = dataclasses.replace(opts, window_control=f"ipc://{ipc}")
    if not opts.whole_frame and not _consecutive(opts.source):
        import dataclasses

        opts = dataclasses.replace(opts, whole_frame=True)  # an image folder: never followed (rtkp.follow)
    ctx = mp.get_context("spawn")
    ring = FrameRing(opts.run.slots)  # sized from the first frame (FrameSize), see _collect
    channel = (LatestChannel if opts.policy == "live" else LosslessChannel)(ctx, ring)
    stop, ready, report, results = Flag(ctx), Flag(ctx), ctx.Queue(), ctx.SimpleQueue()
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
    errors: list[RtkpError] = []  # the first is raised
    callbacks = (on_frame, on_backend, on_progress)
    try:
        for p in procs.values():
            p.start()
        stop_deadline = None
        while any(p.is_alive() for p in procs.values()):
            _collect(report, summary, errors, callbacks, ring, timeout=POLL_S)
            dead = [n for n, p in procs.items() if not p.is_alive() and p.exitcode not in (0, None)]
            if dead:
                errors.append(PipelineError(f"the {dead[0]} process died (exit code {procs[dead[0]].exitcode})"))
                stop.set()
                # the stream cannot complete without that stage: a short grace for the others, then terminate
                _shutdown(procs, grace_s=0.5)
                break
            if errors:
                stop.set()
            if stop.is_set():
                if not ready.is_set():
                    break  # stopped while the model still loads: no frame is in flight, nothing to finish or lose
                # a stop (signal, error, window closed) must end the run within the promise, however busy the stages
                stop_deadline = stop_deadline or time.monotonic() + JOIN_S
                if time.monotonic() > stop_deadline:
                    break
        stop.set()
        _shutdown(procs, grace_s=0.0 if stop_deadline or not ready.is_set() else JOIN_S)
        _collect(report, summary, errors, callbacks, ring, timeout=0.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _shutdown(procs)
        ring.close()
    summary["counts"] = frame_counts(summary)
    if errors:
        raise errors[0]
    if interrupted:
        raise Interrupted(f"stopped by {interrupted[0]}", summary)
    return summary


def _stage_error(error: StageError) -> RtkpError:
    """The run's error for a stage's: a source that failed before its first frame is a SourceError (exit code 4), as
    a bad --source is; any other failure names its stage and keeps the class the stage raised (a ModelError, e.g.
    weights changed after the parent's check, exits 5 as from every command), else it is a PipelineError."""
    if error.source:
        return SourceError(error.message)
    import rtkp.errors

    kind = getattr(rtkp.errors, error.kind, None) if error.kind else None
    if not (isinstance(kind, type) and issubclass(kind, RtkpError)) or kind is Interrupted:
        kind = PipelineError
    return kind(f"{error.stage} stage: {error.message}")


def _collect(report, summary: dict, errors: list, callbacks, ring: FrameRing, timeout: float) -> None:
    """Handle every report queued now, waiting up to `timeout` s for the first (0: take what is there, return).

    callbacks: (on_frame, on_backend, on_progress), each None or a function (see run_pipeline). ring: allocated here,
    in its owner, when the decoder tells the first frame's size."""
    import queue

    on_frame, on_backend, on_progress = callbacks
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = report.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            return
        deadline = time.monotonic()  # more only if already queued
        if isinstance(msg, StageError):
            errors.append(_stage_error(msg))
        elif isinstance(msg, FrameSize):
            ring.allocate(_slot_bytes(msg.nbytes, summary["source"]))
        elif isinstance(msg, KeypointFrame):
            if on_frame is not None:
                on_frame(msg)
        elif isinstance(msg, Progress):
            if on_progress is not None:
                on_progress(msg.frames)
        elif isinstance(msg, BackendReady):
            summary["backend"] = msg.name
            if on_backend is not None:
                on_backend(msg.name)
        elif isinstance(msg, StageSummary):
            summary[msg.stage] = msg.figures


def _slot_bytes(frame_bytes: int, source: str) -> int:
    """A slot fits the first frame; an image folder's at least a 1080p frame (its images may differ in size: one
    larger than a slot travels through the pipe, slower)."""
    return max(frame_bytes, 1920 * 1080 * 3) if Path(source).is_dir() else frame_bytes


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


def _consecutive(source: str) -> bool:
    """SourceSpec.consecutive of --source; a source that does not parse is left to the decode stage to report."""
    from rtkp.pipeline.source_spec import parse_source

    try:
        return parse_source(source).consecutive
    except SourceError:
        return True


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
        # taken by inference but never handed to the sinks by the post stage, or written but never taken
        "in_flight_at_end": max(inf.get("frames", 0) - post.get("frames", 0), 0) + inf.get("unconsumed", 0),
    }


def describe(summary: dict) -> str:
    """One paragraph for the terminal. Stage times are per frame, except inference: per batch (mean size given)."""
    post = summary.get("post", {})
    frames, secs = post.get("frames", 0), post.get("seconds", 0) or 1e-9
    lat = post.get("stages_ms", {}).get("capture_to_publish", {})
    c = frame_counts(summary)
    dropped = c["dropped_ring_full"] + c["dropped_superseded"]
    # frames the file's header lists that never decoded (a truncated file), said as `rtkp export` says them
    missing = summary.get("missing_frames")
    lines = [
        f"{frames} frames in {secs:.1f} s ({frames / secs:.1f} fps), policy {summary.get('policy')}, "
        f"backend {summary.get('backend', '?')}"
        + (f", {missing} frame(s) listed in the file could not be read (truncated?)" if missing else ""),
        f"{c['decoded']} decoded = {c['tracked']} tracked + {dropped} dropped "
        f"({c['dropped_ring_full']} ring full at decode, {c['dropped_superseded']} superseded before inference) "
        f"+ {c['in_flight_at_end']} in flight at the end",
        "capture->publish ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in lat.items()),
    ]
    for stage, pct in post.get("stages_ms", {}).items():
        if stage != "capture_to_publish" and pct:
            unit = f"ms per batch (mean batch {post.get('mean_batch', 1)})" if stage == "inference" else "ms per frame"
            lines.append(f"  {stage:>10} {unit}: " + ", ".join(f"{k} {v:.2f}" for k, v in pct.items()))
    follow = summary.get("infer", {}).get("follow")
    if follow and follow.get("frames"):
        lines.append(
            f"the graph looked only around the animal in {follow['windows']} of {follow['frames']} frames "
            f"(the whole frame in {follow['whole']}, {follow['rejected']} of them after a window)"
        )
    if post.get("publish_dropped"):
        lines.append(f"the publisher refused {post['publish_dropped']} message(s) (send buffer full)")
    dec = summary.get("decode", {})
    if dec.get("skipped"):
        lines.append(f"skipped {dec['skipped']} undecodable frame(s): {dec['errors'][0]}")
    return "\n".join(lines)


def pick_policy(source: str, realtime: bool) -> str:
    """live for cameras, streams and --realtime; lossless for files and folders."""
    from rtkp.pipeline.sources import parse_source

    return "live" if realtime or parse_source(source).live else "lossless"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `rtkp run`")
