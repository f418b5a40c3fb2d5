"""A client of the control socket (`rtkp run --control ENDPOINT`): pyzmq and msgpack only, no torch, no numpy.

    with ControlClient("tcp://127.0.0.1:5556") as ctl:
        ctl.call("add", name="left_paw", samples=[sample_from_file("paw.png", 212, 301)])
        print(ctl.call("list")["keypoints"])

`call` returns the reply of a successful request and raises ControlError (with the reply's `code`) for an error reply
or when no reply comes in time. `send` and `replies` do the same without waiting (the live window uses them, so it
never stalls while a keypoint is being taught).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from rtkp.control import protocol
from rtkp.errors import ControlError
from rtkp.wire import curve


def sample_from_file(path: str | Path, x: float, y: float) -> dict:
    """A sample whose image is an encoded image file (PNG, JPEG, …) sent with the request; (x, y) in its pixels."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ControlError("bad_image", f"{path}: cannot read ({exc.strerror or exc})") from None
    return {"image": data, "x": float(x), "y": float(y)}


class ControlClient:
    """A DEALER socket that talks to the control ROUTER like a REQ would (empty delimiter frame, then the request),
    but can have several requests in flight and survives a request that got no reply.

    timeout_s: how long `call` waits for a reply. CURVE: server_key (the run's public key file) and client_key (this
    client's key pair, whose public half is in the run's --curve-clients folder)."""

    def __init__(
        self,
        endpoint: str,
        timeout_s: float = 5.0,
        server_key: str | Path | None = None,
        client_key: str | Path | None = None,
    ):
        import zmq

        if server_key is not None and client_key is None:
            raise ControlError("bad_request", "a CURVE control client needs its own key pair (client_key)")
        self.zmq, self.endpoint, self.timeout_s = zmq, endpoint, timeout_s
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None:
            try:
                curve.connect(self.sock, server_key, client_key)
            except BaseException:  # a key file that does not load
                self.sock.close()
                raise
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self._early: dict = {}  # replies that arrived while `call` waited for another

    def send(self, op: str, **fields) -> int:
        """Send a request without waiting; returns its id (the reply carries it)."""
        rid = next(self._ids)
        self.sock.send_multipart([b"", protocol.request(op, rid, **fields)])
        return rid

    def replies(self, timeout_s: float = 0.0) -> list[dict]:
        """The replies that have arrived (waiting up to timeout_s for the first)."""
        import msgpack

        out = list(self._early.values())
        self._early.clear()
        wait_ms = int(timeout_s * 1000)
        while self.sock.poll(0 if out else wait_ms):
            frames = self.sock.recv_multipart()
            try:
                out.append(msgpack.unpackb(frames[-1], raw=False))
            except Exception:
                continue  # not a reply of ours
        return [r for r in out if isinstance(r, dict)]

    def request(self, op: str, **fields) -> dict:
        """Send a request and wait for its reply (a dict with `ok`); ControlError("timeout") when none comes."""
        rid = self.send(op, **fields)
        deadline = time.monotonic() + self.timeout_s
        while True:
            if rid in self._early:
                return self._early.pop(rid)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ControlError(
                    "timeout",
                    f"no reply from {self.endpoint} within {self.timeout_s:g} s: is `rtkp run --control "
                    f"{self.endpoint}` running (and, when its stream uses CURVE, are --server-key and --client-key "
                    "given)?",
                )
            for r in self.replies(left):
                self._early[r.get("id")] = r

    def call(self, op: str, **fields) -> dict:
        """`request`, raising ControlError(code, error) for an error reply."""
        reply = self.request(op, **fields)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("code", "failed")), str(reply.get("error", "error reply")))
        return reply

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
