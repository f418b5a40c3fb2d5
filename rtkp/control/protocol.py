"""The control protocol: one msgpack map per request, one per reply (docs/PROTOCOL.md, "Control").

Requests are parsed into frozen dataclasses here (and nowhere else), so everything after parsing can trust their
fields. A request that cannot be parsed raises ControlError with the reply's `code`; `error_reply` turns it into the
reply. Imports only msgpack (the thin `rtkp keypoints` client must start fast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rtkp.errors import ControlError

VERSION = 1
OPS = ("add", "remove", "rename", "list", "save")
MAX_SAMPLES = 32
MAX_REQUEST_BYTES = 64 << 20  # the socket's ZMQ_MAXMSGSIZE: a larger message is refused by ZeroMQ itself

# reply codes besides "ok": what a client may branch on (messages are for people)
CODES = (
    "bad_request",  # malformed: not msgpack, not a map, a field missing or of the wrong type, an unknown op
    "not_ready",  # the model is still loading (or the run is ending): ask again
    "bad_image",  # an image that does not decode, or a frame `seq`/`frame` no longer (or never) held
    "outside",  # a point outside its image
    "duplicate",  # the name is taken
    "full",  # the model's graph has no free prototype row (max_keypoints)
    "unknown_keypoint",  # no keypoint has that name
    "unsupported",  # this model cannot do it (a heatmap model has no prototypes)
    "failed",  # it could not be done (e.g. the save folder cannot be written); the message says why
)


@dataclass(frozen=True)
class Sample:
    """One shot: a point (x, y) in source pixels of an image sent with the request (`image`: encoded bytes, PNG or
    JPEG) or of a recent frame of the stream (`seq`: the keypoints message's seq, or `frame`: its frame index)."""

    x: float
    y: float
    image: bytes | None = None
    seq: int | None = None
    frame: int | None = None


@dataclass(frozen=True)
class Add:
    """Add keypoint `name` from samples; extend=True adds the samples as more shots to an added keypoint instead."""

    name: str
    samples: tuple[Sample, ...]
    extend: bool = False


@dataclass(frozen=True)
class Remove:
    """Remove keypoint `name`; shot=True removes only its latest shot (an added keypoint with two or more shots)."""

    name: str
    shot: bool = False


@dataclass(frozen=True)
class Rename:
    name: str
    to: str


@dataclass(frozen=True)
class List:
    pass


@dataclass(frozen=True)
class Save:
    """Write the current keypoints as a model folder `out` (a path on the machine that runs `rtkp run`)."""

    out: str
    overwrite: bool = False


Request = Add | Remove | Rename | List | Save


def _field(msg: dict, key: str, kinds, what: str, default=...):
    if key not in msg:
        if default is ...:
            raise ControlError("bad_request", f"`{key}` is missing ({what})")
        return default
    value = msg[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        raise ControlError("bad_request", f"`{key}` must be {what}, got {type(value).__name__}")
    return value


def _tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _number(msg: dict, key: str) -> float:
    value = _field(msg, key, (int, float), "a number (source pixels)")
    if not math.isfinite(value):
        raise ControlError("outside", f"`{key}` = {value} is not a finite number")
    return float(value)


def _sample(raw) -> Sample:
    if not isinstance(raw, dict):
        raise ControlError(
            "bad_request", f"each sample must be a map with x, y and image, seq or frame; got {raw!r:.60}"
        )
    x, y = _number(raw, "x"), _number(raw, "y")
    given = [k for k in ("image", "seq", "frame") if k in raw]
    if len(given) != 1:
        raise ControlError("bad_request", "each sample needs exactly one of `image` (bytes), `seq` or `frame` (int)")
    if given[0] == "image":
        return Sample(x, y, image=_field(raw, "image", bytes, "the encoded image (PNG or JPEG bytes)"))
    return Sample(x, y, **{given[0]: _field(raw, given[0], int, "an integer")})


def parse_request(payload: bytes) -> tuple[object, Request]:
    """One request frame -> (its `id`, echoed in the reply; the typed request). Raises ControlError."""
    import msgpack

    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ControlError("bad_request", f"a request is one msgpack map ({type(exc).__name__})") from None
    if not isinstance(msg, dict):
        raise ControlError("bad_request", f"a request is one msgpack map, got {type(msg).__name__}")
    rid = msg.get("id")
    try:
        if msg.get("v", VERSION) != VERSION:
            raise ControlError("bad_request", f"protocol version {msg.get('v')!r}, this rtkp speaks {VERSION}")
        op = msg.get("op")
        if op not in OPS:
            raise ControlError("bad_request", f"unknown op {op!r} (known: {', '.join(OPS)})")
        return rid, _parse(op, msg)
    except ControlError as exc:
        exc.request_id = rid
        raise


def _parse(op: str, msg: dict) -> Request:
    if op == "list":
        return List()
    if op == "save":
        out = _field(msg, "out", str, "a folder path")
        return Save(out, _field(msg, "overwrite", bool, "true or false", False))
    name = _field(msg, "name", str, "the keypoint's name")
    if op == "remove":
        return Remove(name, _field(msg, "shot", bool, "true or false", False))
    if op == "rename":
        return Rename(name, _field(msg, "to", str, "the new name"))
    samples = _field(msg, "samples", list, "a list of samples")
    if not 1 <= len(samples) <= MAX_SAMPLES:
        raise ControlError("bad_request", f"`samples` must hold 1 to {MAX_SAMPLES} samples, got {len(samples)}")
    return Add(name, tuple(_sample(s) for s in samples), _field(msg, "extend", bool, "true or false", False))


def encode(msg: dict) -> bytes:
    import msgpack

    return msgpack.packb(msg, use_bin_type=True)


def reply(request_id, **fields) -> dict:
    """A success reply."""
    return {"v": VERSION, "id": request_id, "ok": True, **fields}


def error_reply(request_id, exc: ControlError) -> dict:
    return {"v": VERSION, "id": request_id, "ok": False, "code": exc.code, "error": str(exc)}


def request(op: str, request_id=None, **fields) -> bytes:
    """Encode a request (what ControlClient sends)."""
    return encode({"v": VERSION, "op": op, "id": request_id, **fields})
