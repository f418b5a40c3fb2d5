"""The keypoint set (names, prototypes, margins, taught shots) and the graph's K_max contract it lives in; a set saved
as a model folder and read back; smoothing tracks that follow a change of keypoints."""

import numpy as np
import pytest
from shots_helpers import D, taught_shots, unit_rows

from rtkp.errors import ControlError, ModelError
from rtkp.graphs.prototypes import max_keypoints, pad_prototypes
from rtkp.manifest import Manifest
from rtkp.teach.keypoint_set import KeypointSet, Taught, check_name


def _set(k=3, k_max=5):
    rng = np.random.default_rng(0)
    return KeypointSet([f"k{i}" for i in range(k)], unit_rows(rng, k), np.zeros(k), unit_rows(rng, 4), k_max)


def _manifest(k, **fields):
    return Manifest("coke", ("a",) * k, (64, 64), D, 8, "mobilenet_v2", **fields)


def test_prototype_rows_are_padded_to_k_max_with_a_mask():
    padded, active = pad_prototypes(np.ones((3, D)), 5)
    assert padded.shape == (5, D) and (padded[3:] == 0).all() and active.tolist() == [1, 1, 1, 0, 0]
    assert max_keypoints(_manifest(3)) == 32
    assert max_keypoints(_manifest(40)) == 40  # a 40-keypoint model holds its own 40
    assert max_keypoints(_manifest(3, max_keypoints=4)) == 4
    with pytest.raises(ModelError, match="max_keypoints"):
        max_keypoints(_manifest(3, max_keypoints=2))
    with pytest.raises(ModelError, match="at most 2"):
        pad_prototypes(np.ones((3, D)), 2)


def test_the_set_adds_removes_renames_and_refuses_bad_changes_unchanged():
    rng = np.random.default_rng(1)
    kset = _set()
    kset.skeleton = [(0, 1), (1, 2)]
    kset.flip_pairs = [("k1", "k2")]
    assert kset.add("paw", unit_rows(rng, 1)[0], 0.1, taught_shots(rng)) == 3
    assert kset.shots() == {"paw": 2}
    for bad, code in [("paw", "duplicate"), ("", "bad_request"), (" x", "bad_request"), ("a\nb", "bad_request")]:
        with pytest.raises(ControlError) as err:
            kset.add(bad, unit_rows(rng, 1)[0], 0.1, taught_shots(rng))
        assert err.value.code == code
    kset.add("tail", unit_rows(rng, 1)[0], 0.1, taught_shots(rng))
    with pytest.raises(ControlError) as err:
        kset.add("one_too_many", unit_rows(rng, 1)[0], 0.1, taught_shots(rng))
    assert err.value.code == "full" and len(kset) == 5
    kset.remove("k1")  # the skeleton's pairs through k1 go, the others are renumbered; flip pairs with k1 go
    assert kset.names == ["k0", "k2", "paw", "tail"] and kset.skeleton == [] and kset.flip_pairs == []
    assert kset.prototypes.shape == (4, D) and kset.margins.shape == (4,)
    kset.rename("paw", "left_paw")
    assert kset.shots() == {"left_paw": 2, "tail": 2}
    with pytest.raises(ControlError) as err:
        kset.rename("nope", "x")
    assert err.value.code == "unknown_keypoint"
    with pytest.raises(ControlError, match="trained"):
        kset.update("k0", unit_rows(rng, 1)[0], 0.1, taught_shots(rng))
    for name in ["k0", "k2", "left_paw"]:
        kset.remove(name)
    with pytest.raises(ControlError, match="last keypoint"):
        kset.remove("tail")
    assert check_name("Finger1") == "Finger1"


def test_a_saved_set_round_trips_as_a_model_folder(tmp_path, tiny_model):
    from rtkp.backends import read_model_info
    from rtkp.teach.saved import read_taught, save_keypoint_set

    info = read_model_info(tiny_model)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    rng = np.random.default_rng(7)
    kset.add(
        "paw", unit_rows(rng, 1, 32)[0], 0.2, Taught(unit_rows(rng, 10, 32).reshape(2, 5, 32), np.zeros((2, 3, 32)))
    )
    kset.rename("nose", "snout")
    out = save_keypoint_set(tiny_model, info.manifest, kset, tmp_path / "saved")
    back = read_model_info(out)
    assert back.manifest.keypoint_names == ("snout", "left_eye", "right_eye", "paw")
    assert back.manifest.added_keypoints[0] | {"tensors": None} == {
        "name": "paw",
        "shots": 2,
        "margin": 0.2,
        "source": "live",
        "tensors": None,
    }
    np.testing.assert_allclose(back.prototypes, kset.prototypes)
    assert back.manifest.visibility_margins == (0.0, 0.0, 0.0, 0.2) and back.manifest.max_keypoints == 32
    assert "evaluation" not in back.manifest.extra and back.manifest.extra["derived_from"]["path"] == str(tiny_model)
    assert read_taught(out, back.manifest)["paw"].views.shape == (2, 5, 32)
    again = KeypointSet.from_model(back.manifest, back.prototypes, back.clutter, read_taught(out, back.manifest))
    assert again.shots() == {"paw": 2}
    # a keypoint read back from the folder takes more shots (the folder's arrays are read-only views)
    more = again.taught["paw"].plus(again.taught["paw"])
    assert again.update("paw", unit_rows(rng, 1, 32)[0], 0.3, more) == 3
    assert again.margins[3] == np.float32(0.3) and again.shots() == {"paw": 4}
    with pytest.raises(ControlError, match="not empty"):
        save_keypoint_set(tiny_model, info.manifest, kset, out)
    with pytest.raises(ControlError, match="running model"):
        save_keypoint_set(tiny_model, info.manifest, kset, tiny_model, overwrite=True)
    save_keypoint_set(tiny_model, info.manifest, kset, out, overwrite=True)


@pytest.mark.parametrize("kind", ["one_euro", "kalman"])
def test_smoothing_tracks_survive_a_change_of_keypoints(kind):
    from rtkp.config import SmoothingConfig
    from rtkp.smoothing import KeypointSmoother

    smoother = KeypointSmoother(3, SmoothingConfig(filter=kind))
    kept = KeypointSmoother(2, SmoothingConfig(filter=kind))  # the same tracks of keypoints 2 and 0, never changed
    xy = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]])
    for i in range(5):
        smoother.update(i / 30, xy + i * np.array([1.0, 2.0]), np.ones(3, bool))
        kept.update(i / 30, xy[[2, 0]] + i * np.array([1.0, 2.0]), np.ones(2, bool))
    smoother.remap([2, 0, -1])  # keypoint 1 removed, 2 and 0 swapped rows, a new one appended
    moved = np.array([[97.0, 99.0], [16.0, 21.0], [30.0, 70.0]])
    out, visible, state = smoother.update(5 / 30, moved, np.ones(3, bool))
    ref, _, _ = kept.update(5 / 30, moved[:2], np.ones(2, bool))
    assert out.shape == (3, 2) and visible.all() and (state == 1).all()
    np.testing.assert_allclose(out[:2], ref, atol=1e-4)  # each kept track continues in its new row
    np.testing.assert_allclose(out[2], moved[2])  # the new keypoint starts where it is measured


def test_changed_weights_are_never_carried_into_a_saved_folder(tmp_path, tiny_model):
    """save_keypoint_set and read_taught read the weights through rtkp.manifest.read_weights: weights that changed
    after the caller's own check are refused (ModelError, exit 5), never written into a new folder with a fresh
    sha256 that would make them look checked."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import write_dlc_project
    from safetensors.numpy import load_file, save_file

    from rtkp.backends import read_model_info
    from rtkp.teach.saved import read_taught, save_keypoint_set

    def change(weights: Path, name_start: str) -> None:
        tensors = load_file(str(weights))
        name = next(k for k in tensors if k.startswith(name_start) and tensors[k].dtype == np.float32)
        tensors[name] = tensors[name] * np.float32(-1)
        save_file(tensors, str(weights))

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    info = read_model_info(model)  # checked, as every caller checks first
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    rng = np.random.default_rng(7)
    shots = Taught(unit_rows(rng, 10, 32).reshape(2, 5, 32), np.zeros((2, 3, 32)))
    kset.add("paw", unit_rows(rng, 1, 32)[0], 0.2, shots)
    saved = save_keypoint_set(model, info.manifest, kset, tmp_path / "saved")
    saved_info = read_model_info(saved)
    assert set(read_taught(saved, saved_info.manifest)) == {"paw"}
    # the network weights change on disk after the check: saving refuses, and writes nothing
    change(model / "model.safetensors", "net.")
    with pytest.raises(ModelError, match="sha256 checksum does not match") as caught:
        save_keypoint_set(model, info.manifest, kset, tmp_path / "new")
    assert str(model / "model.safetensors") in str(caught.value)
    assert not (tmp_path / "new").exists()
    # a saved folder's stored shots changed: reading them back refuses too
    change(saved / "model.safetensors", "taught.0.views")
    with pytest.raises(ModelError, match="sha256 checksum does not match"):
        read_taught(saved, saved_info.manifest)
    # the command: exit 5 (a model error), one line, no new folder
    project = write_dlc_project(tmp_path / "dlc", n=2)
    run = subprocess.run(
        [sys.executable, "-m", "rtkp", "keypoints", "add", "tail", "--model", str(model), "--data", str(project)]
        + ["--out", str(tmp_path / "cli"), "--backend", "onnxruntime"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 5, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "sha256" in run.stderr and not (tmp_path / "cli").exists()
