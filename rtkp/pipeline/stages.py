"""The three processes of a run: decode → [shared-memory ring] → inference → post (sinks).

Each function is a process's whole life: build its part of the Tracker, move frames, report a summary at the end.
What a frame becomes is the Tracker's business (tracker.py: ModelStage here in inference, KeypointStage in post);
where it goes is the sinks' (sinks.py). Messages (messages.py, frozen dataclasses): ModelResult (inference → post);
KeypointsChanged (inference → post, between results, when a control request changed the keypoints); StageError,
StageSummary, BackendReady, Progress and KeypointFrame on the report queue (→ parent).
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time

import numpy as np

from rtkp.errors import RtkpError
from rtkp.messages import BackendReady, KeypointsChanged, ModelResult, Progress, StageError, StageSummary

PROGRESS_EVERY_S = 0.2  # how often the post stage tells the parent how many frames are done
IDLE_S = 0.05  # with a control socket: how often requests are served while no frame arrives


def _child_setup() -> None:
    # The parent decides when to stop: a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_worker(opts, channel, stop, ready, report) -> None:
    """Read the source into the channel until it ends or `stop` is set.

    Waits until the inference stage has its model loaded: a live source read earlier would only be dropped.
    """
    _child_setup()
    from rtkp.pipeline.sources import Source, parse_source

    spec = parse_source(opts.source)
    source = Source(spec, realtime=opts.realtime, max_frames=opts.max_frames, start=opts.start_frame)
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
        report.put(StageError("decode", str(exc)))
    finally:
        channel.end()
        report.put(
            StageSummary(
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


def infer_worker(opts, channel, results, ready, report, pixels_downstream: bool) -> None:
    """Letterbox and run the model on each frame the channel hands out; ModelResults go to the post stage.

    With a control socket (opts.control, or the live window's private one) it also serves control requests between
    batches (rtkp.control): a change of keypoints goes to the post stage as KeypointsChanged, ahead of the first
    ModelResult inferred with it.
    """
    _child_setup()
    from rtkp.backends import open_backend, read_model_info
    from rtkp.tracker import ModelStage

    server = editor = None
    try:
        # the socket first, so that a request sent while the model loads is answered "not ready", not left waiting
        server = _control_server(opts)
        backend = open_backend(opts.model, opts.backend, threads=opts.threads, precision=opts.precision)
        info = read_model_info(opts.model)
        stage = ModelStage(backend, info.manifest)
        if server is not None:
            from rtkp.control.editor import KeypointEditor

            editor = KeypointEditor(stage, info, info.weights_sha256[:12])
    except RtkpError as exc:
        report.put(StageError("infer", str(exc)))
        ready.set()
        _drain(channel)
        results.put(None)
        if server is not None:
            server.close()
        return
    report.put(BackendReady(backend.name))
    ready.set()
    idle = None
    if server is not None:
        server.ready()
        idle = functools.partial(_serve_control, server, editor, results)
    taken = superseded = 0
    for batch in _batches(channel, opts.run.batch, idle):
        inputs, pending = [], []
        taken += len(batch)
        for frame, slot, dropped in batch:
            superseded += dropped
            t0 = time.perf_counter()
            inputs.append(stage.preprocess(frame.image))
            timings = {"decode": frame.decode_ms, "preprocess": (time.perf_counter() - t0) * 1e3}
            pending.append(
                (
                    dataclasses.replace(frame, image=None),
                    (frame.image.shape[1], frame.image.shape[0]),
                    timings,
                    dropped,
                    slot if pixels_downstream and slot >= 0 else None,
                    frame.image if pixels_downstream and slot < 0 else None,  # came through the pipe: travels on
                )
            )
        # np.stack copies: only after it may the slots go back, because a letterbox that changes nothing returns
        # the frame itself, a view into shared memory that the decoder will overwrite
        batch_input = np.stack(inputs)
        if not pixels_downstream:
            for _, slot, _ in batch:
                channel.release(slot)
        t1 = time.perf_counter()
        rows = stage.infer(batch_input)
        infer_ms = (time.perf_counter() - t1) * 1e3
        for i, ((meta, size, timings, dropped, slot, image), r) in enumerate(zip(pending, rows)):
            timings.update(inference=infer_ms, batch=len(pending))
            results.put(ModelResult(meta, size, r, timings, dropped, stage.bank_version, slot, image))
            if editor is not None:
                # a view into the batch array (no copy): a request may name this frame by seq for a while
                editor.history.add(meta.index, batch_input[i], stage.mapper.letterbox(size))
        if server is not None:
            _serve_control(server, editor, results)
    results.put(None)
    report.put(StageSummary("infer", {"frames": taken, "superseded": superseded, "unconsumed": channel.unconsumed()}))
    if server is not None:
        server.close()
    backend.close()


def _control_server(opts):
    """The control socket of this run (its public endpoint and/or the live window's), or None when it has none."""
    if not (opts.control or opts.window_control):
        return None
    from rtkp.control.server import ControlServer

    curve = opts.run.curve_key or None
    return ControlServer(opts.control, curve, opts.run.curve_clients or None, private=opts.window_control)


def _serve_control(server, editor, results) -> None:
    """Carry out the control requests queued now; a change goes downstream before the next frame's result."""
    for job in server.take():
        change = editor.handle(job)
        if change is not None:
            results.put(change)


def _items(channel, idle=None):
    """(frame, slot, dropped) from a channel until its end. While no frame comes, `idle()` is called every
    IDLE_S (control requests are served then), else the wait is in 1 s steps."""
    while True:
        try:
            item = channel.get(timeout=1.0 if idle is None else IDLE_S)
        except TimeoutError:
            if idle is not None:
                idle()
            continue
        if item is None:
            return
        yield item


def _batches(channel, max_batch: int, idle=None):
    """Lists of up to `max_batch` items: the first is waited for, the rest only taken if already queued.

    Batching never delays a frame: on the live channel (nothing queued by design) every batch has one frame; in
    lossless mode, frames that piled up while the model ran go through it together, which is cheaper per frame.
    """
    items = _items(channel, idle)
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


def _open_sinks(opts, context, report, stop, status) -> list:
    """The run's sinks, in the order they get each frame: publish first (latency matters most), then the rest."""
    from rtkp.sinks.live import CollectSink, DisplaySink, PublishSink, RecordSink

    sinks = []
    if opts.publish:
        from rtkp.wire.publisher import Publisher

        meta = {
            "keypoints": context.names,
            "skeleton": context.skeleton,
            "input_size": context.manifest["input_size"],
            "head": context.manifest["head"],
        }
        publisher = Publisher(
            opts.publish,
            opts.run.stream,
            context.model_id,
            meta,
            opts.run.send_hwm,
            curve_key=opts.run.curve_key or None,
            curve_clients=opts.run.curve_clients or None,
        )
        sinks.append(PublishSink(publisher, status))
    if opts.display:
        sinks.append(DisplaySink(stop, opts.window_control))
    if opts.record:
        sinks.append(RecordSink(opts.record, opts.source))
    sinks += [spec.open(context) for spec in opts.sinks]
    if opts.collect:
        sinks.append(CollectSink(report))
    return sinks


def post_worker(opts, results, channel, ring, report, stop) -> None:
    """Finish each frame (KeypointStage) and hand it to the sinks, in frame order; reports a summary at the end."""
    _child_setup()
    from rtkp.backends import read_model_info
    from rtkp.pipeline.stats import RollingStats
    from rtkp.sinks.live import SinkContext, SinkItem
    from rtkp.tracker import KeypointStage

    manifest = read_model_info(opts.model).manifest
    stage = KeypointStage(manifest, opts.smoothing)
    context = SinkContext(
        stage.keypoint_names,
        [tuple(p) for p in manifest.get("skeleton", [])],
        manifest,
        opts.source,
        manifest.get("weights_sha256", "")[:12],
    )
    stats = RollingStats(opts.run.stats_window)
    frames = dropped = batch_sum = 0
    first_ns = last_progress = None
    t_start = time.monotonic()

    def status() -> dict:
        return {
            "fps": frames / max(time.monotonic() - t_start, 1e-9),
            "frames": frames,
            "dropped": dropped,
            "latency_ms": stats.percentiles("capture_to_publish"),
        }

    try:
        sinks = _open_sinks(opts, context, report, stop, status)
    except RtkpError as exc:
        report.put(StageError("post", str(exc)))
        stop.set()
        sinks = []
    pixels = any(s.needs_pixels for s in sinks)
    # capture->publish is taken right after the publisher (first in line, see _open_sinks), else after every sink
    latency_after = 0 if sinks and sinks[0].name == "publish" else len(sinks) - 1
    for result in iter(results.get, None):
        if isinstance(result, KeypointsChanged):
            # ahead of the first result inferred with it: names, margins and the stream's .meta change together
            stage.change_keypoints(result)
            context = dataclasses.replace(
                context, names=list(result.names), skeleton=list(result.skeleton), shots=dict(result.shots)
            )
            for sink in sinks:
                if hasattr(sink, "keypoints_changed"):
                    sink.keypoints_changed(context, result.bank_version)
            continue
        kf = stage.finish(result)
        now_ns = time.monotonic_ns()
        frames += 1
        dropped += result.dropped
        batch_sum += kf.timings_ms.get("batch", 1)
        first_ns = first_ns or now_ns
        stats.add_all({k: v for k, v in kf.timings_ms.items() if k != "batch"})
        image, hud = None, ""
        if pixels and (result.slot is not None or result.image is not None):
            image = result.image if result.image is not None else ring.read(result.slot)[0].image
            fps = frames / max((now_ns - first_ns) / 1e9, 1e-9) if frames > 1 else 0.0
            p50 = stats.percentiles("capture_to_publish").get("p50", 0)
            hud = f"{fps:5.1f} fps  {p50:5.1f} ms  drops {dropped}"
        item = SinkItem(kf, image, hud, context)
        for i, sink in enumerate(sinks):
            if not (image is None and sink.needs_pixels):
                t0 = time.perf_counter()
                try:
                    sink.write(item)
                except RtkpError as exc:  # e.g. a full disk: say so and stop the run rather than track on for nothing
                    report.put(StageError("post", f"{sink.name}: {exc}"))
                    stop.set()
                stats.add(sink.name, (time.perf_counter() - t0) * 1e3)
            if i == latency_after:
                stats.add("capture_to_publish", (time.monotonic_ns() - kf.capture_ns) / 1e6)
        if not sinks:
            stats.add("capture_to_publish", (time.monotonic_ns() - kf.capture_ns) / 1e6)
        if result.slot is not None:
            channel.release(result.slot)
        if last_progress is None or time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            last_progress = time.monotonic()
            report.put(Progress(frames))
    complete = not stop.is_set()
    summary = {
        "frames": frames,
        "dropped": dropped,
        "seconds": round(time.monotonic() - t_start, 3),
        "stages_ms": stats.summary(),
        "mean_batch": round(batch_sum / max(frames, 1), 2),
        "published": 0,
        "publish_dropped": 0,
        "complete": complete,
    }
    for sink in sinks:
        try:
            summary.update(sink.close(complete))
        except RtkpError as exc:
            report.put(StageError("post", f"{sink.name}: {exc}"))
    report.put(Progress(frames))
    report.put(StageSummary("post", summary))
