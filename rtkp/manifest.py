"""A model folder's manifest: one typed record (`Manifest`), its one reader and its one writer.

`read_manifest(folder)` checks and types the manifest once; everything downstream (backends' ModelInfo, the Tracker,
teaching, export) is handed the `Manifest`. `write_manifest(folder, manifest)` writes it atomically (rtkp.files). The
fields are what rtkp reads; every other key (training config, evaluation figures, provenance, the prototypes as a
list, ...) is kept as read in `extra` and written back in its place, so a folder made by an older or newer rtkp
survives a rewrite.

Kept free of torch (and of numpy) on purpose: the parent of `rtkp run`, the post stage and an ONNX Runtime inference
stage only need the manifest, and importing torch costs each of them about a second at start and 0.2 s at exit
(measured; docs/RELIABILITY.md), which is what made shutdown slow under load.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rtkp.errors import ModelError
from rtkp.files import write_json_atomic

MANIFEST_VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint"  # the training checkpoint's folder inside `--out` (rtkp.train.loop), gone once it finishes
REQUIRED = ("head", "keypoint_names", "input_size", "feature_dim", "decoder_channels", "backbone")


@dataclass(frozen=True)
class Manifest:
    """What a model folder says about its model. Change one with `updated(...)`; write it with `write_manifest`.

    head: "coke" or "heatmap"; keypoint_names (K,); input_size (W, H) model-input px; skeleton: index pairs;
    flip_pairs: name pairs; stride: feature-map step in input px; peak: how the graph refines a similarity peak
    (rtkp.model.graph; None: quadratic fit); visibility_margins (K,) per keypoint, else the single visibility_margin
    (rtkp.visibility); max_keypoints: K_max as declared, None when not (checked and defaulted by
    rtkp.graphs.prototypes.max_keypoints); weights: the safetensors file name and its sha256; added_keypoints: one map
    per keypoint taught from shots (name, shots, margin, source, tensors; rtkp.teach.saved).

    Several animals per frame: max_instances is set only for a multi-instance model, whose graph reports that many
    peaks per keypoint, each with the centre of its animal (a shape of the graph, like K_max; rtkp.model.graph);
    default_instances is how many animals `--max-instances` reports by default (the most a labelled training frame
    held); instance_size: the median size of a labelled animal in source px (the longer side of its keypoints'
    box), the scale the grouping and the identity tracker measure distances in; pose_template: the animals' mean pose
    and which keypoint of a left/right pair lies on which side (rtkp.instances.pose). All are absent (None) for a
    single-instance model, whose manifest keeps exactly its old keys.

    crop_size: (w, h) model-input px of the window the Tracker follows the animal with on the CPU (rtkp.follow), the
    largest labelled animal plus context; None (absent): the graph always sees the whole input.
    """

    head: str
    keypoint_names: tuple[str, ...]
    input_size: tuple[int, int]
    feature_dim: int
    decoder_channels: int
    backbone: str
    skeleton: tuple[tuple[int, int], ...] = ()
    flip_pairs: tuple[tuple[str, str], ...] = ()
    stride: int = 4
    peak: dict | None = None
    visibility_margin: float = 0.0
    visibility_margins: tuple[float, ...] | None = None
    max_keypoints: int | None = None
    weights: str = WEIGHTS
    weights_sha256: str = ""
    added_keypoints: tuple[dict, ...] = ()
    max_instances: int | None = None
    default_instances: int | None = None
    instance_size: float | None = None
    pose_template: dict | None = None
    crop_size: tuple[int, int] | None = None
    manifest_version: int = MANIFEST_VERSION
    extra: dict = field(default_factory=dict)  # every key not modelled above, as read
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the keys' order as read

    @property
    def multi_instance(self) -> bool:
        """Whether the model finds several animals per frame (its graph reports peaks with centres)."""
        return self.max_instances is not None

    @classmethod
    def from_dict(cls, data: dict, where: str = "manifest") -> Manifest:
        """Check and type a manifest's JSON object; `where` prefixes the ModelError messages (the file's path)."""
        if not isinstance(data, dict):
            raise ModelError(f"{where}: corrupt manifest (not a JSON object)")
        version = data.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise ModelError(f"{where}: manifest version {version!r}, this rtkp reads version {MANIFEST_VERSION}")
        for key in REQUIRED:
            if key not in data:
                raise ModelError(f"{where}: manifest lacks `{key}`")
        typed = {}
        for name, convert in _CONVERT.items():
            if data.get(name) is None:  # absent (or null): the field's default
                continue
            try:
                typed[name] = convert(data[name])
            except (TypeError, ValueError):
                raise ModelError(f"{where}: manifest `{name}` cannot be read as expected, got {data[name]!r}") from None
        extra = {k: v for k, v in data.items() if k not in _CONVERT}
        return cls(**typed, extra=extra, key_order=tuple(data))

    def to_dict(self) -> dict:
        """The JSON object written to manifest.json (keys in the order they were read, new ones after)."""
        return dict(self._json)

    def updated(self, drop: tuple[str, ...] = (), **changes) -> Manifest:
        """A copy with fields (or extra keys) changed and the extra keys in `drop` removed."""
        fields = {k: _CONVERT[k](v) if v is not None else None for k, v in changes.items() if k in _CONVERT}
        extra = {k: v for k, v in self.extra.items() if k not in drop}
        extra.update({k: v for k, v in changes.items() if k not in _CONVERT})
        order = self.key_order + tuple(k for k in changes if k not in self.key_order)
        return dataclasses.replace(self, **fields, extra=extra, key_order=order)

    @functools.cached_property
    def _json(self) -> dict:
        values = {}
        for f in dataclasses.fields(self):
            if f.name not in _CONVERT:
                continue
            value = getattr(self, f.name)
            if f.name in REQUIRED or f.name in self.key_order or value != f.default:
                values[f.name] = _to_json(value)
        values.update(self.extra)
        order = [k for k in self.key_order if k in values] + [k for k in values if k not in self.key_order]
        return {k: values[k] for k in order}


def _pairs(kind):
    return lambda pairs: tuple((kind(a), kind(b)) for a, b in pairs)


def _to_json(value):
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


# field -> how its JSON value becomes the field's type (ValueError/TypeError when it cannot)
_CONVERT = {
    "head": str,
    "keypoint_names": lambda names: tuple(str(n) for n in names),
    "input_size": lambda size: tuple(int(v) for v in size),
    "feature_dim": int,
    "decoder_channels": int,
    "backbone": str,
    "skeleton": _pairs(int),
    "flip_pairs": _pairs(str),
    "stride": int,
    "peak": dict,
    "visibility_margin": float,
    "visibility_margins": lambda margins: tuple(float(m) for m in margins),
    "max_keypoints": lambda k: k,  # checked where K_max is used (rtkp.graphs.prototypes.max_keypoints)
    "weights": str,
    "weights_sha256": str,
    "added_keypoints": lambda entries: tuple(dict(e) for e in entries),
    "max_instances": int,
    "default_instances": int,
    "instance_size": float,
    "pose_template": dict,
    "crop_size": lambda size: tuple(int(v) for v in size),
    "manifest_version": int,
}


def read_manifest(model_dir: str | Path) -> Manifest:
    """The manifest of a model folder, checked for the fields inference needs."""
    path = Path(model_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        _unfinished_training(Path(model_dir))
        raise ModelError(f"{path}: not found; --model must be a folder made by `rtkp train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path}: corrupt manifest (not valid JSON)") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder; --model must be a folder made by `rtkp train`") from None
    return Manifest.from_dict(data, str(path))


def write_manifest(model_dir: str | Path, manifest: Manifest) -> None:
    """Write `manifest` as the folder's manifest.json, atomically."""
    write_json_atomic(Path(model_dir) / MANIFEST, manifest.to_dict())


def read_weights(model_dir: str | Path, manifest: Manifest) -> bytes:
    """The bytes of the folder's weights file, checked against the manifest's `weights_sha256`.

    The one place a model's weights are read from disk: rtkp.backends.base.read_model_info (numpy, every command's
    first look at a model folder) and rtkp.model.checkpoint.load_model (torch) parse these very bytes, so what is
    used is what was checked, on every load. Hashing costs about 2 ms per MB (8 ms for the shipped 3.8 MB models).
    A manifest without `weights_sha256` is not checked (rtkp.model.checkpoint.save_model always writes one).
    """
    path = Path(model_dir) / manifest.weights
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: weights file not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from None
    if manifest.weights_sha256 and hashlib.sha256(data).hexdigest() != manifest.weights_sha256:
        raise ModelError(
            f"{path}: its sha256 checksum does not match manifest.json's weights_sha256 (the file changed after "
            "training, or is corrupt); retrain the model, or restore the weights file it was saved with"
        )
    return data


def _unfinished_training(folder: Path) -> None:
    """Raise the ModelError for a `--out` folder of a training that was stopped before the model was written."""
    state = folder / CHECKPOINT / "state.json"
    if not state.is_file():
        return
    try:
        info = json.loads(state.read_text())
        where = f"stopped at step {int(info['step'])} of {int(info['config']['train']['steps'])}"
    except (OSError, ValueError, TypeError, KeyError):
        where = "stopped"
    raise ModelError(
        f"{folder}: training not finished ({where}; its checkpoint is in {folder / CHECKPOINT}): "
        f"run `rtkp train` again with --out {folder} to finish it"
    )
