"""The multi-process runner: it moves frames and typed messages, nothing else (what a frame becomes is rtkp.tracker's).

run.py        RunOptions, run_pipeline: starts, watches and stops the three processes; owns the frame ring
decode.py     the decode process: a Source into the channel (the only place a run opens its source)
infer.py      the inference process: batches → the whole Tracker → KeypointFrames; serves control requests between
              batches (the keypoint set and its smoothing tracks live here)
post.py       the post process: finished KeypointFrames → the sinks; counters, progress
shm.py        the shared-memory frame ring and the two named policies (LatestChannel, LosslessChannel)
sources.py    Source: frames from cameras, files, streams, image folders, lavfi (source_spec.py: what --source names;
              containers.py: opening PyAV containers, a file's frame table)
stats.py      rolling latency percentiles and the post stage's counters
"""
