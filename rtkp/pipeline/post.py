"""The post process: finished KeypointFrames (TrackedFrame) → the sinks, in frame order.

What a frame becomes is the Tracker's, done in the inference process (infer.py); where it goes is the sinks'
(rtkp.sinks). This process only hands frames on: `SinkChain` (the sinks, their order, timing and failures),
`RunCounters` (stats.py: frames, drops, latency, the HUD line, the summary) and `ProgressReport` (frames done, to the
parent, a few times a second). A KeypointsChanged between two frames gives the sinks the new names, skeleton and
shots (the publisher re-sends `.meta`) before the first frame that has them.
"""

from __future__ import annotations

import dataclasses
import time

from rtkp.errors import RtkpError
from rtkp.messages import KeypointsChanged, Progress, StageError, StageSummary
from rtkp.pipeline.decode import child_setup

PROGRESS_EVERY_S = 0.2  # how often the post stage tells the parent how many frames are done


def post_worker(opts, results, channel, ring, report, stop) -> None:
    """Hand each finished frame to the sinks, in frame order; reports a summary at the end."""
    child_setup()
    from rtkp.pipeline.stats import RunCounters
    from rtkp.sinks.live import SinkItem

    context = _sink_context(opts)
    counters = RunCounters(opts.run.stats_window)
    sinks = SinkChain.open(opts, context, report, stop, counters)
    progress = ProgressReport(report)
    for tracked in iter(results.get, None):
        if isinstance(tracked, KeypointsChanged):
            context = dataclasses.replace(
                context, names=list(tracked.names), skeleton=list(tracked.skeleton), shots=dict(tracked.shots)
            )
            sinks.keypoints_changed(context, tracked.bank_version)
            continue
        kf = tracked.kf
        counters.add(kf)
        image = _pixels(tracked, ring) if sinks.pixels else None
        sinks.write(SinkItem(kf, image, counters.hud() if image is not None else "", context))
        if tracked.slot is not None:
            channel.release(tracked.slot)
        progress.tick(counters.frames)
    complete = not stop.is_set()
    summary = counters.summary(complete)
    summary.update(sinks.close(complete))
    progress.send(counters.frames)
    report.put(StageSummary("post", summary))


def _sink_context(opts):
    """What the sinks know of the run at its start: the model's keypoint names and skeleton, its manifest, the
    source and the model id (KeypointsChanged replaces names, skeleton and shots later). The manifest alone: this
    process loads no weights (the inference stage loads and checks them)."""
    from rtkp.manifest import read_manifest
    from rtkp.sinks.live import SinkContext

    manifest = read_manifest(opts.model)
    skeleton = [tuple(p) for p in manifest.skeleton]
    names = list(manifest.keypoint_names)
    return SinkContext(names, skeleton, manifest, opts.source, (manifest.weights_sha256 or "")[:12])


def _pixels(tracked, ring):
    """The frame's pixels for sinks that draw: carried with the frame, or in its ring slot; None when neither."""
    if tracked.image is not None:
        return tracked.image
    if tracked.slot is not None:
        return ring.read(tracked.slot)[0].image
    return None


class SinkChain:
    """The run's sinks, in the order they get each frame (publish first: latency matters most), and the rules of
    handing a frame on: a sink that draws skips a frame without pixels; a sink's RtkpError (e.g. a full disk) is
    reported and stops the run rather than track on for nothing; every write is timed (counters.stats), and
    capture→publish is taken right after the publisher, else after the last sink."""

    def __init__(self, sinks: list, report, stop, counters):
        self.sinks, self.report, self.stop, self.counters = sinks, report, stop, counters
        self.pixels = any(s.needs_pixels for s in sinks)
        self.latency_after = 0 if sinks and sinks[0].name == "publish" else len(sinks) - 1

    @classmethod
    def open(cls, opts, context, report, stop, counters) -> SinkChain:
        """The sinks `opts` asks for, opened in this process; none (and the run stopped) when one fails to open."""
        try:
            sinks = _open_sinks(opts, context, report, stop, counters.status)
        except RtkpError as exc:
            report.put(StageError("post", str(exc)))
            stop.set()
            sinks = []
        return cls(sinks, report, stop, counters)

    def keypoints_changed(self, context, bank: int) -> None:
        for sink in self.sinks:
            sink.keypoints_changed(context, bank)

    def write(self, item) -> None:
        stats = self.counters.stats
        for i, sink in enumerate(self.sinks):
            if not (item.image is None and sink.needs_pixels):
                t0 = time.perf_counter()
                try:
                    sink.write(item)
                except RtkpError as exc:
                    self.report.put(StageError("post", f"{sink.name}: {exc}"))
                    self.stop.set()
                stats.add(sink.name, (time.perf_counter() - t0) * 1e3)
            if i == self.latency_after:
                self.counters.published(item.kf)
        if not self.sinks:
            self.counters.published(item.kf)

    def close(self, complete: bool) -> dict:
        """Close every sink (a failure is reported; the others still close); their summaries, merged."""
        summary: dict = {}
        for sink in self.sinks:
            try:
                summary.update(sink.close(complete))
            except RtkpError as exc:
                self.report.put(StageError("post", f"{sink.name}: {exc}"))
        return summary


def _open_sinks(opts, context, report, stop, status) -> list:
    """The run's sinks, in the order they get each frame: publish first (latency matters most), then the rest."""
    from rtkp.sinks.live import CollectSink, DisplaySink, PublishSink, RecordSink

    sinks = []
    if opts.publish:
        from rtkp.wire.publisher import Publisher

        meta = {
            "keypoints": context.names,
            "skeleton": context.skeleton,
            "input_size": list(context.manifest.input_size),
            "head": context.manifest.head,
        }
        if context.manifest.multi_instance:  # marks the stream as carrying every animal (docs/PROTOCOL.md)
            from rtkp.instances.stage import check_max_instances

            meta["max_instances"] = check_max_instances(context.manifest, opts.max_instances)
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


class ProgressReport:
    """Frames done, to the parent (its progress bar): on the first frame, then at most every PROGRESS_EVERY_S."""

    def __init__(self, report):
        self.report, self.last = report, None

    def tick(self, frames: int) -> None:
        if self.last is None or time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.last = time.monotonic()
            self.send(frames)

    def send(self, frames: int) -> None:
        self.report.put(Progress(frames))
