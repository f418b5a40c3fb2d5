"""DeepLabCut project reader: `config.yaml` bodyparts + `labeled-data/*/CollectedData_*.csv`.

A single-animal CSV has a 3-row header (scorer / bodyparts / coords) and gives one Sample per row. A multi-animal one
(config `multianimalproject: true`) has a 4-row header (scorer / individuals / bodyparts / coords) and gives one Sample
per labelled individual in a row, plus one for the `uniquebodyparts` (the individual "single") when any is labelled:
they are one more instance, not part of an individual. Each Sample's track is its individual's name. Callers that
need one instance per frame are checked by `rtkp.data.load`, the same for every format.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtkp.data.sample import Dataset, Sample
from rtkp.errors import DataError


@dataclass
class Parts:
    """What config.yaml says a CSV's columns are: `animal` bodyparts (`bodyparts`, or a multi-animal project's
    `multianimalbodyparts`, per individual), `unique` ones (`uniquebodyparts`, under the individual "single"), and
    the `individuals` (None for a single-animal project)."""

    animal: list[str]
    unique: list[str]
    individuals: list[str] | None


def _names(cfg_path: Path, cfg: dict, key: str, empty_ok: bool = False) -> list[str]:
    value = cfg.get(key) or []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value) or not (value or empty_ok):
        raise DataError(f"{cfg_path}: `{key}` must be a {'' if empty_ok else 'non-empty '}list of names")
    return value


def _parts(project: Path) -> Parts:
    import yaml

    cfg_path = project / "config.yaml"
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{cfg_path}: DeepLabCut config.yaml not found") from None
    except yaml.YAMLError:
        raise DataError(f"{cfg_path}: not valid YAML") from None
    cfg = cfg if isinstance(cfg, dict) else {}
    if not cfg.get("multianimalproject") and cfg.get("bodyparts") != "MULTI!":
        return Parts(_names(cfg_path, cfg, "bodyparts"), [], None)
    animal = _names(cfg_path, cfg, "multianimalbodyparts")
    unique = _names(cfg_path, cfg, "uniquebodyparts", empty_ok=True)
    both = set(animal) & set(unique)
    if both:
        raise DataError(f"{cfg_path}: {sorted(both)[0]!r} is in both multianimalbodyparts and uniquebodyparts")
    return Parts(animal, unique, _names(cfg_path, cfg, "individuals"))


def _skeleton(project: Path, names: list[str]) -> list[tuple[int, int]]:
    import yaml

    cfg = yaml.safe_load((project / "config.yaml").read_text()) or {}
    pairs = []
    for pair in cfg.get("skeleton") or []:
        if isinstance(pair, list) and len(pair) == 2 and all(p in names for p in pair):
            pairs.append((names.index(pair[0]), names.index(pair[1])))
    return pairs


def _parse_float(text: str) -> float:
    return float(text) if text.strip() else math.nan


def _header_columns(csv_path: Path, rows: list[list[str]], first: int, depth: int) -> list[list[str]]:
    """The header rows below `scorer` (individuals when multi-animal, bodyparts, coords), less trailing all-empty
    columns (spreadsheets end each line with a comma)."""
    header = rows[:depth]
    width = max(len(r) for r in header)
    header = [r + [""] * (width - len(r)) for r in header]
    while width > first and not any(r[width - 1].strip() for r in header):
        width -= 1
    header = [r[:width] for r in header[1:]]
    for i in range(first, width):
        if not header[-2][i].strip():
            raise DataError(f"{csv_path}: column {i + 1} has an empty bodypart name; name it or delete the column")
    return header


def _groups(csv_path: Path, header: list[list[str]], first: int, parts: Parts) -> dict[str, dict[str, dict]]:
    """{individual ("" when single-animal): {bodypart: {coord: column}}}, checked against config.yaml."""
    groups: dict[str, dict[str, dict]] = {}
    for i in range(first, len(header[-1])):
        who = header[0][i] if len(header) == 3 else ""
        groups.setdefault(who, {}).setdefault(header[-2][i], {})[header[-1][i]] = i
    if parts.individuals is None:
        if list(groups[""]) != parts.animal:
            raise DataError(f"{csv_path}: bodyparts {list(groups[''])} disagree with config.yaml {parts.animal}")
        return groups
    for who, cols in groups.items():
        want, key = (parts.unique, "uniquebodyparts") if who == "single" else (parts.animal, "multianimalbodyparts")
        if who != "single" and who not in parts.individuals:
            raise DataError(f"{csv_path}: individual {who!r} is not in config.yaml's individuals {parts.individuals}")
        if list(cols) != want:
            raise DataError(f"{csv_path}: {who}'s bodyparts {list(cols)} disagree with config.yaml's {key} {want}")
    return groups


def _point(csv_path: Path, line: int, row: list[str], cols: dict) -> list[float]:
    try:
        return [_parse_float(row[cols["x"]]), _parse_float(row[cols["y"]])]
    except (ValueError, KeyError):
        raise DataError(f"{csv_path}: line {line} has a non-numeric coordinate") from None


def read_dlc_csv(csv_path: Path, parts: Parts, project: Path, check_images: bool = True) -> list[tuple]:
    """Read one CollectedData CSV: (image path, name, individual, (K, 2) xy, (K,) visible) per instance, where an
    individual's K is `parts.animal` and "single"'s is `parts.unique`; a row with no labelled instance gives one
    entry with nothing visible (the frame still shows the scene)."""
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    labels = ["scorer", "bodyparts", "coords"]
    if parts.individuals is not None:
        labels.insert(1, "individuals")
    depth = len(labels)
    if len(rows) < depth or [r[0] if r else "" for r in rows[:depth]] != labels:
        what = "3-row header (scorer / bodyparts / coords)"
        if parts.individuals is not None:
            what = "multi-animal 4-row header (scorer / individuals / bodyparts / coords), as config.yaml says"
        raise DataError(f"{csv_path}: expected DeepLabCut's {what}")
    # Newer DLC CSVs index by three columns (labeled-data, video, image); older ones by one path column.
    first = next((i for i, c in enumerate(rows[depth - 1]) if c in ("x", "y", "likelihood")), None)
    if first is None:
        raise DataError(f"{csv_path}: the coords row names no x/y columns")
    header = _header_columns(csv_path, rows, first, depth)
    width = len(header[-1])
    groups = _groups(csv_path, header, first, parts)
    entries = []
    for line, row in enumerate(rows[depth:], start=depth + 1):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < width:
            raise DataError(f"{csv_path}: line {line} has {len(row)} columns, expected {width}")
        extra = next((i for i in range(width, len(row)) if row[i].strip()), None)
        if extra is not None:
            raise DataError(
                f"{csv_path}: line {line} has a value in column {extra + 1}, which the header names no bodypart for"
            )
        name = "/".join(c for c in row[:first] if c)
        path = project / name
        if check_images and not path.is_file():
            raise DataError(f"{path}: image file not found (listed in {csv_path.name} line {line})")
        found = []
        for who, cols in groups.items():
            xy = np.array([_point(csv_path, line, row, cols[p]) for p in cols], np.float32)
            visible = np.isfinite(xy).all(1)
            xy[~visible] = 0
            if visible.any() or parts.individuals is None:
                found.append((path, name, who, xy, visible))
        k = len(parts.animal)
        entries += found or [(path, name, "", np.zeros((k, 2), np.float32), np.zeros(k, bool))]
    return entries


def read_dlc(project: Path, check_images: bool = True) -> Dataset:
    """Read every labelled frame of a DeepLabCut project folder, single- or multi-animal.

    A multi-animal project's keypoints are its `multianimalbodyparts` (when an individual is labelled), followed by its
    `uniquebodyparts` (when any is labelled); an individual's Sample has the unique ones hidden, the "single" Sample
    the individuals' ones. A Sample's track is its individual's name ("single" for the unique parts; None in a
    single-animal project). An individual with no labelled point in a row is skipped; a project with no labelled
    point at all is a DataError.
    """
    project = Path(project)
    parts = _parts(project)
    csvs = sorted((project / "labeled-data").glob("*/CollectedData_*.csv"))
    if not csvs:
        raise DataError(f"{project}: no labeled-data/*/CollectedData_*.csv files")
    entries = [e for p in csvs for e in read_dlc_csv(p, parts, project, check_images)]
    if not any(vis.any() for *_, vis in entries):
        # frames with nothing labelled are kept as views of the scene, but a project of only those is a mistake
        raise DataError(
            f"{project}: no frame in labeled-data/*/CollectedData_*.csv has a labelled point: label frames in "
            "DeepLabCut (and save them) first"
        )
    has_unique = any(who == "single" for _, _, who, _, _ in entries)
    has_animal = any(who != "single" and vis.any() for _, _, who, _, vis in entries) or not has_unique
    names = (parts.animal if has_animal else []) + (parts.unique if has_unique else [])
    samples = []
    for path, name, who, xy, visible in entries:
        full_xy, full_visible = np.zeros((len(names), 2), np.float32), np.zeros(len(names), bool)
        if visible.any():  # else a frame with nothing labelled: all hidden
            at = len(names) - len(parts.unique) if who == "single" else 0
            full_xy[at : at + len(xy)], full_visible[at : at + len(xy)] = xy, visible
        track = who if parts.individuals is not None and visible.any() else None
        samples.append(Sample(path, full_xy, full_visible, name, track=track))
    return Dataset(samples, names, _skeleton(project, names), project, "dlc")
