"""Compatibility name for the stream's Python subscriber: `from rtkp.client import Subscriber` keeps working (every
public name this module had before rtkp.wire existed is still here).

Both ends of the stream live in rtkp.wire; new code imports from there (`from rtkp.wire import Subscriber`).
"""

from rtkp.errors import RtkpError
from rtkp.wire import (
    SCHEMA_VERSION,
    Instance,
    Keypoint,
    KeypointMessage,
    ProtocolError,
    StreamTimeout,
    Subscriber,
    load_key,
    write_keys,
)

__all__ = [
    "SCHEMA_VERSION",
    "Instance",
    "Keypoint",
    "KeypointMessage",
    "ProtocolError",
    "RtkpError",
    "StreamTimeout",
    "Subscriber",
    "load_key",
    "write_keys",
]
