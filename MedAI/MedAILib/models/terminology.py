"""Map a bundle's label names to standard terminology (SNOMED-CT) via Resources/terminology_map.json.

Model Zoo bundles name their output channels freely ("kidney_right", "Left Kideny", "spleen").
We normalise the name (case, '_'/'-', word order, a few aliases and typos), pull out laterality, and
look the rest up in a small table. No fuzzy matching beyond that: a wrong code is worse than none.
The result is a Slicer terminology string (the format of ``LabelInfo.terminology``) in the context
"Segmentation category and type - DICOM master list", whose file Slicer ships: every code in the
table is a type listed there, and a side becomes the type modifier only where that list has
Right/Left modifiers for the type (``lateral`` in the table); otherwise the side stays in the name.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Optional

from MedAILib.core.paths import resources_dir

# SNOMED-CT laterality qualifiers (Slicer puts them in the "type modifier" field).
LATERALITY = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}
CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@functools.lru_cache(maxsize=4)
def load_map(path: Optional[str] = None) -> dict:
    p = path or str(resources_dir() / "terminology_map.json")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def _words(name: str, aliases: dict) -> list:
    text = re.sub(r"[_\-\s]+", " ", str(name).strip().lower())
    for old, new in aliases.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return [w for w in text.split(" ") if w]


def lookup(name: str, table: Optional[dict] = None) -> Optional[dict]:
    """``{'code','meaning','category':{...},'laterality':(code,meaning)|None}`` or None if unmapped."""
    table = table or load_map()
    words = _words(name, table.get("aliases", {}))
    if not words:
        return None
    terms = {" ".join(sorted(k.split())): (k, v) for k, v in table["terms"].items()}
    key = " ".join(sorted(words))
    if key in terms:  # e.g. 'kidney right' -> 'right kidney' has its own code
        _, term = terms[key]
        return _result(term, None, table)
    side = [w for w in words if w in LATERALITY]
    rest = [w for w in words if w not in LATERALITY]
    if len(side) == 1 and rest:
        key = " ".join(sorted(rest))
        if key in terms:
            _, term = terms[key]
            return _result(term, LATERALITY[side[0]] if term.get("lateral") else None, table)
    return None


def _result(term: dict, laterality, table: dict) -> dict:
    cat = table["categories"][term.get("category", "anatomy")]
    return {"code": term["code"], "meaning": term["meaning"], "category": cat, "laterality": laterality}


def terminology_string(name: str, table: Optional[dict] = None) -> Optional[str]:
    """Slicer's terminology entry string for ``name``, or None when the name is not in the table."""
    t = lookup(name, table)
    if t is None:
        return None
    cat = t["category"]
    mod = f"SCT^{t['laterality'][0]}^{t['laterality'][1]}" if t["laterality"] else "^^"
    return (f"{CONTEXT}~{cat['scheme']}^{cat['code']}^{cat['meaning']}~SCT^{t['code']}^{t['meaning']}"
            f"~{mod}~{_ANATOMIC_CONTEXT}~^^~^^")
