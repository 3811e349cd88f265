"""Which series of a DICOM study feeds which model input, and why.

For each model input (catalogue ``inputs``: modality, name/description/``sequence``, ``contrast``,
``orientation``, ``max_slice_thickness_mm``) the series of the study are filtered step by step; every
step that removes a series says so, and the reason of the choice is the list of steps. Steps:

1. modality (DICOM Modality tag) must match;
2. field of view fits the model's training images (catalogue ``domain.extent_mm``), when declared;
3. sequence: series whose SeriesDescription (else ProtocolName) names the wanted sequence
   (T1, T1c, T2, FLAIR, ADC, DWI, ...; contrast from ContrastBolusAgent or the description); when
   none does, series naming no sequence at all stay candidates (series naming another sequence never);
4. contrast, orientation and slice thickness, when the input declares them;
5. an ORIGINAL acquisition is preferred over a DERIVED one.

One series left: chosen. None, or several: refused with the candidate list and how to choose
(``--series INPUT=UID`` or ``--series INPUT=PATTERN``, a case-insensitive pattern of the
SeriesDescription). One series never feeds two inputs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Optional

import numpy as np

from MedAILib.core.errors import InputError

# Ordered: the first that matches names the sequence (FLAIR before T2, T1c before T1).
SEQUENCES = (
    ("FLAIR", r"flair|dark[ _-]?fluid|\btirm"),
    ("ADC", r"\badc\b|apparent[ _-]?diff"),
    ("DWI", r"\bdwi\b|diffusion|\btrace\b|\bb[ _-]?1000\b|ep2d[ _-]?diff"),
    ("SWI", r"\bswi\b|t2\*|\bt2star|susceptib"),
    ("T1c", r"\bt1[ _-]?c(e)?\b|\bt1[ _-]?gd|\bt1\w{0,6}[ _-]?(post|\+ ?c|c\+|gd|gad|contrast|enh)|"
            r"(post|gd|gad)[ _-]?(contrast[ _-]?)?t1|mprage[ _-]?post"),
    ("T1", r"\bt1|mprage|\bspgr|\bbravo|\bvibe"),
    ("T2", r"\bt2|\btse\b|\bhaste"),
    ("PD", r"\bpd\b|proton[ _-]?dens"),
)
CONTRAST_WORDS = r"\+ ?c\b|\bc\+|post|\bgd|gad|contrast|enhanc"


def sequence_of_text(text: str) -> Optional[str]:
    text = (text or "").lower()
    for name, pattern in SEQUENCES:
        if re.search(pattern, text):
            return name
    return None


def series_sequence(s) -> tuple:
    """(sequence or None, where it was read) of a DicomSeries; T1 with a contrast agent is T1c."""
    for field in ("description", "protocol"):
        seq = sequence_of_text(getattr(s, field, ""))
        if seq:
            if seq == "T1" and getattr(s, "contrast_agent", ""):
                return "T1c", f"{field} + ContrastBolusAgent"
            return seq, field
    return None, ""


def has_contrast(s) -> bool:
    return bool(getattr(s, "contrast_agent", "")) or bool(re.search(CONTRAST_WORDS, (s.description or "").lower()))


def wanted_sequence(spec_input: dict) -> Optional[str]:
    """The sequence a model input wants: its ``sequence``, else read from its name, else its description."""
    if spec_input.get("sequence"):
        return str(spec_input["sequence"])
    for text in (spec_input.get("name", ""), spec_input.get("description", "")):
        seq = sequence_of_text(text)
        if seq:
            return seq
    return None


def plane_of(orientation) -> str:
    """axial / coronal / sagittal / oblique from ImageOrientationPatient (slice normal's main axis)."""
    if not orientation or len(orientation) != 6:
        return "unknown"
    n = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    k = int(np.argmax(np.abs(n)))
    if abs(n[k]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[k]


def series_extent_mm(s) -> np.ndarray:
    """Physical size of a series (in-plane from rows/columns x pixel spacing, through-plane from the
    first and last slice positions), largest first."""
    import pydicom

    ps = s.pixel_spacing or (1.0, 1.0)
    depth = 0.0
    try:
        a, b = (pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["ImagePositionPatient"])
                for f in (s.files[0], s.files[-1]))
        step = np.linalg.norm(np.asarray(b.ImagePositionPatient, float) - np.asarray(a.ImagePositionPatient, float))
        depth = step * s.n_files / max(s.n_files - 1, 1)
    except Exception:  # no positions: thickness x count is the best estimate
        depth = (s.slice_thickness or 1.0) * s.n_files
    return np.sort(np.array([s.columns * ps[1], s.rows * ps[0], depth], float))[::-1]


def describe_series(s) -> str:
    seq, _ = series_sequence(s)
    kind = "derived" if "DERIVED" in (s.image_type or ()) else "original"
    return (f"{s.description or '(no description)'} [{s.modality or '?'}, {seq or 'sequence not named'}, "
            f"{s.columns}x{s.rows}x{s.n_files}, {kind}, UID {s.uid}]")


@dataclasses.dataclass
class Choice:
    input_name: str
    series: object           # DicomSeries
    reason: str
    overridden: bool = False

    def record(self) -> dict:
        """What the report keeps per input (no patient data)."""
        return {"input": self.input_name, "series_instance_uid": self.series.uid,
                "series_description": self.series.description, "series_number": self.series.series_number,
                "reason": self.reason}


def parse_overrides(items) -> dict:
    """``--series`` values -> {input name or index: UID or pattern}. ``INPUT=VALUE`` names the input;
    a bare VALUE applies to a one-input model (key None)."""
    out = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not sep:
            name, value = None, item
        if not value.strip():
            raise InputError(f"--series {item!r}: give a SeriesInstanceUID or a description pattern",
                             "e.g. --series T1=1.3.6.1.4... or --series FLAIR='*flair*'")
        out[name.strip() if name else None] = value.strip()
    return out


def _match_override(value: str, series: list, input_name: str, study_name: str):
    exact = [s for s in series if s.uid == value]
    if exact:
        return exact[0], f"--series gave its SeriesInstanceUID"
    pattern = value if any(c in value for c in "*?[") else f"*{value}*"
    hits = [s for s in series if fnmatch.fnmatch((s.description or "").lower(), pattern.lower())]
    if len(hits) == 1:
        return hits[0], f"--series pattern {value!r} matches its description"
    listing = "; ".join(describe_series(s) for s in (hits or series))
    raise InputError(f"study {study_name}: --series {input_name}={value!r} matches "
                     f"{'no series' if not hits else f'{len(hits)} series'}: {listing}",
                     "give the SeriesInstanceUID, or a pattern that matches one description")


def choose_series(study, inputs: list, profile: Optional[dict] = None, overrides: Optional[dict] = None,
                  log=None) -> list:
    """[Choice] per model input (in the model's input order) for one DicomStudy; raises InputError
    naming the candidates when a choice is impossible or ambiguous."""
    overrides = dict(overrides or {})
    series = list(study.series)
    taken, choices = set(), []
    names = [i.get("name") or f"input {k + 1}" for k, i in enumerate(inputs)]
    unknown = [k for k in overrides if k is not None and k not in names]
    if unknown:
        raise InputError(f"--series names input(s) {', '.join(unknown)} the model does not have",
                         f"the model's inputs are: {', '.join(names)}")
    if None in overrides and len(inputs) > 1:
        raise InputError("--series without an input name, but the model has several inputs",
                         f"write --series INPUT=UID for each of: {', '.join(names)}")
    chosen = {}
    for k, spec in enumerate(inputs):  # --series first: what the user named is never chosen for another input
        override = overrides.get(names[k], overrides.get(None) if len(inputs) == 1 else None)
        if override is not None:
            s, why = _match_override(override, series, names[k], study.name)
            chosen[k] = Choice(names[k], s, why, overridden=True)
            taken.add(s.uid)
    for k, spec in enumerate(inputs):
        if k not in chosen:
            chosen[k] = _choose_one(study, [s for s in series if s.uid not in taken], spec, names[k], profile)
            taken.add(chosen[k].series.uid)
    choices = [chosen[k] for k in range(len(inputs))]
    for c in choices:
        if log:
            log(f"input {c.input_name} <- series {c.series.description or c.series.uid!r} ({c.reason})")
    return choices


def _choose_one(study, series: list, spec: dict, name: str, profile: Optional[dict]) -> Choice:
    reasons, removed = [], []

    def keep(cands, test, why_kept, why_removed, soft=False):
        kept = [s for s in cands if test(s)]
        gone = [s for s in cands if not test(s)]
        if soft and not kept:  # a preference, not a requirement: nothing to prefer
            return cands
        if gone and kept:
            reasons.append(why_kept)
        removed.extend((s, why_removed) for s in gone)
        return kept

    cands = list(series)
    modality = (spec.get("modality") or "").upper()
    if modality:
        cands = keep(cands, lambda s: (s.modality or "").upper() == modality, f"modality {modality}",
                     f"modality is not {modality}")
    ext = (profile or {}).get("extent_mm")
    if ext and cands:
        from MedAILib.tasks.segmentation.domain import EXTENT_FACTOR

        hi = np.sort(ext["max"])[::-1] * EXTENT_FACTOR
        lo = np.sort(ext["min"])[::-1] / EXTENT_FACTOR
        sizes = {s.uid: series_extent_mm(s) for s in cands}
        fits = lambda s: bool(np.all(sizes[s.uid] <= hi) and np.all(sizes[s.uid] >= lo))  # noqa: E731
        cands = keep(cands, fits, "its field of view fits the model's training images "
                                  f"(at most {' x '.join(f'{x:.0f}' for x in hi / EXTENT_FACTOR)} mm)",
                     "field of view unlike the model's training images")
    want = wanted_sequence(spec)
    if want and cands:
        named = [s for s in cands if series_sequence(s)[0] == want]
        if named:
            cands = keep(cands, lambda s: series_sequence(s)[0] == want,
                         f"its description names {want}", f"not a {want} series")
        else:
            cands = keep(cands, lambda s: series_sequence(s)[0] is None,
                         f"no series is named {want}; its description names no sequence, so it cannot be ruled out",
                         "its description names another sequence")
    if spec.get("contrast") is not None and cands:
        cands = keep(cands, lambda s: has_contrast(s) == bool(spec["contrast"]),
                     "with contrast" if spec["contrast"] else "without contrast",
                     "contrast does not match")
    if spec.get("orientation") and cands:
        cands = keep(cands, lambda s: plane_of(s.orientation) == spec["orientation"],
                     f"{spec['orientation']} slices", f"not {spec['orientation']}")
    if spec.get("max_slice_thickness_mm") and cands:
        limit = float(spec["max_slice_thickness_mm"])
        cands = keep(cands, lambda s: 0 < (s.slice_thickness or 0) <= limit, f"slices at most {limit:g} mm thick",
                     f"slices thicker than {limit:g} mm")
    if len(cands) > 1:
        cands = keep(cands, lambda s: "DERIVED" not in (s.image_type or ()), "an original acquisition (not derived)",
                     "a derived series", soft=True)
    if len(cands) == 1:
        s = cands[0]
        why = "; ".join(reasons) or "the only series of the study"
        if want and series_sequence(s)[0] != want:
            why += f" (check: its description {s.description!r} does not say {want})"
        return Choice(name, s, why)
    wanted = f"{modality or 'any modality'}{', ' + want if want else ''}"
    if not cands:
        listing = "; ".join(f"{describe_series(s)}: {why}" for s, why in removed) or "(no series)"
        raise InputError(f"study {study.name}: no series fits model input {name} ({wanted}). Candidates: {listing}",
                         f"choose one with --series {name}=UID (or a description pattern)")
    listing = "; ".join(describe_series(s) for s in cands)
    raise InputError(f"study {study.name}: {len(cands)} series could feed model input {name} ({wanted}): {listing}",
                     f"choose one with --series {name}=UID (or a description pattern)")
