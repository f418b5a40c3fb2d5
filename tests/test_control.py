"""Teaching a running tracker through its control socket: real `rtkp run` processes, real sockets on 127.0.0.1.

A live run gains a keypoint and publishes it within two frames of the reply, with `.meta` first and no gap in `seq`;
renames never pair a keypoint with a stale name; bad requests (fuzzed too) get error replies while frames keep
flowing; a request before the model is loaded gets "not ready"; the saved folder runs and exports like any model;
the thin `rtkp keypoints` client imports no torch; the live window's click logic drives the same socket.
"""

import json
import shutil
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_port, render_scene, start_live_run, wait_for, write_video

from rtkp.control.remote import ControlClient
from rtkp.errors import ControlError
from rtkp.wire.subscriber import Subscriber

K_MAX = 5


def _endpoint():
    return f"tcp://127.0.0.1:{free_port()}"


def _png(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", image[..., ::-1])[1].tobytes()


class Stream:
    """Every keypoints message of a subscriber, read by a thread (so that nothing is lost while a test waits for a
    control reply), plus the checks every test wants: seq without a gap, and no message paired with a stale name."""

    def __init__(self, endpoint):
        self.sub = Subscriber(endpoint, timeout_s=60)
        self.messages = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.stop.is_set():
            msg = self.sub.receive(0.1)
            if msg is not None:
                self.messages.append(msg)

    def after(self, ns):
        return [m for m in list(self.messages) if m.publish_ns > ns]

    def find(self, condition):
        """The first message so far for which `condition(message)` holds, or None."""
        return next((m for m in list(self.messages) if condition(m)), None)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sub.close()
        seqs = [m.seq for m in self.messages]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and self.sub.gaps == 0, "seq has a gap"


def _model_copy(src, folder, **manifest_fields):
    shutil.copytree(src, folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(manifest_fields)
    path.write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def live(tiny_model, tmp_path_factory):
    """A live `rtkp run` (30 fps lavfi source) publishing and with a control socket; its model holds K_MAX keypoints."""
    model = _model_copy(tiny_model, tmp_path_factory.mktemp("live") / "model", max_keypoints=K_MAX)
    pub, ctl = _endpoint(), _endpoint()
    run = start_live_run(model, pub, "--control", ctl)
    client = ControlClient(ctl, timeout_s=30)
    try:
        wait_for(lambda: client.request("list")["ok"], 120, "the model to be ready")
        yield {"run": run, "pub": pub, "ctl": ctl, "client": client, "model": model}
    finally:
        client.close()
        run.terminate()
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err[-2000:]


def test_a_live_run_gains_a_keypoint_and_publishes_it_within_two_frames(live):
    client, stream = live["client"], Stream(live["pub"])
    try:
        first = wait_for(lambda: stream.find(lambda m: True), 30, "the stream")
        assert [k.name for k in first.keypoints] == ["nose", "left_eye", "right_eye"]
        # two shots: a recent frame by its seq, and an image sent with the request
        image, kps = render_scene(np.random.default_rng(11))
        samples = [{"seq": first.seq, "x": 40.0, "y": 30.0}, {"image": _png(image), "x": float(kps[0, 0]), "y": 30.5}]
        reply = client.call("add", name="paw", samples=samples)
        replied_ns = time.monotonic_ns()
        assert reply["ok"] and reply["index"] == 3 and reply["shots"] == 2 and "margin" in reply
        assert set(reply["placement"]) == {"reach_px", "rings", "side"} and reply["placement"]["reach_px"] >= 0
        new_bank = reply["bank"]
        taught = wait_for(lambda: stream.find(lambda m: m.bank == new_bank), 30, "a message with the new keypoint")
        assert [k.name for k in taught.keypoints] == ["nose", "left_eye", "right_eye", "paw"]
        old_after_reply = [m for m in stream.after(replied_ns) if m.seq < taught.seq]
        assert len(old_after_reply) <= 2, "the change took effect later than 2 frames after the reply"
        assert stream.sub.meta[taught.stream]["added"] == {"paw": 2}
        # a rename keeps the count: no message may carry the new set with the old names, or the reverse
        reply = client.call("rename", name="paw", to="left_paw")
        renamed = wait_for(lambda: stream.find(lambda m: m.bank == reply["bank"]), 30, "a message with the new name")
        assert [k.name for k in renamed.keypoints][-1] == "left_paw"
        reply = client.call("add", name="left_paw", samples=[{"seq": renamed.seq, "x": 60, "y": 40}], extend=True)
        assert reply["shots"] == 3
        assert client.call("remove", name="left_paw", shot=True)["shots"] == 2
        listing = client.call("list")
        assert [(k["name"], k.get("shots")) for k in listing["keypoints"]][-1] == ("left_paw", 2)
        assert listing["max_keypoints"] == K_MAX
        gone = client.call("remove", name="left_paw")
        wait_for(lambda: stream.find(lambda m: m.bank == gone["bank"]), 30, "a message without it")
        names_of_bank = {}
        for m in list(stream.messages):
            names_of_bank.setdefault(m.bank, [k.name for k in m.keypoints])
            assert [k.name for k in m.keypoints] == names_of_bank[m.bank], "a bank's names changed"
        assert names_of_bank[renamed.bank][-1] == "left_paw" and names_of_bank[taught.bank][-1] == "paw"
    finally:
        stream.close()


def test_bad_requests_get_error_replies_while_frames_keep_flowing(live):
    client, stream = live["client"], Stream(live["pub"])
    try:
        start = wait_for(lambda: stream.find(lambda m: True), 30, "the stream")
        image, _ = render_scene(np.random.default_rng(12))
        cases = {
            "bad_request": [("fly", {}), ("add", {"name": "x"}), ("add", {"name": "", "samples": [{"seq": 1}]})],
            "bad_image": [
                ("add", {"name": "x", "samples": [{"image": b"not an image", "x": 1, "y": 1}]}),
                ("add", {"name": "x", "samples": [{"seq": 10**9, "x": 1, "y": 1}]}),
            ],
            "outside": [
                ("add", {"name": "x", "samples": [{"image": _png(image), "x": 500, "y": 1}]}),
                ("add", {"name": "x", "samples": [{"seq": start.seq, "x": -3, "y": 1}]}),
            ],
            "duplicate": [("add", {"name": "nose", "samples": [{"seq": start.seq, "x": 1, "y": 1}]})],
            "unknown_keypoint": [("remove", {"name": "nope"}), ("rename", {"name": "nope", "to": "x"})],
        }
        for code, requests in cases.items():
            for op, fields in requests:
                reply = client.request(op, **fields)
                assert not reply["ok"] and reply["code"] == code and reply["error"], (op, fields, reply)
        # too many keypoints: the model's graph holds K_MAX
        added = []
        for i in range(K_MAX - 3):
            added.append(client.call("add", name=f"extra{i}", samples=[{"seq": start.seq, "x": 10 + i, "y": 10}]))
        reply = client.request("add", name="one_too_many", samples=[{"seq": start.seq, "x": 5, "y": 5}])
        assert reply["code"] == "full"
        for i in range(K_MAX - 3):
            client.call("remove", name=f"extra{i}")
        # fuzz: raw bytes and odd envelopes on a socket of its own; every message gets exactly one reply
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(live["ctl"])
        rng = np.random.default_rng(13)
        payloads = [rng.bytes(int(n)) for n in rng.integers(0, 300, 30)]
        payloads += [msgpack.packb(x) for x in (None, 1, [1], {"op": None}, {"op": "add", "name": "x", "samples": 3})]
        for payload in payloads:
            sock.send_multipart([b"", payload])
            assert sock.poll(10_000), f"no reply to {payload!r:.60}"
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert reply["ok"] is False or reply.get("keypoints"), reply  # (random bytes may spell a valid list)
        sock.send_multipart([b"", b"one", b"two"])  # two frames: still one (error) reply
        assert sock.poll(10_000) and msgpack.unpackb(sock.recv_multipart()[-1])["code"] == "bad_request"
        sock.close(0)
        # and all the while the stream went on
        n = len(stream.messages)
        wait_for(lambda: len(stream.messages) >= n + 10, 30, "ten more frames after the bad requests")
        assert [k.name for k in stream.messages[-1].keypoints] == ["nose", "left_eye", "right_eye"]
        assert live["run"].poll() is None
    finally:
        stream.close()


def test_the_thin_client_answers_quickly_without_torch(live, tmp_path):
    image, kps = render_scene(np.random.default_rng(14))
    path = tmp_path / "shot.png"
    path.write_bytes(_png(image))
    code = (
        "import sys, time\nfrom rtkp.cli import main\nt = time.monotonic()\n"
        f"rc = main(['keypoints', 'add', 'tail', '--control', {live['ctl']!r}, '--image', {str(path)!r}, "
        f"'--xy', '{kps[2, 0]:.1f},{kps[2, 1]:.1f}', '--json'])\n"
        "heavy = [m for m in ('torch', 'numpy', 'cv2', 'onnxruntime') if m in sys.modules]\n"
        "print('heavy', heavy, 'seconds', round(time.monotonic() - t, 3))\nsys.exit(rc)"
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout.splitlines()[0])
    assert reply["name"] == "tail" and reply["shots"] == 1
    assert "heavy [] " in out.stdout, out.stdout  # pyzmq and msgpack only
    print(f"rtkp keypoints add --control: {wall:.2f} s from process start to exit ({out.stdout.split()[-1]} s in main)")
    listed = subprocess.run(
        [sys.executable, "-m", "rtkp", "keypoints", "list", "--control", live["ctl"]], capture_output=True, text=True
    )
    assert listed.returncode == 0 and "tail  margin" in listed.stdout and "added, 1 shot(s)" in listed.stdout
    saved = subprocess.run(
        [sys.executable, "-m", "rtkp", "keypoints", "save", str(tmp_path / "s"), "--control", live["ctl"]],
        capture_output=True,
        text=True,
    )
    assert saved.returncode == 0 and f"saved 4 keypoints to {tmp_path / 's'}" in saved.stdout, saved.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "rtkp", "keypoints", "remove", "nope", "--control", live["ctl"]],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no keypoint named 'nope'" in bad.stderr
    ControlClient(live["ctl"]).call("remove", name="tail")


def test_the_window_click_logic_teaches_through_the_same_socket(live):
    from rtkp.control.window import ClickTeacher

    client = ControlClient(live["ctl"])
    teacher = ClickTeacher(client)
    image, kps = render_scene(np.random.default_rng(15))
    teacher.click(kps[1, 0], kps[1, 1], image)
    for ch in "eye2":
        teacher.key(ord(ch), ["nose"], {})
    teacher.key(13, ["nose"], {})

    def taught():
        teacher.poll()
        return "eye2: 1 shot(s)" in teacher.status

    wait_for(taught, 30, "the window's add to be answered")
    assert [k["name"] for k in client.call("list")["keypoints"]][-1] == "eye2"
    teacher.key(ord("u"), ["nose", "eye2"], {"eye2": 1})

    def undone():
        teacher.poll()
        return teacher.status.startswith("undone")

    wait_for(undone, 30, "the undo to be answered")
    assert "eye2" not in [k["name"] for k in client.call("list")["keypoints"]]
    client.close()


def test_the_saved_folder_runs_and_exports_like_any_model(live, tmp_path):
    client = live["client"]
    image, kps = render_scene(np.random.default_rng(16))
    client.call("add", name="chin", samples=[{"image": _png(image), "x": float(kps[0, 0]), "y": float(kps[0, 1])}])
    saved = client.call("save", out=str(tmp_path / "saved"))
    client.call("remove", name="chin")
    with pytest.raises(ControlError, match="not empty"):
        client.call("save", out=str(tmp_path / "saved"))
    folder = tmp_path / "saved"
    assert saved["path"] == str(folder.resolve()) and saved["keypoints"][-1] == "chin"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [(a["name"], a["shots"]) for a in manifest["added_keypoints"]] == [("chin", 1)]
    assert (folder / "exports.json").is_file()  # the network's ONNX export came along: no torch needed to run it
    # it runs (publishing the added keypoint by name) ...
    pub = _endpoint()
    run = start_live_run(folder, pub, "--max-frames", "60")
    with Subscriber(pub, timeout_s=60) as sub:
        msg = sub.receive(60)
    run.communicate(timeout=60)
    assert run.returncode == 0 and [k.name for k in msg.keypoints] == ["nose", "left_eye", "right_eye", "chin"]
    # ... exports ...
    video = write_video(tmp_path / "clip.mp4", frames=6)
    out = subprocess.run(
        [sys.executable, "-m", "rtkp", "export", str(video), "--out", str(tmp_path / "x"), "--model", str(folder)]
        + ["--backend", "onnxruntime", "--format", "csv", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "chin" in (tmp_path / "x" / "clip.csv").read_text().splitlines()[1]
    # ... and lists its added keypoint with its shots, offline
    listed = subprocess.run(
        [sys.executable, "-m", "rtkp", "keypoints", "list", "--model", str(folder)], capture_output=True, text=True
    )
    assert "chin" in listed.stdout and "added, 1 shot(s)" in listed.stdout


def test_a_request_before_the_model_is_ready_gets_not_ready(tiny_model, tmp_path):
    # a fresh copy without its ONNX export: loading it exports first (seconds), long after the socket is bound
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("onnx", "exports.json"))
    ctl = _endpoint()
    client = ControlClient(ctl, timeout_s=60)
    client_sent = time.monotonic()
    run = start_live_run(model, "none", "--control", ctl)
    try:
        first = client.request("list")  # queued until the socket is bound, then answered at once
        assert (first["ok"], first["code"]) == (False, "not_ready"), first
        print(f"not-ready reply {time.monotonic() - client_sent:.2f} s after the command started")
        wait_for(lambda: client.request("list")["ok"], 120, "the model to be ready")
    finally:
        client.close()
        run.terminate()
        run.communicate(timeout=30)


def test_keypoints_with_a_key_the_run_does_not_allow_says_so_within_its_timeout(tiny_model, tmp_path):
    """`rtkp keypoints list --control` against a CURVE `rtkp run` that does not admit the client's key: one line and
    a non-zero exit, every time (it used to hang forever in about one try in four, whatever --timeout said)."""
    from rtkp.wire import write_keys

    server_pub, server_secret = write_keys(tmp_path / "server", "server")
    _, good = write_keys(tmp_path / "allowed", "good")
    _, stranger = write_keys(tmp_path / "elsewhere", "stranger")
    ctl = _endpoint()
    curve = ["--curve-key", str(server_secret), "--curve-clients", str(tmp_path / "allowed")]
    run = start_live_run(tiny_model, "none", "--control", ctl, *curve)
    client = ControlClient(ctl, timeout_s=30, server_key=server_pub, client_key=good)
    ask = [sys.executable, "-m", "rtkp", "keypoints", "list", "--control", ctl, "--server-key", str(server_pub)]
    try:
        wait_for(lambda: client.request("list")["ok"], 120, "the model to be ready")
        for _ in range(4):
            t0 = time.monotonic()
            out = subprocess.run(
                ask + ["--client-key", str(stranger), "--timeout", "3"], capture_output=True, text=True, timeout=20
            )
            lines = out.stderr.strip().splitlines()
            assert out.returncode != 0 and len(lines) == 1, out.stderr
            assert "stranger.key_secret" in lines[0] and "--curve-clients" in lines[0], lines[0]
            print(f"refused key: {time.monotonic() - t0:.2f} s from process start to exit")
        assert client.call("list")["keypoints"], "the run must keep answering its allowed clients"
    finally:
        client.close()
        run.terminate()
        out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err[-2000:]
