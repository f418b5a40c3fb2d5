"""`rtkp export` on real files: every frame, every format, atomic outputs, skipping, bad inputs."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import remux, write_image_folder, write_video

from rtkp.cli import main

COMMON = ["--backend", "onnxruntime", "--quiet", "--set", "run.threads=1"]


@pytest.fixture
def inputs(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=12)
    folder = write_image_folder(tmp_path / "frames", 5, seed=3)
    return video, folder


def test_exports_every_frame_in_every_format(inputs, tmp_path, tiny_model, capsys):
    video, folder = inputs
    out = tmp_path / "out"
    rc = main(["export", str(video), str(folder), "--out", str(out), "--model", str(tiny_model), "--video", *COMMON])
    assert rc == 0
    coco = json.loads((out / "clip.coco.json").read_text())
    assert len(coco["images"]) == 12 and len(coco["annotations"]) == 12
    assert [im["frame_index"] for im in coco["images"]] == list(range(12))
    assert coco["categories"][0]["keypoints"] == ["nose", "left_eye", "right_eye"]
    assert coco["categories"][0]["skeleton"] == [[1, 2], [1, 3]] and len(coco["annotations"][0]["keypoints"]) == 9
    lines = (out / "clip.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(12))
    rows = list(csv.reader(open(out / "clip.csv")))
    assert rows[0][0] == "scorer" and rows[1][1:4] == ["nose"] * 3 and rows[2][1:4] == ["x", "y", "likelihood"]
    assert len(rows) == 3 + 12
    folder_lines = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["file"] for r in folder_lines] == [f"f{i:02d}.png" for i in range(5)]
    import av

    with av.open(str(out / "clip.annotated.mp4")) as c:
        s = c.streams.video[0]
        assert s.frames == 12 and (s.width, s.height) == (128, 96)
        assert abs(float(s.average_rate) - 30) < 0.5
    assert not list(out.glob("*.partial*"))
    # a second run skips complete outputs; --overwrite redoes them
    capsys.readouterr()
    assert main(["export", str(video), "--out", str(out), "--model", str(tiny_model), "--video", *COMMON]) == 0
    assert "skipped, outputs complete" in capsys.readouterr().out
    assert main(["export", str(video), "--out", str(out), "--model", str(tiny_model), "--overwrite", *COMMON]) == 0
    assert "12 frames" in capsys.readouterr().out


def test_offline_smoothing_changes_tracks_but_keeps_every_frame(inputs, tmp_path, tiny_model):
    video, _ = inputs
    for mode in ("none", "offline"):
        assert (
            main(
                [
                    "export",
                    str(video),
                    "--out",
                    str(tmp_path / mode),
                    "--model",
                    str(tiny_model),
                    "--smooth",
                    mode,
                    "--format",
                    "jsonl",
                    *COMMON,
                ]
            )
            == 0
        )
    raw = [json.loads(x) for x in (tmp_path / "none" / "clip.jsonl").read_text().splitlines()]
    smooth = [json.loads(x) for x in (tmp_path / "offline" / "clip.jsonl").read_text().splitlines()]
    assert len(raw) == len(smooth) == 12
    # raw records are "measured" (state 0), offline ones went through the smoother (1 smoothed, 2/3 while hidden)
    states = [
        (a["keypoints"][n][3], a["keypoints"][n][4], b["keypoints"][n][4])
        for a, b in zip(raw, smooth)
        for n in ("nose", "left_eye", "right_eye")
    ]
    assert all(raw_state == (0 if vis else 3) for vis, raw_state, _ in states)
    assert all(smooth_state == 1 for vis, _, smooth_state in states if vis)
    assert all(smooth_state in (2, 3) for vis, _, smooth_state in states if not vis)


def test_truncated_video_exports_what_decodes_and_reports_the_rest(tmp_path, tiny_model, capsys):
    src = write_video(tmp_path / "src.mp4", frames=40)
    data = remux(src, tmp_path / "fast.mp4", options={"movflags": "faststart"}).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    rc = main(
        ["export", str(cut), "--out", str(tmp_path / "o"), "--model", str(tiny_model), "--format", "jsonl", *COMMON]
    )
    out = capsys.readouterr().out
    assert rc == 0
    n = len((tmp_path / "o" / "cut.jsonl").read_text().splitlines())
    assert 5 <= n < 40 and f"{40 - n} frame(s) listed in the file could not be read" in out


def test_bad_inputs_are_reported_and_the_rest_exported(inputs, tmp_path, tiny_model):
    """Inputs that exist but cannot be opened fail alone; the exit code is theirs, 4 as `rtkp run` gives (a missing
    input is refused before anything starts: tests/test_export_outputs.py)."""
    video, _ = inputs
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 5000)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cmd = [
        sys.executable,
        "-m",
        "rtkp",
        "export",
        str(empty),
        str(junk),
        str(video),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model),
        "--format",
        "csv",
        *COMMON,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 4, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 3 and "empty.mp4" in errors[0] and "junk.mp4" in errors[1]
    assert "2 of 3 input(s) failed" in errors[2]  # the summary, from the one place that maps errors to exit codes
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.csv", "clip.done.json"]  # no litter


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(inputs, tmp_path, tiny_model):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["export", str(inputs[0]), "--out", str(locked / "x"), "--model", str(tiny_model), *COMMON]) == 2


def test_unwritable_output_folder_even_as_root(inputs, tmp_path, tiny_model, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["export", str(inputs[0]), "--out", str(blocker / "x"), "--model", str(tiny_model), *COMMON]) == 2
    assert "not writable" in capsys.readouterr().err


class _Terminal(io.StringIO):
    """What `rtkp export` shows on stderr, noting at each progress-bar update which outputs exist at that moment."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.updates = outputs, []  # (description, n, total, outputs that exist)

    def write(self, text):
        for line in text.split("\r"):
            m = re.search(r"^(.*?):\s+\d+%.*\|\s*(\d+)/(\d+) \[", line.strip("\x1b[A\n "))
            if m:
                exist = {p.name for p in self.outputs if p.is_file()}
                self.updates.append((m.group(1), int(m.group(2)), int(m.group(3)), exist))
        return super().write(text)


def test_progress_reaches_100_percent_only_when_every_output_is_written(tmp_path, tiny_model, monkeypatch):
    video = write_video(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "out"
    names = ["clip.coco.json", "clip.jsonl", "clip.csv", "clip.annotated.mp4", "clip.done.json"]
    terminal = _Terminal([out / n for n in names])
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["export", str(video), "--out", str(out), "--model", str(tiny_model), "--video", "--smooth", "offline"]
    assert main([*args, "--backend", "onnxruntime", "--set", "run.threads=1"]) == 0
    updates = terminal.updates
    assert updates, f"no progress bar on stderr: {terminal.getvalue()[-500:]!r}"
    desc, n, total, _ = updates[-1]
    assert n == total, updates[-1]
    early = [u for u in updates if u[1] == u[2] and u[3] != set(names)]
    assert not early, f"100 % shown while outputs were missing: {early[0][:3]}, existing: {sorted(early[0][3])}"
    # and it covers the encoding of the annotated video: shown in progress, not at 100 %, after all frames tracked
    encoding = [u for u in updates if "encoding" in u[0]]
    assert encoding and all(12 <= n < total for _, n, total, _ in encoding)
