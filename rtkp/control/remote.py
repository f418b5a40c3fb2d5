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
        self.client_key = client_key
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None:
            curve.connect(self.sock, server_key, client_key)  # closes the socket if a key does not load
        # the handshake's outcome: a server that refuses this client ends the connection for good (no reconnect, so
        # nothing could ever be sent again); the monitor lets a request say so at once instead of waiting
        events = (
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        self.monitor = self.sock.get_monitor_socket(events)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.refused: ControlError | None = None
        self._handshake_failed = False  # a failure after which ZeroMQ retries (e.g. a wrong server key)
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self._early: dict = {}  # replies that arrived while `call` waited for another

    def send(self, op: str, **fields) -> int:
        """Send a request without waiting for its reply; returns its id (the reply carries it). Waits at most
        timeout_s for the socket to take it (a connection the server refused never does: ControlError)."""
        return self._send(op, fields, time.monotonic() + self.timeout_s)

    def _send(self, op: str, fields: dict, deadline: float) -> int:
        rid = next(self._ids)
        message = [b"", protocol.request(op, rid, **fields)]
        if not self._wait_writable(deadline):
            raise self._no_reply()
        self.sock.send_multipart(message, self.zmq.NOBLOCK)
        return rid

    def _wait_writable(self, deadline: float) -> bool:
        """Whether the socket takes a message before the deadline; ControlError("refused") once the server refused
        this client. (A DEALER without a connection blocks in send, whatever the timeout: never send blindly.)"""
        poller = self.zmq.Poller()
        poller.register(self.sock, self.zmq.POLLOUT)
        poller.register(self.monitor, self.zmq.POLLIN)
        while True:
            self._handshake_news()
            if self.sock.poll(0, self.zmq.POLLOUT):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(max(1, int(left * 1000)))

    def _handshake_news(self) -> None:
        """Read the monitor's events; raise ControlError("refused") when the server refused this client."""
        from zmq.utils.monitor import recv_monitor_message

        while self.refused is None and self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == self.zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                if self.client_key is None:
                    why = "needs a client key it admits: give --server-key FILE and --client-key FILE"
                else:
                    why = (
                        f"does not admit the key {self.client_key}: put the public half (its .key file) in the "
                        "run's --curve-clients folder, or use a key that is there"
                    )
                self.refused = ControlError("refused", f"{self.endpoint} refused this client: the run {why}")
            elif event == self.zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.refused = ControlError(
                    "refused",
                    f"{self.endpoint} refused this client's handshake: the run uses CURVE and this client does not "
                    "(give --server-key FILE and --client-key FILE), or the other way round",
                )
            elif event == self.zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._handshake_failed = True
            elif event == self.zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshake_failed = False
        if self.refused is not None:
            raise self.refused

    def _no_reply(self) -> ControlError:
        if self._handshake_failed:
            hint = (
                "the handshake with it fails: does --server-key name the run's public key, and does the run use CURVE?"
            )
        else:
            hint = (
                f"is `rtkp run --control {self.endpoint}` running (and, when its stream uses CURVE, are --server-key "
                "and --client-key given)?"
            )
        return ControlError("timeout", f"no reply from {self.endpoint} within {self.timeout_s:g} s: {hint}")

    def replies(self, timeout_s: float = 0.0) -> list[dict]:
        """The replies that have arrived (waiting up to timeout_s for the first); ControlError("refused") when the
        server refused this client."""
        import msgpack

        out = list(self._early.values())
        self._early.clear()
        poller = self.zmq.Poller()
        poller.register(self.sock, self.zmq.POLLIN)
        poller.register(self.monitor, self.zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while True:
            self._handshake_news()
            if self.sock.poll(0):
                frames = self.sock.recv_multipart()
                try:
                    out.append(msgpack.unpackb(frames[-1], raw=False))
                except Exception:
                    pass  # not a reply of ours
                continue
            left = deadline - time.monotonic()
            if out or left <= 0:
                break
            poller.poll(max(1, int(left * 1000)))
        return [r for r in out if isinstance(r, dict)]

    def request(self, op: str, **fields) -> dict:
        """Send a request and wait for its reply (a dict with `ok`); ControlError("timeout") when none comes within
        timeout_s, ControlError("refused") as soon as the server refused this client (e.g. a CURVE key it does not
        admit)."""
        deadline = time.monotonic() + self.timeout_s
        rid = self._send(op, fields, deadline)
        while True:
            if rid in self._early:
                return self._early.pop(rid)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._no_reply()
            for r in self.replies(left):
                self._early[r.get("id")] = r

    def call(self, op: str, **fields) -> dict:
        """`request`, raising ControlError(code, error) for an error reply."""
        reply = self.request(op, **fields)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("code", "failed")), str(reply.get("error", "error reply")))
        return reply

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except self.zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
