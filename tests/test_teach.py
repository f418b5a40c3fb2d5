"""Teaching keypoints without a running pipeline: the keypoint set, prototypes and margins from shots, the control
protocol's parser (fuzzed), saved folders, dataset subsets, the window's click logic, and the subscriber's pairing
of names with the set of keypoints (bank) they belong to."""

import json
import time

import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_port, render_scene, write_dlc_project

from rtkp.control import protocol
from rtkp.errors import ControlError, DataError
from rtkp.teach.keypoint_set import KeypointSet, Taught, check_name, max_keypoints, pad_prototypes
from rtkp.teach.shots import ShotReader, evidence, sample_features, shot_views, teach, unit
from rtkp.wire.subscriber import Subscriber

D = 8


def _unit_rows(rng, n, d=D):
    return unit(rng.normal(size=(n, d))).astype(np.float32)


def _set(k=3, k_max=5):
    rng = np.random.default_rng(0)
    return KeypointSet([f"k{i}" for i in range(k)], _unit_rows(rng, k), np.zeros(k), _unit_rows(rng, 4), k_max)


def _taught(rng, shots=2, views=3, spread=0.1):
    centre = _unit_rows(rng, 1)[0]
    v = unit(centre + spread * rng.normal(size=(shots, views, D))).astype(np.float32)
    return Taught(v, _unit_rows(rng, shots * 4).reshape(shots, 4, D))


def test_prototype_rows_are_padded_to_k_max_with_a_mask():
    padded, active = pad_prototypes(np.ones((3, D)), 5)
    assert padded.shape == (5, D) and (padded[3:] == 0).all() and active.tolist() == [1, 1, 1, 0, 0]
    assert max_keypoints({"keypoint_names": ["a"] * 3}) == 32
    assert max_keypoints({"keypoint_names": ["a"] * 40}) == 40  # a 40-keypoint model holds its own 40
    assert max_keypoints({"keypoint_names": ["a"] * 3, "max_keypoints": 4}) == 4
    with pytest.raises(Exception, match="max_keypoints"):
        max_keypoints({"keypoint_names": ["a"] * 3, "max_keypoints": 2})
    with pytest.raises(Exception, match="at most 2"):
        pad_prototypes(np.ones((3, D)), 2)


def test_the_set_adds_removes_renames_and_refuses_bad_changes_unchanged():
    rng = np.random.default_rng(1)
    kset = _set()
    kset.skeleton = [(0, 1), (1, 2)]
    kset.flip_pairs = [("k1", "k2")]
    assert kset.add("paw", _unit_rows(rng, 1)[0], 0.1, _taught(rng)) == 3
    assert kset.shots() == {"paw": 2}
    for bad, code in [("paw", "duplicate"), ("", "bad_request"), (" x", "bad_request"), ("a\nb", "bad_request")]:
        with pytest.raises(ControlError) as err:
            kset.add(bad, _unit_rows(rng, 1)[0], 0.1, _taught(rng))
        assert err.value.code == code
    kset.add("tail", _unit_rows(rng, 1)[0], 0.1, _taught(rng))
    with pytest.raises(ControlError) as err:
        kset.add("one_too_many", _unit_rows(rng, 1)[0], 0.1, _taught(rng))
    assert err.value.code == "full" and len(kset) == 5
    kset.remove("k1")  # the skeleton's pairs through k1 go, the others are renumbered; flip pairs with k1 go
    assert kset.names == ["k0", "k2", "paw", "tail"] and kset.skeleton == [] and kset.flip_pairs == []
    assert kset.prototypes.shape == (4, D) and kset.margins.shape == (4,)
    kset.rename("paw", "left_paw")
    assert kset.shots() == {"left_paw": 2, "tail": 2}
    with pytest.raises(ControlError) as err:
        kset.rename("nope", "x")
    assert err.value.code == "unknown_keypoint"
    with pytest.raises(ControlError, match="trained"):
        kset.update("k0", _unit_rows(rng, 1)[0], 0.1, _taught(rng))
    for name in ["k0", "k2", "left_paw"]:
        kset.remove(name)
    with pytest.raises(ControlError, match="last keypoint"):
        kset.remove("tail")
    assert check_name("Finger1") == "Finger1"


def test_bilinear_sampling_matches_training_and_the_cell_centres():
    import torch

    from rtkp.model.loss import sample_features as torch_sample

    rng = np.random.default_rng(2)
    feats = unit(rng.normal(size=(2, D, 6, 7)), axis=1).astype(np.float32)
    pts = np.array([[10.3, 7.9], [0.0, 23.4]], np.float32)
    ours = sample_features(feats, pts, 4)
    ref = torch_sample(torch.from_numpy(feats), torch.from_numpy(pts)[:, None], 4)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # a point on a cell centre reads that cell exactly
    np.testing.assert_allclose(
        sample_features(feats[:1], np.array([[4 * 3 + 1.5, 4 * 2 + 1.5]]), 4)[0], feats[0, :, 2, 3]
    )


def test_views_keep_the_clicked_point_in_place():
    rng = np.random.default_rng(3)
    image, kps = render_scene(rng)
    views, pts = shot_views(image, kps[0])
    assert views.shape == (5, 96, 128, 3) and (pts == kps[0]).all()
    x, y = np.round(kps[0]).astype(int)
    # the red disc under the point stays under it in every view
    assert all(v[y, x, 0] > 200 and v[y, x, 1] < 100 for v in views)


def test_margin_sits_between_the_keypoint_and_its_look_alikes_within_bounds():
    rng = np.random.default_rng(4)
    clutter = _unit_rows(rng, 6)
    taught = _taught(rng, shots=3, views=5, spread=0.05)
    lesson = teach(taught, clutter)
    e, h = lesson.visible, lesson.lookalike
    assert np.isclose(np.linalg.norm(lesson.prototype), 1.0, atol=1e-5)
    assert e / 2 - 1e-6 <= lesson.margin <= 0.75 * e + 1e-6 and lesson.warning is None and h < e
    assert np.isclose(lesson.margin, min(max((e + h) / 2, e / 2), 0.75 * e), atol=1e-5)
    # a look-alike that scores like the keypoint itself: warned about, and the margin stays below its own evidence
    twin = Taught(taught.views, np.repeat(taught.views[:, :1], 4, axis=1))
    lesson = teach(twin, clutter)
    assert lesson.warning and "look-alike" in lesson.warning and lesson.margin <= 0.75 * lesson.visible + 1e-6
    # held-out evidence: one shot alone is judged on its other views, never on itself (which would read 1.0)
    one = Taught(taught.views[:1], taught.lookalikes[:1])
    assert teach(one, clutter).visible < float(evidence(taught.views[0, 0], teach(one, clutter).prototype, clutter))


@pytest.fixture(scope="module")
def target_model(tmp_path_factory):
    """A copy of the shipped demo-target model (a trained CoKe model: 12 keypoints, 320x256)."""
    import shutil

    from rtkp.cli import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "manifest.json").is_file():
        pytest.skip("the default model is not built")
    folder = tmp_path_factory.mktemp("target") / "model"
    shutil.copytree(DEFAULT_MODEL, folder, ignore=shutil.ignore_patterns("onnx", "trt", "exports.json"))
    return folder


def test_a_keypoint_left_out_and_taught_from_three_frames_is_found_on_new_ones(target_model):
    """Through the trained target model: drop one keypoint's prototype, teach it again from three synthetic frames
    (the labels as clicks), and it is found on six other frames, in the graph's own output row."""
    from rtkp.backends import read_model_info
    from rtkp.backends.onnxruntime import OnnxRuntimeBackend
    from rtkp.demo.synth import render_sample
    from rtkp.demo.target import render_target
    from rtkp.geometry import Letterbox
    from rtkp.teach.shots import teach_keypoint

    info = read_model_info(target_model)
    backend = OnnxRuntimeBackend(info, threads=2)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    name = "c2_green_black"
    k = kset.names.index(name)
    kset.remove(name)
    target, rng = render_target(4.0), np.random.default_rng(8)
    frames = []
    while len(frames) < 9:
        image, kps, vis, _ = render_sample(rng, target)
        if vis[k]:
            box = Letterbox.fit(image.shape[1::-1], info.input_size)
            frames.append((box.apply(image), box.to_model(kps[k])))
    shots, tests = frames[:3], frames[3:]
    index, lesson = teach_keypoint(
        kset, ShotReader(backend, 4), name, [f[0] for f in shots], np.stack([f[1] for f in shots])
    )
    assert index == 11 and kset.shots() == {name: 3} and lesson.visible > 0
    backend.set_prototypes(kset.prototypes, kset.clutter)
    rows = backend.infer(np.stack([f[0] for f in tests]))
    assert rows.shape == (6, 12, 4)
    errors = np.linalg.norm(rows[:, 11, :2] - np.stack([f[1] for f in tests]), axis=1)
    assert np.median(errors) < 4.0 and (errors < 8.0).sum() >= 5, errors  # model-input px (320x256)
    assert (rows[:, 11, 2] - rows[:, 11, 3] > lesson.margin).sum() >= 5  # and reported visible there


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


def test_a_saved_set_round_trips_as_a_model_folder(tmp_path, tiny_model):
    from rtkp.backends import read_model_info
    from rtkp.teach.saved import read_taught, save_keypoint_set

    info = read_model_info(tiny_model)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    rng = np.random.default_rng(7)
    kset.add(
        "paw", _unit_rows(rng, 1, 32)[0], 0.2, Taught(_unit_rows(rng, 10, 32).reshape(2, 5, 32), np.zeros((2, 3, 32)))
    )
    kset.rename("nose", "snout")
    out = save_keypoint_set(tiny_model, info.manifest, kset, tmp_path / "saved")
    back = read_model_info(out)
    assert back.manifest["keypoint_names"] == ["snout", "left_eye", "right_eye", "paw"]
    assert back.manifest["added_keypoints"][0] | {"tensors": None} == {
        "name": "paw",
        "shots": 2,
        "margin": 0.2,
        "source": "live",
        "tensors": None,
    }
    np.testing.assert_allclose(back.prototypes, kset.prototypes)
    assert back.manifest["visibility_margins"] == [0.0, 0.0, 0.0, 0.2]
    assert read_taught(out, back.manifest)["paw"].views.shape == (2, 5, 32)
    again = KeypointSet.from_model(back.manifest, back.prototypes, back.clutter, read_taught(out, back.manifest))
    assert again.shots() == {"paw": 2}
    with pytest.raises(ControlError, match="not empty"):
        save_keypoint_set(tiny_model, info.manifest, kset, out)
    with pytest.raises(ControlError, match="running model"):
        save_keypoint_set(tiny_model, info.manifest, kset, tiny_model, overwrite=True)
    save_keypoint_set(tiny_model, info.manifest, kset, out, overwrite=True)


def test_select_keypoints_keeps_frames_and_renumbers_the_skeleton(tmp_path):
    from rtkp.data.load import load_dataset

    project = write_dlc_project(tmp_path / "p", n=4, names=["a", "b", "c"])
    (project / "config.yaml").write_text((project / "config.yaml").read_text() + "skeleton: [[a, b], [b, c]]\n")
    data = load_dataset(project)
    sub = data.select_keypoints(["c", "b"])
    assert sub.keypoint_names == ["c", "b"] and len(sub) == len(data) and sub.skeleton == [(1, 0)]
    np.testing.assert_array_equal(sub.samples[1].keypoints, data.samples[1].keypoints[[2, 1]])
    assert not sub.samples[0].visible[0] and sub.samples[0].visible[1]  # frame 0 has c unlabelled
    # one keypoint is measured against the whole object (PCK's size), also on a frame where it is unlabelled
    from rtkp.train.evaluate import object_size

    whole = data.samples[1].keypoints[data.samples[1].visible]
    alone = data.select_keypoints(["c"])
    np.testing.assert_array_equal(alone.samples[1].object_points(), whole)
    assert object_size(alone.samples[1].object_points()) == object_size(whole) > 1
    assert len(alone.samples[0].object_points()) == 2 and not alone.samples[0].visible.any()
    assert object_size(np.zeros((0, 2))) == 1.0
    with pytest.raises(DataError, match="no keypoint 'z'"):
        data.select_keypoints(["a", "z"])
    with pytest.raises(DataError, match="once"):
        data.select_keypoints(["a", "a"])


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
    deadline = time.monotonic() + 10
    while pub.joins < 1:
        assert time.monotonic() < deadline
        pub.poll()
        time.sleep(0.005)

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


def test_leave_one_keypoint_out_through_the_command_line(dlc_project, tmp_path, capsys):
    """train --keypoints on two of three keypoints, add the third from two labelled frames, eval it alone."""
    from rtkp.cli import main

    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    from conftest import SMALL_TRAIN

    small = [*SMALL_TRAIN, "--set", "train.steps=3", "--quiet"]
    common = ["--data", str(dlc_project), "--split", str(split)]
    two = tmp_path / "two"
    assert main(["train", *common, "--out", str(two), "--keypoints", "nose,right_eye", *small]) == 0
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["keypoint_names"] == ["nose", "right_eye"] and manifest["training"]["keypoints"] == [
        "nose",
        "right_eye",
    ]
    assert list(manifest["evaluation"]["per_keypoint"]) == ["nose", "right_eye"]
    assert main(["train", *common, "--out", str(tmp_path / "bad"), "--keypoints", "nose,tail", *small]) == 3
    assert "no keypoint 'tail'" in capsys.readouterr().err
    three = tmp_path / "three"
    add = ["keypoints", "add", "left_eye", "--model", str(two), *common, "--shots", "2", "--out", str(three)]
    assert main([*add, "--backend", "onnxruntime", "--threads", "1"]) == 0
    manifest = json.loads((three / "manifest.json").read_text())
    assert manifest["keypoint_names"] == ["nose", "right_eye", "left_eye"]
    assert manifest["added_keypoints"][0]["name"] == "left_eye" and manifest["added_keypoints"][0]["shots"] == 2
    assert manifest["derived_from"]["added_from_data"]["frames"] == names[:2]  # the first two with left_eye
    out = tmp_path / "eval.json"
    assert (
        main(
            ["eval", "--model", str(three), *common, "--keypoints", "left_eye", "--backend", "onnxruntime"]
            + ["--json", str(out), "--quiet"]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["keypoints"] == ["left_eye"] and list(report["per_keypoint"]) == ["left_eye"]
    # the full data against the taught model: matched by name, whatever the order
    assert (
        main(["eval", "--model", str(three), *common, "--backend", "onnxruntime", "--json", str(out), "--quiet"]) == 0
    )
    assert json.loads(out.read_text())["keypoints"] == ["nose", "left_eye", "right_eye"]


def test_control_server_answers_on_its_private_and_curve_endpoints(tmp_path):
    """The window's private ipc endpoint (no CURVE) and a CURVE public one, on one server: "not ready" until the
    model is, then requests reach the inference stage's queue; a client without keys gets nothing."""
    from rtkp.control.remote import ControlClient
    from rtkp.control.server import ControlServer
    from rtkp.wire.subscriber import write_keys

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
        assert err.value.code == "timeout" and "CURVE" in str(err.value)
        server.ready()
        rid = window.send("list")
        jobs = _wait_jobs(server)
        assert isinstance(jobs[0].request, protocol.List)
        jobs[0].done(protocol.reply(jobs[0].request_id, keypoints=[]))
        assert [r["id"] for r in window.replies(10)] == [rid]
        rid = remote.send("rename", name="a", to="b")
        job = _wait_jobs(server)[0]
        assert job.request == protocol.Rename("a", "b")
        window.send("list")  # still queued when the run ends: answered all the same
        _wait_until_queued(server)
        server.close()
        assert [r["code"] for r in window.replies(10)] == ["not_ready"]
        job.done(protocol.reply(job.request_id))  # (after close nobody sends it; nothing breaks)
    finally:
        for c in (window, remote, stranger):
            c.close()


def _wait_jobs(server, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not (jobs := server.take()):
        assert time.monotonic() < deadline, "no job reached the queue"
        time.sleep(0.01)
    return jobs


def _wait_until_queued(server, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while server.jobs.empty():
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["one_euro", "kalman"])
def test_smoothing_tracks_survive_a_change_of_keypoints(kind):
    from rtkp.config import SmoothingConfig
    from rtkp.smoothing import KeypointSmoother

    smoother = KeypointSmoother(3, SmoothingConfig(filter=kind))
    kept = KeypointSmoother(2, SmoothingConfig(filter=kind))  # the same tracks of keypoints 2 and 0, never changed
    xy = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]])
    for i in range(5):
        smoother.update(i / 30, xy + i * np.array([1.0, 2.0]), np.ones(3, bool))
        kept.update(i / 30, xy[[2, 0]] + i * np.array([1.0, 2.0]), np.ones(2, bool))
    smoother.remap([2, 0, -1])  # keypoint 1 removed, 2 and 0 swapped rows, a new one appended
    moved = np.array([[97.0, 99.0], [16.0, 21.0], [30.0, 70.0]])
    out, visible, state = smoother.update(5 / 30, moved, np.ones(3, bool))
    ref, _, _ = kept.update(5 / 30, moved[:2], np.ones(2, bool))
    assert out.shape == (3, 2) and visible.all() and (state == 1).all()
    np.testing.assert_allclose(out[:2], ref, atol=1e-4)  # each kept track continues in its new row
    np.testing.assert_allclose(out[2], moved[2])  # the new keypoint starts where it is measured
