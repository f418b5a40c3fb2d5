"""Teaching while a tracker runs, without a model: the control protocol's parser (fuzzed), the control server's
endpoints, the window's click logic, the publisher's names before keypoints, and the subscriber's pairing of names
with the set of keypoints (bank) they belong to. Real sockets on 127.0.0.1 and ipc."""

import json
import time

import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_port, wait_for

from rtkp.control import protocol
from rtkp.errors import ControlError
from rtkp.wire.subscriber import Subscriber


def test_protocol_parses_requests_and_refuses_the_rest():
    pack = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
    rid, req = protocol.parse_request(
        pack({"op": "add", "id": 7, "name": "paw", "samples": [{"seq": 3, "x": 1, "y": 2}]})
    )
    assert rid == 7 and req == protocol.Add("paw", (protocol.Sample(1.0, 2.0, seq=3),))
    assert protocol.parse_request(pack({"op": "list"}))[1] == protocol.List()
    assert protocol.parse_request(pack({"op": "remove", "name": "a", "shot": True}))[1] == protocol.Remove("a", True)
    bad = [
        b"",
        b"\xc1",
        b"\x93\x01\x02",
        pack([1, 2]),
        pack({"op": "fly"}),
        pack({"v": 2, "op": "list"}),
        pack({"op": "add", "name": "a"}),
        pack({"op": "add", "name": "a", "samples": []}),
        pack({"op": "add", "name": "a", "samples": [{"x": 1, "y": 2}]}),
        pack({"op": "add", "name": "a", "samples": [{"x": "1", "y": 2, "seq": 1}]}),
        pack({"op": "add", "name": "a", "samples": [{"x": 1, "y": 2, "seq": 1, "image": b""}]}),
        pack({"op": "add", "name": "a", "samples": [{"x": float("nan"), "y": 2, "seq": 1}]}),
        pack({"op": "add", "name": 5, "samples": [{"x": 1, "y": 2, "seq": 1}]}),
        pack({"op": "rename", "name": "a"}),
        pack({"op": "save"}),
        pack({"op": "remove", "name": "a", "shot": "yes"}),
    ]
    rng = np.random.default_rng(6)
    bad += [rng.bytes(int(n)) for n in rng.integers(1, 64, 40)]
    for payload in bad:
        try:
            protocol.parse_request(payload)
        except ControlError as exc:
            assert exc.code in protocol.CODES and str(exc)
        else:  # random bytes can happen to be a valid request; then it must be one of the typed requests
            assert payload not in bad[:16]


class FakeClient:
    """ControlClient's send/replies, answering every request at once like a server that accepts everything."""

    def __init__(self):
        self.sent, self._replies, self._id = [], [], 0

    def send(self, op, **fields):
        self._id += 1
        self.sent.append((op, fields))
        extra = {"shots": 1, "margin": 0.1} if op == "add" else {}
        self._replies.append({"id": self._id, "ok": True, **extra})
        return self._id

    def replies(self, timeout_s=0.0):
        out, self._replies = self._replies, []
        return out


def test_window_clicks_become_add_requests_and_keys_undo_and_delete():
    from rtkp.control.window import ClickTeacher

    client = FakeClient()
    teacher = ClickTeacher(client)
    image = np.zeros((96, 128, 3), np.uint8)
    teacher.click(40, 30, image)
    for ch in "paw":
        assert teacher.key(ord(ch), ["a"], {})
    assert teacher.hud_lines({})[0].startswith("name: paw_")
    teacher.key(13, ["a"], {})
    op, fields = client.sent[-1]
    assert op == "add" and fields["name"] == "paw" and not fields["extend"]
    assert (fields["samples"][0]["x"], fields["samples"][0]["y"]) == (40.0, 30.0)
    import cv2

    decoded = cv2.imdecode(np.frombuffer(fields["samples"][0]["image"], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (96, 128, 3)
    teacher.poll()
    teacher.click(50, 30, image)
    teacher.key(ord("p"), ["a", "paw"], {"paw": 1})
    teacher.key(ord("x"), ["a", "paw"], {"paw": 1})
    teacher.key(8, ["a", "paw"], {"paw": 1})  # backspace
    teacher.key(ord("a"), ["a", "paw"], {"paw": 1})
    teacher.key(ord("w"), ["a", "paw"], {"paw": 1})
    teacher.key(10, ["a", "paw"], {"paw": 1})  # the name exists among the added ones: one more shot
    assert client.sent[-1][1]["extend"] and client.sent[-1][1]["name"] == "paw"
    teacher.poll()
    assert "paw (2 shots)" in teacher.hud_lines({"paw": 2})[0]
    teacher.key(ord("u"), ["a", "paw"], {"paw": 2})  # undo the latest shot: only that shot goes
    assert client.sent[-1] == ("remove", {"name": "paw", "shot": True})
    teacher.key(ord("u"), ["a", "paw"], {"paw": 1})  # then the keypoint it made
    assert client.sent[-1] == ("remove", {"name": "paw", "shot": False})
    teacher.click(1, 1, image)
    teacher.key(13, ["a", "kp1"], {})  # an empty name takes a suggested, unused one
    assert client.sent[-1][1]["name"] == "kp2"
    teacher.move(100, 50)
    teacher.key(ord("d"), ["a", "b"], {}, np.array([[10.0, 10.0], [101.0, 52.0]]))
    assert client.sent[-1] == ("remove", {"name": "b"})
    assert not teacher.key(ord("q"), ["a"], {})  # not the window's: the display sink quits


def test_names_are_paired_only_with_keypoints_of_their_bank():
    """A rename keeps the keypoint count: a message of the new set whose `.meta` was lost must wait for it, not be
    handed out with the old names; a message of the old set after the new names is dropped, never mislabelled."""
    ep = f"tcp://127.0.0.1:{free_port()}"
    raw = zmq.Context.instance().socket(zmq.XPUB)
    raw.setsockopt(zmq.XPUB_VERBOSE, 1)
    raw.bind(ep)
    sub = Subscriber(ep, timeout_s=5)
    assert raw.poll(10_000)
    raw.recv()

    def send(kind, **fields):
        raw.send_multipart(
            [f"rtkp.cam.{kind}".encode(), msgpack.packb({"v": 1, "stream": "cam", "model": "m", **fields})]
        )

    def frame(seq, bank):
        send("keypoints", seq=seq, frame=seq, capture_ns=0, publish_ns=0, kp=[[seq, 0, 1, True, 0]] * 2, bank=bank)

    send("meta", keypoints=["a", "b"], bank=0)
    frame(1, 0)
    assert [k.name for k in sub.receive(5).keypoints] == ["a", "b"]
    frame(2, 1)  # renamed b -> z, but this subscriber missed the new .meta
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert sub.receive(0.05) is None
    assert raw.poll(5000) and raw.recv() == b"\x01rtkp."  # it asked for fresh names
    send("meta", keypoints=["a", "z"], bank=1)
    msg = sub.receive(5)
    assert (msg.seq, msg.bank, [k.name for k in msg.keypoints]) == (2, 1, ["a", "z"]) and sub.unlabelled == 0
    frame(3, 0)  # a straggler of the old set: dropped
    frame(4, 1)
    assert sub.receive(5).seq == 4 and sub.unlabelled == 1
    sub.close()
    raw.close(0)


def test_publisher_sends_new_names_before_the_first_message_that_has_them():
    from rtkp.messages import KeypointFrame
    from rtkp.wire.publisher import Publisher

    ep = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(ep, "cam", "m", {"keypoints": ["a", "b"], "skeleton": []}, meta_every_s=3600)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"rtkp.")
    sub.connect(ep)
    wait_for(lambda: pub.poll() >= 0 and pub.joins >= 1, 10, "the subscriber to join")

    def kf(k, bank):
        return KeypointFrame(
            0, 0.0, 0, (8, 8), np.zeros((k, 2)), np.zeros(k), np.ones(k, bool), np.zeros(k), {}, 0, None, bank
        )

    pub.publish(kf(2, 0))
    pub.set_keypoints(["a", "b", "paw"], [], 1, {"paw": 1})
    pub.publish(kf(3, 1))
    got = []
    while len(got) < 4 and sub.poll(5000):
        topic, header = sub.recv_multipart()
        got.append((topic.decode().rsplit(".", 1)[-1], msgpack.unpackb(header)))
    kinds = [(k, h.get("bank"), h.get("keypoints")) for k, h in got]
    assert kinds == [
        ("meta", 0, ["a", "b"]),
        ("keypoints", 0, None),
        ("meta", 1, ["a", "b", "paw"]),
        ("keypoints", 1, None),
    ]
    assert got[2][1]["added"] == {"paw": 1} and json.dumps(got[2][1])
    sub.close(0)
    pub.close()


def test_control_server_answers_on_its_private_and_curve_endpoints(tmp_path):
    """The window's private ipc endpoint (no CURVE) and a CURVE public one, on one server: "not ready" until the
    model is, then requests reach the inference stage's queue; a client without keys gets nothing."""
    from rtkp.control.remote import ControlClient
    from rtkp.control.server import ControlServer
    from rtkp.wire import write_keys

    server_pub, server_secret = write_keys(tmp_path / "server", "server")
    _, good_secret = write_keys(tmp_path / "allowed", "good")
    public, private = f"tcp://127.0.0.1:{free_port()}", f"ipc://{tmp_path}/window.ctl"
    server = ControlServer(public, str(server_secret), str(tmp_path / "allowed"), private=private)
    window = ControlClient(private, timeout_s=10)
    remote = ControlClient(public, timeout_s=10, server_key=server_pub, client_key=good_secret)
    stranger = ControlClient(public, timeout_s=1)
    try:
        assert window.request("list")["code"] == "not_ready"
        assert remote.request("list")["code"] == "not_ready"
        with pytest.raises(ControlError) as err:
            stranger.call("list")
        assert err.value.code in ("timeout", "refused") and "CURVE" in str(err.value), err.value
        server.ready()
        rid = window.send("list")
        jobs = wait_for(server.take, 10, "the request to reach the queue")
        assert isinstance(jobs[0].request, protocol.List)
        jobs[0].done(protocol.reply(jobs[0].request_id, keypoints=[]))
        assert [r["id"] for r in window.replies(10)] == [rid]
        rid = remote.send("rename", name="a", to="b")
        job = wait_for(server.take, 10, "the request to reach the queue")[0]
        assert job.request == protocol.Rename("a", "b")
        window.send("list")  # still queued when the run ends: answered all the same
        wait_for(lambda: not server.jobs.empty(), 10, "the request to reach the queue")
        server.close()
        assert [r["code"] for r in window.replies(10)] == ["not_ready"]
        job.done(protocol.reply(job.request_id))  # (after close nobody sends it; nothing breaks)
    finally:
        for c in (window, remote, stranger):
            c.close()


def test_a_client_whose_key_is_refused_gets_an_error_in_time_never_hangs(tmp_path):
    """A CURVE server that does not admit the client's key ends the connection for good: a request sent after that
    (the second one always is; the first one is when the handshake is quicker than the client) must still end within
    the client's timeout, with an error naming the key, instead of blocking in send forever (issue 26, item 4)."""
    import threading

    from rtkp.control.remote import ControlClient
    from rtkp.control.server import ControlServer
    from rtkp.wire import write_keys

    server_pub, server_secret = write_keys(tmp_path / "server", "server")
    write_keys(tmp_path / "allowed", "good")
    _, stranger_secret = write_keys(tmp_path / "elsewhere", "stranger")
    public = f"tcp://127.0.0.1:{free_port()}"
    server = ControlServer(public, str(server_secret), str(tmp_path / "allowed"))
    server.ready()
    client = ControlClient(public, timeout_s=2, server_key=server_pub, client_key=stranger_secret)
    errors = []

    def ask_twice():
        for _ in range(2):
            try:
                client.call("list")
            except ControlError as exc:
                errors.append(exc)

    asker = threading.Thread(target=ask_twice, daemon=True)
    try:
        asker.start()
        asker.join(20)
        assert not asker.is_alive(), "a request to a server that refused the client's key never ended"
        assert [e.code for e in errors] == ["refused", "refused"], errors
        assert "stranger.key_secret" in str(errors[0]) and "--curve-clients" in str(errors[0]), errors[0]
    finally:
        if not asker.is_alive():
            client.close()
        server.close()
