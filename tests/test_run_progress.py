"""`rtkp run` on a file or image folder shows its progress (issue 26, item 9: six silent minutes on the mouse video):
a bar on a terminal, plain lines on stderr otherwise (what these tests read, from a real `rtkp run` process). A live
run has no end and shows none."""

import re
import subprocess
import sys

from conftest import write_image_folder, write_video

LINE = re.compile(r"^rtkp run: (\d+)/(\d+) frames \((\d+) %\)")


def _run(source, model, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rtkp", "run", "--source", str(source), "--model", str(model)]
    cmd += ["--headless", "--publish", "none", "--backend", "onnxruntime", "--threads", "1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def _progress(stderr: str) -> list[tuple[int, int, int]]:
    """(frames done, total, percent) of each progress line, in order."""
    return [tuple(int(g) for g in m.groups()) for line in stderr.splitlines() if (m := LINE.match(line))]


def test_a_file_run_shows_its_progress_in_plain_lines_when_stderr_is_not_a_terminal(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.mp4", frames=60)
    run = _run(video, tiny_model)
    assert run.returncode == 0, run.stderr
    lines = _progress(run.stderr)
    # a few lines, never more than one per tenth of the frames (plus the first and the last), counts rising to the end
    assert 2 <= len(lines) <= 12, run.stderr
    assert all(total == 60 for _, total, _ in lines)
    assert [n for n, _, _ in lines] == sorted({n for n, _, _ in lines})
    assert lines[-1] == (60, 60, 100), run.stderr
    assert "fps" in run.stderr.splitlines()[-1] and "\r" not in run.stderr  # plain lines: no bar in a log
    assert "Traceback" not in run.stderr
    assert run.stdout.startswith("rtkp run: model") and "60 frames in" in run.stdout  # stdout as it was


def test_an_image_folder_run_counts_its_images(tmp_path, tiny_model):
    folder = write_image_folder(tmp_path / "frames", 7, seed=1)
    run = _run(folder, tiny_model)
    assert run.returncode == 0, run.stderr
    assert _progress(run.stderr)[-1] == (7, 7, 100), run.stderr


def test_max_frames_is_the_total_and_a_live_run_shows_no_progress(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.mp4", frames=30)
    run = _run(video, tiny_model, "--max-frames", "10")
    assert run.returncode == 0, run.stderr
    assert _progress(run.stderr)[-1] == (10, 10, 100), run.stderr
    assert "listed in the file" not in run.stdout  # --max-frames stops early: nothing missing
    live = _run("lavfi:testsrc2=size=64x48:rate=30", tiny_model, "--realtime", "--max-frames", "5")
    assert live.returncode == 0, live.stderr
    assert "frames (" not in live.stderr and "fps" not in live.stderr, live.stderr  # no end: no progress, as before
