"""The tracking process: frames from the channel → the Tracker → finished KeypointFrames to the post process.

What a frame becomes is the Tracker's (tracker.py: `prepare`, then `track` — letterbox, graph, source pixels,
visibility, smoothing), all of it here, so the keypoint state lives in this one process; this module only batches
frames, gives ring slots back and carries the finished frames on (TrackedFrame). With a control socket it also serves
control requests between batches (rtkp.control.editor changes the Tracker's keypoints): the post process is told by a
KeypointsChanged, ahead of the first frame tracked with the new set.
"""

from __future__ import annotations

import functools

from rtkp.errors import RtkpError
from rtkp.messages import BackendReady, StageError, StageSummary, TrackedFrame
from rtkp.pipeline.decode import child_setup

IDLE_S = 0.05  # with a control socket: how often requests are served while no frame arrives


def infer_worker(opts, channel, results, ready, report, pixels_downstream: bool) -> None:
    """Track each batch the channel hands out; TrackedFrames go to the post stage, in order.

    pixels_downstream: a sink draws, so a frame's ring slot stays held until the post stage is done with it (else it
    goes back as soon as the batch has its own copy of the model inputs).
    """
    child_setup()
    server = editor = None
    try:
        # the socket first, so that a request sent while the model loads is answered "not ready", not left waiting
        server = _control_server(opts)
        tracker, editor = open_tracker(opts, server is not None)
    except RtkpError as exc:
        report.put(StageError("infer", str(exc), kind=type(exc).__name__))
        ready.set()
        _drain(channel)
        results.put(None)
        if server is not None:
            server.close()
        return
    report.put(BackendReady(tracker.backend_name))
    ready.set()
    idle = None
    if server is not None:
        server.ready()
        idle = functools.partial(_serve_control, server, editor, results)
    taken = superseded = 0
    for batch in _batches(channel, opts.run.batch, idle):
        taken += len(batch)
        superseded += sum(dropped for _, _, dropped in batch)
        prepared = tracker.prepare([frame for frame, _, _ in batch], [dropped for _, _, dropped in batch])
        if not pixels_downstream:
            # only now may the slots go back: a letterbox that changes nothing returns the frame itself, a view into
            # shared memory that the decoder will overwrite, and `prepare` has copied it into the batch
            for _, slot, _ in batch:
                channel.release(slot)
        for (frame, slot, _), kf in zip(batch, tracker.track(prepared)):
            results.put(TrackedFrame(kf, **_pixels(frame, slot, pixels_downstream)))
        if server is not None:
            _serve_control(server, editor, results)
    results.put(None)
    counts = {"frames": taken, "superseded": superseded, "unconsumed": channel.unconsumed()}
    if tracker.model.follower is not None:  # how often the graph looked only where the animal was (rtkp.follow)
        counts["follow"] = dict(tracker.model.follower.stats)
    report.put(StageSummary("infer", counts))
    if server is not None:
        server.close()
    tracker.close()


def open_tracker(opts, control: bool):
    """(Tracker, KeypointEditor or None): the model on its backend with the run's smoothing, and the editor when
    requests may come (the Tracker then keeps recent model inputs for them). The weights are read and checked once,
    by open_backend; the manifest and banks are the ones it read (backend.info)."""
    from rtkp.backends import open_backend
    from rtkp.tracker import Tracker

    backend = open_backend(opts.model, opts.backend, threads=opts.threads, precision=opts.precision)
    info = backend.info
    # the graph may look only where the animal is (rtkp.follow); run_pipeline sets whole_frame for image folders
    settings = dict(max_instances=opts.max_instances, follow=not opts.whole_frame)
    if not control:
        return Tracker(backend, info.manifest, opts.smoothing, **settings), None
    from rtkp.control.editor import HISTORY_FRAMES, KeypointEditor

    tracker = Tracker(backend, info.manifest, opts.smoothing, history=HISTORY_FRAMES, **settings)
    return tracker, KeypointEditor(tracker, info, info.weights_sha256[:12])


def _pixels(frame, slot: int, downstream: bool) -> dict:
    """Where a sink that draws finds the frame's pixels: still in its ring slot, or (a frame that came through the
    pipe, slot −1) carried on with the finished frame. Nothing when no sink draws."""
    if not downstream:
        return {}
    return {"slot": slot} if slot >= 0 else {"image": frame.image}


def _control_server(opts):
    """The control socket of this run (its public endpoint and/or the live window's), or None when it has none."""
    if not (opts.control or opts.window_control):
        return None
    from rtkp.control.server import ControlServer

    curve = opts.run.curve_key or None
    return ControlServer(opts.control, curve, opts.run.curve_clients or None, private=opts.window_control)


def _serve_control(server, editor, results) -> None:
    """Carry out the control requests queued now; a change goes downstream before the next finished frame."""
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
