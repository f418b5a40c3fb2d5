"""Model folders and training checkpoints, without pickle.

A model folder holds `model.safetensors` (network weights, fp16 by default, plus the CoKe prototypes and clutter
summary as float32 tensors) and `manifest.json` (everything needed to use the model: keypoints, input size,
normalisation, visibility margin, and how it was trained and how well it did). A training checkpoint holds the fp32
weights, the optimiser moments and the banks in safetensors, and the step counter in JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rtkp.errors import ModelError
from rtkp.files import sha256, write_atomic, write_json_atomic
from rtkp.manifest import MANIFEST, MANIFEST_VERSION, WEIGHTS, Manifest, read_manifest, read_weights, write_manifest
from rtkp.model.network import KeypointNet

TRAINING_ONLY = ("aux_heatmap.",)  # network weights that training checkpoints keep and model folders leave out


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write safetensors atomically (rtkp.files).

    The bytes are written with an ordinary `open`, so the file gets the umask's default mode like every other file of
    the folder (safetensors' own `save_file` creates its file 0600).
    """
    from safetensors.torch import save

    write_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: weights file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: corrupt or truncated weights file ({exc})") from None


def save_model(
    out: Path, net: KeypointNet, manifest: Manifest | dict, prototypes=None, clutter=None, half: bool = True
) -> Manifest:
    """Write a model folder; returns its manifest: `manifest` with the format version and the weights' file name and
    sha256 added (a dict is what training assembles; it is checked like a read manifest)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in net.state_dict().items():
        if k.startswith(TRAINING_ONLY):
            continue
        tensors[f"net.{k}"] = v.half() if half and v.is_floating_point() else v
    if prototypes is not None:
        tensors["prototypes"] = prototypes.float()
        tensors["clutter_summary"] = clutter.float()
    _save_tensors(out / WEIGHTS, tensors, {"format": "rtkp-model", "version": str(MANIFEST_VERSION)})
    stamp = {"manifest_version": MANIFEST_VERSION, "weights": WEIGHTS, "weights_sha256": sha256(out / WEIGHTS)}
    if isinstance(manifest, Manifest):
        manifest = manifest.updated(**stamp)
    else:
        manifest = Manifest.from_dict(dict(manifest, **stamp), str(out / MANIFEST))
    write_manifest(out, manifest)
    return manifest


def load_model(model_dir: str | Path) -> tuple[KeypointNet, Manifest, torch.Tensor | None, torch.Tensor | None]:
    """(network in eval mode, fp32; manifest; prototypes (K, D) or None; clutter summary (S, D) or None).

    The weights are checked against the manifest's sha256 as they are read (rtkp.manifest.read_weights)."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    return model_from_weights(manifest, read_weights(model_dir, manifest), model_dir / manifest.weights)


def model_from_weights(
    manifest: Manifest, data: bytes, where: Path
) -> tuple[KeypointNet, Manifest, torch.Tensor | None, torch.Tensor | None]:
    """load_model's result from the bytes of a weights file already read and checked (rtkp.manifest.read_weights,
    e.g. ModelInfo.weights); `where` names the file in errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise ModelError(f"{where}: corrupt or truncated weights file ({exc})") from None
    net = KeypointNet(
        manifest.head,
        len(manifest.keypoint_names),
        manifest.feature_dim,
        manifest.decoder_channels,
        manifest.backbone,
        pretrained=False,
        centre=manifest.multi_instance,
    )
    state = {k[4:]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{where}: weights do not fit the manifest's network ({first})") from None
    net.eval()
    protos = tensors.get("prototypes")
    clutter = tensors.get("clutter_summary")
    if manifest.head == "coke" and (protos is None or clutter is None):
        raise ModelError(f"{where}: a CoKe model needs `prototypes` and `clutter_summary` tensors")
    return net, manifest, protos, clutter


def save_training_state(path: Path, step: int, net, optimizer, banks: dict, extra: dict) -> None:
    """Everything needed to resume: fp32 weights, AdamW moments, banks (safetensors) and counters (JSON)."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"optim.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    for bank_name, bank in banks.items():
        for k, v in bank.state_dict().items():
            tensors[f"bank.{bank_name}.{k}"] = v
    _save_tensors(path / "state.safetensors", tensors)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
    write_json_atomic(path / "state.json", dict(extra, step=step, param_groups=groups))


def load_training_state(path: Path, net, optimizer, banks: dict) -> dict:
    """Restore a checkpoint written by save_training_state; returns its JSON (with `step`)."""
    try:
        info = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path / 'state.json'}: cannot resume from this checkpoint ({exc})") from None
    tensors = _load_tensors(path / "state.safetensors")
    try:
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
    except RuntimeError:  # other parts (e.g. coke.heatmap_weight switched on or off since): not this recipe's network
        raise ModelError(
            f"{path}: the checkpoint's network does not fit this config (made with another recipe); "
            "use a new --out or --no-resume"
        ) from None
    opt = optimizer.state_dict()
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for group, saved in zip(opt["param_groups"], info["param_groups"]):
        group.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    for bank_name, bank in banks.items():
        prefix = f"bank.{bank_name}."
        bank.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    return info
