"""Write a keypoint set as a model folder, and read back what added keypoints were taught from (no torch).

A saved folder is an ordinary model folder (`rtkp run --model`, `rtkp export --model`, `rtkp eval --model` load it):
the network weights are copied unchanged, the prototypes, clutter summary and margins are the set's, and the manifest
lists under `added_keypoints` which keypoints were added, from how many shots, with what margin. Each added keypoint's
shots (keypoint_set.Taught) are stored as tensors `taught.<i>.views`, `taught.<i>.lookalikes` and
`taught.<i>.anchors` (the offsets from each click to the trained keypoints named by the entry's `anchor_names`), so it
can be given more shots after a reload. ONNX exports of the source folder are copied too: the graph holds the network
only (prototypes are an input), so the saved folder runs without torch and without exporting again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from rtkp.errors import ControlError, ModelError
from rtkp.files import sha256, write_atomic, write_json_atomic
from rtkp.instances.pose import template_names
from rtkp.manifest import MANIFEST, MANIFEST_VERSION, WEIGHTS, Manifest, read_weights, write_manifest
from rtkp.teach.keypoint_set import KeypointSet, Taught


def _checked_tensors(model_dir: Path, manifest: Manifest, what: str) -> tuple[dict, dict | None]:
    """({name: array}, metadata) of the folder's weights, read by rtkp.manifest.read_weights: checked against the
    manifest's sha256 (ModelError when they changed), so what a saved folder carries on is what was checked."""
    from safetensors.numpy import load

    data = read_weights(model_dir, manifest)
    path = Path(model_dir) / manifest.weights
    try:
        size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__")
        return load(data), metadata
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise ModelError(f"{path}: cannot read {what} ({exc})") from None


def read_taught(model_dir: str | Path, manifest: Manifest) -> dict[str, Taught]:
    """{name: Taught} of a folder's added keypoints whose shots are stored (empty for trained-only models)."""
    entries = manifest.added_keypoints
    if not entries:
        return {}
    tensors, _ = _checked_tensors(Path(model_dir), manifest, "the added keypoints' shots")
    out = {}
    for entry in entries:
        t = entry.get("tensors") or {}
        if t.get("views") in tensors and t.get("lookalikes") in tensors:
            views, looks = tensors[t["views"]], tensors[t["lookalikes"]]
            anchors = tensors[t["anchors"]].astype(np.float32) if t.get("anchors") in tensors else None
            names = tuple(entry.get("anchor_names", ())) if anchors is not None and anchors.ndim == 3 else None
            out[entry["name"]] = Taught(
                views.astype(np.float32), looks.astype(np.float32), entry["source"], anchors, names
            )
    return out


def check_out(out: str | Path, model_dir: str | Path, overwrite: bool) -> None:
    """ControlError("failed") unless `out` can become the new model folder: not the model's own folder, and new,
    empty, or (overwrite) a model folder."""
    out = Path(out)
    if out.resolve() == Path(model_dir).resolve():
        raise ControlError("failed", f"{out}: that is the folder of the running model; save to a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ControlError(
                "failed",
                f"{out}: exists and is not empty (--overwrite, or overwrite: true in a save request, replaces a model "
                "folder)",
            )
        if not (out / MANIFEST).is_file():
            raise ControlError("failed", f"{out}: not a model folder; refusing to overwrite it")


def kept_template(manifest: Manifest, kset: KeypointSet) -> dict | None:
    """The pose template a folder saved with this keypoint set keeps (rtkp.instances.pose), its rows named as the set
    names them now (KeypointSet.spread follows renames): as it is when those are the set's keypoints, else with the
    names of its rows, so that the instance stage leaves it out (its rows are no longer the set's) while a keypoint
    taught later still reads which trained keypoints hold still (KeypointSet.reach_rows); None without one."""
    template = manifest.pose_template
    rows = template_names(template, manifest.keypoint_names)
    if rows is None:
        return None
    rows = list(kset.spread) or rows
    plain = {k: v for k, v in template.items() if k != "names"}
    return plain if rows == list(kset.names) else dict(plain, names=rows)


def save_keypoint_set(
    model_dir: str | Path, manifest: Manifest, kset: KeypointSet, out: str | Path, overwrite: bool = False, note=None
) -> Path:
    """Write `kset` on top of the network of `model_dir` (whose manifest is `manifest`) as the model folder `out`.

    note: extra provenance for the manifest's `derived_from` (e.g. the data the shots came from). Raises
    ControlError("failed") when `out` cannot be written.
    """
    from safetensors.numpy import save

    model_dir, out = Path(model_dir), Path(out)
    check_out(out, model_dir, overwrite)
    # the weights as checked against the source's manifest: a changed file is refused (ModelError), never carried
    # into the new folder under a fresh hash
    everything, metadata = _checked_tensors(model_dir, manifest, "the network weights")
    tensors = {k: v for k, v in everything.items() if k.startswith("net.")}
    tensors["prototypes"] = np.ascontiguousarray(kset.prototypes, np.float32)
    tensors["clutter_summary"] = np.ascontiguousarray(kset.clutter, np.float32)
    added = []
    for i, name in enumerate(n for n in kset.names if n in kset.taught):
        taught = kset.taught[name]
        keys = {"views": f"taught.{i}.views", "lookalikes": f"taught.{i}.lookalikes", "anchors": f"taught.{i}.anchors"}
        tensors[keys["views"]] = np.ascontiguousarray(taught.views, np.float32)
        tensors[keys["lookalikes"]] = np.ascontiguousarray(taught.lookalikes, np.float32)
        table, anchor_names = taught.anchor_offsets()
        if anchor_names == ("",):  # shots saved before the names were kept: their nearest distances, as they were
            table = table[:, 0, 0]
        tensors[keys["anchors"]] = np.ascontiguousarray(table, np.float32)
        k = kset.names.index(name)
        margin = round(float(kset.margins[k]), 5)
        entry = {"name": name, "shots": taught.shots, "margin": margin, "source": taught.source}
        if table.ndim == 3 and anchor_names:
            entry["anchor_names"] = list(anchor_names)
        added.append(dict(entry, tensors=keys))
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / WEIGHTS, save(tensors, metadata=metadata))
        new = manifest.updated(
            # measured on other keypoints: `rtkp eval` the saved folder for its own figures
            drop=("evaluation",),
            keypoint_names=kset.names,
            skeleton=kset.skeleton,
            flip_pairs=kset.flip_pairs,
            visibility_margins=[round(float(m), 5) for m in kset.margins],
            prototypes=kset.prototypes.tolist(),
            clutter_summary={"tensor": "clutter_summary", "shape": list(kset.clutter.shape)},
            max_keypoints=kset.k_max,
            pose_template=kept_template(manifest, kset),
            added_keypoints=added,
            derived_from=dict(note or {}, model=manifest.weights_sha256[:12], path=str(model_dir)),
            manifest_version=MANIFEST_VERSION,
            weights=WEIGHTS,
            weights_sha256=sha256(out / WEIGHTS),
        )
        write_manifest(out, new)
        _copy_exports(model_dir, out, new)
    except OSError as exc:
        raise ControlError("failed", f"{out}: cannot write the model folder ({exc.strerror or exc})") from None
    return out


def _copy_exports(model_dir: Path, out: Path, manifest: Manifest) -> None:
    """Copy the source's current ONNX exports (same network, same K_max) and record them for the new weights."""
    from rtkp.graphs.exports_index import EXPORTS, GRAPH_VERSION

    try:
        index = json.loads((model_dir / EXPORTS).read_text())
    except (OSError, json.JSONDecodeError):
        return
    entries = []
    for entry in index.get("exports", []):
        path = model_dir / entry.get("file", "")
        if entry.get("graph") != GRAPH_VERSION or entry.get("max_keypoints") != manifest.max_keypoints:
            continue
        if not path.is_file() or not path.is_relative_to(model_dir) or sha256(path) != entry.get("sha256"):
            continue
        target = out / entry["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        entries.append(dict(entry, model_sha256=manifest.weights_sha256, copied_from=str(path)))
    if entries:
        write_json_atomic(out / EXPORTS, {"exports": entries})
