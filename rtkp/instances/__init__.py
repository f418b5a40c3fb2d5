"""Several animals per frame: grouping a frame's peaks into animals (grouping), track ids across frames
(identity), and the Tracker's step that does both with smoothing per track (stage)."""
