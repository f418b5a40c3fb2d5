"""Subscribe to an rtkp stream: `for msg in Subscriber("tcp://127.0.0.1:5555"): ...` (docs/PROTOCOL.md).

Only pyzmq and msgpack are needed; rtkp's own pipeline is not imported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .errors import RtkpError
from .messages import SCHEMA_VERSION


class ProtocolError(RtkpError):
    """A message this client cannot read (e.g. another schema version)."""


@dataclass(frozen=True)
class Keypoint:
    """One keypoint in source pixels. state: 0 measured, 1 smoothed, 2 predicted while hidden, 3 missing."""

    name: str
    x: float
    y: float
    score: float
    visible: bool
    state: int


@dataclass(frozen=True)
class KeypointMessage:
    """One `rtkp.<stream>.keypoints` message, decoded."""

    stream: str
    seq: int
    frame: int
    pts: float | None
    capture_ns: int
    publish_ns: int
    receive_ns: int
    model: str
    size: tuple[int, int]
    keypoints: tuple[Keypoint, ...]
    dropped: int

    @property
    def latency_ms(self) -> float:
        """Capture -> receive, valid when publisher and subscriber share a clock (same machine)."""
        return (self.receive_ns - self.capture_ns) / 1e6


def load_key(path: str | Path, secret: bool) -> bytes:
    """A Z85 CURVE key from a file written by `rtkp keys` (ZeroMQ certificate format)."""
    import zmq.auth

    public, secret_key = zmq.auth.load_certificate(str(path))
    if secret and secret_key is None:
        raise RtkpError(f"{path}: holds no secret key (use the .key_secret file)")
    return secret_key if secret else public


def write_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write a CURVE key pair: <name>.key (public, give it away) and <name>.key_secret (keep it)."""
    import zmq.auth

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


class Subscriber:
    """Iterate decoded KeypointMessages from an rtkp publisher.

    stream: only this stream (None: all streams on the endpoint).
    latest_only: deliver only the newest message each time (for control loops that must not lag); older ones are
      discarded and counted in `skipped`. ZeroMQ's CONFLATE loses multipart messages, and a small receive high-water
      mark alone keeps the *oldest* messages (the newest are dropped upstream while the queue is full), so a
      background thread reads the socket continuously and keeps only the newest decoded message.
    timeout_s: StopIteration after this long without a message (None: wait forever).
    CURVE: server_key (the publisher's public key file) plus client key files (public + secret).
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        stream: str | None = None,
        latest_only: bool = False,
        timeout_s: float | None = 5.0,
        server_key: str | Path | None = None,
        client_key: str | Path | None = None,
        rcvhwm: int = 1000,
    ):
        import zmq

        self.zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if server_key is not None:
            if client_key is None:
                raise RtkpError("a CURVE subscriber needs its own key pair too (client_key: the .key_secret file)")
            self.sock.curve_serverkey = load_key(server_key, secret=False)
            self.sock.curve_publickey = load_key(client_key, secret=False)
            self.sock.curve_secretkey = load_key(client_key, secret=True)
        prefix = f"rtkp.{stream}." if stream else "rtkp."
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.sock.connect(endpoint)
        self.endpoint, self.stream = endpoint, stream
        self.latest_only, self.timeout_s = latest_only, timeout_s
        self.meta: dict[str, dict] = {}
        self.status: dict[str, dict] = {}
        self.received = 0
        self.gaps = 0  # messages the publisher sent that never arrived (from sequence numbers)
        self.skipped = 0  # messages discarded on purpose by latest_only
        self._last_seq: dict[str, int] = {}
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
                    msg = self._handle(self.sock.recv_multipart())
                except ProtocolError as exc:
                    msg, self._error = None, exc
                with self._cond:
                    if msg is not None:
                        if self._newest is not None:
                            self.skipped += 1
                        self._newest = msg
                    if msg is not None or self._error is not None:
                        self._cond.notify_all()

        self._reader = threading.Thread(target=read, name="rtkp-subscriber", daemon=True)
        self._reader.start()

    def __iter__(self):
        return self

    def __next__(self) -> KeypointMessage:
        msg = self.receive(self.timeout_s)
        if msg is None:
            raise StopIteration
        return msg

    def receive(self, timeout_s: float | None) -> KeypointMessage | None:
        """The next keypoints message (the newest one with latest_only), or None after timeout_s."""
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
        while True:
            wait = None if deadline is None else max(int((deadline - time.monotonic()) * 1000), 0)
            if not self.sock.poll(wait):
                return None
            try:
                msg = self._handle(self.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                continue
            if msg is not None:
                self.received += 1
                return msg

    def _handle(self, parts: list[bytes]) -> KeypointMessage | None:
        import msgpack

        if len(parts) < 2:
            raise ProtocolError(f"expected [topic, header] frames, got {len(parts)} frame(s)")
        topic = parts[0].decode(errors="replace")
        try:
            header = msgpack.unpackb(parts[1], raw=False)
        except Exception as exc:
            raise ProtocolError(f"{topic}: header is not msgpack ({exc})") from None
        version = header.get("v") if isinstance(header, dict) else None
        if version != SCHEMA_VERSION:
            raise ProtocolError(
                f"{topic}: schema version {version!r}, this client reads version {SCHEMA_VERSION}; "
                "upgrade rtkp on the older side"
            )
        kind = topic.rsplit(".", 1)[-1]
        stream = header.get("stream", "")
        if kind == "meta":
            self.meta[stream] = header
            return None
        if kind == "status":
            self.status[stream] = header
            return None
        if kind != "keypoints":
            return None
        last = self._last_seq.get(stream)
        if last is not None and header["seq"] > last + 1:
            self.gaps += header["seq"] - last - 1
        self._last_seq[stream] = header["seq"]
        names = self.meta.get(stream, {}).get("keypoints") or [f"kp{i}" for i in range(len(header["kp"]))]
        kps = tuple(Keypoint(n, p[0], p[1], p[2], bool(p[3]), int(p[4])) for n, p in zip(names, header["kp"]))
        return KeypointMessage(
            stream,
            header["seq"],
            header["frame"],
            header.get("pts"),
            header["capture_ns"],
            header["publish_ns"],
            time.monotonic_ns(),
            header.get("model", ""),
            tuple(header.get("size", (0, 0))),
            kps,
            header.get("dropped", 0),
        )

    def close(self) -> None:
        if self._reader is not None:
            self._stop.set()
            self._reader.join()
        self.sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
