"""The control socket of `rtkp run --control ENDPOINT`: a ZeroMQ ROUTER in a thread of the inference process.

The thread owns the socket (ZeroMQ sockets are not thread-safe). It answers at once what needs no model: malformed
requests, "not ready" while the model loads or after the run ended, undecodable images and points outside them. Every
other request becomes a Job on a queue that the inference stage works through between two batches (`take`), because
the model and the keypoint set belong to that loop; the stage's answer goes back through `Job.done` and the thread
sends it. Every request gets exactly one reply, and nothing a client sends reaches the pipeline unparsed.

Clients connect with REQ (or DEALER, sending an empty delimiter frame first, as REQ does); replies go back through
the same envelope. CURVE: the same server key and allowed-clients folder as the stream (`--curve-key`,
`--curve-clients`).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from rtkp.control import protocol
from rtkp.errors import ConfigError, ControlError
from rtkp.wire import curve

POLL_MS = 10  # how often the thread looks for replies to send while no request arrives


@dataclass
class Job:
    """A parsed request for the inference stage. images: decoded RGB images of the samples that carried one (None
    for `seq`/`frame` samples), in sample order. `done(reply)` hands the reply (a dict) back to the socket thread."""

    request_id: object
    request: protocol.Request
    images: list = field(default_factory=list)
    _replies: queue.Queue | None = None
    _envelope: tuple | None = None  # (socket, routing frames): where the reply goes

    def done(self, reply: dict) -> None:
        self._replies.put((self._envelope, reply))


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, anything OpenCV reads) -> (H, W, 3) uint8 RGB, or ControlError("bad_image")."""
    import cv2

    arr = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 1:
        raise ControlError("bad_image", f"the image of a sample does not decode ({len(data)} bytes; send PNG or JPEG)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_inside(x: float, y: float, size: tuple[int, int], what: str) -> None:
    """ControlError("outside") unless (x, y) lies on a (w, h) image (pixel centres at integers: −0.5 .. w − 0.5)."""
    w, h = size
    if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
        raise ControlError("outside", f"point ({x:g}, {y:g}) lies outside {what} ({w}x{h} pixels)")


class ControlServer:
    """A bound ROUTER socket answered by a thread; see the module docstring. `ready()` once the model is loaded,
    `close()` at the end (queued jobs are answered "not ready")."""

    def __init__(
        self,
        endpoint: str | None,
        curve_key: str | None = None,
        curve_clients: str | None = None,
        private: str | None = None,
    ):
        """endpoint: the public control endpoint (CURVE when curve_key is given), or None; private: a second endpoint
        without CURVE for the live window (an ipc:// path only this user can reach), or None."""
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.auth = None
        self.sockets = []
        try:
            for where, curve in ((endpoint, bool(curve_key)), (private, False)):
                if where:
                    self.sockets.append(self._bind(where, curve_key if curve else None, curve_clients))
        except BaseException:  # a bad endpoint or key: close what was opened (the authenticator's thread too)
            self._close_sockets()
            raise
        self.endpoint = endpoint
        self.jobs: queue.Queue[Job] = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._stop = threading.Event()
        self.answered = 0
        self._thread = threading.Thread(target=self._serve, name="rtkp-control", daemon=True)
        self._thread.start()

    def _bind(self, endpoint: str, curve_key: str | None, curve_clients: str | None):
        zmq = self.zmq
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REQUEST_BYTES)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a reply to a client that left is dropped, never blocks
        if curve_key:
            try:  # one authenticator per context: a second CURVE socket shares the first one's
                self.auth = curve.serve(sock, curve_key, curve_clients, self.auth)
            except BaseException:
                sock.close(0)
                raise
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ConfigError(f"--control {endpoint!r}: cannot bind ({exc})") from None
        return sock

    def ready(self) -> None:
        """From now on requests go to the inference stage (before: "not ready" replies)."""
        self._ready.set()

    def take(self) -> list[Job]:
        """The jobs queued now (never blocks): the inference stage calls this between batches."""
        out = []
        while True:
            try:
                out.append(self.jobs.get_nowait())
            except queue.Empty:
                return out

    def _serve(self) -> None:
        zmq = self.zmq
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            self._send_replies()
            try:
                for sock, _ in poller.poll(POLL_MS):
                    self._handle(sock, sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                continue
            except zmq.ZMQError:
                if self._stop.is_set():
                    break
                raise
        for job in self.take():  # parsed just before the end: still one reply each
            job.done(protocol.error_reply(job.request_id, ControlError("not_ready", "not ready: the run is ending")))
        self._send_replies()

    def _handle(self, sock, frames: list[bytes]) -> None:
        """One message: [identity, (empty delimiter,) request]. Anything else is answered with an error."""
        if b"" in frames[1:]:
            cut = frames.index(b"", 1) + 1
        else:
            cut = 1  # a DEALER that sends no delimiter
        envelope, body = (sock, frames[:cut]), frames[cut:]
        rid = None
        try:
            if len(body) != 1:
                raise ControlError("bad_request", f"a request is one frame (a msgpack map), got {len(body)} frames")
            rid, request = protocol.parse_request(body[0])
            if not self._ready.is_set() or self._closing.is_set():
                why = "the run is ending" if self._closing.is_set() else "the model is still loading"
                raise ControlError("not_ready", f"not ready: {why}; ask again in a moment")
            job = Job(rid, request, self._decode(request), self._replies, envelope)
        except ControlError as exc:
            rid = getattr(exc, "request_id", rid)
            self._send(envelope, protocol.error_reply(rid, exc))
            return
        except Exception as exc:  # a bug must cost one request, never the socket thread (and with it the run)
            self._send(envelope, protocol.error_reply(rid, ControlError("failed", f"internal error: {exc!r:.200}")))
            return
        self.jobs.put(job)

    def _decode(self, request) -> list:
        """The images sent with an add request, decoded, and their points checked (here, off the inference loop)."""
        if not isinstance(request, protocol.Add):
            return []
        images = []
        for i, s in enumerate(request.samples):
            if s.image is None:
                images.append(None)
                continue
            image = decode_image(s.image)
            check_inside(s.x, s.y, (image.shape[1], image.shape[0]), f"the image of sample {i}")
            images.append(image)
        return images

    def _send_replies(self) -> None:
        while True:
            try:
                envelope, reply = self._replies.get_nowait()
            except queue.Empty:
                return
            self._send(envelope, reply)

    def _send(self, envelope: tuple, reply: dict) -> None:
        sock, frames = envelope
        try:
            sock.send_multipart(frames + [protocol.encode(reply)], self.zmq.NOBLOCK)
            self.answered += 1
        except self.zmq.ZMQError:
            pass  # the client is gone, or its queue is full: a reply nobody can take

    def close(self) -> None:
        """Answer what is still queued ("not ready": the run is ending), stop the thread, close the socket."""
        self._closing.set()
        self._stop.set()
        self._thread.join(2.0)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
