"""Decoding from frame N (Source(spec, start=N)) gives exactly frames N.. of a full decode: index, PTS and pixels.

Videos with B-frames and several GOPs (libx264's default B-frames, a keyframe every 12 frames) in MP4 and as an
MPEG-TS copy, a conftest clip, image folders and lavfi graphs.
"""

import cv2
import numpy as np
import pytest
from conftest import remux, render_scene, write_video

from rtkp.pipeline import containers
from rtkp.pipeline.sources import Source, frame_table, parse_source


def write_gop_video(path, frames: int = 75, gop: int = 12):
    """testsrc2 (smooth motion, so x264 uses B-frames and no scene cuts) in libx264 with a keyframe every `gop`."""
    import av

    with av.open("testsrc2=size=128x96:rate=30", format="lavfi") as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.gop_size = gop
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            image = frame.to_ndarray(format="rgb24")
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("seek")
    mp4 = write_gop_video(root / "gop.mp4")
    return {
        "mp4": mp4,
        "mpegts": remux(mp4, root / "gop.ts", fmt="mpegts"),
        "conftest_mp4": write_video(root / "clip.mp4", frames=40),
    }


def _full(path):
    return list(Source(parse_source(str(path))))


def _assert_same(got, want):
    assert [(f.index, f.pts) for f in got] == [(f.index, f.pts) for f in want]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, want))


def test_the_generated_video_has_b_frames_and_several_gops(videos):
    import av

    with av.open(str(videos["mp4"])) as c:
        decode_order = [p.pts for p in c.demux(video=0) if p.size]
    assert decode_order != sorted(decode_order), "no B-frames: packets are in presentation order"
    table = frame_table(videos["mp4"])
    assert table.exact and len(table) == 75 == len(_full(videos["mp4"]))
    assert len(table.keyframes_up_to(74)) >= 5


@pytest.mark.parametrize("kind", ["mp4", "mpegts", "conftest_mp4"])
def test_decoding_from_frame_n_matches_a_full_decode(kind, videos, monkeypatch):
    path = videos[kind]
    full = _full(path)
    table = frame_table(path)
    assert len(table) == len(full)
    assert [int(round(f.pts / table.time_base)) for f in full] == table.pts.tolist()
    keys = sorted(table.keyframes_up_to(len(full) - 1))
    key = keys[len(keys) // 2]
    opened = []
    real_open = containers.open_container
    monkeypatch.setattr(containers, "open_container", lambda spec, *a: opened.append(spec) or real_open(spec, *a))
    for n in sorted({0, key, key + 5, len(full) - 1}):
        opened.clear()
        got = list(Source(parse_source(str(path)), start=n))
        _assert_same(got, full[n:])
        if kind == "mp4" and n:
            # found by seeking (the table, then one container): not by decoding from the start and discarding
            assert len(opened) == 2, f"frame {n}: fell back to decoding from the start"
    assert list(Source(parse_source(str(path)), start=len(full))) == []


def test_start_with_max_frames_gives_a_chunk(videos):
    full = _full(videos["mp4"])
    _assert_same(list(Source(parse_source(str(videos["mp4"])), start=30, max_frames=12)), full[30:42])


def test_image_folder_starts_at_file_n(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), render_scene(rng)[0])
    full = _full(tmp_path)
    got = list(Source(parse_source(str(tmp_path)), start=4))
    assert [(f.index, f.name) for f in got] == [(4, "f04.png"), (5, "f05.png")]
    _assert_same(got, full[4:])


def test_lavfi_starts_at_frame_n():
    spec = parse_source("lavfi:testsrc2=size=64x48:rate=30")
    full = list(Source(spec, max_frames=8))
    _assert_same(list(Source(spec, start=5, max_frames=3)), full[5:8])
