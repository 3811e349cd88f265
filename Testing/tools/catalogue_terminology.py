"""Write the terminology of every label of the shipped catalogue from Slicer's own terminology file.

Authoring tool (run by hand after adding a catalogue entry; ``--check`` only reports). Every code it
writes is a type of Slicer's "Segmentation category and type - DICOM master list"
(SegmentationCategoryTypeModifier-DICOM-Master.term.json, in ../shared/slicer-api/terminologies or
MEDAI_SLICER_TERMINOLOGIES), with that file's category and meaning:

1. names the engine's own map knows (MedAILib.models.terminology: organs of the Model Zoo) use it;
2. the others are looked up in ``TYPES`` below: label name (without its side) -> the listed type.
   Where the list has no type as specific as the label (a vertebral level, a rib number, a cortical
   gyrus, the hippocampal head or tail, a prostate zone), the label gets the most specific listed
   type that contains it and its name keeps the rest. No code is ever made up;
3. a side in the name (right/left) becomes the type modifier where the list has Right/Left
   modifiers for that type; otherwise the side stays in the name only.

Only the "terminology" value of each label changes; the rest of catalogue.json is left as written.
Testing/tests/test_slicer_terminology.py checks every result through Slicer's terminology logic.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "MedAI"))

from MedAILib.models import terminology  # noqa: E402

CATALOGUE = REPO / "MedAI" / "MedAILib" / "resources" / "catalogue.json"
TERMINOLOGIES = Path(os.environ.get("MEDAI_SLICER_TERMINOLOGIES") or REPO.parent / "shared" / "slicer-api" / "terminologies")
MASTER = "SegmentationCategoryTypeModifier-DICOM-Master.term.json"
ANATOMY, MORPHOLOGY, TISSUE = "123037004", "49755003", "85756007"

# (regular expression on the name without its side, lower case, words joined by one space) -> (category, type code)
TYPES = [
    (r"anterior|posterior", ANATOMY, "5366008"),  # hippocampus_unet: head / body+tail of the hippocampus
    (r"portal vein and splenic vein|portal and splenic veins", ANATOMY, "29092000"),  # Vein: both, no single listed type
    (r"lung (upper|lower) lobe", ANATOMY, None),  # resolved below (upper / lower lobe of lung)
    (r"lung middle lobe", ANATOMY, "72481006"),  # Middle lobe of right lung
    (r"vertebrae [ctl]\d+", ANATOMY, "51282000"),  # Vertebra (no level codes in the list)
    (r"rib \d+", ANATOMY, "113197003"),  # Rib (no rib-number codes)
    (r"heart myocardium", ANATOMY, "80891009"),  # Heart (no myocardium type)
    (r"heart atrium", ANATOMY, None),  # Right / Left atrium (resolved below)
    (r"heart ventricle", ANATOMY, None),  # Right / Left ventricle (resolved below)
    (r"pulmonary artery", ANATOMY, "81040000"),
    (r"iliac artery", ANATOMY, "73634005"),  # Common iliac artery
    (r"iliac vena", ANATOMY, "46027005"),  # Common iliac vein
    (r"hip", ANATOMY, "72001000"),  # Bone of lower limb (the hip bone; no hip-bone type)
    (r"face", ANATOMY, "89545001"),
    (r"gluteus (maximus|medius|minimus)|iliopsoas", ANATOMY, "102292000"),  # Muscle of lower limb
    (r"autochthon", ANATOMY, "44947003"),  # Erector spinae muscle
    (r"parenchyma", ANATOMY, "64033007"),  # renal parenchyma: Kidney
    (r"tumor core|whole tumor|enhancing tumor|necrotic and non enhancing tumor core.*", MORPHOLOGY,
     "108369006"),  # BraTS tumour regions: Neoplasm (no code for the core or the enhancing part)
    (r"peritumoral edema.*", MORPHOLOGY, "79654002"),  # BraTS: Edema
    (r"central gland|peripheral zone", ANATOMY, "41216001"),  # prostate zones: Prostate
    # whole-brain parcellation (names as "Right-ACgG--anterior-cingulate-gyrus")
    (r"3rd ventricle", ANATOMY, "49841001"),
    (r"4th ventricle", ANATOMY, "35918002"),
    (r"accumbens area", ANATOMY, "427667007"),
    (r"amygdala", ANATOMY, "4958002"),
    (r"brain stem", ANATOMY, "119238007"),
    (r"caudate", ANATOMY, "11000004"),
    (r"cerebellum exterior|cerebellar vermal lobules .*", ANATOMY, "113305005"),  # Cerebellum
    (r"cerebellum white matter", ANATOMY, "33060004"),
    (r"cerebral white matter", ANATOMY, "68523003"),
    (r"hippocampus", ANATOMY, "5366008"),
    (r"inf lat vent|lateral ventricle", ANATOMY, "66720007"),  # the inferior horn is part of the lateral ventricle
    (r"pallidum", ANATOMY, "14738005"),
    (r"putamen", ANATOMY, "89278009"),
    (r"thalamus proper", ANATOMY, "42695009"),
    (r"ventral dc", ANATOMY, "87563008"),  # ventral diencephalon: Diencephalon
    (r"basal forebrain", ANATOMY, "12738006"),  # Brain (no forebrain / cerebrum type)
    (r"(acgg|mcgg|pcgg) .*|phg .*|sca .*", ANATOMY, "279215006"),  # cingulate, parahippocampal, subcallosal: Limbic lobe
    (r"(ains|pins) .*", ANATOMY, "36169008"),  # Insula
    (r"ent .*", ANATOMY, "3937002"),  # Entorhinal Cortex
    (r"(aorg|lorg|morg|porg|gre|frp|mfc|mfg|msfg|sfg|prg|mprg|smc|fo|opifg|orifg|trifg) .*", ANATOMY, "83251001"),  # Frontal lobe
    (r"(ang|smg|spl|pcu|pog|mpog|po) .*", ANATOMY, "16630005"),  # Parietal lobe
    (r"(calc|cun|iog|lig|mog|ocp|ofug|sog) .*", ANATOMY, "31065004"),  # Occipital lobe
    (r"(fug|itg|mtg|stg|pp|pt|tmp|ttg) .*", ANATOMY, "78277001"),  # Temporal lobe
    (r"co .*", ANATOMY, "40146001"),  # central operculum (frontal and parietal): Cerebral cortex
]
SIDES = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}
SIDED_TYPES = {("lung (upper|lower) lobe", "upper"): "45653009", ("lung (upper|lower) lobe", "lower"): "90572001",
               ("heart atrium", "right"): "73829009", ("heart atrium", "left"): "82471001",
               ("heart ventricle", "right"): "53085002", ("heart ventricle", "left"): "87878005"}


def master_list(folder=TERMINOLOGIES) -> dict:
    """{(category code, type code): (category meaning, type meaning, {modifier code: meaning})}."""
    data = json.loads((Path(folder) / MASTER).read_text(encoding="utf-8"))
    types = {}
    for cat in data["SegmentationCodes"]["Category"]:
        for t in cat.get("Type", []):
            mods = {m["CodeValue"]: m["CodeMeaning"] for m in t.get("Modifier", [])}
            types[(cat["CodeValue"], t["CodeValue"])] = (cat["CodeMeaning"], t["CodeMeaning"], mods)
    return types


def _words(name: str) -> tuple:
    """(side or None, the rest lower case, words joined by one space)."""
    words = [w for w in re.split(r"[\s_\-]+", name.lower()) if w]
    sides = [w for w in words if w in SIDES]
    rest = " ".join(w for w in words if w not in SIDES)
    return (sides[0] if len(sides) == 1 else None), rest


def entry_for(name: str, types: dict) -> str:
    """The terminology string of one label (raises KeyError when nothing fits)."""
    side, rest = _words(name)
    found = terminology.lookup(name)
    if found is not None:
        category = found["category"]["code"]
        code = found["code"]
        side = next((k for k, v in SIDES.items() if found["laterality"] and v[0] == found["laterality"][0]), None)
    else:
        for pattern, category, code in TYPES:
            if re.fullmatch(pattern, rest):
                if code is None:
                    which = side if pattern.startswith("heart") else rest.split()[1]
                    code = SIDED_TYPES[(pattern, which)]
                break
        else:
            raise KeyError(f"no terminology rule for label {name!r} (words: {rest!r})")
    cat_meaning, type_meaning, mods = types[(category, code)]
    modifier = "^^"
    if side and SIDES[side][0] in mods:
        modifier = f"SCT^{SIDES[side][0]}^{mods[SIDES[side][0]]}"
    return (f"{terminology.CONTEXT}~SCT^{category}^{cat_meaning}~SCT^{code}^{type_meaning}~{modifier}"
            "~Anatomic codes - DICOM master list~^^~^^")


LABEL = re.compile(r'(\{\s*"value": (?P<value>\d+),\s*"name": "(?P<name>[^"]*)",\s*"color": \[[^\]]*\])'
                   r'(?:,\s*"terminology": "[^"]*")?(?P<end>\s*\})')


def rewrite(text: str, types: dict) -> str:
    """catalogue.json text with every label's terminology set (only those values change)."""
    out, pos = [], 0
    for m in LABEL.finditer(text):
        entry = entry_for(m.group("name"), types)
        indent = re.search(r"\n(\s*)\"name\"", m.group(0))
        pad = indent.group(1) if indent else " "
        out.append(text[pos:m.start()])
        out.append(f'{m.group(1)},\n{pad}"terminology": "{entry}"{m.group("end")}')
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report labels whose terminology would change")
    args = p.parse_args(argv)
    types = master_list()
    text = CATALOGUE.read_text(encoding="utf-8")
    new = rewrite(text, types)
    json.loads(new)  # still valid JSON
    if args.check:
        changed = sum(a != b for a, b in zip(text.splitlines(), new.splitlines())) + abs(len(text.splitlines()) - len(new.splitlines()))
        print(f"{changed} line(s) of {CATALOGUE.name} would change")
        return 1 if changed else 0
    CATALOGUE.write_text(new, encoding="utf-8")
    print(f"wrote the terminology of every label of {CATALOGUE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
