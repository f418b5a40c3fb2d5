"""`rtkp export` streams its records to disk while tracking and resumes an interrupted export where it stopped.

Real processes and signals: one export is interrupted with SIGINT once (module fixture); each test works on a copy of
what it left. Waits are on file contents, with deadlines.
"""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_model, wait_for, write_video

from rtkp.cli import main

FRAMES = 900
# batch 1: the same inputs reach the model in the same groups in every run, so bytes can be compared across runs
COMMON = ["--backend", "onnxruntime", "--set", "run.threads=1", "--set", "run.batch=1"]
OUTPUTS = ["long.coco.json", "long.jsonl", "long.csv"]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")


def _complete_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]  # the part after the last newline is not a whole record yet


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "long.mp4", frames=FRAMES)


@pytest.fixture(scope="module")
def reference(long_video, tiny_model, tmp_path_factory):
    """An uninterrupted export of the same video."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["export", str(long_video), "--out", str(out), "--model", str(tiny_model), "--quiet", *COMMON]) == 0
    return out


def _interrupt(cmd: list[str], out: Path, body: str = "jsonl", records: int = 30, name: str = "long") -> dict:
    """Start an export, wait until `records` records of `body` are on disk while it runs, then SIGINT it."""
    proc = subprocess.Popen([sys.executable, "-m", "rtkp", *cmd, "--quiet", *COMMON], stderr=subprocess.PIPE, text=True)
    path = out / f"{name}.partial" / f"{body}.partial"

    def enough():
        lines = _complete_lines(path)
        assert proc.poll() is None or len(lines) >= records, "the export ended before it was interrupted"
        return len(lines) >= records and lines

    try:
        seen = wait_for(enough, what=f"{records} records in {path.name}")
        running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return {"out": out, "seen": seen, "running": running, "rc": proc.returncode, "stderr": err}


@pytest.fixture(scope="module")
def interrupted(long_video, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("interrupted")
    return _interrupt(["export", str(long_video), "--out", str(out), "--model", str(tiny_model)], out)


def test_records_reach_the_disk_while_the_export_runs(interrupted):
    assert interrupted["running"], "the export had finished before its records were looked at"
    records = [json.loads(line) for line in interrupted["seen"]]
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert set(records[0]["keypoints"]) == {"nose", "left_eye", "right_eye"}


def test_interrupted_export_says_how_to_resume_and_keeps_only_partial_names(interrupted):
    err = interrupted["stderr"]
    assert interrupted["rc"] == 130 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "run the same command again to resume" in lines[0]
    assert [p.name for p in interrupted["out"].iterdir()] == ["long.partial"]
    kept = len(_complete_lines(interrupted["out"] / "long.partial" / "frames.partial"))
    assert 30 <= kept < FRAMES


def _resumed(interrupted, tmp_path, *extra):
    """Copy the interrupted export's folder, tear the last record of every body, and run the same export again."""
    out = tmp_path / "out"
    shutil.copytree(interrupted["out"], out)
    for body in ("jsonl", "csv", "coco", "frames"):
        with open(out / "long.partial" / f"{body}.partial", "a") as fh:
            fh.write('{"frame": 12, "pts"' if body != "frames" else "12")  # a record cut off mid-write
    return out


def test_resume_after_sigint_gives_the_same_bytes_as_an_uninterrupted_export(
    interrupted, reference, long_video, tiny_model, tmp_path, capsys
):
    out = _resumed(interrupted, tmp_path)
    kept = len(_complete_lines(out / "long.partial" / "frames.partial"))
    assert main(["export", str(long_video), "--out", str(out), "--model", str(tiny_model), "--quiet", *COMMON]) == 0
    assert f"resumed at frame {kept}" in capsys.readouterr().out
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs"
    segments = json.loads((out / "long.done.json").read_text())["result"]["segments"]
    # the second run decoded exactly the frames the first had not written: from `kept` on, each once
    assert segments[-1] == {"start": kept, "frames": FRAMES - kept}
    assert sum(s["frames"] for s in segments) >= FRAMES and not (out / "long.partial").exists()


def test_a_partial_export_from_another_model_is_not_reused(interrupted, long_video, tmp_path):
    out = _resumed(interrupted, tmp_path)
    other = make_tiny_model(tmp_path / "other", head="heatmap")
    assert main(["export", str(long_video), "--out", str(out), "--model", str(other), "--quiet", *COMMON]) == 0
    result = json.loads((out / "long.done.json").read_text())["result"]
    assert result["segments"] == [{"start": 0, "frames": FRAMES}]
    assert len((out / "long.jsonl").read_text().splitlines()) == FRAMES


def test_a_partial_export_with_other_settings_is_not_reused(interrupted, long_video, tiny_model, tmp_path):
    from rtkp.export.partial import Partial

    out = _resumed(interrupted, tmp_path)
    partial = out / "long.partial"
    settings = json.loads((partial / "settings.json").read_text())
    assert Partial(partial, settings, ()).matches()
    for key, value in [("input", {"size": 1, "mtime_ns": 2}), ("smooth", "causal"), ("video", True)]:
        assert not Partial(partial, dict(settings, **{key: value}), ()).matches(), key
    args = ["export", str(long_video), "--out", str(out), "--model", str(tiny_model), "--quiet", *COMMON]
    assert main([*args, "--smooth", "offline"]) == 0
    assert json.loads((out / "long.done.json").read_text())["result"]["segments"] == [{"start": 0, "frames": FRAMES}]


@pytest.mark.parametrize("smooth", ["causal", "offline"])
def test_resume_keeps_smoothed_tracks_identical(smooth, long_video, tiny_model, tmp_path):
    """The causal filter's state is rebuilt by replaying what was written; offline smoothing runs over all of it."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    manifest = json.loads((model / "manifest.json").read_text())
    # this random model's score - clutter sits near -0.120, -0.163, -0.048: one keypoint flickers, one is always seen
    (model / "manifest.json").write_text(json.dumps(dict(manifest, visibility_margin=-0.1205)))
    args = ["export", str(long_video), "--model", str(model), "--smooth", smooth, "--format", "jsonl,csv,coco"]
    assert main([*args, "--out", str(tmp_path / "reference"), "--quiet", *COMMON]) == 0
    run = _interrupt([*args, "--out", str(tmp_path / "out")], tmp_path / "out", "frames", records=100)
    assert run["rc"] == 130 and len(_complete_lines(tmp_path / "out" / "long.partial" / "frames.partial")) < FRAMES
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet", *COMMON]) == 0
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    records = [json.loads(line) for line in (tmp_path / "out" / "long.jsonl").read_text().splitlines()]
    states = {state for r in records for *_, state in r["keypoints"].values()}
    assert {1, 3} <= states, f"the smoother had nothing to do: states {states}"


def test_inputs_of_the_same_name_resume_under_their_own_names(long_video, reference, tiny_model, tmp_path):
    """d1/long.mp4 and d2/long.mp4 are exported as d1__long.* and d2__long.* (rtkp.export.targets), and so are
    their partial folders: an interrupted export of both resumes each under its own name."""
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        shutil.copy2(long_video, tmp_path / folder / "long.mp4")
    out = tmp_path / "out"
    inputs = [str(tmp_path / "d1" / "long.mp4"), str(tmp_path / "d2" / "long.mp4")]
    args = ["export", *inputs, "--out", str(out), "--model", str(tiny_model), "--format", "jsonl,csv"]
    run = _interrupt(args, out, name="d1__long")
    assert run["rc"] == 130 and [p.name for p in out.iterdir()] == ["d1__long.partial"], run["stderr"]
    assert main([*args, "--quiet", *COMMON]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{suffix}" for stem in ("d1__long", "d2__long") for suffix in (".jsonl", ".csv", ".done.json")
    )
    for stem in ("d1__long", "d2__long"):
        for suffix in (".jsonl", ".csv"):
            assert (out / f"{stem}{suffix}").read_bytes() == (reference / f"long{suffix}").read_bytes(), stem + suffix
    segments = json.loads((out / "d1__long.done.json").read_text())["result"]["segments"]
    assert len(segments) == 2 and segments[1]["start"] > 0  # resumed, not started over


def test_an_interrupted_export_of_another_input_of_the_same_name_is_kept(interrupted, long_video, tiny_model, tmp_path):
    """`<out>/long.partial/` holds another input's unfinished records: refused in one line, kept; --overwrite drops
    it (an unfinished export of the same input with other settings starts over: tests above)."""
    out = _resumed(interrupted, tmp_path)
    other = tmp_path / "other" / "long.mp4"
    other.parent.mkdir()
    shutil.copy2(long_video, other)
    before = sorted((p.name, p.stat().st_size) for p in (out / "long.partial").iterdir())
    cmd = [sys.executable, "-m", "rtkp", "export", str(other), "--out", str(out), "--model", str(tiny_model)]
    res = subprocess.run([*cmd, "--quiet", *COMMON], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "unfinished export of another input" in line and str(long_video.resolve()) in line
    assert sorted((p.name, p.stat().st_size) for p in (out / "long.partial").iterdir()) == before
    assert main([*cmd[3:], "--quiet", "--overwrite", *COMMON]) == 0
    done = json.loads((out / "long.done.json").read_text())
    assert done["settings"]["source"] == str(other.resolve()) and done["result"]["segments"][0]["start"] == 0
