"""Where each input of `rtkp export` writes, and whether what is there already may be skipped, replaced or not.

Names. Every output path is owned by exactly one input of a command: an input's outputs are `<out>/<name>.coco.json`,
`.jsonl`, `.csv`, `.h5`, `.slp`, `.nwb` (formats.SUFFIX), `.annotated.mp4`, its marker `<name>.done.json` and its
partial folder `<name>.partial/`, where the name is the input's stem (`clip.mp4` → `clip`; a folder's name;
`<folder>_glob` for a glob of images). Inputs of one command that share a stem are named by their path relative to the
folder that all their paths share, with `/` written as `__` (`d1/clip.mp4`, `d2/clip.mp4` → `d1__clip`, `d2__clip`),
keeping the extension where only it differs (`clip.mp4`, `clip.avi` → `clip.mp4`, `clip.avi`); names that would still be
equal are refused before anything is written. Flat names, not subfolders: every output stays in `--out` itself, where
scripts and `*.done.json` look.

Settings. `<name>.done.json` holds the settings the outputs were made with (input path and fingerprint, model,
formats, --video, smoothing, precision) and lists every output beside it. A re-run with the same settings skips the
input; one with other settings is refused in one line before anything starts, unless `--overwrite`, which first
removes the old outputs and marker (`release`), so a finished folder never mixes outputs of two settings.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path
from typing import NamedTuple

from rtkp.errors import ConfigError
from rtkp.export.formats import SUFFIX

VIDEO_SUFFIX = ".annotated.mp4"


def output_stem(source: str) -> str:
    """An input's name when no other input of the command has the same (module docstring)."""
    p = Path(source.rstrip("/"))
    if any(c in source for c in "*?["):
        return (p.parent.name or "images") + "_glob"
    return p.stem if p.suffix else p.name


def _base(source: str) -> Path:
    """The absolute path an input's name is derived from: its folder / its stem (a glob: the glob's folder's)."""
    p = Path(os.path.abspath(source.rstrip("/") or "/"))
    folder = p.parent.parent if any(c in source for c in "*?[") else p.parent
    return folder / output_stem(source)


def output_names(sources: list[str]) -> list[str]:
    """Each input's output name (module docstring); ConfigError when two inputs would still share one."""
    names = [output_stem(s) for s in sources]
    for stem in sorted({n for n in names if names.count(n) > 1}):
        group = [i for i, n in enumerate(names) if n == stem]
        bases = [_base(sources[i]) for i in group]
        root = os.path.commonpath([str(b.parent) for b in bases])
        rel = {i: b.relative_to(root) for i, b in zip(group, bases)}
        derived = {i: "__".join(rel[i].parts) for i in group}
        for i in group:
            same = [j for j in group if derived[j] == derived[i]]
            glob_ = any(c in sources[i] for c in "*?[")
            if len(same) > 1 and Path(sources[i]).suffix and not glob_:  # only the extension differs: keep it
                names[i] = "__".join((*rel[i].parent.parts, Path(sources[i]).name))
            else:
                names[i] = derived[i]
    seen: dict[str, str] = {}
    for source, name in zip(sources, names):
        if name in seen:
            raise ConfigError(
                f"{seen[name]} and {source} would write the same outputs ({name}.*): export them to different --out"
            )
        seen[name] = source
    return names


def fingerprint(source: str) -> dict:
    p = Path(source)
    if p.is_file():
        st = p.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = sorted(glob.glob(source) if not p.exists() else [str(f) for f in p.iterdir()])
    return {"files": len(files), "newest_ns": max((os.stat(f).st_mtime_ns for f in files), default=0)}


def export_settings(source: str, weights_sha256: str, opts) -> dict:
    """What outputs (finished or partial) belong to: reused only when a re-run has the same. opts: ExportOptions."""
    settings = {
        "source": str(Path(source).resolve()),
        "input": fingerprint(source),
        "model": weights_sha256,
        "formats": list(opts.formats),
        "video": opts.video,
        "smooth": opts.smooth,
    }
    if opts.smooth != "none":
        settings["smoothing"] = dataclasses.asdict(opts.cfg.smoothing)
    if opts.precision is not None:  # another precision gives other numbers: never mixed with, or skipped as, these
        settings["precision"] = opts.precision
    if opts.max_instances is not None:  # another number of animals gives other records
        settings["max_instances"] = opts.max_instances
    if opts.whole_frame:  # the whole frame every frame gives (slightly) other numbers than following the animal
        settings["whole_frame"] = True
    return settings


class ExportTargets(NamedTuple):
    """Where an input's export goes: output name ("stem"), {format or "video": path}, the .done.json marker, and the
    settings the outputs belong to (a re-run with other settings is refused unless --overwrite)."""

    stem: str
    outputs: dict[str, Path]
    marker: Path
    settings: dict


def export_targets(source: str, opts, weights_sha256: str, name: str | None = None) -> ExportTargets:
    """One input's targets under the output name `name` (default: its stem, as when it is the only input)."""
    stem = name or output_stem(source)
    outputs = {f: opts.out / f"{stem}{SUFFIX[f]}" for f in opts.formats}
    if opts.video:
        outputs["video"] = opts.out / f"{stem}{VIDEO_SUFFIX}"
    marker = opts.out / f"{stem}.done.json"
    return ExportTargets(stem, outputs, marker, export_settings(source, weights_sha256, opts))


def plan_targets(sources: list[str], opts, weights_sha256: str) -> list[ExportTargets]:
    """Every input's targets, named so that none shares an output path (output_names), checked against what --out
    holds (check_owned): the local export and `rtkp export --ray` both start from here, before writing anything."""
    names = output_names(sources)
    targets = [export_targets(s, opts, weights_sha256, n) for s, n in zip(sources, names)]
    check_owned(sources, targets, opts.overwrite)
    return targets


def read_marker(marker: Path) -> dict | None:
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def is_complete(targets: ExportTargets) -> bool:
    """The marker is there, with these settings, and so is every output."""
    done = read_marker(targets.marker)
    return (
        done is not None
        and done.get("settings") == targets.settings
        and all(p.is_file() for p in targets.outputs.values())
    )


def check_owned(sources: list[str], targets: list[ExportTargets], overwrite: bool) -> None:
    """ConfigError (one line) unless overwrite, when --out holds under an input's name a finished export made with
    other settings or of another input, or an interrupted export (`<name>.partial/`) of another input. (An interrupted
    export of the same input with other settings is started over, as the README says.)"""
    if overwrite:
        return
    clashes = []
    for source, t in zip(sources, targets):
        done = read_marker(t.marker)
        partial = read_marker(t.marker.parent / f"{t.stem}.partial" / "settings.json")
        if done is not None and done.get("settings") != t.settings:
            old = done.get("settings") or {}
            clashes.append(f"{source}: {t.marker.parent / t.stem}.* were made {describe_change(old, t.settings)}")
        elif partial is not None and partial.get("source") != t.settings["source"]:
            clashes.append(
                f"{source}: {t.marker.parent / t.stem}.partial holds an unfinished export of another input "
                f"({partial.get('source')}; the same command as for it resumes it)"
            )
    if clashes:
        more = f" (and {len(clashes) - 1} more input(s))" if len(clashes) > 1 else ""
        raise ConfigError(f"{clashes[0]}{more}: pass --overwrite to replace them, or use another --out")


def describe_change(old: dict, new: dict) -> str:
    """How a finished export's settings differ from a re-run's, in words ("with formats csv → coco, smooth ...")."""
    if old.get("source") != new.get("source"):
        return f"from another input ({old.get('source')})"

    def word(value):
        if isinstance(value, list):
            return ",".join(map(str, value))
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "default" if value is None else str(value)

    changes = []
    for key in ("input", "model", "formats", "video", "smooth", "smoothing", "precision"):
        if old.get(key) != new.get(key):
            if key == "input":
                changes.append("an earlier version of the input (size or modification time differ)")
            elif key == "model":
                changes.append("another model")
            elif key == "smoothing":
                if old.get("smooth") == new.get("smooth"):  # else the --smooth change says it
                    changes.append("other smoothing parameters")
            else:
                flag = "--format" if key == "formats" else f"--{key}"
                changes.append(f"{flag} {word(old.get(key))} (now {word(new.get(key))})")
    return "with " + ", ".join(changes or ["other settings"])


def release(targets: ExportTargets) -> None:
    """Before an input is exported (again): remove every output its marker lists, then the marker, so that the
    folder never holds outputs of two settings (a crash in between leaves a marker whose outputs are missing, which
    counts as not done). Only this name's own output files are removed, whatever the marker says."""
    done = read_marker(targets.marker)
    own = {f"{targets.stem}{s}" for s in (*SUFFIX.values(), VIDEO_SUFFIX)}
    listed = ((done or {}).get("result") or {}).get("outputs") or {}
    for path in listed.values() if isinstance(listed, dict) else ():
        if isinstance(path, str) and Path(path).name in own:
            (targets.marker.parent / Path(path).name).unlink(missing_ok=True)
    targets.marker.unlink(missing_ok=True)


def skipped(source: str) -> dict:
    return {"source": source, "skipped": True, "reason": "outputs complete (use --overwrite to redo)"}


__all__ = [
    "ExportTargets",
    "check_owned",
    "export_settings",
    "export_targets",
    "is_complete",
    "output_names",
    "output_stem",
    "plan_targets",
    "release",
    "skipped",
]
