"""`import rtkp` and `rtkp --help` must stay light: no torch, av, zmq or ray."""

import subprocess
import sys

HEAVY = ("torch", "av", "zmq", "cv2", "ray")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_rtkp_is_light():
    mods = _loaded_after("import rtkp")
    assert not [m for m in HEAVY if m in mods]


def test_help_is_light():
    code = "import contextlib, io\nfrom rtkp.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
    code += "    try:\n        main(['--help'])\n    except SystemExit:\n        pass"
    mods = _loaded_after(code)
    assert not [m for m in HEAVY if m in mods]


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "rtkp", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "train" in out.stdout and "eval" in out.stdout
