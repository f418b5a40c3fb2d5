"""The ZeroMQ protocol end to end: real sockets on 127.0.0.1, real `rtkp run` processes, a subscriber in C."""

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from conftest import start_live_run

from rtkp.client import ProtocolError, Subscriber, write_keys
from rtkp.messages import KeypointFrame
from rtkp.pipeline.publish import Publisher

REPO = Path(__file__).resolve().parent.parent
_port = iter(range(5800, 5900))


def _endpoint():
    return f"tcp://127.0.0.1:{next(_port)}"


def _kf(i):
    k = 3
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


def _settle():
    time.sleep(0.3)  # a SUB socket needs a moment to connect and send its subscription


def test_subscriber_decodes_counts_gaps_and_gets_metadata():
    ep = _endpoint()
    pub = _publisher(ep)
    sub = Subscriber(ep, stream="cam", timeout_s=2)
    _settle()
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
    ep = _endpoint()
    pub = _publisher(ep)
    latest = Subscriber(ep, latest_only=True, timeout_s=2)
    everything = Subscriber(ep, timeout_s=2)
    _settle()
    for i in range(200):
        pub.publish(_kf(i))
    time.sleep(0.5)  # the subscribers are busy elsewhere while all 200 arrive
    newest = latest.receive(2)
    oldest = everything.receive(2)
    assert newest.frame == 199 and latest.skipped > 0
    assert oldest.frame == 0
    pub.publish(_kf(200))
    assert latest.receive(2).frame == 200
    for s in (latest, everything, pub):
        s.close()


def test_schema_mismatch_is_a_clear_error():
    ep = _endpoint()
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.bind(ep)
    sub = Subscriber(ep, timeout_s=2)
    _settle()
    sock.send_multipart([b"rtkp.cam.keypoints", msgpack.packb({"v": 99, "seq": 1})])
    with pytest.raises(ProtocolError, match="schema version 99"):
        sub.receive(2)
    sub.close()
    sock.close(0)


def test_late_joiner_gets_metadata_within_two_seconds():
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
    time.sleep(1.3)  # joins well after the first metadata message went out
    sub = Subscriber(ep, stream="cam", timeout_s=0.1)
    t0 = time.monotonic()
    while "cam" not in sub.meta and time.monotonic() - t0 < 3:
        sub.receive(0.1)
    waited = time.monotonic() - t0
    stop.set()
    thread.join()
    sub.close()
    pub.close()
    assert "cam" in sub.meta and waited < 2.0


def test_a_stalled_subscriber_never_blocks_the_publisher():
    ep = _endpoint()
    pub = _publisher(ep, send_hwm=10)
    stalled = zmq.Context.instance().socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(ep)  # never reads
    _settle()
    times = []
    for i in range(3000):
        t0 = time.perf_counter()
        pub.publish(_kf(i))
        times.append(time.perf_counter() - t0)
    assert np.percentile(times, 99) < 0.005  # sending stays a sub-millisecond, non-blocking call
    stalled.close(0)
    pub.close()


def test_curve_admits_known_keys_and_ignores_unknown(tmp_path):
    server_pub, server_secret = write_keys(tmp_path / "server", "server")
    good_pub, good_secret = write_keys(tmp_path / "allowed", "good")
    _, bad_secret = write_keys(tmp_path / "other", "bad")
    ep = _endpoint()
    pub = _publisher(ep, curve_key=str(server_secret), curve_clients=str(tmp_path / "allowed"))
    good = Subscriber(ep, timeout_s=2, server_key=server_pub, client_key=good_secret)
    bad = Subscriber(ep, timeout_s=2, server_key=server_pub, client_key=bad_secret)
    plain = Subscriber(ep, timeout_s=2)
    time.sleep(0.5)
    for i in range(10):
        pub.publish(_kf(i))
        time.sleep(0.02)
    assert good.receive(2) is not None
    assert bad.receive(1) is None and plain.receive(0.5) is None
    for s in (good, bad, plain, pub):
        s.close()


def test_subscribe_command_against_a_live_run(tiny_model):
    ep = _endpoint()
    run = start_live_run(tiny_model, ep, "--max-frames", "150")
    out = subprocess.run(
        [sys.executable, "-m", "rtkp", "subscribe", "--endpoint", ep, "--json", "--count", "20", "--timeout", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    run.wait(60)
    assert run.returncode == 0, run.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 20 and "received 20 messages" in out.stderr
    import json

    first = json.loads(lines[0])
    assert set(first["keypoints"]) == {"nose", "left_eye", "right_eye"}


C_SOURCE = REPO / "tools" / "subscribers" / "rtkp_sub.c"


@pytest.mark.skipif(
    not (shutil.which("gcc") and Path("/usr/include/zmq.h").exists() and Path("/usr/include/msgpack.h").exists()),
    reason="needs gcc, libzmq3-dev and libmsgpack-dev",
)
def test_c_subscriber_reads_a_live_run(tiny_model, tmp_path):
    binary = tmp_path / "rtkp_sub"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(C_SOURCE), "-lzmq", "-lmsgpackc"], check=True)
    ep = _endpoint()
    run = start_live_run(tiny_model, ep, "--max-frames", "200")
    out = subprocess.run([str(binary), ep, "40"], capture_output=True, text=True, timeout=60)
    run.wait(60)
    assert out.returncode == 0, out.stdout[-500:] + out.stderr
    assert "received 40 keypoints messages, metadata k=3" in out.stdout
    assert out.stdout.count(" k 3 ") == 40
