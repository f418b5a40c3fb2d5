"""`rtkp export --ray` gives the local export's records, byte for byte: on a real local Ray instance (2 CPUs), with
videos split into chunks, a worker killed mid-chunk, a job interrupted and resumed, and a bad input among good ones.

The Ray instance is started once for the module (in this process: the exports run through `rtkp.cli.main`, which
uses an instance that is already up and leaves it running) and shut down at the end.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import DLC_MOUSE, render_scene, wait_for, write_video
from test_sources_seek import write_gop_video

from rtkp.cli import main
from rtkp.export.chunks import Chunk, split_at_keyframes

COMMON = ["--backend", "onnxruntime", "--quiet", "--set", "run.threads=1"]
LONG_FRAMES, GOP, CHUNK = 900, 60, 300  # the long video: 3 chunks of 300 frames (keyframes every 60)
SHORT = {"a": 20, "b": 25, "c": 30}


def write_video_with_decode_errors(path, frames: int = 60, gop: int = 12):
    """A 4:4:4 x264 video whose SEI claims x264 build 148: FFmpeg then applies a workaround for that build's 4:4:4
    bug, which this (modern) stream does not have, and conceals the resulting errors: what it shows for a frame depends
    on everything decoded before, so no chunk after a seek can match the full decode."""
    import av

    with av.open("testsrc2=size=128x96:rate=30", format="lavfi") as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv444p"
        stream.codec_context.gop_size = gop
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = path.read_bytes()
    build = re.search(rb"x264 - core (\d+)", data)
    if build is None or len(build.group(1)) < 3:
        pytest.skip("this libx264 writes no 3-digit build number")
    path.write_bytes(data.replace(build.group(0), b"x264 - core 148".ljust(len(build.group(0))), 1))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_videos")
    short = [write_video(root / f"{name}.mp4", frames=n, seed=i) for i, (name, n) in enumerate(SHORT.items())]
    long = write_gop_video(root / "long.mp4", frames=LONG_FRAMES, gop=GOP)
    return {"short": short, "long": long, "errors": write_video_with_decode_errors(root / "errors.mp4")}


def import_ray():
    """Ray, or a skip outside CI; in CI (`.ci/run` sets CI=true), which installs the [cluster] extra, a failure."""
    try:
        import ray
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Ray is not importable in CI ({exc}): pip install -e '.[cluster]'")
        pytest.skip("needs Ray: pip install -e '.[cluster]'")
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray = import_ray()
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def _export(inputs, out, model, *extra):
    return main(["export", *map(str, inputs), "--out", str(out), "--model", str(model), *COMMON, *extra])


@pytest.fixture(scope="module")
def reference(videos, tiny_model, tmp_path_factory):
    """The local export: the short videos as they are, the long one smoothed offline and drawn (MP4)."""
    out = tmp_path_factory.mktemp("local")
    assert _export([*videos["short"], videos["errors"]], out, tiny_model) == 0
    assert _export([videos["long"]], out, tiny_model, "--smooth", "offline", "--video") == 0
    return out


def _assert_same_outputs(got, want, stems):
    for stem in stems:
        names = sorted(p.name for p in want.glob(f"{stem}.*"))
        assert names and sorted(p.name for p in got.glob(f"{stem}.*")) == names
        for name in names:
            if name.endswith(".done.json"):  # the settings; timings and the chunks differ
                a, b = (json.loads((d / name).read_text()) for d in (got, want))
                assert a["settings"] == b["settings"] and a["result"]["frames"] == b["result"]["frames"]
            else:
                assert (got / name).read_bytes() == (want / name).read_bytes(), f"{name} differs"
    assert not list(got.glob("*.partial*")), "litter left in the output folder"


def _long_args(videos, out, model, *extra):
    args = ["export", str(videos["long"]), "--out", str(out), "--model", str(model), *COMMON]
    return [*args, "--smooth", "offline", "--video", "--ray", "auto", "--workers", "2", "--chunk-frames", str(CHUNK)]


# --- without Ray ------------------------------------------------------------------------------------------------


def test_a_batch_gives_the_numbers_of_single_frames(tiny_model):
    """ONNX Runtime on the CPU is batch-invariant: how frames are grouped (the lossless runner's batches, the
    chunks) changes no record."""
    from rtkp.backends import open_backend, read_model_info
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    info = read_model_info(tiny_model)
    tracker = Tracker(open_backend(tiny_model, "onnxruntime", threads=1), info.manifest)
    rng = np.random.default_rng(1)
    frames = [Frame(i, i / 30, 0, render_scene(rng, (160, 100))[0]) for i in range(7)]
    one = [tracker.model.infer(tracker.model.preprocess(f.image)[None])[0] for f in frames]
    for groups in ([4, 3], [7], [2, 2, 3]):
        rows, i = [], 0
        for g in groups:
            rows += list(tracker.model.infer(np.stack([tracker.model.preprocess(f.image) for f in frames[i : i + g]])))
            i += g
        assert all(np.array_equal(a, b) for a, b in zip(one, rows)), groups
    batch = tracker.process_batch(frames)
    assert [kf.index for kf in batch] == list(range(7))
    assert all(np.array_equal(kf.keypoints, tracker.keypoints.mapper(r, (160, 100))[0]) for kf, r in zip(batch, one))


def test_chunks_start_at_keyframes_and_cover_every_frame():
    keyframe = np.zeros(1000, bool)
    keyframe[::90] = True
    chunks = split_at_keyframes(keyframe, 200)
    assert chunks[0].start == 0 and chunks[-1].end is None
    assert all(keyframe[c.start] for c in chunks)
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    assert all(c.end - c.start >= 200 for c in chunks[:-1])
    assert split_at_keyframes(keyframe, 5000) == [Chunk(0, None)]
    assert split_at_keyframes(np.ones(17, bool), 8) == [Chunk(0, 8), Chunk(8, None)]  # no 1-frame tail


def test_ray_not_installed_says_how_to_install_it(videos, tiny_model, tmp_path):
    """A process where `import ray` fails (as without the package): one line, exit code 7, no traceback."""
    code = "import sys; sys.modules['ray'] = None; from rtkp.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [str(videos["short"][0]), "--out", str(tmp_path / "o"), "--model", str(tiny_model), "--ray", "auto"]
    res = subprocess.run([sys.executable, "-c", code, "export", *args], capture_output=True, text=True)
    assert res.returncode == 7, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "[cluster]" in lines[0], res.stderr
    assert not (tmp_path / "o").exists()


def test_ray_tests_fail_in_ci_and_skip_elsewhere_without_ray(monkeypatch):
    """Where `import ray` fails: the Ray tests fail when CI=true (CI installs Ray), and are skipped elsewhere."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what Python records for a module that cannot be imported
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not importable in CI"):
        import_ray()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="needs Ray"):
        import_ray()


def test_the_local_export_does_not_import_ray(tiny_model, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 5000)
    code = (
        "import sys; from rtkp.cli import main\n"
        f"rc = main(['export', {str(junk)!r}, '--out', {str(tmp_path / 'o')!r}, '--model', {str(tiny_model)!r}])\n"
        "assert rc == 4 and 'ray' not in sys.modules, (rc, sorted(m for m in sys.modules if 'ray' in m))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_workers_take_a_gpu_each_while_there_are_gpus_then_cpus():
    from rtkp.config import Config, RunConfig
    from rtkp.export.local import ExportOptions
    from rtkp.export.ray import worker_options

    opts = ExportOptions(out=None, model="m")
    assert worker_options({"CPU": 16, "GPU": 2}, opts, None) == [{"num_cpus": 1, "num_gpus": 1}] * 2
    assert worker_options({"CPU": 16, "GPU": 2}, opts, 3)[2] == {"num_cpus": 1}
    assert worker_options({"CPU": 2}, opts, None) == [{"num_cpus": 1}] * 2
    cpu_only = ExportOptions(out=None, model="m", backend="onnxruntime", cfg=Config(run=RunConfig(threads=2)))
    assert worker_options({"CPU": 16, "GPU": 2}, cpu_only, None) == [{"num_cpus": 2}] * 8
    assert len(worker_options({"CPU": 2}, opts, 5)) == 2  # no more than the cluster has room for


# --- on a local Ray instance ------------------------------------------------------------------------------------


def test_ray_export_equals_the_local_one_and_a_bad_input_fails_alone(
    ray_cluster, videos, reference, tiny_model, tmp_path, capsys
):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 5000)
    out = tmp_path / "ray"
    capsys.readouterr()
    rc = _export([*videos["short"][:2], junk, videos["short"][2]], out, tiny_model, "--ray", "auto", "--workers", "2")
    cap = capsys.readouterr()
    assert rc == 1
    errors = [line for line in cap.err.splitlines() if "error" in line]
    assert len(errors) == 2 and "junk.mp4" in errors[0] and "1 of 4 input(s) failed" in errors[1], cap.err
    _assert_same_outputs(out, reference, SHORT)
    assert not list(out.glob("junk*"))
    # the long video in chunks (keyframes every GOP), smoothed over the joined sequence: the unsplit local export
    assert main(_long_args(videos, out, tiny_model)) == 0
    assert "long.mp4: 900 frames in 3 chunk(s)" in capsys.readouterr().out
    _assert_same_outputs(out, reference, ["long"])
    # a video that no chunk can decode as the full decode does (the decoder conceals errors): tracked in one piece
    assert _export([videos["errors"]], out, tiny_model, "--ray", "auto", "--chunk-frames", "12") == 0
    assert "tracked as one chunk" in capsys.readouterr().out
    _assert_same_outputs(out, reference, ["errors"])
    # complete outputs are skipped; the workers are gone
    assert _export(videos["short"], out, tiny_model, "--ray", "auto") == 0
    assert capsys.readouterr().out.count("skipped, outputs complete") == 3
    wait_for(lambda: not _actors(ray_cluster), 30, "the workers to be gone")


def _actors(ray):
    """The export workers alive now (found by name: rtkp.export.ray_driver names them)."""
    from rtkp.export.ray_driver import ACTOR_PREFIX

    actors = []
    for name in ray.util.list_named_actors():
        if name.startswith(ACTOR_PREFIX):
            try:
                actors.append(ray.get_actor(name))
            except ValueError:  # gone between the listing and the look-up
                pass
    return actors


def test_a_worker_killed_mid_chunk_changes_no_record(ray_cluster, videos, reference, tiny_model, tmp_path, capsys):
    ray, killed = ray_cluster, {}

    def kill_one_mid_chunk():
        def busy():
            for actor in _actors(ray):
                try:
                    task, frames = ray.get(actor.progress.remote(), timeout=5)
                except Exception:  # not up yet, or just killed
                    continue
                if task is not None and 5 <= frames <= CHUNK // 2:
                    return actor, task, frames
            return None

        actor, task, frames = wait_for(busy, what="a worker in the middle of a chunk")
        pid = ray.get(actor.pid.remote())
        os.kill(pid, signal.SIGKILL)
        killed.update(pid=pid, task=task, frames=frames)

    thread = threading.Thread(target=kill_one_mid_chunk, daemon=True)
    thread.start()
    rc = main(_long_args(videos, tmp_path / "ray", tiny_model))
    thread.join(5)
    out = capsys.readouterr().out
    assert killed, "no worker was killed"
    assert rc == 0 and "1 task(s) retried after a worker died" in out, (killed, out)
    _assert_same_outputs(tmp_path / "ray", reference, ["long"])


def test_an_interrupted_job_resumes_from_its_complete_chunks(
    ray_cluster, videos, reference, tiny_model, tmp_path, capsys
):
    out = tmp_path / "ray"
    chunks = out / "long.partial" / "chunks"
    stopped = {}

    def interrupt_after_a_chunk():
        wait_for(lambda: list(chunks.glob("*.json")), what="a complete chunk")
        stopped["chunks"] = len(list(chunks.glob("*.json")))
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: the job's handler stops it

    thread = threading.Thread(target=interrupt_after_a_chunk, daemon=True)
    thread.start()
    rc = main(_long_args(videos, out, tiny_model))
    thread.join(5)
    cap = capsys.readouterr()
    assert rc == 130 and "run the same command again to resume" in cap.err, cap.err
    assert 1 <= stopped["chunks"] < 3 and not (out / "long.done.json").exists()
    wait_for(lambda: not _actors(ray_cluster), 30, "the workers to be gone")
    assert main(_long_args(videos, out, tiny_model)) == 0
    assert "resumed with" in capsys.readouterr().out
    _assert_same_outputs(out, reference, ["long"])


@pytest.mark.slow
@pytest.mark.skipif(not DLC_MOUSE.is_dir(), reason="needs ../shared/data/dlc_openfield_mouse")
def test_the_dlc_mouse_video_in_chunks_equals_its_local_export(ray_cluster, tiny_model, tmp_path, capsys):
    """The open-field video (x264 build 148, 4:4:4) decodes as garbage after a seek unless the decoder has seen the
    stream's first packet (sources._prime_decoder): every keyframe starts a chunk here."""
    video = DLC_MOUSE / "videos" / "m3v1mp4.mp4"
    assert _export([video], tmp_path / "local", tiny_model) == 0
    ray = ["--ray", "auto", "--workers", "2", "--chunk-frames", "1"]
    assert _export([video], tmp_path / "ray", tiny_model, *ray) == 0
    assert "2330 frames in 12 chunk(s)" in capsys.readouterr().out
    for suffix in (".coco.json", ".jsonl", ".csv"):
        name = "m3v1mp4" + suffix
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
