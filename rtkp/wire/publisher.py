"""ZeroMQ publisher: multipart [topic, msgpack header]; never blocks the pipeline (docs/PROTOCOL.md).

Topics: rtkp.<stream>.keypoints (every frame), rtkp.<stream>.meta (at start, every `meta_every_s`, and before the next
message whenever a subscriber joins or re-sends its subscription), rtkp.<stream>.status (once a second). The socket is
an XPUB: it behaves as a PUB for subscribers (they connect with SUB) and also reports their subscriptions to us.
Sending uses NOBLOCK: when the send high-water mark is reached ZeroMQ refuses the message on our side and it is
counted in `dropped`; the socket itself drops for slow subscribers without telling us.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rtkp.errors import ConfigError
from rtkp.wire import curve, schema

if TYPE_CHECKING:
    from rtkp.messages import KeypointFrame


class Publisher:
    """A bound XPUB socket (a PUB that sees subscriptions). Default endpoint is loopback only; `ipc://` works too.

    `meta`: the `.meta` message's fields (keypoints, skeleton, ...). A multi-instance model's run gives
    `max_instances` (the most animals a frame may hold): then every keypoints message carries `instances`.

    `joins` counts the subscriptions seen (each one is answered with `.meta`); `poll()` handles them without
    publishing (publish() and status() call it).
    """

    def __init__(
        self,
        endpoint: str,
        stream: str,
        model_id: str,
        meta: dict,
        send_hwm: int = 100,
        meta_every_s: float = 1.0,
        curve_key: str | None = None,
        curve_clients: str | None = None,
    ):
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscription, not only a topic's first subscriber
        self.sock.setsockopt(zmq.SNDHWM, send_hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.auth = None
        if curve_key:
            try:
                self.auth = curve.serve(self.sock, curve_key, curve_clients)
            except BaseException:
                self.sock.close()
                raise
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"--publish {endpoint!r}: cannot bind ({exc})") from None
        self.endpoint = endpoint
        self.stream, self.model_id = stream, model_id
        self.meta = schema.encode_meta(meta, stream, model_id)
        # a multi-instance stream (its `.meta` says how many animals a frame may hold) carries every animal in each
        # keypoints message; a single-instance stream's messages keep exactly their old bytes
        self.multi_instance = meta.get("max_instances") is not None
        self.meta_every_s = meta_every_s
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self.joins = 0
        self._last_meta = float("-inf")  # (not 0.0: the monotonic clock may be younger than meta_every_s)
        self.topic_kp = schema.topic(stream, schema.KEYPOINTS)
        self.topic_meta = schema.topic(stream, schema.META)
        self.topic_status = schema.topic(stream, schema.STATUS)

    def _send(self, topic: bytes, header: dict) -> bool:
        try:
            self.sock.send_multipart([topic, schema.pack(header)], flags=self.zmq.NOBLOCK)
            self.sent += 1
            return True
        except self.zmq.Again:
            self.dropped += 1
            return False

    def poll(self) -> int:
        """Read the subscriptions that arrived (never blocks); if any, send `.meta` now, so that a subscriber that
        just joined gets the keypoint names before its next keypoints message. Returns how many arrived."""
        zmq, joined = self.zmq, 0
        while self.sock.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                event = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if event[:1] == b"\x01":  # subscribe (b"\x00": unsubscribe)
                joined += 1
        if joined:
            self.joins += joined
            self._send(self.topic_meta, self.meta)
            self._last_meta = time.monotonic()
        return joined

    def set_keypoints(self, names: list[str], skeleton, bank: int, added: dict) -> None:
        """The keypoints changed (rtkp.control): `.meta` goes out now with the new names, before any keypoints
        message of the new bank, so a subscriber that receives everything never waits for them."""
        self.poll()
        self.meta = schema.encode_meta_change(self.meta, names, skeleton, bank, added)
        self._send(self.topic_meta, self.meta)
        self._last_meta = time.monotonic()

    def publish(self, kf: KeypointFrame) -> None:
        self.poll()
        now = time.monotonic()
        if now - self._last_meta >= self.meta_every_s:
            self._send(self.topic_meta, self.meta)
            self._last_meta = now
        self.seq += 1
        header = schema.encode_keypoints(kf, self.seq, self.stream, self.model_id, instances=self.multi_instance)
        self._send(self.topic_kp, header)

    def status(self, status: dict) -> None:
        self.poll()
        self._send(self.topic_status, schema.encode_status(status, self.stream))

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
