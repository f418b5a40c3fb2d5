"""Configuration: frozen dataclasses, loaded from a standalone YAML file plus dotted overrides.

Every field is validated up front; messages follow the form "`<field>` must be <rule>, got <value>" so that a user can
fix a config without reading code. Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtkp.errors import ConfigError


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _nonneg_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v):
    return _number(v) and v > 0


def _nonneg(v):
    return _number(v) and v >= 0


def _fraction(v):
    return _number(v) and 0 <= v <= 1


def _open_fraction(v):
    return _number(v) and 0 < v < 1


def _size(v):
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_positive_int(x) and x % 32 == 0 for x in v)


def _range(v):
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_positive(x) for x in v) and v[0] <= v[1]


def _rule(check, text):
    return {"check": check, "rule": text}


@dataclass(frozen=True)
class ModelConfig:
    """The network: backbone, hypercolumn decoder and head."""

    head: str = field(default="coke", metadata=_rule(lambda v: v in ("coke", "heatmap"), "one of coke, heatmap"))
    backbone: str = field(default="mobilenet_v2", metadata=_rule(lambda v: v in ("mobilenet_v2",), "mobilenet_v2"))
    pretrained: bool = field(default=True, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    feature_dim: int = field(default=128, metadata=_rule(_positive_int, "a positive integer"))
    decoder_channels: int = field(default=96, metadata=_rule(_positive_int, "a positive integer"))
    # (width, height) the whole frame is letterboxed to at inference; multiples of 32 (the backbone's stride).
    input_size: tuple = field(default=(640, 480), metadata=_rule(_size, "[width, height], multiples of 32"))
    # Several animals per frame (rtkp.train.recipe.instance_plan): peaks per keypoint in the graph. 0: from the data
    # (a single-instance model when every labelled frame holds one animal, else twice the most a frame holds, at
    # least 4); 1: single-instance; N > 1: a multi-instance model with N peaks per keypoint.
    max_instances: int = field(default=0, metadata=_rule(_nonneg_int, "an integer >= 0"))


@dataclass(frozen=True)
class CokeConfig:
    """CoKe banks, contrastive loss and visibility rule (ARCHITECTURE.md §3)."""

    momentum: float = field(default=0.9, metadata=_rule(_open_fraction, "a number in (0, 1)"))
    cumulative: bool = field(default=False, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    clutter_size: int = field(default=2560, metadata=_rule(_positive_int, "a positive integer"))
    clutter_per_image: int = field(default=24, metadata=_rule(_positive_int, "a positive integer"))
    clutter_summary: int = field(default=64, metadata=_rule(_positive_int, "a positive integer"))
    temperature: float = field(default=0.07, metadata=_rule(_positive, "a positive number"))
    clutter_weight: float = field(default=5e-3, metadata=_rule(_positive, "a positive number"))
    # Other keypoints closer than this (fraction of the crop's larger side) are not used as negatives.
    neighbour_radius: float = field(default=0.03, metadata=_rule(_fraction, "a number in [0, 1]"))
    # Clutter is sampled at least this many feature cells away from every keypoint.
    clutter_min_distance: float = field(default=3.0, metadata=_rule(_nonneg, "a number >= 0"))
    # Extra clutter sampled on a ring of 1.5–3 cells around each visible keypoint, so that the features right next
    # to a keypoint do not match its prototype (a flat similarity peak localises poorly). Only for keypoints that
    # are well apart (>= ~6 cells): on the DLC mouse, whose ears are 5 cells apart, it confused left and right ear.
    ring_per_keypoint: int = field(default=0, metadata=_rule(_nonneg_int, "an integer >= 0"))
    clutter_loss_weight: float = field(default=0.5, metadata=_rule(_nonneg, "a number >= 0"))
    # False: the clutter term only pushes background away from the prototypes, not towards the clutter bank
    # (rtkp.model.loss.coke_loss).
    clutter_pull: bool = field(default=True, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    # The best match of each hidden keypoint (covered, outside the crop, empty scene) joins the clutter term's samples
    # (rtkp.train.hidden_peaks).
    hidden_negatives: bool = field(default=True, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    # > 0: those best matches form a term of their own with this weight instead (the clutter term's form on them
    # alone, so that a handful of hidden keypoints is not diluted among ~400 clutter samples), used from `hidden_from`
    # of the budget on and not before (a schedule: the keypoints are told apart first, then told what absent looks
    # like). 0: they join the clutter samples from the start (the recipe before issue 29). Weight 1 from 3/4 raised the
    # covered/uncovered separation on the mouse's validation frames from AUC 0.93 to 0.97 (docs/MODEL.md).
    hidden_weight: float = field(default=1.0, metadata=_rule(_nonneg, "a number >= 0"))
    hidden_from: float = field(default=0.75, metadata=_rule(_fraction, "a number in [0, 1]"))
    # True: a covered keypoint's best match is sought away from its own (covered) position too, so that cells next to
    # the keypoint, which still see part of it, are not pushed towards the clutter (an ablation of issue 29).
    hidden_spare_own: bool = field(default=False, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    # Localisation term (rtkp.model.loss.localisation_loss): softmax(similarity / temperature) over the crop must match
    # a Gaussian of `localise_sigma` cells at the label; models trained with it refine peaks by soft-argmax.
    localise_weight: float = field(default=1.0, metadata=_rule(_nonneg, "a number >= 0"))
    localise_sigma: float = field(default=1.0, metadata=_rule(_positive, "a positive number (feature cells)"))
    # The prototypes the model ships with: "bank", the keypoint bank's moving average over the last steps' crops
    # (CoKe's); "frames", each keypoint's mean unit feature at its labels on the whole training frames after the last
    # step, as inference sees them (rtkp.train.prototypes). An ablation: on the mouse's validation split, the same
    # three trained networks, 3.31 -> 3.19 px, not beyond the seeds' scatter; the shipped model's test RMSE 2.90 -> 2.97
    # px (docs/MODEL.md).
    final_prototypes: str = field(
        default="bank", metadata=_rule(lambda v: v in ("bank", "frames"), "one of bank, frames")
    )
    # Coordinate term (rtkp.model.loss.coordinate_loss): the distance in cells between each label and the position the
    # graph reads there (local soft-argmax at `temperature`); with the localisation term it makes DSNT. An ablation:
    # at weight 1 it cost the mouse 0.3-0.5 px (docs/MODEL.md, CW2000).
    coordinate_weight: float = field(default=0.0, metadata=_rule(_nonneg, "a number >= 0"))
    # Auxiliary heatmap term (rtkp.train.steps.auxiliary_heatmap_loss: the heatmap baseline's regression on a 1×1
    # convolution of the unit features, trained beside them and left out of the model folder). The heatmap head
    # located the mouse's keypoints ~0.9 px better than CoKe on the same body (docs/MODEL.md, HM2000); its dense
    # target, trained into the features the prototypes match, took CoKe's validation RMSE from 3.31 to 2.64 px
    # (three seeds, lower in each; AH2000). 0: the recipe before issue 29's last session.
    heatmap_weight: float = field(default=1.0, metadata=_rule(_nonneg, "a number >= 0"))
    # False: mirrored crops (augment.flip) are left out of the localisation term; they still teach everything else.
    # For labels with a handedness (a midline keypoint clicked a pixel to one side of it), which a mirrored crop
    # teaches mirrored. An ablation: on the mouse it gained no precision (issue 29, docs/MODEL.md, FL2000).
    localise_flipped: bool = field(default=True, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    # Self-supervised equivariance term (rtkp.model.equivariance): features of points spread over a crop must match
    # those of the same points in a randomly warped copy better than any other point's. It shapes the features of
    # unlabelled parts too, which keypoints added from a few clicks need (docs/FEWSHOT.md). The warped copies cost an
    # extra forward and backward pass on `equivariance_share` of each batch. Off by default: at 0.3 it costs the
    # trained keypoints some precision (docs/MODEL.md); use 0.3 for a model meant to be taught keypoints.
    equivariance_weight: float = field(default=0.0, metadata=_rule(_nonneg, "a number >= 0"))
    equivariance_share: float = field(default=0.5, metadata=_rule(_fraction, "a number in [0, 1]"))
    equivariance_grid: int = field(default=8, metadata=_rule(_positive_int, "a positive integer"))
    equivariance_rotation: float = field(default=30.0, metadata=_rule(_nonneg, "degrees >= 0"))


@dataclass(frozen=True)
class HeatmapConfig:
    """The heatmap baseline (K Gaussian heatmaps, MSE)."""

    sigma: float = field(default=1.5, metadata=_rule(_positive, "a positive number (feature cells)"))


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric and photometric augmentation, applied to training crops."""

    crop_size: tuple = field(default=(160, 160), metadata=_rule(_size, "[width, height], multiples of 32"))
    scale: tuple = field(default=(0.8, 1.25), metadata=_rule(_range, "[min, max] with 0 < min <= max"))
    rotation: float = field(
        default=180.0, metadata=_rule(lambda v: _number(v) and 0 <= v <= 180, "degrees in [0, 180]")
    )
    translation: float = field(default=0.3, metadata=_rule(_fraction, "a number in [0, 1]"))
    flip: float = field(default=0.5, metadata=_rule(_fraction, "a probability in [0, 1]"))
    # Pairs of keypoint names swapped by a horizontal flip; "auto" pairs names that differ only by left/right.
    flip_pairs: Any = field(
        default="auto",
        metadata=_rule(
            lambda v: (
                v == "auto"
                or (isinstance(v, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in v))
            ),
            "auto or a list of [name, name] pairs",
        ),
    )
    brightness: float = field(default=0.25, metadata=_rule(_fraction, "a number in [0, 1]"))
    contrast: float = field(default=0.25, metadata=_rule(_fraction, "a number in [0, 1]"))
    blur: float = field(default=0.2, metadata=_rule(_fraction, "a probability in [0, 1]"))
    noise: float = field(default=0.02, metadata=_rule(_fraction, "a number in [0, 1]"))
    occluder: float = field(default=0.5, metadata=_rule(_fraction, "a probability in [0, 1]"))
    # How much of the keypoint box an occluder covers, [min, max] fractions (rtkp.data.occlude.occluder_mask).
    occluder_cover: tuple = field(
        default=(0.1, 0.7),
        metadata=_rule(
            lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_fraction(x) for x in v) and v[0] <= v[1],
            "[min, max] fractions with 0 <= min <= max <= 1",
        ),
    )
    background_crop: float = field(default=0.2, metadata=_rule(_fraction, "a probability in [0, 1]"))
    # Folders of photographs that occluders are cut from (besides synthetic textures), for `photo_share` of them.
    # Paths are relative to the working directory. Keep evaluation photos out of this list.
    occluder_photos: tuple = field(
        default=(),
        metadata=_rule(lambda v: isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v), "a folder list"),
    )
    photo_share: float = field(default=0.5, metadata=_rule(_fraction, "a probability in [0, 1]"))
    # Share of crops cut from the training frames' median (the scene without the object, rtkp.data.background), with
    # every keypoint hidden. Skipped, with a note, when the object stays in view in the median.
    empty_share: float = field(default=0.1, metadata=_rule(_fraction, "a probability in [0, 1]"))
    # Share of crops centred on a hard negative: a background cell that the current model scores high against some
    # keypoint, mined on whole training frames every `hard_every` steps (rtkp.train.mining). 0 turns mining off.
    hard_crop: float = field(default=0.2, metadata=_rule(_fraction, "a probability in [0, 1]"))
    hard_every: int = field(default=100, metadata=_rule(_positive_int, "a positive integer (steps)"))
    hard_frames: int = field(default=8, metadata=_rule(_positive_int, "a positive integer (frames per refresh)"))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule."""

    steps: int = field(default=2000, metadata=_rule(_positive_int, "a positive integer"))
    batch_size: int = field(default=16, metadata=_rule(_positive_int, "a positive integer"))
    lr: float = field(default=1e-3, metadata=_rule(_positive, "a positive number"))
    backbone_lr_scale: float = field(default=0.3, metadata=_rule(_nonneg, "a number >= 0"))
    weight_decay: float = field(default=1e-4, metadata=_rule(_nonneg, "a number >= 0"))
    warmup_steps: int = field(default=50, metadata=_rule(_nonneg_int, "an integer >= 0"))
    seed: int = field(default=0, metadata=_rule(_nonneg_int, "an integer >= 0"))
    checkpoint_every: int = field(default=100, metadata=_rule(_positive_int, "a positive integer"))
    threads: int = field(default=0, metadata=_rule(_nonneg_int, "an integer >= 0 (0: all cores)"))


@dataclass(frozen=True)
class SmoothingConfig:
    """Temporal smoothing (smoothing.py). Times in seconds, distances in source pixels.

    One Euro defaults (min_cutoff 1 Hz, beta 0.05 Hz per px/s) were chosen on a 157 px/s circular track with 1.5 px
    noise: jitter halves while RMSE stays within 1.5x of the raw measurements (tests/test_smooth.py). MediaPipe's
    (0.1, 40, 1.0) are in normalised units; beta 40 per image-width/s is 0.06 per px/s at 640 px, close to ours.
    """

    filter: str = field(
        default="one_euro",
        metadata=_rule(lambda v: v in ("none", "one_euro", "kalman"), "one of none, one_euro, kalman"),
    )
    min_cutoff: float = field(default=1.0, metadata=_rule(_positive, "a positive number (Hz)"))
    beta: float = field(default=0.05, metadata=_rule(_nonneg, "a number >= 0"))
    d_cutoff: float = field(default=1.0, metadata=_rule(_positive, "a positive number (Hz)"))
    accel_noise: float = field(default=500.0, metadata=_rule(_positive, "a positive number (px/s²)"))
    meas_noise: float = field(default=1.5, metadata=_rule(_positive, "a positive number (px)"))
    predict_latency: bool = field(default=False, metadata=_rule(lambda v: isinstance(v, bool), "true or false"))
    hold_s: float = field(default=0.25, metadata=_rule(_nonneg, "a number >= 0 (seconds)"))
    reset_s: float = field(default=0.5, metadata=_rule(_nonneg, "a number >= 0 (seconds)"))
    max_deviation_px: float = field(default=8.0, metadata=_rule(_positive, "a positive number (pixels)"))


@dataclass(frozen=True)
class RunConfig:
    """The streaming runner (`rtkp run`)."""

    slots: int = field(default=4, metadata=_rule(lambda v: _positive_int(v) and v >= 3, "an integer >= 3"))
    threads: int = field(default=0, metadata=_rule(_nonneg_int, "an integer >= 0 (0: all cores)"))
    publish: str = field(default="tcp://127.0.0.1:5555", metadata=_rule(lambda v: isinstance(v, str), "an endpoint"))
    stream: str = field(
        default="default",
        metadata=_rule(lambda v: isinstance(v, str) and v.isidentifier(), "a name of letters, digits and _"),
    )
    send_hwm: int = field(default=100, metadata=_rule(_positive_int, "a positive integer"))
    # lossless mode: frames already queued when the model is free go through it together (up to this many)
    batch: int = field(default=4, metadata=_rule(lambda v: _positive_int(v) and v <= 8, "an integer in 1..8"))
    stats_window: int = field(default=300, metadata=_rule(_positive_int, "a positive integer"))
    # CURVE: the publisher's secret key file (from `rtkp keys`) and the folder of allowed client public keys.
    curve_key: str = field(default="", metadata=_rule(lambda v: isinstance(v, str), "a file path or empty"))
    curve_clients: str = field(default="", metadata=_rule(lambda v: isinstance(v, str), "a folder path or empty"))


@dataclass(frozen=True)
class Config:
    """A complete profile: what `configs/*.yaml` holds."""

    model: ModelConfig = ModelConfig()
    coke: CokeConfig = CokeConfig()
    heatmap: HeatmapConfig = HeatmapConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        """Plain JSON/YAML-able dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"`{prefix or 'config'}` must be a mapping, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        key = unknown[0] if unknown[0].isprintable() else repr(unknown[0])  # keep the message on one line
        raise ConfigError(f"`{prefix}{key}` is not a known setting (known: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        value = data[name]
        if dataclasses.is_dataclass(f.default):
            values[name] = _build(type(f.default), value, f"{prefix}{name}.")
            continue
        rule = f.metadata["rule"]
        if isinstance(f.default, float) and _number(value):
            value = float(value)
        if not f.metadata["check"](value):
            raise ConfigError(f"`{prefix}{name}` must be {rule}, got {value!r}")
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[name] = value
    return cls(**values)


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(f"override must look like `section.key=value`, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def config_from_dict(data: dict | None, overrides: list[str] = ()) -> Config:
    """Validate a nested dict (plus `a.b=value` overrides) into a Config, or raise ConfigError naming the field."""
    merged = _deep_copy(data or {})
    if not isinstance(merged, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    for text in overrides:
        path, value = _parse_override(text)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"`{'.'.join(path)}`: `{part}` is not a section")
        node[path[-1]] = value
    return _build(Config, merged, "")


def _deep_copy(x):
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML profile (or the built-in defaults when `path` is None) and apply overrides."""
    import yaml

    data = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
