"""Several animals on the stream (docs/PROTOCOL.md, "Instances"): hand-built multi-instance KeypointFrames published
over real ZeroMQ on 127.0.0.1, read back by the Python Subscriber, by the previous release's decoder and by the C
subscriber (tools/subscribers/rtkp_sub.c, whose tests are all here, a live `rtkp run` included)."""

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_port, start_live_run, wait_for

from rtkp.messages import Instance, KeypointFrame, missing_keypoints
from rtkp.wire import Keypoint, ProtocolError, Publisher, Subscriber, schema

REPO = Path(__file__).resolve().parent.parent
NAMES = ["nose", "left_ear", "right_ear"]
BEFORE_INSTANCES = "2719808"  # the last commit whose wire had no instances (a v1 reader of the previous release)


def _endpoint():
    return f"tcp://127.0.0.1:{free_port()}"


def _animal(track, x0, hidden=()):
    """Instance `track` with keypoints at (x0 + 10 k, 2 x0 + k), scores 0.5 + k / 10; keypoints in `hidden` are not
    visible (state 2: held on the prediction), the rest measured (state 0)."""
    k = len(NAMES)
    xy = np.array([[x0 + 10 * i, 2 * x0 + i] for i in range(k)], np.float32)
    scores = np.array([0.5 + i / 10 for i in range(k)], np.float32)
    visible = np.array([i not in hidden for i in range(k)])
    state = np.array([0 if v else 2 for v in visible], np.uint8)
    score = float(scores[visible].mean()) if visible.any() else -1.0
    return Instance(track, score, xy, scores, visible, state)


def _frame(index, *animals):
    """A multi-instance model's frame: the frame-level arrays are the first animal's, or all missing when none."""
    first = animals[0] if animals else None
    arrays = (first.keypoints, first.scores, first.visible, first.state) if first else missing_keypoints(len(NAMES))
    return KeypointFrame(index, index / 30, time.monotonic_ns(), (640, 480), *arrays, instances=tuple(animals))


FRAMES = [  # two animals, then one, then none (what the tests publish, in this order)
    _frame(10, _animal(2, 100.0), _animal(5, 300.0, hidden={1})),
    _frame(11, _animal(5, 310.0, hidden={0, 1, 2})),
    _frame(12),
]


def _publisher(endpoint, max_instances=4):
    meta = {"keypoints": NAMES, "skeleton": [[0, 1]]}
    if max_instances is not None:
        meta["max_instances"] = max_instances
    return Publisher(endpoint, "cam", "abc", meta)


def _wait_joins(pub, n):
    wait_for(lambda: pub.poll() >= 0 and pub.joins >= n, 10, f"{n} subscription(s)")


def _expected(instance):
    """What a subscriber must hand out for an rtkp.messages.Instance: (track, score, Keypoints)."""
    points = schema.encode_points(instance.keypoints, instance.scores, instance.visible, instance.state)
    return instance.track, round(instance.score, 5), schema.decode_points(points, NAMES)


def test_every_animal_reaches_the_python_subscriber():
    ep = _endpoint()
    pub = _publisher(ep)
    sub = Subscriber(ep, stream="cam", timeout_s=5)
    _wait_joins(pub, 1)
    for kf in FRAMES:
        pub.publish(kf)
    got = [sub.receive(5) for _ in FRAMES]
    sub.close()
    pub.close()
    assert sub.meta["cam"]["max_instances"] == 4 and sub.unlabelled == 0
    assert [m.seq for m in got] == [1, 2, 3] and [m.frame for m in got] == [10, 11, 12]
    for msg, kf in zip(got, FRAMES):
        assert [(i.track, i.score, i.keypoints) for i in msg.instances] == [_expected(i) for i in kf.instances]
    two = got[0].instances
    assert [i.track for i in two] == [2, 5] and two[1].keypoints[1] == Keypoint("left_ear", 310.0, 601.0, 0.6, False, 2)
    assert two[0].keypoints[2] == Keypoint("right_ear", 120.0, 202.0, 0.7, True, 0)
    assert got[1].instances[0].score == -1.0  # no keypoint visible
    # `.keypoints` stays what a one-animal reader expects: the first animal's, or all missing in an empty frame
    assert got[0].keypoints == two[0].keypoints and got[1].keypoints == got[1].instances[0].keypoints
    assert got[2].instances == () and [k.state for k in got[2].keypoints] == [3, 3, 3]
    assert [k.name for k in got[2].keypoints] == NAMES and not any(k.visible for k in got[2].keypoints)


def test_a_single_instance_stream_keeps_its_bytes_and_gains_one_animal():
    # no `max_instances` in `.meta`: the keypoints message is byte for byte what it was before instances existed
    # (test_protocol.py pins those bytes), and the subscriber makes its one animal, track 0, from `kp`
    ep = _endpoint()
    pub = _publisher(ep, max_instances=None)
    raw = zmq.Context.instance().socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"rtkp.cam.keypoints")
    raw.connect(ep)
    sub = Subscriber(ep, stream="cam", timeout_s=5)
    _wait_joins(pub, 2)
    one = _animal(0, 50.0, hidden={2})
    pub.publish(KeypointFrame(3, 0.1, 7, (640, 480), one.keypoints, one.scores, one.visible, one.state))
    msg = sub.receive(5)
    assert raw.poll(5000)
    header = msgpack.unpackb(raw.recv_multipart()[1])
    raw.close(0)
    sub.close()
    pub.close()
    assert tuple(header) == schema.KEYPOINTS_FIELDS and "max_instances" not in sub.meta["cam"]
    assert msg.instances == (schema.Instance(0, 0.55, msg.keypoints),)  # mean of the visible scores 0.5 and 0.6
    assert [k.x for k in msg.keypoints] == [50.0, 60.0, 70.0]


def test_the_instances_bytes_are_pinned():
    # a multi-instance keypoints header: the single-instance fields in their old order and encoding, then
    # `instances` (docs/PROTOCOL.md; tools/subscribers/rtkp_sub.c reads these bytes)
    header = dict(schema.encode_keypoints(FRAMES[0], 4, "cam", "abc", instances=True), publish_ns=6, capture_ns=5)
    first = [[100.0, 200.0, 0.5, True, 0], [110.0, 201.0, 0.6, True, 0], [120.0, 202.0, 0.7, True, 0]]
    second = [[300.0, 600.0, 0.5, True, 0], [310.0, 601.0, 0.6, False, 2], [320.0, 602.0, 0.7, True, 0]]
    wire = dict(v=1, stream="cam", seq=4, frame=10, pts=1 / 3, capture_ns=5, publish_ns=6, model="abc")
    wire.update(size=[640, 480], kp=first, dropped=0, bank=0)
    wire["instances"] = [{"track": 2, "score": 0.6, "kp": first}, {"track": 5, "score": 0.6, "kp": second}]
    assert schema.pack(header) == msgpack.packb(wire)
    assert tuple(header) == schema.KEYPOINTS_FIELDS + (schema.INSTANCES,)
    empty = schema.encode_keypoints(FRAMES[2], 5, "cam", "abc", instances=True)
    assert empty["instances"] == [] and [p[4] for p in empty["kp"]] == [3, 3, 3]


def _previous_release(path_in_repo: str) -> str:
    """A file as the previous release shipped it (before instances), from the git history."""
    old = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE_INSTANCES}:{path_in_repo}"], capture_output=True, text=True
    )
    if old.returncode != 0:
        pytest.skip(f"needs the git history (commit {BEFORE_INSTANCES}; a shallow clone lacks it): {old.stderr}")
    return old.stdout


def _v1_schema(tmp_path):
    """rtkp/wire/schema.py as the previous release shipped it (before instances), imported from tmp_path."""
    path = tmp_path / "schema_v1.py"
    path.write_text(_previous_release("rtkp/wire/schema.py"))
    spec = importlib.util.spec_from_file_location("schema_v1", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["schema_v1"] = module  # (dataclasses look their module up while the class is made)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["schema_v1"]
    assert not hasattr(module, "INSTANCES")  # really the old one
    return module


def test_a_subscriber_of_the_previous_release_reads_multi_instance_frames(tmp_path):
    old = _v1_schema(tmp_path)
    ep = _endpoint()
    pub = _publisher(ep)
    raw = zmq.Context.instance().socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"rtkp.")
    raw.connect(ep)
    _wait_joins(pub, 1)
    for kf in FRAMES:
        pub.publish(kf)
    meta, got = None, []
    while len(got) < len(FRAMES):
        assert raw.poll(5000), f"only {len(got)} keypoints messages arrived"
        kind, header = old.decode(raw.recv_multipart())  # refuses another version: v is still 1
        if kind == old.META:
            meta = header
        elif kind == old.KEYPOINTS:
            assert meta is not None and old.pairing(header, meta) == old.FITS
            got.append((old.decode_keypoints(header, meta["keypoints"], 0), header))
    raw.close(0)
    pub.close()
    for (msg, header), kf in zip(got, FRAMES):
        new = schema.decode_keypoints(header, NAMES, 0)
        assert (msg.seq, msg.frame, msg.bank) == (new.seq, new.frame, new.bank)
        # the old reader sees the first animal (or all missing), exactly as the new one's `.keypoints`
        assert [tuple(vars(k).values()) for k in msg.keypoints] == [tuple(vars(k).values()) for k in new.keypoints]
        assert len(new.instances) == len(kf.instances)


def test_a_malformed_or_unfitting_instance_is_refused_not_mislabelled():
    ep = _endpoint()
    raw = zmq.Context.instance().socket(zmq.XPUB)
    raw.bind(ep)
    sub = Subscriber(ep, timeout_s=5)
    assert raw.poll(10_000) and raw.recv()[:1] == b"\x01"

    def send(kind, **fields):
        raw.send_multipart([f"rtkp.cam.{kind}".encode(), msgpack.packb({"v": 1, "stream": "cam", **fields})])

    kp = [[1.0, 2.0, 0.5, True, 0]] * 3
    frame = {"frame": 0, "capture_ns": 0, "publish_ns": 0, "kp": kp}
    send("meta", keypoints=NAMES, max_instances=2)
    send("keypoints", seq=1, **frame, instances=[{"track": 0, "score": 0.5, "kp": kp[:2]}])  # two keypoints of three
    send("keypoints", seq=2, **frame, instances=[{"track": 1, "score": 0.5, "kp": kp}])
    send("meta", keypoints=NAMES, max_instances=2)  # (the misfit made the subscriber hold the rest for fresh names)
    msg = sub.receive(5)
    assert msg.seq == 2 and [i.track for i in msg.instances] == [1] and sub.unlabelled == 1
    send("keypoints", seq=3, **frame, instances=[{"track": 1, "kp": kp}])  # no score
    with pytest.raises(ProtocolError, match="`instances` is not a list of maps with track, score, kp"):
        sub.receive(5)
    sub.close()
    raw.close(0)


def test_a_change_of_keypoints_keeps_the_stream_multi_instance():
    pub = _publisher(_endpoint())
    pub.set_keypoints(NAMES + ["tail"], [], 1, {"tail": 3})
    assert pub.meta["max_instances"] == 4 and pub.meta["keypoints"][-1] == "tail" and pub.multi_instance
    pub.close()


C_SOURCE = REPO / "tools" / "subscribers" / "rtkp_sub.c"
needs_c = pytest.mark.skipif(
    not (shutil.which("gcc") and Path("/usr/include/zmq.h").exists() and Path("/usr/include/msgpack.h").exists()),
    reason="needs gcc, libzmq3-dev and libmsgpack-dev",
)


@pytest.fixture(scope="module")
def c_subscriber(tmp_path_factory):
    binary = tmp_path_factory.mktemp("c") / "rtkp_sub"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(C_SOURCE), "-lzmq", "-lmsgpackc"], check=True)
    return binary


def _run_c(binary, pub, frames):
    """Publish `frames` to the C subscriber (started first, it waits for them); its stdout lines."""
    proc = subprocess.Popen([str(binary), pub.endpoint, str(len(frames))], stdout=subprocess.PIPE, text=True)
    try:
        _wait_joins(pub, 1)
        for kf in frames:
            pub.publish(kf)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        pub.close()
    assert proc.returncode == 0, out
    return out.splitlines()


def _c_line(instance):
    """The line rtkp_sub prints for an instance: track, score and x,y,score,visible,state per keypoint."""
    points = schema.encode_points(instance.keypoints, instance.scores, instance.visible, instance.state)
    kp = " ".join(f"{x:.2f},{y:.2f},{s:.4f},{int(v)},{st}" for x, y, s, v, st in points)
    return f"  track {instance.track} score {round(instance.score, 5):.4f} kp {kp}"


@needs_c
def test_c_subscriber_prints_every_animal(c_subscriber):
    lines = _run_c(c_subscriber, _publisher(_endpoint()), FRAMES)
    assert lines[0] == "seq 1 frame 10 k 3 first (100.0, 200.0) instances 2"
    assert lines[1:3] == [_c_line(i) for i in FRAMES[0].instances]
    assert lines[1] == "  track 2 score 0.6000 kp " + " ".join(
        ["100.00,200.00,0.5000,1,0", "110.00,201.00,0.6000,1,0", "120.00,202.00,0.7000,1,0"]
    )
    assert lines[3:5] == ["seq 2 frame 11 k 3 first (310.0, 620.0) instances 1", _c_line(FRAMES[1].instances[0])]
    assert lines[5] == "seq 3 frame 12 k 3 first (0.0, 0.0) instances 0"  # no animal: kp all missing
    assert lines[6] == "received 3 keypoints messages, metadata k=3, gaps 0, errors 0, instances 3, max_instances 4"


@needs_c
def test_c_subscriber_still_reads_a_single_instance_stream(c_subscriber):
    one = _animal(0, 50.0, hidden={2})
    kf = KeypointFrame(3, 0.1, 7, (640, 480), one.keypoints, one.scores, one.visible, one.state)
    lines = _run_c(c_subscriber, _publisher(_endpoint(), max_instances=None), [kf])
    assert lines[0] == "seq 1 frame 3 k 3 first (50.0, 100.0) instances 1"
    assert lines[1] == "  track 0 score 0.5500 kp " + " ".join(
        ["50.00,100.00,0.5000,1,0", "60.00,101.00,0.6000,1,0", "70.00,102.00,0.7000,0,2"]
    )
    assert lines[2].endswith("errors 0, instances 1, max_instances -1")


@needs_c
def test_the_previous_releases_c_subscriber_reads_multi_instance_frames(tmp_path):
    source = tmp_path / "rtkp_sub_v1.c"
    source.write_text(_previous_release("tools/subscribers/rtkp_sub.c"))
    assert "instances" not in source.read_text()  # really the old one
    subprocess.run(["gcc", "-O2", "-o", str(tmp_path / "v1"), str(source), "-lzmq", "-lmsgpackc"], check=True)
    lines = _run_c(tmp_path / "v1", _publisher(_endpoint()), FRAMES)  # (exit 0: version, seq and counts all held)
    assert lines[:3] == [
        "seq 1 frame 10 k 3 first (100.0, 200.0)",  # the first animal
        "seq 2 frame 11 k 3 first (310.0, 620.0)",
        "seq 3 frame 12 k 3 first (0.0, 0.0)",  # no animal: all missing
    ]
    assert lines[3] == "received 3 keypoints messages, metadata k=3, gaps 0, errors 0"


@needs_c
def test_c_subscriber_reads_a_live_run(c_subscriber, tiny_model):
    ep = _endpoint()
    run = start_live_run(tiny_model, ep, "--max-frames", "200")
    out = subprocess.run([str(c_subscriber), ep, "40"], capture_output=True, text=True, timeout=60)
    run.wait(60)
    assert out.returncode == 0, out.stdout[-500:] + out.stderr
    assert "received 40 keypoints messages, metadata k=3" in out.stdout
    assert out.stdout.count(" k 3 ") == 40 and out.stdout.count(" instances 1\n") == 40  # one animal: track 0
    assert out.stdout.count("\n  track 0 score ") == 40
