"""Shared fixtures: small generated datasets (unit tests never need ../shared/data) and the shared-data location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RTKP_SHARED_DATA", REPO.parent / "shared" / "data"))
DLC_MOUSE = SHARED_DATA / "dlc_openfield_mouse"

NAMES = ["nose", "left_eye", "right_eye"]
COLOURS = [(255, 40, 40), (40, 255, 40), (40, 40, 255)]


def render_scene(rng: np.random.Generator, size=(128, 96)):
    """A textured (H, W, 3) uint8 image with three coloured discs; returns (image, keypoints (3, 2))."""
    import cv2

    w, h = size
    small = rng.integers(60, 200, (h // 8, w // 8, 3)).astype(np.uint8)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    centre = rng.uniform([30, 30], [w - 30, h - 30])
    angle = rng.uniform(0, 2 * np.pi)
    offsets = np.array([[0, 0], [12, -8], [12, 8]], float)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = centre + offsets @ rot.T
    for (x, y), colour in zip(kps, COLOURS):
        cv2.circle(image, (int(round(x)), int(round(y))), 4, colour, -1)
    return image, kps.astype(np.float32)


def write_dlc_project(root: Path, n: int = 12, seed: int = 0, names=NAMES) -> Path:
    """A DeepLabCut project with `n` generated frames; the last keypoint is unlabelled in frame 0."""
    import cv2

    rng = np.random.default_rng(seed)
    folder = root / "labeled-data" / "clip"
    folder.mkdir(parents=True)
    (root / "config.yaml").write_text("Task: toy\nscorer: tester\nbodyparts:\n" + "".join(f"- {n}\n" for n in names))
    lines = [
        "scorer," + ",".join(["tester"] * 2 * len(names)),
        "bodyparts," + ",".join(p for n in names for p in (n, n)),
        "coords," + ",".join(["x", "y"] * len(names)),
    ]
    for i in range(n):
        image, kps = render_scene(rng)
        name = f"labeled-data/clip/img{i:03d}.png"
        cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cells = [f"{v:.3f}" for v in kps.flatten()]
        if i == 0:
            cells[-2:] = ["", ""]
        lines.append(name + "," + ",".join(cells))
    (folder / "CollectedData_tester.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def dlc_project(tmp_path: Path) -> Path:
    return write_dlc_project(tmp_path / "proj")


def write_coco(root: Path, n: int = 4, seed: int = 0) -> Path:
    """A COCO-keypoints JSON with `n` generated images in root/images."""
    import json

    import cv2

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        image, kps = render_scene(rng)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 128, "height": 96})
        flat = []
        for j, (x, y) in enumerate(kps):
            flat += [float(x), float(y), 0 if (i == 1 and j == 2) else 2]
        anns.append({"id": 10 + i, "image_id": i + 1, "keypoints": flat, "bbox": [10, 10, 50, 40], "category_id": 1})
    doc = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "toy", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]}],
    }
    path = root / "toy.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


def make_tiny_model(folder: Path, size=(128, 96), head: str = "coke") -> Path:
    """A small random-weight model folder (fp32 weights) for backend and pipeline tests."""
    import torch

    from rtkp.model.checkpoint import save_model
    from rtkp.model.network import KeypointNet

    torch.manual_seed(0)
    net = KeypointNet(head, 3, 32, 16, pretrained=False).eval()
    protos = torch.nn.functional.normalize(torch.randn(3, 32), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(8, 32), dim=1)
    manifest = {
        "head": head,
        "keypoint_names": NAMES,
        "skeleton": [[0, 1], [0, 2]],
        "input_size": list(size),
        "feature_dim": 32,
        "decoder_channels": 16,
        "backbone": "mobilenet_v2",
        "visibility_margin": 0.0,
    }
    save_model(folder, net, manifest, protos if head == "coke" else None, clutter, half=False)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def write_video(path: Path, frames: int = 20, size=(128, 96), rate: int = 30, seed: int = 0) -> Path:
    """An H.264 MP4 of generated scenes (PyAV)."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(frames):
            image, _ = render_scene(rng, size)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_image_folder(folder: Path, images: int, seed: int) -> Path:
    """A folder of PNG files f00.png, f01.png, ... of generated scenes."""
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(images):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), cv2.cvtColor(render_scene(rng)[0], cv2.COLOR_RGB2BGR))
    return folder


def remux(src: Path, dst: Path, fmt: str | None = None, options: dict | None = None) -> Path:
    """Copy a video's packets into another container (e.g. MPEG-TS, or MP4 with the index first)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt, options=options or {}) as o:
        stream = o.add_stream_from_template(i.streams.video[0])
        for packet in i.demux(i.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                o.mux(packet)
    return dst


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (fixed ports collide with other runs on the machine,
    e.g. a second test suite)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_live_run(model: Path, publish: str = "none", *extra: str):
    """`rtkp run` in its own process on a 30 fps real-time lavfi source (endless unless --max-frames is given)."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "rtkp",
        "run",
        "--source",
        "lavfi:testsrc2=size=128x96:rate=30",
        "--realtime",
        "--model",
        str(model),
        "--backend",
        "onnxruntime",
        "--headless",
        "--publish",
        publish,
        "--threads",
        "1",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def subscribe_to_live_run(model: Path, count: int, timeout: float, *extra: str):
    """Start `rtkp run` (start_live_run, 150 frames) publishing on a free loopback port, take `count` messages from
    it with `rtkp subscribe --json`, and wait for the run to end: (the finished run's Popen, the subscriber's
    CompletedProcess)."""
    import subprocess
    import sys

    ep = f"tcp://127.0.0.1:{free_port()}"
    run = start_live_run(model, ep, "--max-frames", "150", *extra)
    sub = subprocess.run(
        [sys.executable, "-m", "rtkp", "subscribe", "--endpoint", ep, "--json", "--count", str(count)]
        + ["--timeout", str(int(timeout))],
        capture_output=True,
        text=True,
        timeout=3 * timeout,
    )
    run.wait(3 * timeout)
    return run, sub


def wait_for(condition, timeout: float = 120.0, what: str = "", interval: float = 0.01):
    """Poll `condition()` every `interval` s until it returns something truthy (returned); fail after `timeout` s.

    The one polling helper of the tests: streaming and process tests wait on an event with a deadline, never a fixed
    sleep. `what` names the event in the failure message ("timed out after 30 s waiting for a message with ...").
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    what = what or getattr(condition, "__name__", "the condition")
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def shipped_model(name: str) -> Path:
    """engines/<name>, a model folder that is in git: a test that needs it fails (never skips) when it is missing."""
    folder = REPO / "engines" / name
    assert (folder / "manifest.json").is_file(), f"{folder}: shipped model missing (it is in git; restore it)"
    return folder


# a few training steps at toy sizes (tests/test_train_smoke.py, tests/test_teach.py)
SMALL_TRAIN = [
    "--set",
    "augment.crop_size=[64, 64]",
    "--set",
    "model.input_size=[128, 96]",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.threads=2",
    "--set",
    "train.warmup_steps=2",
]


@pytest.fixture(scope="session")
def two_target_model(tmp_path_factory):
    """A small multi-instance model, trained for a few steps on `rtkp synth --targets 2`: (COCO file with two targets
    per image, a split of it, the model folder). Shared by every module that needs a real multi-instance model."""
    import json

    from rtkp.cli import main

    root = tmp_path_factory.mktemp("two")
    assert main(["synth", "--out", str(root / "data"), "--images", "12", "--targets", "2", "--quiet"]) == 0
    coco = root / "data" / "annotations.json"
    names = sorted({im["file_name"] for im in json.loads(coco.read_text())["images"]})
    split = root / "split.json"
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    out = root / "model"
    steps = ["--set", "train.steps=6", "--set", "augment.hard_crop=0", "--quiet"]
    assert main(["train", "--data", str(coco), "--split", str(split), "--out", str(out), *SMALL_TRAIN, *steps]) == 0
    return coco, split, out
