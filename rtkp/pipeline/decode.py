"""The decode process: the source's frames into the channel (shared-memory ring), until the source ends or a stop.

It is the only place a run opens its source: it reads the first frame, tells the parent its size (FrameSize) and waits
for the ring the parent sizes from it, so that a live source is opened once (a device may refuse a second open while
the first is held, and each open costs about a second).
"""

from __future__ import annotations

import signal
import time

from rtkp.errors import RtkpError, SourceError
from rtkp.messages import FrameSize, StageError, StageSummary


def child_setup() -> None:
    """What every stage process does first: the parent decides when to stop (a terminal's Ctrl-C reaches the whole
    process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_worker(opts, channel, stop, ready, report) -> None:
    """Read the source into the channel until it ends or `stop` is set.

    Waits until the inference stage has its model loaded before it opens the source: a live source read earlier
    would only be dropped. A source that fails before its first frame is reported as such (the run fails with a
    SourceError, as a bad source named on the command line does).
    """
    child_setup()
    from rtkp.pipeline.sources import Source, parse_source

    source = Source(
        parse_source(opts.source), realtime=opts.realtime, max_frames=opts.max_frames, start=opts.start_frame
    )
    produced = 0
    try:
        if not _wait(ready, stop):
            return
        frames = iter(source)
        try:
            first = next(frames, None)
        except SourceError as exc:
            report.put(StageError("decode", str(exc), source=True))
            return
        if first is None:
            if opts.start_frame == 0:  # (a resumed export past the end has nothing left to read: no error)
                detail = f" ({source.errors[0]})" if source.errors else ""
                report.put(StageError("decode", f"source {opts.source!r}: no decodable frame{detail}", source=True))
            return
        if not _ring_sized(channel, first, report, stop):
            return
        channel.put(first)
        produced = 1
        for frame in frames:
            channel.put(frame)
            produced += 1
            if stop.is_set():
                source.stopped = True
                break
    except RtkpError as exc:
        report.put(StageError("decode", str(exc)))
    finally:
        channel.end()
        report.put(StageSummary("decode", _summary(source, channel, produced)))


def _wait(flag, stop) -> bool:
    """Until `flag` is set (True) or the run is stopped first (False)."""
    while not flag.wait(0.1):
        if stop.is_set():
            return False
    return True


def _ring_sized(channel, first, report, stop) -> bool:
    """Ask the parent for slots that fit the first frame and wait until the ring has them (False: stopped first)."""
    report.put(FrameSize(first.image.size))
    while not channel.ring.allocated():  # polled: once, at start-up
        if stop.is_set():
            return False
        time.sleep(0.01)
    return True


def _summary(source, channel, produced: int) -> dict:
    return {
        "frames": produced,
        "ring_full": channel.dropped_at_decode(),
        "skipped": source.skipped,
        "errors": source.errors[:20],
        "reconnects": source.reconnects,
    }
