"""File helpers shared by model folders, exports and engine caches (no heavy imports).

Every file rtkp writes that a reader may open while it is being written goes through `atomic` (or one of the
wrappers below): it is written under a temporary name beside the target and renamed into place, so a reader, a
resumed export or a crash never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open `<path>.tmp` for writing ("w" text or "wb" bytes); on a clean exit it replaces `path`, on an error it is
    removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as fh:
            yield fh
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_atomic(path: str | Path, data: str | bytes | Iterable[str]) -> None:
    """Write text, bytes or an iterable of text chunks to `path` atomically."""
    with atomic(path, "wb" if isinstance(data, bytes) else "w") as fh:
        if isinstance(data, (str, bytes)):
            fh.write(data)
        else:
            fh.writelines(data)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON (indented, newline-terminated) atomically."""
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
