"""Sources, the shared-memory channels and the multi-process runner, with real processes, files and sockets."""

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
from conftest import free_port, remux, wait_for, write_video

from rtkp.errors import ModelError, SourceError
from rtkp.messages import Frame
from rtkp.pipeline.run import RunOptions, run_pipeline
from rtkp.pipeline.shm import PREFIX, FrameRing, LatestChannel, LosslessChannel, sweep_stale
from rtkp.pipeline.sources import Source, check_source, parse_source

LAVFI = "lavfi:testsrc2=size=128x96:rate=30"


def _frame(i, value=0, size=(96, 128)):
    return Frame(i, i / 30, time.monotonic_ns(), np.full(size + (3,), value % 256, np.uint8))


def test_parse_source_kinds(tmp_path):
    assert parse_source("camera0").kind == "camera" and parse_source("camera0").live
    assert parse_source("/dev/video3").kind == "camera"
    assert parse_source("rtsp://127.0.0.1:8554/x").kind == "stream"
    assert parse_source(LAVFI).kind == "lavfi" and not parse_source(LAVFI).live
    assert parse_source(str(tmp_path)).kind == "images"
    assert parse_source(str(tmp_path / "*.png")).kind == "images"
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "missing.mp4"))


def test_sources_yield_index_pts_and_capture_time(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=12)
    frames = list(Source(parse_source(str(video))))
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].image.shape == (96, 128, 3)
    np.testing.assert_allclose([f.pts for f in frames], np.arange(12) / 30, atol=1e-6)
    assert all(b.capture_ns > a.capture_ns for a, b in zip(frames, frames[1:]))
    lav = list(Source(parse_source(LAVFI), max_frames=5))
    assert len(lav) == 5 and lav[4].pts == pytest.approx(4 / 30)


def test_bad_sources_fail_in_one_line(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError) as err:
        check_source(str(bad))
    assert "bad.mp4" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SourceError, match="does not exist"):
        check_source("/dev/video99")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        check_source(str(tmp_path / "empty"))


def test_checks_open_no_live_source_and_reading_opens_once(monkeypatch, tmp_path):
    """Containers are counted where they are opened (sources.open_container, on real sources): a check probes a file
    or lavfi graph once and opens no camera or stream (a device may refuse a second open; each costs ~1 s); reading
    opens once. `rtkp run` on a live source, end to end: tests/test_reliability.py."""
    from rtkp.pipeline import containers

    opened = []
    real_open = containers.open_container
    monkeypatch.setattr(containers, "open_container", lambda spec, *a: opened.append(spec.text) or real_open(spec, *a))
    check_source(LAVFI)
    check_source(str(write_video(tmp_path / "v.mp4", frames=3)))
    assert len(opened) == 2
    check_source(f"tcp://127.0.0.1:{free_port()}")  # nothing listens there: opening it would fail
    check_source("rtsp://127.0.0.1:1/none")
    with pytest.raises(SourceError, match="does not exist"):
        check_source("camera99")
    assert len(opened) == 2
    frames = list(Source(parse_source(LAVFI), max_frames=4))
    assert len(frames) == 4 and len(opened) == 3


def test_truncated_video_yields_what_decodes(tmp_path):
    # MPEG-TS has no index to lose, so half a file is a truncated recording that still opens
    data = remux(write_video(tmp_path / "v.mp4", frames=30), tmp_path / "v.ts", "mpegts").read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    frames = list(Source(parse_source(str(cut))))
    assert 3 <= len(frames) < 30


def _producer(channel, n, delay):
    for i in range(n):
        channel.put(_frame(i, i))
        time.sleep(delay)
    channel.end()


def test_lossless_channel_delivers_every_frame_in_order():
    ctx = mp.get_context("spawn")
    ring = FrameRing(3, 96 * 128 * 3)
    channel = LosslessChannel(ctx, ring)
    p = ctx.Process(target=_producer, args=(channel, 20, 0.0))
    p.start()
    seen = []
    while (item := channel.get()) is not None:
        frame, slot, dropped = item
        assert frame.image[0, 0, 0] == frame.index % 256 and dropped == 0
        seen.append(frame.index)
        time.sleep(0.005)  # a slow consumer makes the producer wait, never drop
        channel.release(slot)
    p.join(5)
    ring.close()
    assert seen == list(range(20))


def test_latest_channel_hands_out_the_newest_frame_and_counts_drops():
    ctx = mp.get_context("spawn")
    ring = FrameRing(3, 96 * 128 * 3)
    channel = LatestChannel(ctx, ring)
    p = ctx.Process(target=_producer, args=(channel, 60, 0.002))
    p.start()
    seen, dropped = [], 0
    while True:
        item = channel.get(timeout=5)
        if item is None:
            break
        frame, slot, skipped = item
        assert frame.image[0, 0, 0] == frame.index % 256  # never a torn or reused slot
        seen.append(frame.index)
        dropped += skipped
        time.sleep(0.02)  # slower than the producer
        channel.release(slot)
    p.join(5)
    ring.close()
    assert seen == sorted(seen) and len(seen) < 60
    assert len(seen) + dropped + channel.dropped_at_producer.value == 60


def test_sweep_removes_only_dead_owners_segments():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    dead = f"{PREFIX}999999999_dead"
    with open(f"/dev/shm/{dead}", "wb") as fh:
        fh.write(b"x")
    live = FrameRing(3, 100)
    removed = sweep_stale()
    assert dead in removed and os.path.exists(f"/dev/shm/{live.name}")
    live.close()
    assert not os.path.exists(f"/dev/shm/{live.name}")


def _shm_segments():
    """This process's rtkp segments (named rtkp_<creator pid>_...): other runs on the machine are not ours to count."""
    import os

    prefix = f"rtkp_{os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)} if os.path.isdir("/dev/shm") else set()


def test_lossless_run_gives_one_result_per_frame_in_order(tiny_model, tmp_path):
    from rtkp.backends import open_backend, read_model_info
    from rtkp.tracker import Tracker

    video = write_video(tmp_path / "v.mp4", frames=15)
    before = _shm_segments()
    got = []
    opts = RunOptions(
        source=str(video),
        model=str(tiny_model),
        backend="onnxruntime",
        threads=1,
        collect=True,
        record=str(tmp_path / "out.mp4"),
    )
    summary = run_pipeline(opts, on_frame=got.append)
    assert summary["policy"] == "lossless" and summary["post"]["frames"] == 15 and summary["post"]["dropped"] == 0
    assert [kf.index for kf in got] == list(range(15))
    assert _shm_segments() == before
    # the runner's output is exactly what the synchronous Tracker makes of the same frames
    tracker = Tracker(
        open_backend(tiny_model, "onnxruntime", threads=1), read_model_info(tiny_model).manifest, opts.smoothing
    )
    for frame, kf in zip(Source(parse_source(str(video))), got):
        ref = tracker.process(frame)
        np.testing.assert_allclose(ref.keypoints, kf.keypoints, atol=1e-4)
        assert (ref.visible == kf.visible).all()
    import av

    with av.open(str(tmp_path / "out.mp4")) as rec:
        stream = rec.streams.video[0]
        assert (stream.width, stream.height) == (128, 96) and stream.frames == 15


def test_live_run_keeps_latency_bounded_and_counts_drops(tiny_model):
    opts = RunOptions(
        source="lavfi:testsrc2=size=640x480:rate=120",
        model=str(tiny_model),
        backend="onnxruntime",
        policy="live",
        realtime=True,
        max_frames=120,
        threads=1,
    )
    summary = run_pipeline(opts)
    post, c = summary["post"], summary["counts"]
    # every decoded frame is tracked, dropped by a named stage, or in flight at the end — counted where it happens
    assert c["decoded"] == 120 and post["frames"] == c["tracked"] > 0
    assert c["decoded"] == c["tracked"] + c["dropped_ring_full"] + c["dropped_superseded"] + c["in_flight_at_end"]
    assert post["dropped"] == c["dropped_superseded"]
    # bounded: the newest frame wins, so latency cannot build up over the run (a wide bound, not a speed figure)
    assert post["stages_ms"]["capture_to_publish"]["p50"] < 1000


def test_run_publishes_over_zeromq(tiny_model, tmp_path):
    import threading

    import msgpack
    import zmq

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    received = []
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"rtkp.default.")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(endpoint)

    def listen():
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            try:
                topic, header = sub.recv_multipart()
            except zmq.Again:
                if received and received[-1][0] == "done":
                    return
                continue
            received.append((topic.decode(), msgpack.unpackb(header)))

    thread = threading.Thread(target=listen)
    thread.start()
    video = write_video(tmp_path / "v.mp4", frames=40)
    opts = RunOptions(
        source=str(video),
        model=str(tiny_model),
        backend="onnxruntime",
        threads=1,
        publish=endpoint,
        realtime=True,
        policy="live",
    )
    run_pipeline(opts)
    received.append(("done", None))
    thread.join(35)
    sub.close()
    kps = [h for t, h in received if t == "rtkp.default.keypoints"]
    metas = [h for t, h in received if t == "rtkp.default.meta"]
    assert kps and metas and metas[0]["keypoints"] == ["nose", "left_eye", "right_eye"]
    assert all(len(h["kp"]) == 3 for h in kps)
    seqs = [h["seq"] for h in kps]
    assert seqs == sorted(seqs)


def test_a_bad_model_fails_before_any_process_starts(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=5)
    before = _shm_segments()
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelError, match="manifest.json: not found"):
        run_pipeline(RunOptions(source=str(video), model=str(tmp_path / "model"), backend="onnxruntime"))
    assert _shm_segments() == before


def test_a_backend_that_fails_in_its_process_is_reported_with_the_stage(tiny_model, tmp_path):
    from rtkp.errors import EngineError

    video = write_video(tmp_path / "v.mp4", frames=5)
    with pytest.raises(EngineError, match="infer stage: .*tensorrt"):  # the stage's class kept: exit code 6
        run_pipeline(RunOptions(source=str(video), model=str(tiny_model), backend="tensorrt"))


def test_weights_changed_after_the_parents_check_exit_5_as_every_model_error(tiny_model, tmp_path):
    """The weights change between the parent's check and the inference stage's load: the weights file is a FIFO that
    gives the parent the real bytes and the next reader (the stage) changed ones. `rtkp run` exits 5, as a ModelError
    does from every command (it exited 1: the stage's error became a PipelineError), in one line."""
    import shutil
    import subprocess
    import sys
    import threading

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("onnx", "exports.json", "trt"))
    weights = model / "model.safetensors"
    good = weights.read_bytes()
    weights.unlink()
    os.mkfifo(weights)
    changed = bytearray(good)
    changed[-1] ^= 0xFF

    def no_reader() -> bool:  # (an open for writing that does not wait fails when no process has it open to read)
        try:
            os.close(os.open(weights, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return True
        return False

    def serve():
        for data in (good, bytes(changed)):  # each open for writing waits for the next reader
            try:
                with open(weights, "wb") as fh:
                    fh.write(data)
            except BrokenPipeError:
                return
            wait_for(no_reader, what="the reader to close the weights")  # else it reads on into the next bytes

    writer = threading.Thread(target=serve, daemon=True)
    writer.start()
    video = write_video(tmp_path / "v.mp4", frames=5)
    cmd = [sys.executable, "-m", "rtkp", "run", "--source", str(video), "--model", str(model), "--headless"]
    cmd += ["--publish", "none", "--backend", "onnxruntime"]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    finally:
        if writer.is_alive():  # a writer still waiting for a reader: give it one, so that the thread ends
            os.close(os.open(weights, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
    assert run.returncode == 5, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "infer stage" in lines[0] and str(weights) in lines[0] and "sha256" in lines[0], lines[0]


def test_lossless_batches_never_mix_up_frames(tmp_path):
    """Frames that need no resizing reach the model as views into shared memory: a slot must not be reused before
    the batch holding it has been copied (a real bug: results of other frames appeared under a frame's index)."""
    import av
    import cv2

    from rtkp.backends import open_backend, read_model_info
    from rtkp.cli import DEFAULT_MODEL
    from rtkp.config import SmoothingConfig
    from rtkp.demo.synth import render_sample
    from rtkp.demo.target import render_target
    from rtkp.tracker import Tracker

    assert (DEFAULT_MODEL / "manifest.json").is_file(), f"the shipped model {DEFAULT_MODEL} is in git: restore it"
    target = render_target(4.0)
    video = tmp_path / "poses.mp4"
    with av.open(str(video), "w") as out:  # 320x256 frames: the default model's letterbox is the identity
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 256, "yuv420p"
        stream.options = {"crf": "12"}
        for i in range(24):
            image = cv2.resize(render_sample(np.random.default_rng([5, i]), target)[0], (320, 256))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    got = []
    opts = RunOptions(source=str(video), model=str(DEFAULT_MODEL), backend="onnxruntime", threads=1, collect=True)
    opts = RunOptions(
        **{**opts.__dict__, "run": type(opts.run)(slots=3, batch=4), "smoothing": SmoothingConfig("none")}
    )
    run_pipeline(opts, on_frame=got.append)
    tracker = Tracker(open_backend(DEFAULT_MODEL, "onnxruntime", threads=1), read_model_info(DEFAULT_MODEL).manifest)
    ref = [tracker.process(f).keypoints for f in Source(parse_source(str(video)))]
    assert len(got) == 24
    moved = [np.median(np.linalg.norm(a.keypoints - b, axis=1)) for a, b in zip(got[1:], ref[:-1])]
    assert np.median(moved) > 5  # consecutive poses differ, so a mix-up would show
    for kf, r in zip(got, ref):
        assert np.median(np.linalg.norm(kf.keypoints - r, axis=1)) < 0.5  # batch-4 vs batch-1 numerics only


def _set_later(flag, delay):
    time.sleep(delay)
    flag.set()


def test_flag_crosses_processes_without_a_lock():
    """stop/ready are lock-free shared bytes: a stage killed while using one cannot leave the parent hanging on it."""
    from rtkp.pipeline.shm import Flag

    ctx = mp.get_context("spawn")
    flag = Flag(ctx)
    assert not flag.is_set() and not flag.wait(0.05)
    p = ctx.Process(target=_set_later, args=(flag, 0.2))
    p.start()
    assert flag.wait(30) and flag.is_set()
    p.join(30)
    assert not hasattr(flag, "_lock") and not any("Lock" in type(v).__name__ for v in vars(flag).values())
