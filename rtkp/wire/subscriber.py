"""Subscribe to an rtkp stream: `for msg in Subscriber("tcp://127.0.0.1:5555"): ...` (docs/PROTOCOL.md).

Only pyzmq and msgpack are needed; rtkp's own pipeline is not imported.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from rtkp.errors import ProtocolError, RtkpError, StreamTimeout
from rtkp.wire import curve, schema
from rtkp.wire.schema import KeypointMessage


class Subscriber:
    """Iterate decoded KeypointMessages from an rtkp publisher.

    Iterating waits for the stream: a subscriber started before the publisher simply waits until messages come.
    stream: only this stream (None: all streams on the endpoint).
    latest_only: deliver only the newest message each time (for control loops that must not lag); older ones are
      discarded and counted in `skipped`. ZeroMQ's CONFLATE loses multipart messages, and a small receive high-water
      mark alone keeps the *oldest* messages (the newest are dropped upstream while the queue is full), so a
      background thread reads the socket continuously and keeps only the newest decoded message.
    timeout_s: None (default): wait forever. A number: iteration raises StreamTimeout after this long without a
      keypoints message (`receive(timeout_s)` returns None instead).
    CURVE: server_key (the publisher's public key file) plus client key files (public + secret).

    Keypoint names come from the stream's `.meta` message, so every message handed out carries real names: keypoints
    messages that arrive before the names are held until `.meta` comes (an rtkp publisher sends it as soon as a
    subscriber joins). One whose keypoint count (or model) does not fit the names known is dropped and counted in
    `unlabelled`, never paired with names that do not fit: the subscriber asks the publisher for fresh `.meta` and
    holds the next ones until it comes. Held messages that overflow the hold (rcvhwm) are dropped and counted too.
    Keypoints can change while a stream runs (added, removed or renamed through rtkp's control socket): each
    keypoints message says which set of names it has (`bank`), `.meta` says which set its names are, and a message is
    paired only with names of its own bank, so a rename (same count, new names) is never mislabelled either.

    Several animals: each message's `instances` holds every animal of the frame (Instance: track, score, keypoints),
    in increasing track order, when the stream is multi-instance (its `.meta`, `self.meta[stream]`, has
    `max_instances`); `keypoints` is then the first animal's (all missing when there is none). A single-instance
    stream's message has exactly one, track 0, whose keypoints are `keypoints`.
    """

    ASK_META_EVERY_S = 0.5  # at most this often, re-send the subscription (an rtkp publisher answers with `.meta`)

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        stream: str | None = None,
        latest_only: bool = False,
        timeout_s: float | None = None,
        server_key: str | Path | None = None,
        client_key: str | Path | None = None,
        rcvhwm: int = 1000,
    ):
        import zmq

        if server_key is not None and client_key is None:
            raise RtkpError("a CURVE subscriber needs its own key pair too (client_key: the .key_secret file)")
        self.zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if server_key is not None:
            curve.connect(self.sock, server_key, client_key)  # closes the socket if a key does not load
        self.topic = schema.topic_prefix(stream)
        self.sock.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        self.sock.connect(endpoint)
        self.endpoint, self.stream, self.curve = endpoint, stream, server_key is not None
        self.latest_only, self.timeout_s = latest_only, timeout_s
        self.meta: dict[str, dict] = {}
        self.status: dict[str, dict] = {}
        self.received = 0
        self.gaps = 0  # messages the publisher sent that never arrived (from sequence numbers)
        self.skipped = 0  # messages discarded on purpose by latest_only
        self.unlabelled = 0  # keypoints messages dropped because no names that fit them came (see the class doc)
        self._last_seq: dict[str, int] = {}
        self._held: dict[str, deque] = {}  # per stream: (header, receive_ns) waiting for names that fit
        self._held_max = max(rcvhwm, 1)
        self._stale: set[str] = set()  # streams whose last .meta did not fit a keypoints message
        self._ready: deque[KeypointMessage] = deque()
        self._asked_meta = 0.0
        self._reader = None
        if latest_only:
            self._start_reader()

    def _start_reader(self) -> None:
        """The socket now belongs to a thread that keeps only the newest keypoints message (ZeroMQ sockets are not
        thread-safe, so nothing else touches it afterwards)."""
        import threading

        self._cond = threading.Condition()
        self._newest: KeypointMessage | None = None
        self._error: Exception | None = None
        self._stop = threading.Event()

        def read() -> None:
            while not self._stop.is_set():
                if not self.sock.poll(50):
                    continue
                try:
                    msgs = self._handle(self.sock.recv_multipart())
                except ProtocolError as exc:
                    msgs, self._error = [], exc
                with self._cond:
                    for msg in msgs:
                        if self._newest is not None:
                            self.skipped += 1
                        self._newest = msg
                    if msgs or self._error is not None:
                        self._cond.notify_all()

        self._reader = threading.Thread(target=read, name="rtkp-subscriber", daemon=True)
        self._reader.start()

    def __iter__(self):
        return self

    def __next__(self) -> KeypointMessage:
        msg = self.receive(self.timeout_s)
        if msg is None:
            raise StreamTimeout(f"no keypoints message for {self.timeout_s:g} s: {self.waiting_for()}")
        return msg

    def receive(self, timeout_s: float | None) -> KeypointMessage | None:
        """The next keypoints message (the newest one with latest_only), or None after timeout_s (None: wait)."""
        if self._reader is not None:
            with self._cond:
                self._cond.wait_for(lambda: self._newest is not None or self._error is not None, timeout_s)
                if self._error is not None:
                    raise self._error
                msg, self._newest = self._newest, None
            if msg is not None:
                self.received += 1
            return msg
        zmq = self.zmq
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._ready:
            wait = None if deadline is None else max(int((deadline - time.monotonic()) * 1000), 0)
            if not self.sock.poll(wait):
                return None
            try:
                self._ready.extend(self._handle(self.sock.recv_multipart(zmq.NOBLOCK)))
            except zmq.Again:
                continue
        self.received += 1
        return self._ready.popleft()

    def waiting_for(self, server_key_option: str = "server_key", client_key_option: str = "client_key") -> str:
        """What this subscriber waits for and why it may not come (for messages to the user)."""
        where = f"waiting for keypoints on {self.endpoint}, topic {self.topic!r}"
        held = sum(len(q) for q in list(self._held.values()))  # list(): the reader thread may add streams
        if held:
            return (
                f"{where}; {held} keypoints message(s) are held waiting for keypoint names that fit them (the stream's "
                f".meta; {self.unlabelled} dropped so far for want of them)"
            )
        if self.curve:
            curve = (
                "CURVE is on: check that the server key is the publisher's public key and that this subscriber's "
                "public key is in the publisher's --curve-clients folder"
            )
        else:
            curve = (
                f"if the publisher uses CURVE (rtkp run --curve-key), give {server_key_option} (its public key) "
                f"and {client_key_option} (this subscriber's key pair)"
            )
        quiet = "the stream went quiet" if self.received else "nothing has arrived"
        return f"{where}; {quiet}: is the publisher running and reachable? {curve[0].upper()}{curve[1:]}"

    def _ask_for_meta(self) -> None:
        """Re-send the subscription: an rtkp publisher (XPUB) answers every subscription with `.meta`."""
        now = time.monotonic()
        if now - self._asked_meta >= self.ASK_META_EVERY_S:
            self._asked_meta = now
            self.sock.setsockopt(self.zmq.SUBSCRIBE, self.topic.encode())

    def _handle(self, parts: list[bytes]) -> list[KeypointMessage]:
        """Decode one ZeroMQ message; returns the keypoints messages it makes ready (none, one, or held ones)."""
        receive_ns = time.monotonic_ns()
        kind, header = schema.decode(parts)
        stream = header.get("stream", "")
        if kind == schema.META:
            self.meta[stream] = header
            self._stale.discard(stream)
            held = self._held.pop(stream, ())
            return [msg for msg in (self._label(stream, h, ns) for h, ns in held) if msg is not None]
        if kind == schema.STATUS:
            self.status[stream] = header
            return []
        if kind != schema.KEYPOINTS:
            return []
        last = self._last_seq.get(stream)
        if last is not None and header["seq"] > last + 1:
            self.gaps += header["seq"] - last - 1
        self._last_seq[stream] = header["seq"]
        if stream not in self.meta or stream in self._stale:
            self._hold(stream, header, receive_ns)
            return []
        msg = self._label(stream, header, receive_ns)
        return [] if msg is None else [msg]

    def _hold(self, stream: str, header: dict, receive_ns: int) -> None:
        """Keep a keypoints message until names that fit it come (the oldest is dropped when the hold is full)."""
        held = self._held.setdefault(stream, deque())
        if len(held) >= self._held_max:
            held.popleft()
            self.unlabelled += 1
        held.append((header, receive_ns))

    def _label(self, stream: str, header: dict, receive_ns: int) -> KeypointMessage | None:
        """The message with names from the stream's .meta, or None (counted) when they do not fit its keypoints."""
        meta = self.meta[stream]
        fit = schema.pairing(header, meta)
        if fit == schema.FITS:
            return schema.decode_keypoints(header, meta.get("keypoints") or [], receive_ns)
        if fit == schema.OLDER:
            self.unlabelled += 1  # an older set's message after the new names came: theirs are gone, drop it
            return None
        self._stale.add(stream)
        self._ask_for_meta()
        if fit == schema.NEWER:
            # a newer set of keypoints whose `.meta` has not come (lost at the send buffer): hold, don't drop
            self._hold(stream, header, receive_ns)
        else:
            self.unlabelled += 1
        return None

    def close(self) -> None:
        if self._reader is not None:
            self._stop.set()
            self._reader.join()
        self.sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
