"""Every subcommand with bad path arguments: a file where a folder is expected and the reverse, a missing parent
folder of an output file, an unwritable folder, an unknown endpoint scheme, a key name that leaves its folder.
Each must fail before any work, with one line on stderr, a non-zero exit, no traceback, and no new file anywhere
(issue 26, item 7). `--out` folders are still created with their parents (the README relies on it).

The real CLI runs in-process (`rtkp.cli.main`, its output and that of any process it starts captured at the file
descriptors); a few cases run as their own process, where the process boundary is the point."""

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_dlc_project, write_video

from rtkp.cli import main

UNWRITABLE = "/proc"  # a folder in which nobody, root included, can create a file

# (arguments, a word the one line must contain); {name} are the files of the `place` fixture
CASES = [
    # train: an output folder that is a file, under a file, where nothing can be written; inputs of the wrong kind
    ("train --data {proj} --out {afile}", "--out"),
    ("train --data {proj} --out {afile}/model", "--out"),
    ("train --data {proj} --out {unwritable}/model", "--out"),
    ("train --data {proj} --out new --config {adir}", "--config"),
    ("train --data {proj} --out new --split {adir}", "--split"),
    ("train --data {proj} --out new --split missing.json", "--split"),
    ("train --data {missing} --out new", "missing"),
    # eval: output files whose folder is missing, that are folders, with a suffix nothing writes; inputs
    ("eval --model {model} --data {proj} --json missing/r.json", "--json"),
    ("eval --model {model} --data {proj} --json {adir}", "--json"),
    ("eval --model {model} --data {proj} --json {unwritable}/r.json", "--json"),
    ("eval --model {model} --data {proj} --plot r.xyz", "--plot"),
    ("eval --model {model} --data {proj} --plot missing/r.png", "--plot"),
    ("eval --model {afile} --data {proj}", "--model"),
    ("eval --model {model} --data {proj} --occlusion --occluders {afile}", "--occluders"),
    ("eval --model {model} --data {proj} --split {adir}", "--split"),
    # build-engine
    ("build-engine --model {afile}", "--model"),
    ("build-engine --model {missing}", "missing"),
    # run: output files, endpoints, CURVE key files and folders, the config
    ("run --source {clip} --model {model} --headless --publish none --record missing/x.mp4", "--record"),
    ("run --source {clip} --model {model} --headless --publish none --record {adir}", "--record"),
    ("run --source {clip} --model {model} --headless --publish none --record {unwritable}/x.mp4", "--record"),
    ("run --source {clip} --model {model} --headless --publish none --json missing/x.json", "--json"),
    ("run --source {clip} --model {model} --headless --publish foo://bar", "--publish"),
    ("run --source {clip} --model {model} --headless --publish 127.0.0.1:5555", "--publish"),
    ("run --source {clip} --model {model} --headless --publish none --control foo://bar", "--control"),
    ("run --source {clip} --model {model} --headless --publish ipc://missing/x.sock", "--publish"),
    ("run --source {clip} --model {afile} --headless --publish none", "--model"),
    ("run --source {clip} --model {model} --headless --publish none --config {adir}", "--config"),
    ("run --source {clip} --model {model} --headless --curve-key {adir} --curve-clients {adir}", "--curve-key"),
    ("run --source {clip} --model {model} --headless --curve-key {secret} --curve-clients {afile}", "--curve-clients"),
    ("run --source {missing} --model {model} --headless --publish none", "missing"),
    # export
    ("export {clip} --out {afile} --model {model}", "--out"),
    ("export {clip} --out {unwritable}/out --model {model}", "--out"),
    # target, synth
    ("target --out missing/t.png", "--out"),
    ("target --out {unwritable}/t.png", "--out"),
    ("synth --out {afile} --images 1 --quiet", "--out"),
    ("synth --out {afile}/set --images 1 --quiet", "--out"),
    ("synth --out {unwritable}/set --images 1 --quiet", "--out"),
    # bench: its JSON is written after minutes of measuring
    ("bench --source {clip} --model {model} --seconds 1 --json missing/b.json", "--json"),
    ("bench --source {clip} --model {afile} --seconds 1", "--model"),
    # subscribe, keys
    ("subscribe --endpoint foo://bar --timeout 1", "--endpoint"),
    ("subscribe --endpoint 127.0.0.1:5555 --timeout 1", "--endpoint"),
    ("subscribe --timeout 1 --server-key {missing} --client-key {secret}", "--server-key"),
    ("subscribe --timeout 1 --server-key {public} --client-key {adir}", "--client-key"),
    ("keys --out {afile}", "--out"),
    ("keys --out {afile}/keys", "--out"),
    ("keys --out {unwritable}/rtkp_keys", "--out"),
    ("keys --out keys --name ../../evil", "--name"),
    ("keys --out keys --name sub/evil", "--name"),
    ("keys --out keys --name ''", "--name"),
    # keypoints: offline (a model folder in, a new one out) and live (an endpoint)
    ("keypoints list --model {afile}", "--model"),
    ("keypoints rename nose snout --model {model} --out {afile}", "--out"),
    ("keypoints rename nose snout --model {model} --out {unwritable}/m", "--out"),
    ("keypoints add paw --model {model} --data {missing} --out new", "missing"),
    ("keypoints rename nose snout --model {model} --out {proj}", "--overwrite"),
    ("keypoints list --control foo://bar --timeout 1", "--control"),
    ("keypoints list --control tcp://127.0.0.1:9 --server-key {adir} --client-key {secret}", "--server-key"),
    ("keypoints add paw --control tcp://127.0.0.1:9 --timeout 1 --image {adir} --xy 1,1", "adir"),
]
if importlib.util.find_spec("tensorrt") is None:  # said before the ONNX export, which wrote into the model folder
    CASES.append(("build-engine --model {model} --backend tensorrt", "tensorrt"))
if os.geteuid() != 0:  # root writes in a folder without write permission; /proc above stands for it then
    CASES += [
        ("eval --model {model} --data {proj} --json {readonly}/r.json", "--json"),
        ("train --data {proj} --out {readonly}/model", "--out"),
        ("keys --out {readonly}/keys", "--out"),
    ]


def listing(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.is_dir() or p.stat().st_size) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def place(tmp_path_factory, tiny_model):
    """A folder with one of each kind of thing a path argument can name: a file, a folder, a data set, a video,
    a model (a copy without its exported graphs: nothing may export them), CURVE keys."""
    from rtkp.wire import write_keys

    root = tmp_path_factory.mktemp("place")
    (root / "afile").write_text("not a folder\n")
    (root / "adir").mkdir()
    readonly = root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    write_dlc_project(root / "proj")
    write_video(root / "clip.mp4", frames=5)
    model = root / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("onnx", "exports.json", "engines"))
    public, secret = write_keys(root / "keys", "server")
    work = root / "work" / "deep"  # the current folder: ../../evil would land in `root`, inside the listing
    work.mkdir(parents=True)
    names = {"afile", "adir", "readonly", "proj", "clip.mp4", "model"}
    paths = {n.split(".")[0]: str(root / n) for n in names}
    paths.update(missing=str(root / "missing"), unwritable=UNWRITABLE, public=str(public), secret=str(secret))
    return root, work, paths


def one_line_failure(rc, err: str, word: str, argv) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc not in (0, None), f"rtkp {argv}: exit 0"
    assert "Traceback" not in err, f"rtkp {argv}: a traceback:\n{err}"
    assert len(lines) == 1, f"rtkp {argv}: {len(lines)} lines on stderr:\n{err}"
    assert word in lines[0], f"rtkp {argv}: the line does not name {word!r}: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("argv,word", CASES, ids=[c[0] for c in CASES])
def test_a_bad_path_fails_in_one_line_before_any_work(place, argv, word, capfd, monkeypatch):
    root, work, paths = place
    monkeypatch.chdir(work)
    argv = argv.format(**paths)
    before = listing(root)
    t0 = time.monotonic()
    rc = main(shlex.split(argv))
    out, err = capfd.readouterr()
    line = one_line_failure(rc, err, word.format(**paths), argv)
    assert listing(root) == before, f"rtkp {argv}: files appeared or changed: {set(listing(root)) ^ set(before)}"
    print(f"{time.monotonic() - t0:5.2f} s  {line}")


@pytest.mark.parametrize(
    "argv",
    [
        "run --source {clip} --model {model} --headless --publish none --record missing/x.mp4",
        "train --data {proj} --out {afile} --set train.steps=1",
    ],
)
def test_a_bad_path_fails_in_one_line_as_a_process(place, argv):
    """As its own process: the failure is the command's one line, not a traceback of a process it started."""
    root, work, paths = place
    argv = argv.format(**paths)
    before = listing(root)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "rtkp", *shlex.split(argv)]
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120, env=env)
    one_line_failure(done.returncode, done.stderr, "", argv)
    assert listing(root) == before


def test_out_folders_are_still_created_with_their_parents(place, capfd, monkeypatch):
    root, work, paths = place
    monkeypatch.chdir(work)
    assert main(["keys", "--out", "new/parents/keys", "--name", "me"]) == 0
    assert (work / "new/parents/keys/me.key").is_file() and (work / "new/parents/keys/me.key_secret").is_file()
    assert main(["target", "--out", "t.png", "--px-per-mm", "1"]) == 0 and (work / "t.png").is_file()
    shutil.rmtree(work / "new")
    (work / "t.png").unlink()
