"""Who owns what `rtkp export` writes: every output path belongs to exactly one input, a finished folder never mixes
settings, and every argument is checked before anything is written. Real videos, the real CLI in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_video

from rtkp.errors import ConfigError
from rtkp.export.targets import output_names

COMMON = ["--backend", "onnxruntime", "--quiet", "--set", "run.threads=1"]


def _export(*args, model, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rtkp", "export", *map(str, args), "--model", str(model), *COMMON]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def _video(path: Path, frames: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames=frames, seed=seed)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_markers_list_everything(out: Path) -> list[dict]:
    """Every file in `out` is a marker or an output that a marker lists; every listed output is there."""
    markers = [json.loads(p.read_text()) for p in out.glob("*.done.json")]
    listed = {Path(path).name for m in markers for path in m["result"]["outputs"].values()}
    others = {p.name for p in out.iterdir() if not p.name.endswith(".done.json")}
    assert others == listed, f"outputs not listed by a marker: {others - listed}; listed but missing: {listed - others}"
    return markers


def test_two_inputs_with_the_same_file_name_get_two_complete_sets(tmp_path, tiny_model):
    _video(tmp_path / "d1" / "clip.mp4", 8, seed=1)
    _video(tmp_path / "d2" / "clip.mp4", 11, seed=2)
    _video(tmp_path / "d2" / "other.mp4", 5, seed=3)
    out = tmp_path / "dup"
    res = _export("d1/clip.mp4", "d2/clip.mp4", "d2/other.mp4", "--out", out, model=tiny_model, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in out.iterdir())
    stems = ["d1__clip", "d2__clip", "other"]  # a name no other input shares stays as it was
    assert names == sorted(f"{s}{x}" for s in stems for x in (".coco.json", ".csv", ".done.json", ".jsonl"))
    for stem, source, frames in [("d1__clip", "d1/clip.mp4", 8), ("d2__clip", "d2/clip.mp4", 11)]:
        done = json.loads((out / f"{stem}.done.json").read_text())
        assert done["settings"]["source"] == str((tmp_path / source).resolve())
        assert len((out / f"{stem}.jsonl").read_text().splitlines()) == frames
        assert len((out / f"{stem}.csv").read_text().splitlines()) == 3 + frames
        assert len(json.loads((out / f"{stem}.coco.json").read_text())["images"]) == frames
    _assert_markers_list_everything(out)
    # the same command again: both skipped, nothing rewritten
    before = _files(out)
    res = _export("d1/clip.mp4", "d2/clip.mp4", "d2/other.mp4", "--out", out, model=tiny_model, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.count("skipped, outputs complete") == 3, res.stdout
    assert _files(out) == before


def test_ray_names_and_checks_outputs_as_the_local_export(tmp_path, tiny_model):
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":  # CI installs the [cluster] extra (as tests/test_cluster.py)
            raise
        pytest.skip("needs Ray: pip install -e '.[cluster]'")
    _video(tmp_path / "d1" / "clip.mp4", 8, seed=1)
    _video(tmp_path / "d2" / "clip.mp4", 11, seed=2)
    inputs = ["d1/clip.mp4", "d2/clip.mp4"]
    assert _export(*inputs, "--out", "local", model=tiny_model, cwd=tmp_path).returncode == 0
    ray_args = ["--ray", "auto", "--workers", "1"]
    res = _export(*inputs, "--out", "ray", *ray_args, model=tiny_model, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    local, ray_out = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(ray_out) and "d1__clip.jsonl" in local
    for name in local:
        if not name.endswith(".done.json"):  # the markers' timings differ
            assert local[name] == ray_out[name], name
    # other settings: refused before the cluster is even reached, the folder as it was
    res = _export(*inputs, "--out", "ray", "--format", "csv", *ray_args, model=tiny_model, cwd=tmp_path)
    assert res.returncode == 2 and "--overwrite" in _one_line(res)
    assert _files(tmp_path / "ray") == ray_out


def test_an_input_given_twice_is_exported_once(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.mp4", frames=6)
    out = tmp_path / "out"
    res = _export(video, "./clip.mp4", "*.mp4", "--out", out, "--format", "csv", model=tiny_model, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["clip.csv", "clip.done.json"]
    assert "exported 1 input(s)" in res.stdout


def test_output_names_never_collide():
    assert output_names(["a/clip.mp4", "b/other.mp4", "frames/"]) == ["clip", "other", "frames"]
    assert output_names(["x/d1/clip.mp4", "x/d2/clip.mp4"]) == ["d1__clip", "d2__clip"]
    assert output_names(["d/a/b/clip.mp4", "d/clip.mp4"]) == ["a__b__clip", "clip"]
    assert output_names(["v/clip.mp4", "v/clip.avi", "w/clip.mp4"]) == ["v__clip.mp4", "v__clip.avi", "w__clip"]
    assert output_names(["a/x/*.png", "b/x/*.png"]) == ["a__x_glob", "b__x_glob"]
    assert output_names(["d1/frames", "d2/frames/"]) == ["d1__frames", "d2__frames"]
    with pytest.raises(ConfigError, match="would write the same outputs"):
        output_names(["p/x_glob", "p/x/*.png"])  # a folder named like a glob's name, beside it: refused


def test_a_rerun_with_other_settings_never_leaves_a_mixed_folder(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.mp4", frames=10)
    out = tmp_path / "out"
    first = ["--smooth", "offline", "--format", "coco,jsonl", "--video"]
    assert _export(video, "--out", out, *first, model=tiny_model).returncode == 0
    made = _files(out)
    assert sorted(made) == ["clip.annotated.mp4", "clip.coco.json", "clip.done.json", "clip.jsonl"]
    # other settings: refused in one line, the folder as it was
    res = _export(video, "--out", out, "--format", "csv", model=tiny_model)
    assert res.returncode == 2
    line = _one_line(res)
    assert "--format coco,jsonl (now csv)" in line and "--smooth offline (now none)" in line and "--overwrite" in line
    assert _files(out) == made
    # --overwrite replaces them: only the new outputs and their marker are left, and it lists them
    res = _export(video, "--out", out, "--format", "csv", "--overwrite", model=tiny_model)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["clip.csv", "clip.done.json"]
    (marker,) = _assert_markers_list_everything(out)
    assert marker["settings"]["formats"] == ["csv"] and marker["settings"]["smooth"] == "none"
    # another input of the same name into the same folder: refused, not written over
    other = _video(tmp_path / "elsewhere" / "clip.mp4", 4, seed=5)
    res = _export(other, "--out", out, "--format", "csv", model=tiny_model)
    assert res.returncode == 2 and "from another input" in _one_line(res)
    assert len((out / "clip.csv").read_text().splitlines()) == 3 + 10


@pytest.mark.parametrize(
    "bad, code",
    [
        (["missing.mp4"], 4),  # no such file
        (["nothere/*.mp4"], 4),  # a pattern that matches nothing
        (["empty_folder"], 4),  # a folder without images
        (["--format", "coco,xml"], 2),
        (["--model", "no_model"], 5),
        (["--workers", "2"], 2),  # needs --ray
    ],
)
def test_a_bad_argument_creates_nothing_and_prints_one_line(bad, code, tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.mp4", frames=4)
    (tmp_path / "empty_folder").mkdir()
    args = [*bad, "clip.mp4"] if bad[0].startswith("--") else [video, *bad]
    model = tiny_model
    if "--model" in bad:
        args, model = [video], tmp_path / "no_model"
    before = sorted(p.name for p in tmp_path.iterdir())
    res = _export(*args, "--out", tmp_path / "out" / "nested", model=model, cwd=tmp_path)
    assert res.returncode == code, res.stderr
    line = _one_line(res)
    assert line.startswith("rtkp export: error:") and "tracking" not in res.stderr  # no progress bar either
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was created"


def test_an_unopenable_source_exits_as_it_does_from_run(tmp_path, tiny_model):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 5000)
    run = [sys.executable, "-m", "rtkp", "run", "--source", str(junk), "--model", str(tiny_model)]
    res_run = subprocess.run([*run, "--backend", "onnxruntime"], capture_output=True, text=True)
    res_export = _export(junk, "--out", tmp_path / "out", model=tiny_model)
    assert res_run.returncode == res_export.returncode == 4, (res_run.stderr, res_export.stderr)
    assert "junk.mp4" in res_export.stderr and "Traceback" not in res_export.stderr
    assert not list((tmp_path / "out").iterdir())


def test_export_help_states_every_default():
    res = subprocess.run([sys.executable, "-m", "rtkp", "export", "--help"], capture_output=True, text=True)
    text = " ".join(res.stdout.split())
    smooth = text[text.index("--smooth {none,causal,offline}", text.index("options:")) :]
    assert "(default)" in smooth.split("--overwrite")[0] and "none:" in smooth.split("--overwrite")[0]
