"""Truncated video files, through real `rtkp` processes (issue 26, item 9).

An MP4 whose index (the moov atom) is written last, cut short as a crashed recording is, cannot be opened at all: run,
export and bench say in one line that it looks truncated and what can be done, not FFmpeg's bare "[Errno 1094995529]
Invalid data found". One whose index comes first lists frames it cannot deliver: `rtkp run` counts them as `rtkp
export` does."""

import json
import subprocess
import sys

import pytest
from conftest import remux, write_video


def _rtkp(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtkp", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _cut(path, fraction: float, dst):
    data = path.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("command", ["run", "export", "bench"])
def test_an_mp4_cut_before_its_index_says_it_looks_truncated(tmp_path, tiny_model, command):
    video = write_video(tmp_path / "rec.mp4", frames=40)  # PyAV writes the moov atom at the end, as a recorder does
    assert video.read_bytes().rfind(b"moov") > video.read_bytes().find(b"mdat")
    cut = _cut(video, 0.3, tmp_path / "crashed.mp4")
    m = ["--model", str(tiny_model), "--backend", "onnxruntime"]
    args = {
        "run": ["run", "--source", str(cut), *m, "--headless", "--publish", "none"],
        "export": ["export", str(cut), "--out", str(tmp_path / "out"), *m, "--quiet"],
        "bench": ["bench", "--source", str(cut), *m, "--seconds", "1"],
    }[command]
    before = set(tmp_path.iterdir())
    proc = _rtkp(*args, cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr  # a SourceError, from every command
    assert "Traceback" not in proc.stderr and "Errno" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "crashed.mp4" in line]
    assert lines and "truncated" in lines[0] and "moov" in lines[0], proc.stderr
    assert ".mkv" in lines[0] and "-c copy" in lines[0], lines[0]  # what to do: re-muxing cannot rebuild the index
    if command == "export":  # (export adds its own "1 of 1 input(s) failed" line)
        assert [line for line in proc.stderr.splitlines() if "error" in line][1:] == [
            f"rtkp export: error: 1 of 1 input(s) failed: {cut}"
        ]
    else:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert set(tmp_path.iterdir()) - before <= {tmp_path / "out"}


def test_a_file_ffmpeg_cannot_read_says_it_looks_damaged(tmp_path, tiny_model):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    proc = _rtkp("run", "--source", str(junk), "--model", str(tiny_model), "--headless", cwd=tmp_path)
    assert proc.returncode == 4 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "looks truncated or damaged" in proc.stderr and "Errno" not in proc.stderr, proc.stderr


def test_run_reports_the_frames_a_truncated_file_lists_but_cannot_deliver_as_export_does(tmp_path, tiny_model):
    src = write_video(tmp_path / "src.mp4", frames=40)
    # the index first (faststart): the cut file opens, and its header lists all 40 frames
    cut = _cut(remux(src, tmp_path / "fast.mp4", options={"movflags": "faststart"}), 0.6, tmp_path / "cut.mp4")
    m = ["--model", str(tiny_model), "--backend", "onnxruntime", "--threads", "1"]
    run = _rtkp("run", "--source", str(cut), *m, "--headless", "--publish", "none", "--json", "s.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    decoded = summary["counts"]["decoded"]
    assert 5 <= decoded < 40 and summary["listed_frames"] == 40 and summary["missing_frames"] == 40 - decoded
    first = run.stdout.splitlines()[1]  # the summary's first line, after the start line
    assert first.startswith(f"{decoded} frames in ") and f"{40 - decoded} frame(s) listed in the file" in first, first
    # the same count as `rtkp export` gives for the same file
    export = _rtkp("export", str(cut), "--out", "out", *m[:4], "--quiet", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert f"{40 - decoded} frame(s) listed in the file could not be read" in export.stdout, export.stdout
    # a whole file, or a run stopped by --max-frames, misses nothing
    whole = _rtkp("run", "--source", str(src), *m, "--headless", "--publish", "none", "--json", "w.json", cwd=tmp_path)
    assert whole.returncode == 0 and "listed in the file" not in whole.stdout, whole.stdout
    assert json.loads((tmp_path / "w.json").read_text())["missing_frames"] == 0
