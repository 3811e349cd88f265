"""Find paired (source, target) images for training a modality-conversion model.

Accepted layouts:

- a CSV with columns ``case,source,target`` (optional ``mask``), paths relative to the CSV;
- a folder of case folders, each holding either image files named by contrast
  (SynthRAD: ``mr.nii.gz``/``ct.nii.gz``/``mask.nii.gz``; BraTS: ``*-t2w.nii.gz``/``*-t2f.nii.gz``)
  or DICOM series picked by their SeriesDescription (TCIA: ``T2_reg``/``FLAIR_reg``), or a
  ``preprocessed/`` sub-folder holding such files (BraTS toolkit: ``<case>_t2_bet.nii.gz``, ``<case>_fla_bet.nii.gz``).
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from MedAILib.core.errors import InputError
from MedAILib.io import SUPPORTED_IMAGE_SUFFIXES, list_dicom_series, read_image
from MedAILib.core.atomic import full_suffix

# Names a contrast goes by in file names and series descriptions (compared lower-case, alphanumerics only).
ALIASES = {
    "t2": ["t2", "t2w", "t2reg", "t2tse", "t2ax"],
    "flair": ["flair", "t2f", "fla", "flairreg", "t2flair"],
    "t1": ["t1", "t1n", "t1pre", "t1prereg"],
    "t1c": ["t1c", "t1post", "t1gd", "t1ce"],
    "mr": ["mr", "mri"],
    "ct": ["ct", "sct"],
    "mask": ["mask"],
}


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def names_for(contrast: str) -> list:
    key = _norm(contrast)
    return ALIASES.get(key, [key])


@dataclasses.dataclass
class Pair:
    case: str
    source: str
    target: str
    source_series: str = None
    target_series: str = None
    mask: str = None

    def load(self):
        """(source Volume, target Volume, mask Volume or None)."""
        src = read_image(self.source, self.source_series)
        tgt = read_image(self.target, self.target_series)
        mask = read_image(self.mask) if self.mask else None
        return src, tgt, mask


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and full_suffix(p).lower() in SUPPORTED_IMAGE_SUFFIXES)


# Trailing words of processed file names that do not name the contrast (``TCGA-FG-6692_t2_bet``).
PROCESSING_SUFFIXES = {"bet", "brain", "skullstripped", "stripped", "reg", "registered", "n4"}


def _match_file(files: list, contrast: str):
    wanted = set(names_for(contrast))
    hits = []
    for f in files:
        stem = f.name[: len(f.name) - len(full_suffix(f))]
        tokens = [_norm(t) for t in re.split(r"[-_.\s]+", stem)]
        while len(tokens) > 1 and tokens[-1] in PROCESSING_SUFFIXES:
            tokens = tokens[:-1]
        if _norm(stem) in wanted or (tokens and tokens[-1] in wanted):
            hits.append(f)
    return hits[0] if len(hits) == 1 else None


def _match_series(series: list, contrast: str):
    wanted = names_for(contrast)
    hits = [s for s in series if _norm(s.description) in wanted
            or any(_norm(s.description).startswith(w) and _norm(s.description)[len(w):] in ("", "reg") for w in wanted)]
    return hits[0] if len(hits) == 1 else None


def pair_in_folder(folder: Path, source: str, target: str):
    files = _image_files(folder)
    s, t = _match_file(files, source), _match_file(files, target)
    if s and t:
        m = _match_file(files, "mask")
        return Pair(folder.name, str(s), str(t), mask=str(m) if m else None)
    try:
        series = list_dicom_series(folder)
    except InputError:
        return None
    s, t = _match_series(series, source), _match_series(series, target)
    if s and t:
        return Pair(folder.name, s.folder, t.folder, s.uid, t.uid)
    pre = folder / "preprocessed"  # BraTS-toolkit layout: <case>/{native,preprocessed}/ -- use the co-registered one
    if pre.is_dir():
        pair = pair_in_folder(pre, source, target)
        if pair is not None:
            return dataclasses.replace(pair, case=folder.name)
    return None


def find_pairs(spec, source: str, target: str) -> list:
    """All (source, target) pairs described by ``spec`` (CSV file or folder of cases), sorted by case."""
    spec = Path(spec).expanduser()
    if spec.is_file() and spec.suffix.lower() == ".csv":
        pairs = []
        with open(spec, newline="") as f:
            for row in csv.DictReader(f):
                base = spec.parent
                pairs.append(Pair(row.get("case") or Path(row["source"]).stem, str(base / row["source"]),
                                  str(base / row["target"]), mask=str(base / row["mask"]) if row.get("mask") else None))
        return pairs
    if not spec.is_dir():
        raise InputError(f"{spec} is neither a CSV file nor a folder", "give a folder of case folders or a CSV of pairs")
    pairs = []
    candidates = [spec] + sorted(p for p in spec.iterdir() if p.is_dir())
    for folder in candidates:
        if folder == spec and any(p.is_dir() for p in spec.iterdir()):
            continue  # a folder of cases: look only inside the case folders
        pair = pair_in_folder(folder, source, target)
        if pair:
            pairs.append(pair)
    if not pairs:
        raise InputError(f"no {source}/{target} pairs found under {spec}",
                         f"each case folder needs one {source} and one {target} image (file names like "
                         f"{names_for(source)[0]}.nii.gz / {names_for(target)[0]}.nii.gz, or DICOM series "
                         "described by contrast), or give a CSV with case,source,target columns")
    return pairs
