"""Teaching a running tracker: the control socket of `rtkp run --control ENDPOINT` (docs/PROTOCOL.md, "Control").

protocol.py  requests and replies on the wire (msgpack maps), parsed into typed requests; no torch, no numpy needed
client.py    ControlClient: what `rtkp keypoints … --control`, the live window and scripts use
server.py    ControlServer: the socket, in a thread of the inference process; answers what it can at once
editor.py    KeypointEditor: carries requests out between two batches of the inference stage
"""
