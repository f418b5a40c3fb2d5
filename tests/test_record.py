"""Recordings (`rtkp run --record`, `rtkp export --video`) keep the source's frame rate and every frame's timestamp."""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import render_scene

from rtkp.cli import main


def write_timed_video(path: Path, rate: Fraction, time_base: Fraction, frames: int = 24, start: Fraction = 0) -> Path:
    """An H.264 MP4 whose frame i is stamped round((start + i / rate) / time_base) ticks of `time_base`."""
    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.time_base = stream.time_base = time_base
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(render_scene(rng)[0], format="rgb24")
            frame.pts, frame.time_base = round((Fraction(start) + i / rate) / time_base), time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def timing(path: Path) -> tuple[Fraction, list[Fraction]]:
    """(average rate, every decoded frame's pts × time_base in seconds, exact)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return Fraction(stream.average_rate), [Fraction(f.pts) * f.time_base for f in c.decode(stream)]


SOURCES = {
    # what PyAV/FFmpeg write by default (1/15360 = 1/(512 × 30))
    "30fps": (Fraction(30), Fraction(1, 15360), 0),
    "25fps": (Fraction(25), Fraction(1, 12800), 0),
    # a camera-style file: NTSC rate, microsecond ticks (like the DLC mouse video), first frame at 0.5 s
    "29.97fps_us": (Fraction(30000, 1001), Fraction(1, 1_000_000), Fraction(1, 2)),
}


def assert_same_timing(src: Path, out: Path) -> None:
    (rate_in, ts_in), (rate_out, ts_out) = timing(src), timing(out)
    assert len(ts_out) == len(ts_in)
    mismatched = [(i, float(a), float(b)) for i, (a, b) in enumerate(zip(ts_in, ts_out)) if a != b]
    assert not mismatched, f"frames whose timestamp (s) differs from the source's: {mismatched[:5]}"
    assert rate_out == rate_in, f"average rate {float(rate_out):.4f}, source {float(rate_in):.4f}"


@pytest.mark.parametrize("kind", list(SOURCES))
def test_run_record_keeps_source_rate_and_timestamps(kind, tmp_path, tiny_model):
    rate, time_base, start = SOURCES[kind]
    src = write_timed_video(tmp_path / "src.mp4", rate, time_base, start=start)
    out = tmp_path / "rec.mp4"
    cmd = [sys.executable, "-m", "rtkp", "run", "--source", str(src), "--model", str(tiny_model)]
    cmd += ["--backend", "onnxruntime", "--headless", "--publish", "none", "--record", str(out), "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert_same_timing(src, out)


@pytest.mark.parametrize("kind", ["30fps", "29.97fps_us"])
def test_export_video_keeps_source_rate_and_timestamps(kind, tmp_path, tiny_model):
    rate, time_base, start = SOURCES[kind]
    src = write_timed_video(tmp_path / "clip.mp4", rate, time_base, start=start)
    args = ["export", str(src), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--video"]
    assert main([*args, "--format", "jsonl", "--backend", "onnxruntime", "--quiet", "--set", "run.threads=1"]) == 0
    assert_same_timing(src, tmp_path / "out" / "clip.annotated.mp4")


def test_writer_without_source_timing_keeps_25fps_timestamps(tmp_path):
    """Cameras and streams have no probed time base: the 1/90000 default must not resample 25 fps onto a 30 fps grid.

    (Only the timestamps: without the source's rate the last frame's duration, hence the average rate, is nominal.)"""
    from rtkp.sinks.video import VideoWriter

    rng = np.random.default_rng(0)
    writer = VideoWriter(tmp_path / "o.mp4", (128, 96))
    for i in range(20):
        writer.write(render_scene(rng)[0], i / 25)
    writer.close()
    assert timing(tmp_path / "o.mp4")[1] == [Fraction(i, 25) for i in range(20)]


def test_writer_survives_ntsc_rate_past_16_seconds(tmp_path):
    """29.97 fps on the old 1/30 encoder grid gave two frames the same tick at frame ~500 (16.7 s): the muxer failed."""
    from rtkp.sinks.video import VideoWriter

    image = np.zeros((32, 32, 3), np.uint8)
    writer = VideoWriter(tmp_path / "ntsc.mp4", (32, 32))  # as for a camera: no probed rate or time base
    for k in range(600):
        writer.write(image, float(k * Fraction(1001, 30000)))
    writer.close()
    assert timing(tmp_path / "ntsc.mp4")[1] == [k * Fraction(1001, 30000) for k in range(600)]


def test_live_sources_start_at_zero_and_frames_without_pts_are_spaced(tmp_path):
    from rtkp.sinks.video import VideoWriter

    rng = np.random.default_rng(0)
    clock = 81234.5  # a camera's pts: a monotonic clock reading
    writer = VideoWriter(tmp_path / "cam.mp4", (128, 96), rate=30, zero_start=True)
    for i in range(6):
        writer.write(render_scene(rng)[0], clock + i / 30)
    writer.close()
    assert [float(t) for t in timing(tmp_path / "cam.mp4")[1]] == pytest.approx([i / 30 for i in range(6)], abs=1e-4)
    writer = VideoWriter(tmp_path / "images.mp4", (128, 96), rate=10)
    for _ in range(5):
        writer.write(render_scene(rng)[0], None)
    writer.close()
    rate, ts = timing(tmp_path / "images.mp4")
    assert ts == [Fraction(i, 10) for i in range(5)] and rate == 10
