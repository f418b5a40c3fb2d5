"""DeepLabCut project reader: `config.yaml` bodyparts + `labeled-data/*/CollectedData_*.csv` (3-row header)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from rtkp.data.sample import Dataset, Sample
from rtkp.errors import DataError


def _bodyparts(project: Path) -> list[str]:
    import yaml

    cfg_path = project / "config.yaml"
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{cfg_path}: DeepLabCut config.yaml not found") from None
    except yaml.YAMLError:
        raise DataError(f"{cfg_path}: not valid YAML") from None
    parts = cfg.get("bodyparts") if isinstance(cfg, dict) else None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise DataError(f"{cfg_path}: `bodyparts` must be a non-empty list of names")
    return parts


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


def _header_columns(csv_path: Path, rows: list[list[str]], first: int) -> tuple[list[str], list[str]]:
    """The bodyparts and coords rows, less trailing all-empty columns (spreadsheets end each line with a comma)."""
    header = rows[:3]
    width = max(len(r) for r in header)
    header = [r + [""] * (width - len(r)) for r in header]
    while width > first and not any(r[width - 1].strip() for r in header):
        width -= 1
    header_parts, coords = header[1][:width], header[2][:width]
    for i in range(first, width):
        if not header_parts[i].strip():
            raise DataError(f"{csv_path}: column {i + 1} has an empty bodypart name; name it or delete the column")
    return header_parts, coords


def read_dlc_csv(csv_path: Path, names: list[str], project: Path, check_images: bool = True) -> list[Sample]:
    """Read one CollectedData CSV; its bodyparts must be exactly `names` (in order)."""
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    if len(rows) < 3 or [r[0] if r else "" for r in rows[:3]] != ["scorer", "bodyparts", "coords"]:
        raise DataError(f"{csv_path}: expected DeepLabCut's 3-row header (scorer / bodyparts / coords)")
    # Newer DLC CSVs index by three columns (labeled-data, video, image); older ones by one path column.
    first = next((i for i, c in enumerate(rows[2]) if c in ("x", "y", "likelihood")), None)
    if first is None:
        raise DataError(f"{csv_path}: the coords row names no x/y columns")
    header_parts, coords = _header_columns(csv_path, rows, first)
    cols = {}
    for i in range(first, len(coords)):
        cols.setdefault(header_parts[i], {})[coords[i]] = i
    parts = list(cols)
    if parts != names:
        raise DataError(f"{csv_path}: bodyparts {parts} disagree with config.yaml {names}")
    samples = []
    for line, row in enumerate(rows[3:], start=4):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < len(coords):
            raise DataError(f"{csv_path}: line {line} has {len(row)} columns, expected {len(coords)}")
        extra = next((i for i in range(len(coords), len(row)) if row[i].strip()), None)
        if extra is not None:
            raise DataError(
                f"{csv_path}: line {line} has a value in column {extra + 1}, which the header names no bodypart for"
            )
        name = "/".join(c for c in row[:first] if c)
        try:
            xy = np.array(
                [[_parse_float(row[cols[p]["x"]]), _parse_float(row[cols[p]["y"]])] for p in names], np.float32
            )
        except (ValueError, KeyError):
            raise DataError(f"{csv_path}: line {line} has a non-numeric coordinate") from None
        visible = np.isfinite(xy).all(1)
        xy[~visible] = 0
        path = project / name
        if check_images and not path.is_file():
            raise DataError(f"{path}: image file not found (listed in {csv_path.name} line {line})")
        samples.append(Sample(path, xy, visible, name))
    return samples


def read_dlc(project: Path, check_images: bool = True) -> Dataset:
    """Read every labelled frame of a DeepLabCut project folder."""
    project = Path(project)
    names = _bodyparts(project)
    csvs = sorted((project / "labeled-data").glob("*/CollectedData_*.csv"))
    if not csvs:
        raise DataError(f"{project}: no labeled-data/*/CollectedData_*.csv files")
    samples = [s for p in csvs for s in read_dlc_csv(p, names, project, check_images)]
    if not samples:
        raise DataError(f"{project}: the CollectedData files hold no labelled frames")
    return Dataset(samples, names, _skeleton(project, names), project, "dlc")
