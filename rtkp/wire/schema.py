"""The stream's schema in one place (docs/PROTOCOL.md is its contract): topics, version, and each message's encoder
beside its decoder, so that a field is spelled here and nowhere else.

Both ends import this module: the publisher (rtkp.wire.publisher) encodes, the subscriber (rtkp.wire.subscriber)
decodes. It imports only msgpack (lazily) and rtkp.errors: a subscriber needs no numpy and no pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtkp.errors import ProtocolError

if TYPE_CHECKING:
    from rtkp.messages import KeypointFrame

SCHEMA_VERSION = 1  # changes only when a field changes meaning or disappears (docs/PROTOCOL.md, "Version policy")

KEYPOINTS, META, STATUS = "keypoints", "meta", "status"  # the last part of a topic: rtkp.<stream>.<kind>

# the keypoints header's fields in wire order (encode_keypoints writes exactly these); `kp` holds one
# [x, y, score, visible, state] list per keypoint, in the order of the `.meta` message's `keypoints`
KEYPOINTS_FIELDS = tuple("v stream seq frame pts capture_ns publish_ns model size kp dropped bank".split())
# a multi-instance stream's keypoints header (its `.meta` has `max_instances`) appends `instances`: one map per
# animal, in increasing track order, with exactly these keys (`kp` as above). Added within version 1: a version-1
# reader that ignores keys it does not know still reads `kp` (the first instance's keypoints, or all missing).
INSTANCES = "instances"
INSTANCE_FIELDS = ("track", "score", "kp")
REQUIRED = ("seq", "frame", "capture_ns", "publish_ns", "kp")  # a decoder needs these; the rest have defaults


def topic(stream: str, kind: str) -> bytes:
    """The topic frame of a message: rtkp.<stream>.<kind>."""
    return f"rtkp.{stream}.{kind}".encode()


def topic_prefix(stream: str | None) -> str:
    """What a subscriber subscribes to: one stream's messages (`rtkp.<stream>.`), or every stream's (`rtkp.`)."""
    return f"rtkp.{stream}." if stream else "rtkp."


def pack(header: dict) -> bytes:
    """The header frame: a msgpack map."""
    import msgpack

    return msgpack.packb(header, use_bin_type=True)


# ---- rtkp.<stream>.keypoints --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keypoint:
    """One keypoint in source pixels. state: 0 measured, 1 smoothed, 2 predicted while hidden, 3 missing."""

    name: str
    x: float
    y: float
    score: float
    visible: bool
    state: int


@dataclass(frozen=True)
class Instance:
    """One animal of a keypoints message: `track` stays with it from frame to frame; `score` is the mean score of its
    visible keypoints (−1 when none is visible); `keypoints` in the order of the names, as KeypointMessage.keypoints."""

    track: int
    score: float
    keypoints: tuple[Keypoint, ...]


def instance_score(keypoints: tuple[Keypoint, ...]) -> float:
    """The score of a single-instance stream's one animal, as the publisher computes it for several: the mean score
    of the visible keypoints, −1 when none is visible (rtkp.messages.instance_score, without numpy)."""
    seen = [k.score for k in keypoints if k.visible]
    return round(sum(seen) / len(seen), 5) if seen else -1.0


@dataclass(frozen=True)
class KeypointMessage:
    """One `rtkp.<stream>.keypoints` message, decoded (the subscriber's record; names from the stream's `.meta`)."""

    stream: str
    seq: int
    frame: int
    pts: float | None
    capture_ns: int
    publish_ns: int
    receive_ns: int
    model: str
    size: tuple[int, int]
    keypoints: tuple[Keypoint, ...]
    dropped: int
    bank: int = 0  # which set of keypoints (changes when keypoints are added, removed or renamed)
    instances: tuple[Instance, ...] | None = None  # None: a single-instance stream's one animal (filled in below)

    def __post_init__(self):
        if self.instances is None:  # a single-instance stream: its one animal is track 0 with the frame's keypoints
            one = Instance(0, instance_score(self.keypoints), self.keypoints)
            object.__setattr__(self, "instances", (one,))

    @property
    def latency_ms(self) -> float:
        """Capture -> receive, valid when publisher and subscriber share a clock (same machine)."""
        return (self.receive_ns - self.capture_ns) / 1e6


def encode_points(keypoints, scores, visible, state) -> list[list]:
    """(K, 2) positions and (K,) scores, visible, state -> `kp`: K lists [x, y, score, visible, state]."""
    return [
        [round(float(x), 3), round(float(y), 3), round(float(s), 5), bool(v), int(st)]
        for (x, y), s, v, st in zip(keypoints, scores, visible, state)
    ]


def encode_keypoints(kf: KeypointFrame, seq: int, stream: str, model_id: str, instances: bool = False) -> dict:
    """A KeypointFrame -> the msgpack-able header of its keypoints message (keys in KEYPOINTS_FIELDS order, then
    `instances` when asked: a multi-instance stream's frames carry every animal, a single-instance stream's frames
    keep exactly their old bytes)."""
    header = {
        "v": SCHEMA_VERSION,
        "stream": stream,
        "seq": seq,
        "frame": kf.index,
        "pts": kf.pts,
        "capture_ns": kf.capture_ns,
        "publish_ns": time.monotonic_ns(),
        "model": model_id,
        "size": list(kf.source_size),
        "kp": encode_points(kf.keypoints, kf.scores, kf.visible, kf.state),
        "dropped": kf.dropped,
        "bank": kf.bank_version,
    }
    if instances:
        header[INSTANCES] = [
            {
                "track": int(i.track),
                "score": round(float(i.score), 5),
                "kp": encode_points(i.keypoints, i.scores, i.visible, i.state),
            }
            for i in kf.instances
        ]
    return header


def decode_keypoints(header: dict, names: list[str], receive_ns: int) -> KeypointMessage:
    """A keypoints header whose names fit (`pairing` said FITS) -> the record handed to users. Fields that older
    publishers did not send get neutral defaults."""
    kps = decode_points(header["kp"], names)
    instances = header.get(INSTANCES)  # absent: a single-instance stream (or an older publisher): one animal
    if instances is not None:
        instances = tuple(decode_instance(i, names) for i in instances)
    return KeypointMessage(
        stream=header.get("stream", ""),
        seq=header["seq"],
        frame=header["frame"],
        pts=header.get("pts"),
        capture_ns=header["capture_ns"],
        publish_ns=header["publish_ns"],
        receive_ns=receive_ns,
        model=header.get("model", ""),
        size=tuple(header.get("size", (0, 0))),
        keypoints=kps,
        dropped=header.get("dropped", 0),
        bank=int(header.get("bank") or 0),
        instances=instances,
    )


def decode_instance(instance: dict, names: list[str]) -> Instance:
    """One map of a keypoints header's `instances` -> an Instance with the names that fit its keypoints."""
    return Instance(int(instance["track"]), float(instance["score"]), decode_points(instance["kp"], names))


def decode_points(kp: list, names: list[str]) -> tuple[Keypoint, ...]:
    """`kp` (K lists [x, y, score, visible, state]) with the names that fit them -> K Keypoints."""
    return tuple(Keypoint(n, p[0], p[1], p[2], bool(p[3]), int(p[4])) for n, p in zip(names, kp))


# how a keypoints message relates to the names of the newest `.meta` (docs/PROTOCOL.md, "Keypoint names")
FITS = "fits"  # same count, model and bank: pair them
OLDER = "older"  # a message of an older bank after the new names came: its names are gone, drop it
NEWER = "newer"  # a message of a newer bank whose `.meta` has not come yet: hold it
OTHER = "other"  # another model or keypoint count: these names are not its names


def pairing(header: dict, meta: dict) -> str:
    """FITS, OLDER, NEWER or OTHER: whether `meta`'s names may label this keypoints header."""
    names = meta.get("keypoints") or []
    model, meta_model = header.get("model"), meta.get("model")
    # the bank (which set of keypoints; publishers before it send none) must match too: a rename keeps the count
    bank, meta_bank = header.get("bank"), meta.get("bank")
    other_bank = bank is not None and meta_bank is not None and bank != meta_bank
    same_model = model == meta_model or not model or not meta_model
    if other_bank and same_model:
        return OLDER if bank < meta_bank else NEWER
    counts = [len(header["kp"])] + [len(i["kp"]) for i in header.get(INSTANCES) or ()]
    if any(n != len(names) for n in counts) or not same_model or other_bank:
        return OTHER
    return FITS


# ---- rtkp.<stream>.meta and rtkp.<stream>.status ------------------------------------------------------------------


def encode_meta(meta: dict, stream: str, model_id: str) -> dict:
    """The `.meta` header: the model's names, skeleton, … (`meta`) stamped with version, stream, model and bank."""
    header = dict(meta, v=SCHEMA_VERSION, stream=stream, model=model_id)
    header.setdefault("bank", 0)
    return header


def encode_meta_change(header: dict, names: list[str], skeleton, bank: int, added: dict) -> dict:
    """A `.meta` header after the keypoints changed (rtkp.control): new names and skeleton pairs, the new bank, and
    the keypoints added from shots ({name: shots})."""
    return dict(header, keypoints=list(names), skeleton=[list(p) for p in skeleton], bank=bank, added=dict(added))


def encode_status(status: dict, stream: str) -> dict:
    """The `.status` header: the pipeline's counters (`status`) stamped with version, stream and the send time."""
    return dict(status, v=SCHEMA_VERSION, stream=stream, publish_ns=time.monotonic_ns())


# ---- any message ---------------------------------------------------------------------------------------------------


def decode(parts: list[bytes]) -> tuple[str, dict]:
    """One received ZeroMQ message -> (kind: KEYPOINTS, META, STATUS or another topic's last part; header).
    Raises ProtocolError for what this version cannot read (frames missing, not msgpack, another schema version, a
    keypoints header without a required field)."""
    import msgpack

    if len(parts) < 2:
        raise ProtocolError(f"expected [topic, header] frames, got {len(parts)} frame(s)")
    name = parts[0].decode(errors="replace")
    try:
        header = msgpack.unpackb(parts[1], raw=False)
    except Exception as exc:
        raise ProtocolError(f"{name}: header is not msgpack ({exc})") from None
    version = header.get("v") if isinstance(header, dict) else None
    if version != SCHEMA_VERSION:
        raise ProtocolError(
            f"{name}: schema version {version!r}, this client reads version {SCHEMA_VERSION}; "
            "upgrade rtkp on the older side"
        )
    kind = name.rsplit(".", 1)[-1]
    if kind == KEYPOINTS and (missing := [f for f in REQUIRED if f not in header]):
        raise ProtocolError(f"{name}: header lacks {', '.join(missing)}")
    if kind == KEYPOINTS and not well_formed_instances(header.get(INSTANCES, [])):
        raise ProtocolError(f"{name}: `instances` is not a list of maps with {', '.join(INSTANCE_FIELDS)}")
    return kind, header


def well_formed_instances(instances) -> bool:
    """Whether a keypoints header's `instances` can be decoded: a list of maps, each with every INSTANCE_FIELDS key
    and a list `kp` (unknown keys are allowed: fields may be added within a version)."""
    if not isinstance(instances, list):
        return False
    return all(
        isinstance(i, dict) and all(f in i for f in INSTANCE_FIELDS) and isinstance(i["kp"], list) for i in instances
    )
