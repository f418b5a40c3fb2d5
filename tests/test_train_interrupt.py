"""Ctrl-C (or SIGTERM) during `rtkp train` keeps every completed step: a checkpoint is saved, one line says how many
steps and the command that resumes, exit 130; that command resumes from there and says so.

Real processes and signals on a toy training (tests/conftest.py's SMALL_TRAIN); waits are on the progress output, with
deadlines.
"""

import json
import re
import shlex
import signal
import subprocess
import sys
import threading

import pytest
from conftest import SMALL_TRAIN, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")

STEPS = 200  # far more than run before the signal; no periodic checkpoint comes before it either
TRAIN = [*SMALL_TRAIN, "--set", f"train.steps={STEPS}", "--set", "train.checkpoint_every=100"]


def _rtkp(words: list[str]) -> list[str]:
    return [sys.executable, "-u", "-m", "rtkp", *words]


def _interrupt(project, out, signum) -> dict:
    """Start a training, wait until its progress bar shows a finished step, send `signum`, wait for the exit."""
    cmd = _rtkp(["train", "--data", str(project), "--out", str(out), *TRAIN])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()

    def a_step_done():
        assert proc.poll() is None, "the training ended before it was interrupted: " + "".join(err)
        found = [int(n) for n in re.findall(rf"\b(\d+)/{STEPS}\b", "".join(err))]
        return max(found, default=0) >= 1 and max(found)

    try:
        seen = wait_for(a_step_done, timeout=240, what="the first training step in the progress bar")
        out_there = out.is_dir()
        proc.send_signal(signum)
        rc = proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        proc.kill()
    stdout = proc.stdout.read()
    return {"seen": seen, "out_there": out_there, "rc": rc, "stderr": "".join(err), "stdout": stdout}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_training_saves_its_steps_and_says_how_to_resume(dlc_project, tmp_path, signum):
    out = tmp_path / "runs" / "not" / "yet" / "m"  # parents missing: created, like the folder, before the first step
    run = _interrupt(dlc_project, out, signum)
    assert run["out_there"], "--out did not exist while the first steps ran"
    assert run["rc"] == 130, run["stderr"]
    assert "Traceback" not in run["stderr"]
    last = run["stderr"].replace("\r", "\n").strip().splitlines()[-1]
    name = signal.Signals(signum).name
    match = re.fullmatch(
        rf"rtkp train: error: training stopped by {name}: (\d+) of {STEPS} steps saved in (.+); resume with: (.+)", last
    )
    assert match, last
    saved, where, command = int(match[1]), match[2], match[3]
    assert saved >= run["seen"] and where == str(out / "checkpoint")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == saved
    assert (out / "checkpoint" / "state.safetensors").is_file()
    if signum != signal.SIGINT:
        return
    # the command given resumes from the saved step, and --stop-after counts the steps of the resumed run
    words = shlex.split(command)
    assert words[:2] == ["rtkp", "train"]
    resumed = subprocess.run(
        _rtkp([*words[1:], "--stop-after", "2", "--quiet"]), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {saved} of {STEPS} (checkpoint in {out / 'checkpoint'})" in resumed.stdout
    assert f"stopped after 2 more step(s), at step {saved + 2} of {STEPS} (resumed from step {saved})" in resumed.stdout
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == saved + 2
