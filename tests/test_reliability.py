"""Faults, signals and bad input: real processes, real files, real sockets on 127.0.0.1 (docs/RELIABILITY.md)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import start_live_run, write_video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtkp.config import Config, config_from_dict
from rtkp.errors import ConfigError, SourceError
from rtkp.pipeline.shm import PREFIX

REPO = Path(__file__).resolve().parent.parent


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as fh:
                    ppid = next(int(line.split()[1]) for line in fh if line.startswith("PPid:"))
            except (OSError, StopIteration):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "State:\tZ" not in fh.read()
    except OSError:
        return False


def _segments() -> set:
    return {n for n in os.listdir("/dev/shm") if n.startswith(PREFIX)} if os.path.isdir("/dev/shm") else set()


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rtkp", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_workers(proc, n=3, timeout=30.0) -> list[int]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        kids = [k for k in _children(proc.pid) if _is_worker(k)]
        if len(kids) >= n:
            time.sleep(1.5)  # let the model load and frames flow
            return kids
        time.sleep(0.1)
    raise AssertionError("workers did not start")


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and /dev/shm")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_run_stops_cleanly(tiny_model, sig):
    before = _segments()
    proc = start_live_run(tiny_model)
    workers = _wait_for_workers(proc)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 3.0
    assert proc.returncode == 0 and "frames in" in out and "Traceback" not in err
    assert not [w for w in workers if _alive(w)]
    assert _segments() == before


def test_sigint_during_export_leaves_no_complete_looking_output(tiny_model, tmp_path):
    video = write_video(tmp_path / "long.mp4", frames=900)
    out = tmp_path / "out"
    proc = _start(
        [
            "export",
            str(video),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--backend",
            "onnxruntime",
            "--quiet",
            "--set",
            "run.threads=1",
        ]
    )
    _wait_for_workers(proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 3.0
    assert proc.returncode == 130 and "interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == []  # nothing that looks finished, no partial files either


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_a_killed_worker_is_detected_and_named(tiny_model, victim):
    before = _segments()
    proc = start_live_run(tiny_model)
    workers = sorted(_wait_for_workers(proc))
    t0 = time.monotonic()
    os.kill(workers[victim], signal.SIGKILL)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 4.0
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "process died" in lines[0] and "Traceback" not in err
    assert not [w for w in workers if _alive(w)]
    assert _segments() == before


def _serve_mpegts(port: int, frames: int, offset: int) -> None:
    import av
    import numpy as np

    with av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts") as out:
        stream = out.add_stream("mpeg2video", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), (offset + i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
            time.sleep(1 / 60)
        for packet in stream.encode():
            out.mux(packet)


def _flaky_server(port: int) -> None:
    _serve_mpegts(port, 60, 0)
    time.sleep(1.0)  # gone for a second
    _serve_mpegts(port, 60, 100)


def test_a_stream_that_stops_and_comes_back_is_reconnected():
    """A local MPEG-TS server over TCP (PyAV listening on 127.0.0.1, in its own process: PyAV holds the GIL while it
    opens an input) goes away and returns."""
    import multiprocessing as mp

    from rtkp.pipeline.sources import Source, parse_source

    port = 5931
    server = mp.get_context("spawn").Process(target=_flaky_server, args=(port,), daemon=True)
    server.start()
    time.sleep(1.5)
    src = Source(parse_source(f"tcp://127.0.0.1:{port}"), backoff_s=(0.2, 1.0), give_up_s=4)
    frames = []
    try:
        for frame in src:  # runs until the server is gone for good and the source gives up
            frames.append((frame.index, int(frame.image.mean())))
    except SourceError as exc:
        assert "gave up after 4 s" in str(exc)
    finally:
        server.join(20)
        if server.is_alive():
            server.kill()
    assert src.reconnects >= 1
    assert [i for i, _ in frames] == list(range(len(frames)))  # indices continue across the reconnection
    first = [v for _, v in frames if v < 80]
    second = [v for _, v in frames if v >= 95]
    assert len(first) >= 20 and len(second) >= 20  # frames from both server sessions


def test_a_camera_that_does_not_exist(tiny_model):
    res = subprocess.run(
        [sys.executable, "-m", "rtkp", "run", "--source", "/dev/video77", "--model", str(tiny_model), "--headless"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 4 and "/dev/video77" in res.stderr and res.stderr.count("\n") == 1


# --- configuration fuzzing: always a ConfigError naming a field, never another exception ---

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(-5, 500), max_size=3),
)
_sections = {f: list(getattr(Config(), f).__dataclass_fields__) for f in Config.__dataclass_fields__}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(list(_sections) + ["bogus"]),
        st.one_of(_scalars, st.dictionaries(st.text(max_size=12), _scalars, max_size=3)),
        max_size=3,
    ),
    st.data(),
)
def test_fuzzed_configs_are_accepted_or_rejected_with_the_field_named(raw, data):
    for section in list(raw):
        if section in _sections and isinstance(raw[section], dict) and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(_sections[section]))
            raw[section][key] = data.draw(_scalars)
    try:
        config_from_dict(raw)
    except ConfigError as exc:
        assert str(exc).startswith("`") and "\n" not in str(exc)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "--max-frames",
                "-3",
                "x",
                "--backend",
                "nope",
                "--smooth",
                "wild",
                "--set",
                "run.slots=1",
                "train.steps=abc",
                "--config",
                "/nonexistent.yaml",
                "--source",
            ]
        ),
        max_size=6,
    )
)
def test_fuzzed_run_arguments_never_traceback(args):
    from rtkp.cli import main

    try:
        rc = main(["run", "--source", "/nonexistent.mp4", "--headless", *args])
    except SystemExit as exc:
        rc = exc.code
    assert rc != 0


def test_security_defaults():
    assert Config().run.publish.startswith("tcp://127.0.0.1:")
    sources = list((REPO / "rtkp").rglob("*.py"))
    text = "\n".join(p.read_text() for p in sources)
    assert "shell=True" not in text and "os.system(" not in text and "pickle.load" not in text
