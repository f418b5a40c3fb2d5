"""rtkp: real-time keypoint tracking with CoKe features.

Importing rtkp loads no heavy package (torch, av, zmq): commands and backends import what they need when they run.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
