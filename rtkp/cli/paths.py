"""The checks of path and endpoint arguments that every command makes before it starts any work: a typo must cost
one line at once, not a traceback after the whole run (or a file written somewhere else).

- output_file: its folder exists and can be written in, and it is not a folder itself (nothing is created);
- output_folder: it is a folder or can be created as one, with its parents (the command creates it when it writes);
- input_file / input_folder: it is the right kind of thing (and, unless the reader says more, that it exists);
- endpoint: a ZeroMQ endpoint of a transport ZeroMQ knows here (tcp://HOST:PORT, ipc://PATH, ...);
- file_stem: a plain file name, no folder in it (a name must not lead a file out of its --out folder).

Each raises the error class it is given (ConfigError by default) with one line that names the flag, the path and the
fix. Nothing here writes a file that stays: whether a folder can be written in is asked by creating an anonymous
temporary file there, which is gone at once (the only test that holds for root and for read-only mounts too).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rtkp.errors import ConfigError

# transports that need nothing but libzmq itself, and those that need a build option (zmq.has(name))
SCHEMES = ("tcp", "ipc", "inproc", "tipc", "vmci")
OPTIONAL_SCHEMES = {"pgm": "pgm", "epgm": "pgm", "norm": "norm", "ws": "ws", "wss": "ws"}
ENDPOINT_HINT = "give tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555) or ipc:///PATH"


def cannot_write_in(folder: Path) -> str | None:
    """Why no file can be created in `folder` (None: one can)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def output_file(path: str | Path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """An output file's path, checked: `suffixes` (lower case, with the dot) when given, not a folder, and its folder
    exists and can be written in. Nothing is created: a missing folder is an error, not made for the user."""
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        endings = " or ".join(suffixes) if len(suffixes) < 3 else "one of " + ", ".join(suffixes)
        raise ConfigError(f"{flag} {path}: must end in {endings}")
    if p.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    folder = p.parent
    if not folder.exists():
        raise ConfigError(f"{flag} {path}: the folder {folder} does not exist (create it first, or name another)")
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: {folder} is a file, not a folder")
    why = cannot_write_in(folder)
    if why:
        raise ConfigError(f"{flag} {path}: cannot write in {folder} ({why})")
    return p


def output_folder(path: str | Path, flag: str) -> Path:
    """An output folder's path, checked: a folder, or nothing yet below a folder that can be written in (the command
    creates it, with any missing parents, when it writes). Nothing is created here."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path}: is a file; name a folder (it is created when missing)")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, so no folder can be made below it")
    why = cannot_write_in(existing)
    if why:
        raise ConfigError(f"{flag} {path}: cannot write in {existing} ({why})")
    return p


def input_file(path: str | Path, flag: str, error: type = ConfigError, must_exist: bool = True) -> Path:
    """An input file: not a folder, and (must_exist) there. must_exist=False leaves a missing file to its reader,
    whose message says more (e.g. what makes one)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{flag} {path}: is a folder; give a file")
    if must_exist and not p.exists():
        raise error(f"{flag} {path}: not found")
    return p


def input_folder(path: str | Path, flag: str, error: type = ConfigError, must_exist: bool = True) -> Path:
    """An input folder: not a file, and (must_exist) there; see input_file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise error(f"{flag} {path}: is a file; give a folder")
    if must_exist and not p.exists():
        raise error(f"{flag} {path}: folder not found")
    return p


def input_path(path: str | Path, flag: str, error: type = ConfigError) -> Path:
    """An input that may be a file or a folder (e.g. --data: a DeepLabCut folder or a COCO JSON): it exists."""
    p = Path(path)
    if not p.exists():
        raise error(f"{flag} {path}: not found")
    return p


def endpoint(text: str, flag: str, bind: bool = False) -> str:
    """A ZeroMQ endpoint of a transport this libzmq has; ConfigError otherwise (ZeroMQ's own error comes late, from
    another process, or as a traceback). bind: an ipc:// path must then lie in a folder that can be written in."""
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise ConfigError(f"{flag} {text!r}: not a ZeroMQ endpoint; {ENDPOINT_HINT}")
    if scheme in OPTIONAL_SCHEMES:
        import zmq

        if not zmq.has(OPTIONAL_SCHEMES[scheme]):
            raise ConfigError(f"{flag} {text!r}: this ZeroMQ has no {scheme}:// transport; {ENDPOINT_HINT}")
    elif scheme not in SCHEMES:
        raise ConfigError(f"{flag} {text!r}: {scheme}:// is not a ZeroMQ transport; {ENDPOINT_HINT}")
    if scheme == "tcp":
        port = rest.rpartition(":")[2]
        if not (port.isdigit() or port == "*") or ":" not in rest:
            raise ConfigError(f"{flag} {text!r}: a tcp endpoint needs a port, as in tcp://127.0.0.1:5555")
    if scheme == "ipc" and bind and not rest.startswith("@"):  # @name: Linux's abstract namespace, no file
        output_file(rest, flag)
    return text


def file_stem(name: str, flag: str) -> str:
    """A plain file name (no folder, not '.' or '..'): what a command adds its suffixes to inside its --out."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise ConfigError(f"{flag} {name!r}: give a plain file name such as rtkp (the folder is --out)")
    return name


def write_text(path: str | Path, flag: str, text: str) -> None:
    """Write an output file checked by output_file at the start; ConfigError in one line if it still fails (its
    folder went away while the command ran)."""
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None
