"""The shipped mouse model on the real mouse video gives the same records however it is exported: locally (default
threads) twice, with one ONNX Runtime thread and another batch size, interrupted and resumed, and through Ray.

The cut is a stream copy of the video from a later keyframe: without the stream's first packet FFmpeg cannot apply
its workaround for this x264 build, and conceals errors in many frames. With frame threads that concealment differed
from one decode to the next (a 200-frame cut: 4 of 6 JSONL/CSV files of three cuts differed between two identical
exports), so the export decodes with slice threads only (rtkp.pipeline.sources.Source, frame_threads).
"""

import logging
import os
import signal
import threading

import pytest
from conftest import DLC_MOUSE, wait_for
from test_cluster import import_ray

from rtkp.cli import main

MODEL = os.path.join(os.path.dirname(__file__), "..", "engines", "dlc_mouse_coke")
VIDEO = DLC_MOUSE / "videos" / "m3v1mp4.mp4"
KEYFRAME, FRAMES = 797, 120  # a keyframe of the video after its first, and the cut's length
FILES = ("cut.jsonl", "cut.csv")

pytestmark = pytest.mark.skipif(not VIDEO.is_file(), reason="needs ../shared/data/dlc_openfield_mouse")


def stream_copy(src, dst, first: int, frames: int):
    """Packets of frames [first, first + frames) of `src` (first a keyframe), copied into `dst` without decoding."""
    import av

    with av.open(str(src)) as c:
        pts = sorted(p.pts for p in c.demux(video=0) if p.pts is not None)
    lo, hi = pts[first], pts[first + frames]
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(c.streams.video[0]):
            if packet.pts is not None and lo <= packet.pts < hi:
                packet.stream = stream
                out.mux(packet)
    return dst


def _export(video, out, *extra):
    args = ["export", str(video), "--out", str(out), "--model", MODEL, "--format", "jsonl,csv", "--quiet"]
    return main([*args, "--backend", "onnxruntime", *extra])


def _same(got, want):
    for name in FILES:
        assert (got / name).read_bytes() == (want / name).read_bytes(), f"{got.name}/{name} differs"


def test_the_mouse_model_gives_the_same_records_locally_resumed_and_on_ray(tmp_path):
    import av

    cut = stream_copy(VIDEO, tmp_path / "cut.mp4", KEYFRAME, FRAMES)
    with av.open(str(cut)) as c:
        assert sum(f.is_corrupt for f in c.decode(video=0)) > 0, "the cut no longer decodes with concealed errors"
    assert _export(cut, tmp_path / "local") == 0
    assert _export(cut, tmp_path / "again") == 0
    _same(tmp_path / "again", tmp_path / "local")
    assert _export(cut, tmp_path / "threads1", "--set", "run.threads=1", "--set", "run.batch=3") == 0
    _same(tmp_path / "threads1", tmp_path / "local")

    # interrupted (as by Ctrl-C) after some frames, then resumed by the same command
    ledger = tmp_path / "resumed" / "cut.partial" / "frames.partial"

    def interrupt():
        wait_for(lambda: ledger.is_file() and len(ledger.read_text().splitlines()) >= FRAMES // 3, what="frames")
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    assert _export(cut, tmp_path / "resumed") == 130
    thread.join(5)
    assert _export(cut, tmp_path / "resumed") == 0
    _same(tmp_path / "resumed", tmp_path / "local")

    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        assert _export(cut, tmp_path / "ray", "--ray", "auto", "--workers", "2", "--chunk-frames", "1") == 0
    finally:
        ray.shutdown()
    _same(tmp_path / "ray", tmp_path / "local")
