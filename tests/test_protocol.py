"""The ZeroMQ protocol end to end: real sockets on 127.0.0.1, real `rtkp run` processes (the subscriber in C and
several animals per frame: test_protocol_instances.py)."""

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_port, subscribe_to_live_run, wait_for

from rtkp.errors import ConfigError, RtkpError
from rtkp.messages import KeypointFrame
from rtkp.wire import ProtocolError, Publisher, StreamTimeout, Subscriber, schema, write_keys

REPO = Path(__file__).resolve().parent.parent


def _endpoint():
    return f"tcp://127.0.0.1:{free_port()}"


def _kf(i, k=3):
    return KeypointFrame(
        i,
        i / 30,
        time.monotonic_ns(),
        (640, 480),
        np.full((k, 2), float(i), np.float32),
        np.ones(k, np.float32),
        np.ones(k, bool),
        np.ones(k, np.uint8),
    )


def _publisher(endpoint, **kw):
    return Publisher(endpoint, "cam", "abc", {"keypoints": ["a", "b", "c"], "skeleton": []}, **kw)


def _wait_joins(pub, n):
    """Wait until the publisher has seen n subscriptions (its XPUB socket reports them; each gets `.meta`)."""
    wait_for(lambda: pub.poll() >= 0 and pub.joins >= n, 10, f"{n} subscription(s)")


def test_subscriber_decodes_counts_gaps_and_gets_metadata():
    ep = _endpoint()
    pub = _publisher(ep)
    sub = Subscriber(ep, stream="cam", timeout_s=2)
    _wait_joins(pub, 1)
    for i in range(5):
        if i == 3:
            pub.seq += 2  # two messages "lost" on the way
        pub.publish(_kf(i))
    got = [sub.receive(2) for _ in range(5)]
    assert [m.frame for m in got] == list(range(5))
    assert sub.gaps == 2 and sub.meta["cam"]["keypoints"] == ["a", "b", "c"]
    assert [k.name for k in got[0].keypoints] == ["a", "b", "c"] and got[4].keypoints[0].x == 4.0
    assert got[0].size == (640, 480) and got[0].latency_ms >= 0
    assert sub.receive(0.2) is None
    sub.close()
    pub.close()


def test_latest_only_delivers_only_the_newest_message():
    # The old version slept 0.5 s and then expected frame 199: under CPU load the reader thread had not yet decoded
    # the last message (or the publisher had dropped it at send_hwm=100), and the newest so far was 198. Now nothing
    # can be dropped (send_hwm above the message count) and the test waits until the reader has decoded all 200.
    ep = _endpoint()
    pub = _publisher(ep, send_hwm=1000)
    latest = Subscriber(ep, latest_only=True, timeout_s=2)
    everything = Subscriber(ep, timeout_s=2)
    _wait_joins(pub, 2)
    for i in range(200):
        pub.publish(_kf(i))
    # nobody reads `latest` meanwhile: each decoded message but the newest is discarded and counted
    wait_for(lambda: latest.skipped >= 199, 10, "the latest_only reader to decode all 200 messages")
    newest = latest.receive(0)
    assert newest is not None and newest.frame == 199 and latest.skipped == 199
    assert latest.receive(0.1) is None  # the older ones are gone, not queued behind it
    assert [everything.receive(5).frame for _ in range(200)] == list(range(200))  # all were sent, in order
    pub.publish(_kf(200))
    assert latest.receive(5).frame == 200
    for s in (latest, everything, pub):
        s.close()


def test_schema_mismatch_is_a_clear_error():
    ep = _endpoint()
    sock = zmq.Context.instance().socket(zmq.XPUB)  # a raw publisher that also sees the subscription arrive
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.bind(ep)
    sub = Subscriber(ep, timeout_s=2)
    assert sock.recv()[:1] == b"\x01"  # the subscription: from now on the subscriber receives what is sent
    sock.send_multipart([b"rtkp.cam.keypoints", msgpack.packb({"v": 99, "seq": 1})])
    with pytest.raises(ProtocolError, match="schema version 99"):
        sub.receive(2)
    sub.close()
    sock.close(0)


def test_the_keypoints_header_keeps_its_bytes_and_decodes_back():
    # the bytes are the contract with every other-language client (docs/PROTOCOL.md, tools/subscribers/rtkp_sub.c)
    points = np.array([[1.23456, 2.5]], np.float32), np.array([0.123456789], np.float32), np.ones(1, bool)
    kf = KeypointFrame(7, 0.25, 5, (640, 480), *points, np.ones(1, np.uint8), dropped=2, bank_version=3)
    header = dict(schema.encode_keypoints(kf, 4, "cam", "abc"), publish_ns=6)
    wire = dict(v=1, stream="cam", seq=4, frame=7, pts=0.25, capture_ns=5, publish_ns=6, model="abc", size=[640, 480])
    assert schema.pack(header) == msgpack.packb(dict(wire, kp=[[1.235, 2.5, 0.12346, True, 1]], dropped=2, bank=3))
    assert tuple(header) == schema.KEYPOINTS_FIELDS
    msg = schema.decode_keypoints(header, ["nose"], 9)
    assert (msg.seq, msg.frame, msg.size, msg.bank, msg.latency_ms) == (4, 7, (640, 480), 3, 4e-6)
    assert msg.keypoints == (schema.Keypoint("nose", 1.235, 2.5, 0.12346, True, 1),)
    assert msg.instances == (schema.Instance(0, 0.12346, msg.keypoints),)  # single-instance: no `instances` sent


def test_the_subscriber_imports_no_numpy_and_no_pipeline():
    code = "import sys, rtkp.client, rtkp.wire; print([m for m in ('numpy', 'torch', 'av', 'cv2') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_late_joiner_gets_the_names_with_its_first_frame():
    ep = _endpoint()
    pub = _publisher(ep)
    stop = threading.Event()

    def stream():
        i = 0
        while not stop.is_set():
            pub.publish(_kf(i))
            i += 1
            time.sleep(1 / 30)

    thread = threading.Thread(target=stream)
    thread.start()
    wait_for(lambda: pub.sent >= 40, 10, "more than a second of stream")  # the start-up metadata went out long ago
    sub = Subscriber(ep, stream="cam", timeout_s=10)
    try:
        first = sub.receive(10)
    finally:
        stop.set()
        thread.join()
        sub.close()
        pub.close()
    assert first is not None and "cam" in sub.meta
    assert [k.name for k in first.keypoints] == ["a", "b", "c"]


def test_iterating_waits_for_a_publisher_that_starts_later():
    ep = _endpoint()
    sub = Subscriber(ep, stream="cam")  # as in the README: no timeout given
    got = []
    waiter = threading.Thread(target=lambda: got.append(next(sub, "iteration ended")), daemon=True)
    waiter.start()
    waiter.join(6.0)  # longer than any built-in default: iteration must still be waiting, not have ended silently
    assert waiter.is_alive(), f"iteration ended without a publisher: {got}"
    pub = _publisher(ep)
    _wait_joins(pub, 1)
    i = 0
    while waiter.is_alive():
        assert i < 500, "no message reached the waiting iteration"
        pub.publish(_kf(i))
        waiter.join(0.02)
        i += 1
    assert [k.name for k in got[0].keypoints] == ["a", "b", "c"]
    sub.close()
    pub.close()


def test_a_timeout_given_is_a_clear_error_not_a_silent_end():
    ep = _endpoint()
    with Subscriber(ep, stream="cam", timeout_s=0.2) as sub:
        assert sub.receive(0.05) is None  # polling with receive() still answers None
        with pytest.raises(StreamTimeout, match=f"no keypoints message for 0.2 s: waiting for keypoints on {ep}"):
            next(iter(sub))
    assert issubclass(StreamTimeout, RtkpError)


def test_the_first_message_a_late_joiner_gets_has_the_keypoint_names():
    ep = _endpoint()
    pub = _publisher(ep, meta_every_s=3600)  # metadata goes out at the start, then only when a subscriber joins
    for i in range(5):
        pub.publish(_kf(i))  # nobody listens yet
    sub = Subscriber(ep, stream="cam", timeout_s=5)
    _wait_joins(pub, 1)
    i = 5
    msg = None
    while msg is None:
        assert i < 500, "no message reached the late joiner"
        pub.publish(_kf(i))
        msg = sub.receive(0.02)
        i += 1
    assert [k.name for k in msg.keypoints] == ["a", "b", "c"] and sub.unlabelled == 0
    sub.close()
    pub.close()


def test_keypoints_that_arrive_before_their_names_are_held_not_mislabelled():
    # a publisher that sends keypoints before `.meta` (as rtkp's did: .meta only once a second) and frames whose model
    # or keypoint count does not fit the names
    ep = _endpoint()
    raw = zmq.Context.instance().socket(zmq.XPUB)
    raw.setsockopt(zmq.XPUB_VERBOSE, 1)
    raw.bind(ep)
    sub = Subscriber(ep, timeout_s=5)
    assert raw.poll(10_000), "the subscription never arrived"
    raw.recv()

    def send(kind, **fields):
        header = {"v": 1, "stream": "cam", "model": "abc", **fields}
        raw.send_multipart([f"rtkp.cam.{kind}".encode(), msgpack.packb(header)])

    def frame(seq, k=3, **fields):
        fields = {"frame": seq, "capture_ns": 0, "publish_ns": 0, "kp": [[seq, 0, 1, True, 0]] * k, **fields}
        send("keypoints", seq=seq, **fields)

    frame(1)
    frame(2)
    assert sub.receive(0.3) is None  # no names yet: nothing is handed out with placeholders
    send("meta", keypoints=["a", "b", "c"])
    frame(3)
    frame(4, model="other")  # another model's frame: these names may not be its names
    frame(5, k=4)  # another keypoint count: dropped, not cut to three names
    frame(6)
    got = [sub.receive(5) for _ in range(3)]
    assert [m.seq for m in got] == [1, 2, 3]
    assert all([k.name for k in m.keypoints] == ["a", "b", "c"] for m in got)

    def nothing_handed_out_until_frame_4_is_dropped():
        msg = sub.receive(0.01)
        assert msg is None, f"handed out {msg}"
        return sub.unlabelled == 1

    wait_for(nothing_handed_out_until_frame_4_is_dropped, 10, "frame 4 to be dropped")
    assert sub.gaps == 0
    # the mismatch asked the publisher for fresh names (re-sent its subscription); frames 5 and 6 wait for them
    assert raw.poll(5000) and raw.recv() == b"\x01rtkp."
    send("meta", keypoints=["a", "b", "c"])
    assert sub.receive(5).seq == 6 and sub.unlabelled == 2  # frame 5 (four keypoints) still does not fit
    sub.close()
    raw.close(0)


def test_names_follow_a_change_of_keypoint_count():
    ep = _endpoint()
    pub = _publisher(ep, meta_every_s=3600)
    sub = Subscriber(ep, stream="cam", timeout_s=5)
    _wait_joins(pub, 1)
    pub.publish(_kf(0))
    assert [k.name for k in sub.receive(5).keypoints] == ["a", "b", "c"]
    pub.meta = dict(pub.meta, keypoints=["a", "b", "c", "d"])  # the publisher now sends four keypoints
    got, i = [], 1
    while not any(len(m.keypoints) == 4 for m in got):
        assert i < 500, f"never got four named keypoints: {[[k.name for k in m.keypoints] for m in got]}"
        pub.publish(_kf(i, k=4))
        msg = sub.receive(0.02)
        got += [msg] if msg is not None else []
        i += 1
    assert all([k.name for k in m.keypoints] == ["a", "b", "c", "d"] for m in got)
    assert sub.unlabelled >= 1 and pub.joins >= 2  # the subscriber asked for fresh names
    sub.close()
    pub.close()


def test_subscribe_command_says_what_it_waits_for_and_rates_only_the_stream():
    ep = _endpoint()
    cmd = [sys.executable, "-m", "rtkp", "subscribe", "--endpoint", ep, "--stream", "cam", "--json", "--count", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines, notice = [], threading.Event()

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            if "no message for" in line:
                notice.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    pub = None
    try:
        assert notice.wait(30), f"no waiting notice: {err_lines}"
        said = "".join(err_lines)
        assert ep in said and "'rtkp.cam.'" in said and "--server-key" in said and "CURVE" in said
        pub = _publisher(ep)
        _wait_joins(pub, 1)
        for i in range(20):
            pub.publish(_kf(i))
        proc.wait(timeout=30)  # (20 JSON lines fit in the pipe)
        out = proc.stdout.read()
    finally:
        proc.kill()
        if pub is not None:
            pub.close()
    reader.join(5)
    assert proc.returncode == 0, err_lines
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 20
    summary = err_lines[-1]
    found = re.search(r"received 20 messages in ([0-9.]+) s from first to last \(([0-9.]+)/s\)", summary)
    assert found, summary
    # the command waited >= 3 s (the notice) before the first message; that wait is not in the rate
    assert float(found.group(1)) < 3.0 and float(found.group(2)) > 19 / 3.0


def test_subscribe_command_timeout_ends_clearly(capsys):
    from rtkp.cli import main

    ep = _endpoint()
    assert main(["subscribe", "--endpoint", ep, "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"no message for [0-9.]+ s, stopping; waiting for keypoints on {re.escape(ep)}", err), err
    assert "received 0 messages" in err


def test_a_stalled_subscriber_never_blocks_the_publisher():
    ep = _endpoint()
    pub = _publisher(ep, send_hwm=10)
    stalled = zmq.Context.instance().socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(ep)  # never reads
    _wait_joins(pub, 1)
    times = []
    for i in range(3000):
        t0 = time.perf_counter()
        pub.publish(_kf(i))
        times.append(time.perf_counter() - t0)
    # a blocking send would wait forever for the stalled reader: every call returns (the bound is only a deadline;
    # how fast publishing is belongs to tools/protocol_latency.py), and the publisher still counts what it sent
    assert max(times) < 2.0 and pub.sent + pub.dropped >= 3000
    stalled.close(0)
    pub.close()


def test_curve_admits_known_keys_and_ignores_unknown_and_says_what_is_missing(tmp_path):
    server_pub, server_secret = write_keys(tmp_path / "server", "server")
    good_pub, good_secret = write_keys(tmp_path / "allowed", "good")
    _, bad_secret = write_keys(tmp_path / "other", "bad")
    threads = threading.active_count()
    with pytest.raises(ConfigError, match="--curve-clients DIR"):
        _publisher(_endpoint(), curve_key=str(server_secret))
    with pytest.raises(RtkpError, match="holds no secret key"):
        _publisher(_endpoint(), curve_key=str(server_pub), curve_clients=str(tmp_path / "allowed"))
    assert threading.active_count() == threads  # a refused key leaves no authenticator thread behind
    with pytest.raises(RtkpError, match="needs its own key pair"):
        Subscriber(_endpoint(), server_key=server_pub)
    ep = _endpoint()
    pub = _publisher(ep, curve_key=str(server_secret), curve_clients=str(tmp_path / "allowed"))
    good = Subscriber(ep, timeout_s=2, server_key=server_pub, client_key=good_secret)
    bad = Subscriber(ep, timeout_s=2, server_key=server_pub, client_key=bad_secret)
    plain = Subscriber(ep, timeout_s=2)
    _wait_joins(pub, 1)  # only the admitted client completes the handshake and subscribes
    for i in range(10):
        pub.publish(_kf(i))
        time.sleep(0.02)
    assert good.receive(2) is not None
    assert bad.receive(1) is None and plain.receive(0.5) is None
    for s in (good, bad, plain, pub):
        s.close()


def test_subscribe_command_against_a_live_run(tiny_model):
    run, out = subscribe_to_live_run(tiny_model, 20, 20)
    assert run.returncode == 0, run.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 20 and "received 20 messages" in out.stderr
    first = json.loads(lines[0])
    assert set(first["keypoints"]) == {"nose", "left_eye", "right_eye"}


# the C subscriber's tests (a live run, several animals, one animal): test_protocol_instances.py
