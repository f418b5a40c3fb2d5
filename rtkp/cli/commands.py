"""The table of `rtkp` subcommands: name -> function (parsed arguments in, exit code out).

One module per command family holds the commands; rtkp.cli.parsers builds their parsers and its `main` is the one
place where errors become exit codes. Each family module imports its heavy packages inside the command, so importing
this table stays cheap.
"""

from __future__ import annotations

from rtkp.cli.backends import cmd_bench, cmd_build_engine, cmd_doctor
from rtkp.cli.demo import cmd_synth, cmd_target
from rtkp.cli.export import cmd_export
from rtkp.cli.keypoints import cmd_keypoints
from rtkp.cli.run import cmd_run
from rtkp.cli.stream import cmd_keys, cmd_subscribe
from rtkp.cli.train import cmd_eval, cmd_train

COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "build-engine": cmd_build_engine,
    "run": cmd_run,
    "export": cmd_export,
    "target": cmd_target,
    "synth": cmd_synth,
    "bench": cmd_bench,
    "subscribe": cmd_subscribe,
    "keys": cmd_keys,
    "keypoints": cmd_keypoints,
    "doctor": cmd_doctor,
}
