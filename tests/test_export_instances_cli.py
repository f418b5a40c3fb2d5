"""`rtkp export` with a real multi-instance model (`rtkp synth --targets 2`, a few training steps): every format holds
the same animals in every frame, read back with pycocotools, pandas, sleap-io; smoothing keeps them."""

import json

import numpy as np
import pandas as pd
import pytest

from rtkp.cli import main

sio = pytest.importorskip("sleap_io")

COMMON = ["--backend", "onnxruntime", "--quiet", "--set", "run.threads=1", "--format", "coco,jsonl,csv,h5,slp,nwb"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, two_target_model):
    """(images folder, {smoothing: output folder}, model folder) of a multi-instance model's exports."""
    coco, _, model = two_target_model
    assert json.loads((model / "manifest.json").read_text())["max_instances"] > 1
    root = tmp_path_factory.mktemp("exports")
    images, out = coco.parent / "images", {}
    for smooth in ("none", "offline"):
        out[smooth] = root / smooth
        args = ["export", str(images), "--out", str(out[smooth]), "--model", str(model), "--smooth", smooth]
        assert main([*args, *COMMON]) == 0
    return images, out, model


def _tracks_per_frame(folder):
    return [[inst["track"] for inst in json.loads(line)["instances"]] for line in (folder / "images.jsonl").open()]


def test_every_format_holds_the_same_animals_in_every_frame(exports):
    from pycocotools.coco import COCO

    _, out, _ = exports
    folder = out["none"]
    tracks = _tracks_per_frame(folder)
    assert len(tracks) == 12 and any(len(t) > 1 for t in tracks)
    coco = COCO(str(folder / "images.coco.json"))
    by_image = [[a["track_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[i]))] for i in sorted(coco.getImgIds())]
    assert by_image == tracks
    table = pd.read_hdf(folder / "images.h5")
    pd.testing.assert_frame_equal(table, pd.read_csv(folder / "images.csv", header=[0, 1, 2, 3], index_col=0))
    every = sorted({t for ts in tracks for t in ts})
    assert list(table.columns.get_level_values("individuals").unique()) == [f"track{t}" for t in every]
    for i, ts in enumerate(tracks):  # an individual has numbers exactly in the frames its track is in
        present = [not table.iloc[i].xs(f"track{t}", level="individuals").isna().all() for t in every]
        assert present == [t in ts for t in every]
    labels = sio.load_slp(str(folder / "images.slp"))
    by_frame = {lf.frame_idx: [int(inst.track.name.removeprefix("track_")) for inst in lf.instances] for lf in labels}
    assert [by_frame.get(i, []) for i in range(12)] == tracks
    assert len(sio.load_nwb(str(folder / "images.nwb"))) == sum(1 for ts in tracks if ts)


def test_offline_smoothing_keeps_every_animal_and_moves_it_at_most_the_bound(exports):
    _, out, _ = exports
    assert _tracks_per_frame(out["offline"]) == _tracks_per_frame(out["none"])
    for raw, smooth in zip((out["none"] / "images.jsonl").open(), (out["offline"] / "images.jsonl").open()):
        for a, b in zip(json.loads(raw)["instances"], json.loads(smooth)["instances"]):
            for name, (x, y, _, shown, _) in a["keypoints"].items():
                bx, by, _, b_shown, _ = b["keypoints"][name]
                assert b_shown == shown  # hidden stays hidden
                if shown:
                    assert np.hypot(bx - x, by - y) <= 8.0 + 2e-3


def test_an_interrupted_export_tracks_the_input_again_from_its_first_frame(exports, tmp_path):
    """Track ids depend on every frame before, so records of an interrupted run are not resumed from: here five
    stale records (of a track 7 the model never reports) in a partial folder of the same settings."""
    from rtkp.export.local import ExportOptions
    from rtkp.export.partial import Partial
    from rtkp.export.records import RecordWriter
    from rtkp.export.targets import export_targets
    from rtkp.messages import Instance, KeypointFrame

    images, out, model = exports
    sha = json.loads((model / "manifest.json").read_text())["weights_sha256"]
    formats = ("coco", "jsonl", "csv", "h5", "slp", "nwb")
    targets = export_targets(str(images), ExportOptions(out=tmp_path, model=str(model), formats=formats), sha)
    partial = Partial(tmp_path / "images.partial", targets.settings, ("coco", "jsonl", "raw"))
    partial.reset()
    k = len(json.loads((model / "manifest.json").read_text())["keypoint_names"])
    stale = Instance(
        7, 0.5, np.ones((k, 2), np.float32), np.full(k, 0.5, np.float32), np.ones(k, bool), np.zeros(k, np.uint8)
    )
    with RecordWriter(partial.folder, partial.bodies, ["p"] * k, multi_instance=True) as writer:
        for i in range(5):
            arrays = (stale.keypoints, stale.scores, stale.visible, stale.state)
            writer.write(KeypointFrame(i, None, 0, (128, 96), *arrays, name=f"{i:05d}.jpg", instances=(stale,)))
    assert main(["export", str(images), "--out", str(tmp_path), "--model", str(model), *COMMON]) == 0
    for name in ("images.jsonl", "images.coco.json", "images.csv"):
        assert (tmp_path / name).read_bytes() == (out["none"] / name).read_bytes(), name


def test_ray_tracks_each_input_as_one_chunk_with_a_tracker_of_its_own(exports, tmp_path):
    """Two inputs on one worker, chunks of 4 frames asked: the records of two local exports, byte for byte."""
    import shutil

    from test_cluster import import_ray

    import_ray()
    images, out, model = exports
    subset = tmp_path / "subset"
    subset.mkdir()
    for path in sorted(images.iterdir())[5:]:
        shutil.copy(path, subset / path.name)
    local = tmp_path / "local"
    assert main(["export", str(subset), "--out", str(local), "--model", str(model), *COMMON]) == 0
    ray = ["--ray", "auto", "--workers", "1", "--chunk-frames", "4"]
    args = ["export", str(images), str(subset), "--out", str(tmp_path / "ray"), "--model", str(model), *ray]
    assert main([*args, *COMMON]) == 0
    for folder, name in ((out["none"], "images"), (local, "subset")):
        for suffix in (".jsonl", ".coco.json", ".csv"):
            assert (tmp_path / "ray" / f"{name}{suffix}").read_bytes() == (folder / f"{name}{suffix}").read_bytes()
