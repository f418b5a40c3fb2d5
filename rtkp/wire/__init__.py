"""The ZeroMQ stream, both ends (docs/PROTOCOL.md): `from rtkp.wire import Subscriber`.

schema.py      topics, schema version, each message's encoder beside its decoder, the subscriber's records
curve.py       CURVE key files and socket set-up, for the stream and the control socket, server and client side
publisher.py   Publisher: the XPUB socket of `rtkp run --publish` (never blocks the pipeline)
subscriber.py  Subscriber: iterate decoded KeypointMessages, each with its Instances (animals) (pyzmq and msgpack
               only: no numpy, no pipeline)
"""

from rtkp.errors import ProtocolError, StreamTimeout
from rtkp.wire.curve import load_key, write_keys
from rtkp.wire.publisher import Publisher
from rtkp.wire.schema import SCHEMA_VERSION, Instance, Keypoint, KeypointMessage
from rtkp.wire.subscriber import Subscriber

__all__ = [
    "SCHEMA_VERSION",
    "Instance",
    "Keypoint",
    "KeypointMessage",
    "ProtocolError",
    "Publisher",
    "StreamTimeout",
    "Subscriber",
    "load_key",
    "write_keys",
]
