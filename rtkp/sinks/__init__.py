"""Where finished frames go: one declared interface (live.Sink), every hook on it.

live.py      Sink, SinkSpec, SinkContext, SinkItem; publish, display, record and collect sinks
video.py     the annotated MP4 writer; draw.py: the overlay
"""
