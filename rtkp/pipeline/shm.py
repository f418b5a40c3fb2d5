"""Frames between processes through shared memory: a ring of fixed-size slots, and the two named policies.

Only a slot index crosses a pipe; the pixels stay where the decoder wrote them (ARCHITECTURE.md §1: 120–150 µs per
640×480 frame this way against 2.4 ms through mp.Queue).

- `LosslessChannel` (files, folders, offline export): the producer blocks for a free slot; nothing is dropped.
- `LatestChannel` (cameras, streams, --realtime): the consumer always takes the newest frame; frames it never took
  are counted as dropped. The producer never blocks (a camera must not build up latency).

The creating process owns the segment and unlinks it; segments named with the project's prefix whose creator is dead
are swept at start-up (`sweep_stale`).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import struct
import sys
import time
from multiprocessing import shared_memory

import numpy as np

from rtkp.messages import Frame

PREFIX = "rtkp_"
# per-slot header: index, pts (NaN = none), capture_ns, height, width, seq, decode_ms
_HEADER = struct.Struct("<qdqiiqd")
_HEADER_BYTES = 64


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach without registering with the resource tracker: only the owner may unlink (Python < 3.13 has no
    track=False, and a second registration makes the tracker unlink or warn when the attaching process exits)."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    from multiprocessing import resource_tracker

    original = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = original


def sweep_stale(directory: str = "/dev/shm") -> list[str]:
    """Unlink rtkp segments whose creating process no longer exists (Linux; elsewhere nothing to sweep)."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX) :].split("_")[0])
        except ValueError:
            continue
        if _alive(pid):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FrameRing:
    """`slots` slots of up to `max_bytes` of pixels each. Picklable: child processes attach by name at first use.

    Without `max_bytes` the segment is made later, by `allocate` in the creating process (the owner), once the first
    frame's size is known: a run sizes its ring from the frame the decode process read, so that a live source is
    opened once, by that process. The size reaches processes already started through a shared value.
    """

    def __init__(self, slots: int, max_bytes: int | None = None):
        self.slots, self.owner, self.shm = slots, True, None
        self.name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        self._size = multiprocessing.RawValue("q", 0)  # max_bytes once the segment exists, 0 before
        self.max_bytes = self.slot_bytes = 0
        if max_bytes is not None:
            self.allocate(max_bytes)

    def allocate(self, max_bytes: int) -> None:
        """Make the segment (the owner, once): slots of `max_bytes` of pixels."""
        slot_bytes = _HEADER_BYTES + ((max_bytes + 63) // 64) * 64
        self.shm = shared_memory.SharedMemory(name=self.name, create=True, size=self.slots * slot_bytes)
        self.max_bytes, self.slot_bytes = max_bytes, slot_bytes
        self._size.value = max_bytes

    def allocated(self) -> bool:
        return self._size.value > 0

    def __getstate__(self):
        return {"slots": self.slots, "name": self.name, "size": self._size}

    def __setstate__(self, state):
        self.slots, self.name, self._size = state["slots"], state["name"], state["size"]
        self.owner, self.shm, self.max_bytes, self.slot_bytes = False, None, 0, 0

    def _open_segment(self) -> None:
        """Attach to the owner's segment (a slot index or `fits` is only ever asked for after it exists)."""
        if not self.allocated():
            raise RuntimeError("the frame ring has no segment yet (FrameRing.allocate)")
        self.max_bytes = self._size.value
        self.slot_bytes = _HEADER_BYTES + ((self.max_bytes + 63) // 64) * 64
        self.shm = _attach(self.name)

    def write(self, slot: int, frame: Frame, seq: int = 0) -> None:
        """Copy a frame into a slot (header + pixels)."""
        if self.shm is None:
            self._open_segment()
        h, w = frame.image.shape[:2]
        n = h * w * 3
        if n > self.max_bytes:
            raise ValueError(f"frame {w}x{h} does not fit a {self.max_bytes}-byte slot")
        base = slot * self.slot_bytes
        pts = float("nan") if frame.pts is None else frame.pts
        _HEADER.pack_into(self.shm.buf, base, frame.index, pts, frame.capture_ns, h, w, seq, frame.decode_ms)
        view = np.ndarray((h, w, 3), np.uint8, self.shm.buf, base + _HEADER_BYTES)
        view[...] = frame.image

    def read(self, slot: int) -> tuple[Frame, int]:
        """(Frame whose image is a view into the slot — valid until the slot is released, its seq)."""
        if self.shm is None:
            self._open_segment()
        base = slot * self.slot_bytes
        index, pts, capture_ns, h, w, seq, decode_ms = _HEADER.unpack_from(self.shm.buf, base)
        image = np.ndarray((h, w, 3), np.uint8, self.shm.buf, base + _HEADER_BYTES)
        return Frame(index, None if pts != pts else pts, capture_ns, image, None, decode_ms), seq

    def fits(self, frame: Frame) -> bool:
        if self.shm is None:
            self._open_segment()
        return frame.image.size <= self.max_bytes

    def close(self) -> None:
        """Detach; the owner also unlinks the segment."""
        if self.shm is None:
            return
        try:
            self.shm.close()
        except BufferError:
            pass  # a view is still alive somewhere in this process; the mapping goes with the process
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


class Flag:
    """A cross-process yes/no (the run's stop and ready signals) in shared memory, with no lock.

    A multiprocessing Event guards its flag with a lock; a stage killed while inside `is_set()` or `set()` leaves that
    lock taken, and the parent, which must still be able to stop the run, would hang on it for ever. A byte that is
    only ever written from 0 to 1 needs no lock. `wait` polls (every 10 ms): fine for start-up and stop signals.
    """

    def __init__(self, ctx):
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._value.value and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.is_set()


class LosslessChannel:
    """Blocking producer/consumer over a ring: every frame is delivered, in order."""

    def __init__(self, ctx, ring: FrameRing):
        self.ring = ring
        self.free = ctx.SimpleQueue()
        self.ready = ctx.SimpleQueue()
        for slot in range(ring.slots):
            self.free.put(slot)

    def put(self, frame: Frame) -> bool:
        if not self.ring.fits(frame):
            # a frame larger than the slots (image folders of mixed sizes) travels through the pipe instead
            self.ready.put((-1, frame))
            return True
        slot = self.free.get()
        self.ring.write(slot, frame)
        self.ready.put((slot, frame.name))
        return True

    def get(self, timeout: float | None = None):
        """(Frame view, slot (-1 for a frame that came through the pipe), dropped=0), or None at the end.

        timeout: None waits for as long as it takes; a number raises TimeoutError when nothing came in that long."""
        # SimpleQueue.get has no timeout; its pipe's poll blocks in select() until data or the timeout
        if timeout is not None and not self.ready._reader.poll(timeout):
            raise TimeoutError
        item = self.ready.get()
        if item is None:
            return None
        slot, payload = item
        if slot < 0:
            return payload, slot, 0
        frame, _ = self.ring.read(slot)
        if payload is not None:
            frame = Frame(frame.index, frame.pts, frame.capture_ns, frame.image, payload, frame.decode_ms)
        return frame, slot, 0

    def release(self, slot: int) -> None:
        if slot >= 0:
            self.free.put(slot)

    def queued(self) -> bool:
        """Whether another frame (or the end) is waiting right now."""
        return not self.ready.empty()

    def dropped_at_decode(self) -> int:
        """Never: the lossless producer waits for a free slot."""
        return 0

    def unconsumed(self) -> int:
        """Frames put but never taken: none once the consumer has read the end, which comes after every frame."""
        return 0

    def end(self) -> None:
        self.ready.put(None)


class LatestChannel:
    """Newest-frame-wins over a ring (at least 3 slots): consumers hold at most slots − 2 frames at a time."""

    LATEST, SEQ, EOF = 0, 1, 2

    def __init__(self, ctx, ring: FrameRing):
        if ring.slots < 3:
            raise ValueError("the live policy needs at least 3 slots")
        self.ring = ring
        self.cond = ctx.Condition()
        self.ctrl = ctx.RawArray("q", [-1, 0, 0])
        self.held = ctx.RawArray("b", ring.slots)
        self.last_seq = 0
        self.dropped_at_producer = ctx.RawValue("q", 0)

    def put(self, frame: Frame) -> bool:
        if not self.ring.fits(frame):
            raise ValueError(f"frame {frame.image.shape[1]}x{frame.image.shape[0]} is larger than the ring's slots")
        with self.cond:
            latest = self.ctrl[self.LATEST]
            slot = next((s for s in range(self.ring.slots) if not self.held[s] and s != latest), None)
        if slot is None:
            self.dropped_at_producer.value += 1
            return False
        with self.cond:
            seq = self.ctrl[self.SEQ] + 1
        self.ring.write(slot, frame, seq)
        with self.cond:
            self.ctrl[self.LATEST], self.ctrl[self.SEQ] = slot, seq
            self.cond.notify_all()
        return True

    def get(self, timeout: float | None = None):
        """(Frame view of the newest frame, slot, frames skipped since the last get), or None at the end.

        Raises TimeoutError when nothing new arrived within `timeout` seconds.
        """
        with self.cond:
            ok = self.cond.wait_for(lambda: self.ctrl[self.SEQ] > self.last_seq or self.ctrl[self.EOF], timeout)
            if not ok:
                raise TimeoutError
            if self.ctrl[self.SEQ] == self.last_seq:
                return None
            slot, seq = self.ctrl[self.LATEST], self.ctrl[self.SEQ]
            self.held[slot] = 1
        dropped = seq - self.last_seq - 1
        self.last_seq = seq
        frame, _ = self.ring.read(slot)
        return frame, slot, dropped

    def release(self, slot: int) -> None:
        with self.cond:
            self.held[slot] = 0
            self.cond.notify_all()

    def queued(self) -> bool:
        """Never: the live policy hands out one newest frame at a time."""
        return False

    def dropped_at_decode(self) -> int:
        """Frames the producer could not write because every slot but the newest was held by a consumer."""
        return self.dropped_at_producer.value

    def unconsumed(self) -> int:
        """Frames written after the last one this consumer took (call in the consumer, at the end)."""
        with self.cond:
            return self.ctrl[self.SEQ] - self.last_seq

    def end(self) -> None:
        with self.cond:
            self.ctrl[self.EOF] = 1
            self.cond.notify_all()
