"""Compatibility name for the stream's Python subscriber: `from rtkp.client import Subscriber` keeps working.

The subscriber lives in rtkp.wire (both ends of the stream in one package); new code imports it from there.
"""

from rtkp.wire.subscriber import ProtocolError, StreamTimeout, Subscriber, load_key, write_keys

__all__ = ["ProtocolError", "StreamTimeout", "Subscriber", "load_key", "write_keys"]
