"""MONAI Model Zoo bundles: describe a bundle from its own files, and add one to the user's catalogue.

A catalogue entry is built from the bundle's ``configs/metadata.json`` (``network_data_format``
inputs/outputs, ``channel_def``/``label_def``, ``spatial_shape``, name, version, references) and its
inference config, read as plain JSON/YAML: nothing in the config is evaluated here, because the bundle
is not trusted yet while we describe it. ``add_bundle`` shows that description, asks the user to trust
the bundle (its config can run Python code), copies it into ``MEDAI_HOME/models/<id>`` and records the
entry in the user catalogue ``MEDAI_HOME/catalogue.json`` (same schema as Resources/catalogue.json); the
trust store (:mod:`.trust`) keeps a hash of its configs and scripts, so a later edit makes it untrusted.
"""

from __future__ import annotations

import colorsys
import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

from MedAILib.core.atomic import atomic_output
from MedAILib.core.paths import resources_dir
from MedAILib.core.errors import InputError, ModelError
from MedAILib.models.cache import bundle_dir, models_dir, remove_tree_in_cache
from MedAILib.models.checksums import digest_file
from MedAILib.models.terminology import terminology_string

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
MODELZOO_PREFIX = "modelzoo:"
# Model Zoo entries live in Resources/catalogue.json (those with "modelzoo_name"). Their URL and SHA-1
# were read from the Model Zoo's own models/model_info.json (the Model Zoo computes them with
# hash_type="sha1", ci/update_model_info.py), inputs/labels from each bundle's configs/metadata.json;
# "provenance" names the repository path and commit of each. verified=false entries refuse to download.
MODELZOO_ENTRIES = "modelzoo_entries.json"  # optional extra file with the same layout


# --------------------------------------------------------------------------------------------
# reading a bundle without running it
# --------------------------------------------------------------------------------------------
def _read_config_file(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # MONAI needs PyYAML only for YAML bundles
        except ImportError as e:
            raise ModelError(f"{path.name} is YAML but PyYAML is not installed", "pip install PyYAML") from e
        return yaml.safe_load(text) or {}
    return json.loads(text)


def find_bundle_root(folder: Path) -> Path:
    """The folder holding ``configs/metadata.json`` (a zip often wraps the bundle in one folder)."""
    folder = Path(folder)
    if (folder / "configs" / "metadata.json").is_file():
        return folder
    hits = [p.parent.parent for p in folder.glob("*/configs/metadata.json")]
    if len(hits) == 1:
        return hits[0]
    raise InputError(f"{folder} is not a MONAI bundle (no configs/metadata.json)",
                     "give a bundle folder or zip in the MONAI Model Zoo layout")


def read_metadata(bundle: Path) -> dict:
    return _read_config_file(Path(bundle) / "configs" / "metadata.json")


def read_inference_config(bundle: Path) -> tuple:
    """(config dict, file name) of the bundle's inference config; raises if there is none."""
    for name in CONFIG_NAMES:
        p = Path(bundle) / "configs" / name
        if p.is_file():
            return _read_config_file(p), name
    raise InputError(f"bundle {bundle} has no configs/inference.json or .yaml",
                     "only bundles with an inference config can be run")


def _deref(config: dict, value, depth: int = 0):
    """Follow a plain '@key' reference to a top-level key (no expression evaluation)."""
    while isinstance(value, str) and value.startswith("@") and depth < 10:
        key = value[1:].split("::")[0].split("#")[0]
        if key not in config:
            return value
        value, depth = config[key], depth + 1
    return value


def _transforms(config: dict, section: str) -> list:
    node = _deref(config, config.get(section))
    if isinstance(node, dict):
        node = _deref(config, node.get("transforms", []))
    return [t for t in (node or []) if isinstance(t, dict)]


def _target_name(node: dict) -> str:
    return str(node.get("_target_", "")).split(".")[-1]


def spatial_needs(config: dict) -> dict:
    """Spacing, orientation, intensity window and sliding-window settings the config declares."""
    out: dict = {}
    for t in _transforms(config, "preprocessing"):
        name = _target_name(t)
        if name in ("Spacingd", "Spacing") and "pixdim" in t:
            pix = _deref(config, t["pixdim"])
            if isinstance(pix, (list, tuple)):
                out["spacing"] = [float(v) for v in pix]
        elif name in ("Orientationd", "Orientation") and "axcodes" in t:
            out["orientation"] = _deref(config, t["axcodes"])
        elif name in ("ScaleIntensityRanged", "ScaleIntensityRange"):
            out["intensity_window"] = [_deref(config, t.get("a_min")), _deref(config, t.get("a_max"))]
        elif name in ("NormalizeIntensityd", "NormalizeIntensity"):
            out["intensity_normalisation"] = "z-score"
    inferer = _deref(config, config.get("inferer"))
    if isinstance(inferer, dict):
        for key in ("roi_size", "sw_batch_size", "overlap"):
            if key in inferer and not str(_deref(config, inferer[key])).startswith("$"):
                out[key] = _deref(config, inferer[key])
    return out


def output_kind(config: dict) -> str:
    """'argmax' (one label per voxel) or 'sigmoid' (overlapping channels, thresholded)."""
    for t in _transforms(config, "postprocessing"):
        if _target_name(t) in ("Activationsd", "Activations") and _deref(config, t.get("sigmoid")) is True:
            return "sigmoid"
    return "argmax"


def network_spec(config: dict) -> Optional[dict]:
    """The network's ``_target_`` and literal arguments (for the resource estimate)."""
    net = _deref(config, config.get("network_def"))
    if not isinstance(net, dict):
        return None
    return {k: _deref(config, v) for k, v in net.items()}


def count_expressions(node) -> int:
    """How many '$' expressions a config holds (each can run arbitrary Python)."""
    if isinstance(node, str):
        return int(node.startswith("$"))
    if isinstance(node, dict):
        return sum(count_expressions(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_expressions(v) for v in node)
    return 0


def label_colour(index: int, total: int) -> list:
    """Distinct, reproducible colours (0..1) spread around the hue circle."""
    h = (index * 0.618033988749895) % 1.0  # golden-ratio steps stay distinct for many labels
    return [round(c, 4) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)]


def _channel_names(fmt: dict) -> dict:
    defs = fmt.get("channel_def") or fmt.get("label_def") or {}
    return {int(k): str(v) for k, v in defs.items()}


def inputs_from_metadata(meta: dict) -> list:
    """One entry per image channel the network takes: ``{name, modality, key, channel}``.

    A 4-channel MR input declared as T1c/T1/T2/FLAIR becomes four inputs, so a GUI can show one
    selector per channel labelled by the bundle's own names.
    """
    result = []
    ins = (meta.get("network_data_format") or {}).get("inputs") or {}
    for key, fmt in ins.items():
        if fmt.get("type", "image") != "image":
            continue
        n = int(fmt.get("num_channels", 1) or 1)
        names = _channel_names(fmt)
        modality = str(fmt.get("modality", "")).upper().replace("MRI", "MR")
        if n > 1 and len(names) == n:
            result += [{"name": names[c], "modality": modality, "key": key, "channel": c} for c in range(n)]
        else:  # one image (its channels, if several, come from one file or the config combines them)
            name = names.get(0, key) if len(names) <= 1 else key
            if name.lower() in ("image", "img", key.lower()):  # generic: the modality says more
                name = modality or name
            entry = {"name": name, "modality": modality, "key": key}
            if n > 1:
                entry["num_channels"] = n
            result.append(entry)
    return result


def labels_from_metadata(meta: dict, kind: str = "argmax") -> list:
    """Output labels (background excluded) with colours and terminology where a code is known.

    ``argmax`` outputs: channel c is label value c, channel 0 is background. ``sigmoid`` outputs
    (overlapping channels, e.g. BraTS TC/WT/ET) have no background channel: channel c -> value c+1.
    A post-processing that remaps values (a ``Lambdad``) cannot be read without running it: such
    bundles need their values checked (see the notes ``entry_from_bundle`` adds).
    """
    outs = (meta.get("network_data_format") or {}).get("outputs") or {}
    fmt = outs.get("pred") or next(iter(outs.values()), {})
    names = _channel_names(fmt)
    if kind == "sigmoid":
        fg = {v + 1: n for v, n in sorted(names.items()) if n.strip().lower() != "background"}
    else:
        fg = {v: n for v, n in sorted(names.items()) if v != 0}
    labels = []
    for i, (value, name) in enumerate(fg.items()):
        lab = {"value": value, "name": name.strip(), "color": label_colour(i, len(fg))}
        term = terminology_string(name)
        if term:
            lab["terminology"] = term
        labels.append(lab)
    return labels


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "bundle"


NON_IMAGE_KEYS = ("label", "labels", "seg", "mask", "pred")


def loaded_image_keys(config: dict) -> list:
    """The data keys the preprocessing's LoadImaged reads, labels excluded (['image'] for most bundles;
    several for bundles that load each input under its own key, e.g. renal CECT's artery/vein/excret)."""
    for t in _transforms(config, "preprocessing"):
        if _target_name(t) in ("LoadImaged", "LoadImage"):
            keys = _deref(config, t.get("keys", "image"))
            keys = [keys] if isinstance(keys, str) else [_deref(config, k) for k in keys or []]
            return [k for k in keys if isinstance(k, str) and k.lower() not in NON_IMAGE_KEYS]
    return ["image"]


SPATIAL_KEYS = ("spacing", "orientation", "intensity_window", "intensity_normalisation", "roi_size")


# --------------------------------------------------------------------------------------------
# what a bundle does: segmentation, or another task MedAI's segment command must not run
# --------------------------------------------------------------------------------------------
def bundle_task(meta: dict, config: dict) -> tuple:
    """("segmentation" | "detection" | "classification", why) from the bundle's own files."""
    outs = (meta.get("network_data_format") or {}).get("outputs") or {}
    out = outs.get("pred") or next(iter(outs.values()), {}) or {}
    otype, oformat = str(out.get("type", "")).lower(), str(out.get("format", "")).lower()
    task = str(meta.get("task", "")).lower()
    net = _target_name(_deref(config, config.get("network_def")) or {}) if isinstance(
        _deref(config, config.get("network_def")), dict) else ""
    if "detector" in config or "retinanet" in net.lower() or (otype == "object" and "box" in
                                                                   str(meta.get("pred_classes", "")).lower()):
        return "detection", "its network predicts boxes (detector / RetinaNet, outputs of type 'object')"
    if oformat in ("classes", "classification", "probabilities") or otype in ("probabilities", "probability"):
        return "classification", f"its output is '{otype or oformat}' ({oformat or otype}), one value per image"
    if "segment" in task or oformat == "segmentation":
        return "segmentation", "its output is a segmentation"
    if "detect" in task:
        return "detection", f"its task is '{meta.get('task')}'"
    if "classif" in task:
        return "classification", f"its task is '{meta.get('task')}'"
    return "segmentation", "no other task declared"


def require_segmentation(facts: dict, root) -> None:
    task, why = bundle_task(facts["metadata"], facts["config"])
    if task != "segmentation":
        raise ModelError(f"{root} is a {task} bundle, not a segmentation model: {why}",
                         "MedAI runs Model Zoo segmentation bundles; this one cannot be added to "
                         "`medai segment`")


# --------------------------------------------------------------------------------------------
# label values from the bundle's own post-processing (run on a synthetic network output)
# --------------------------------------------------------------------------------------------
def learn_label_values(root, kind: str = "argmax", max_channels: int = 8) -> dict:
    """{label value: sorted channel patterns producing it} by running the bundle's post-processing
    (minus file I/O and Invertd) on a synthetic network output: every on/off combination of the
    channels for sigmoid outputs, one winning channel per voxel for argmax outputs. Runs the
    bundle's config: call only for a trusted bundle. Raises ModelError when it cannot be run."""
    import itertools

    import torch
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor
    from monai.transforms import Invertd, apply_transform

    from MedAILib.models.bundle import IO_TRANSFORMS

    root = Path(root)
    meta = read_metadata(root)
    outs = (meta.get("network_data_format") or {}).get("outputs") or {}
    out = outs.get("pred") or next(iter(outs.values()), {})
    n = int(out.get("num_channels") or len(_channel_names(out)) or 0)
    if not 0 < n <= max_channels:
        raise ModelError(f"cannot learn the label values of {root.name}: {n} output channels", "")
    if kind == "sigmoid":
        patterns = [p for p in itertools.product((0, 1), repeat=n)]
    else:
        patterns = [tuple(int(c == k) for c in range(n)) for k in range(n)]
    logits = torch.tensor([[10.0 if p[c] else -10.0 for p in patterns] for c in range(n)]).reshape(n, len(patterns), 1, 1)
    cfg_path = next((root / "configs" / c for c in CONFIG_NAMES if (root / "configs" / c).is_file()), None)
    try:
        parser = ConfigParser()
        parser.read_meta(str(root / "configs" / "metadata.json"))
        parser.read_config(str(cfg_path))
        parser["bundle_root"] = str(root)
        post = parser.get_parsed_content("postprocessing")
        steps = [t for t in post.transforms if type(t).__name__ not in IO_TRANSFORMS and not isinstance(t, Invertd)]
        affine = torch.eye(4, dtype=torch.float64)
        d = {"pred": MetaTensor(logits, affine=affine), "image": MetaTensor(torch.zeros(1, len(patterns), 1, 1),
                                                                              affine=affine)}
        for t in steps:
            d = apply_transform(t, d, map_items=True, unpack_items=False)
        pred = torch.as_tensor(d["pred"])
        if pred.shape[0] > 1:
            pred = pred.argmax(0, keepdim=True)
        values = [int(round(float(v))) for v in pred.reshape(-1)]
    except Exception as e:  # noqa: BLE001 - any failure means "could not be determined"
        raise ModelError(f"cannot run the post-processing of {root.name} on a synthetic output "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})", "") from e
    mapping: dict = {}
    for p, v in zip(patterns, values):
        mapping.setdefault(v, []).append(p)
    return mapping


def labels_from_postprocessing(mapping: dict, channel_names: dict) -> list:
    """Label entries (value, name, colour, terminology) from :func:`learn_label_values`: a value is
    named after the channel(s) that alone produce it, "without" the channels that, added, change it."""
    n = len(next(iter(next(iter(mapping.values())))))
    produced = {tuple(p): v for v, ps in mapping.items() for p in ps}
    labels = []
    values = sorted(v for v in mapping if v != 0)
    for i, v in enumerate(values):
        alone = [c for c in range(n) if produced.get(tuple(int(k == c) for k in range(n))) == v]
        if not alone:
            name = f"label_{v}"
        else:
            name = " / ".join(channel_names.get(c, f"channel {c}") for c in alone)
            beaten = [d for d in range(n) if d not in alone and all(
                produced.get(tuple(int(k in (c, d)) for k in range(n)), v) != v for c in alone)]
            if beaten:
                name += " without " + ", ".join(channel_names.get(d, f"channel {d}") for d in beaten)
        lab = {"value": v, "name": name, "color": label_colour(i, len(values))}
        term = terminology_string(channel_names.get(alone[0], "")) if alone and len(alone) == 1 and not \
            name.count(" without ") else None
        if term:
            lab["terminology"] = term
        labels.append(lab)
    return labels


def check_label_values(entry: dict, root, say: Callable[[str], None] = print) -> dict:
    """Make ``entry``'s labels what the bundle's post-processing really produces (trusted bundles
    only): when the metadata's values disagree, the learned values and names replace them, and a
    visible warning says so; when they cannot be learned, a warning says the labels are unchecked."""
    meta = read_metadata(root)
    outs = (meta.get("network_data_format") or {}).get("outputs") or {}
    names = _channel_names(outs.get("pred") or next(iter(outs.values()), {}))
    try:
        mapping = learn_label_values(root, entry.get("output_kind", "argmax"))
    except ModelError as e:
        say(f"WARNING: the label values of {entry['id']} could not be determined ({e.message}); "
            "its labels come from the metadata unchecked: compare them with a result before relying on them")
        entry.setdefault("notes", []).append("label values not checked against the post-processing")
        return entry
    learned = labels_from_postprocessing(mapping, names)
    if sorted(l["value"] for l in learned) != sorted(l["value"] for l in entry.get("labels", [])):
        say(f"WARNING: {entry['id']}'s metadata says label values "
            f"{', '.join(str(l['value']) for l in entry.get('labels', [])) or 'none'}, but its post-processing "
            f"produces {', '.join(str(l['value']) + '=' + l['name'] for l in learned)}: using the post-processing's")
        entry["labels"] = learned
        entry.setdefault("notes", []).append("label values and names learned by running its post-processing")
    return entry


def bundle_facts(bundle) -> dict:
    """Everything we can learn from a bundle's files without running it (metadata + raw config)."""
    root = find_bundle_root(Path(bundle))
    meta = read_metadata(root)
    config, config_name = read_inference_config(root)
    scripts = sorted(p.relative_to(root).as_posix() for p in (root / "scripts").rglob("*.py")) \
        if (root / "scripts").is_dir() else []
    refs = meta.get("references") or []
    return {"root": root, "metadata": meta, "config": config, "config_name": config_name,
            "spatial": spatial_needs(config), "network": network_spec(config), "output_kind": output_kind(config),
            "authors": meta.get("authors", ""), "copyright": meta.get("copyright", ""),
            "citation": " ".join(refs) if isinstance(refs, list) else str(refs),
            "runs_code": {"config": config_name, "expressions": count_expressions(config), "scripts": scripts}}


def entry_from_bundle(bundle, model_id: Optional[str] = None, facts: Optional[dict] = None) -> dict:
    """A catalogue entry (Resources/catalogue.schema.json) describing the bundle, without running it.

    ``source.location`` is the bundle folder; its checksum is the SHA-256 of ``models/model.pt``.
    """
    f = facts or bundle_facts(bundle)
    root, meta = f["root"], f["metadata"]
    spatial = {k: v for k, v in f["spatial"].items() if k in SPATIAL_KEYS}
    if isinstance(spatial.get("orientation"), str) and not re.fullmatch(r"[RLAPSI]{3}", spatial["orientation"]):
        spatial.pop("orientation")
    if "intensity_window" in spatial and not all(isinstance(v, (int, float)) for v in spatial["intensity_window"]):
        spatial.pop("intensity_window")
    if "roi_size" in spatial and not (isinstance(spatial["roi_size"], list) and len(spatial["roi_size"]) == 3):
        spatial.pop("roi_size")
    inputs = [{k: v for k, v in i.items() if k in ("name", "modality", "channel", "num_channels")}
              for i in inputs_from_metadata(meta)] or [{"name": "image", "modality": ""}]
    keys = loaded_image_keys(f["config"])
    if len(keys) > 1 and len(inputs) == 1:  # one file per key, concatenated by the bundle itself
        modality = inputs[0].get("modality", "")
        inputs = [{"name": k, "modality": modality, "channel": c} for c, k in enumerate(keys)]
    entry = {
        "id": (model_id or _slug(meta.get("name") and root.name or root.name)).lower(),
        "title": meta.get("name") or meta.get("task") or root.name,
        "description": meta.get("description", ""),
        "task": "segmentation",
        "version": str(meta.get("version", "0")),
        "inputs": inputs,
        "input_count": len(inputs),
        "labels": labels_from_metadata(meta, f["output_kind"]),
        "output_kind": f["output_kind"],
        "spatial": spatial,
        "source": {"location": str(root), "format": "bundle-folder"},
        "licence": _licence_line(root, meta),
        "citation": f["citation"],
        "verified": False,  # nothing published to verify a local bundle against; it runs because trusted
        "notes": [f"authors: {f['authors'] or '?'}; {f['copyright']}".strip("; "),
                  f"intended use: {meta.get('intended_use', 'not stated')}"],
    }
    if any(_target_name(t) in ("Lambdad", "Lambda") for t in _transforms(f["config"], "postprocessing")):
        entry["notes"].append("its post-processing remaps label values with a Lambda: check the label values "
                              "against a result before relying on the names")
    weights = next((root / "models" / n for n in ("model.pt", "model.pth") if (root / "models" / n).is_file()), None)
    if weights is not None:
        entry["checksum"] = {"algorithm": "sha256", "value": digest_file(weights, "sha256")}
        entry["source"]["checksum_of"] = weights.relative_to(root).as_posix()
    return entry


def _licence_line(root: Path, meta: Optional[dict] = None) -> str:
    if meta and meta.get("license"):
        return str(meta["license"])
    lic = root / "LICENSE"
    if lic.is_file():
        for line in lic.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                return line.strip()
    return "not stated in the bundle (no LICENSE file)"


def describe(entry: dict, facts: dict) -> str:
    """What a person should read before trusting a bundle."""
    ins = ", ".join(f"{i['name']} ({i['modality'] or '?'})" for i in entry["inputs"]) or "none declared"
    labs = entry["labels"]
    shown = ", ".join(f"{l['value']}={l['name']}" for l in labs[:12]) + (f", … ({len(labs)} in all)" if len(labs) > 12 else "")
    rc = facts["runs_code"]
    lines = [
        f"{entry['title']}  (id {entry['id']}, version {entry['version']})",
        f"  inputs:  {ins}",
        f"  labels:  {shown or 'none declared'}" + ("  [overlapping channels]" if entry.get("output_kind") == "sigmoid" else ""),
        f"  licence: {entry['licence']}",
        f"  authors: {facts.get('authors') or '?'}",
        f"  WARNING: its config ({rc['config']}) holds {rc['expressions']} Python expression(s)"
        + (f" and it ships {len(rc['scripts'])} script(s) ({', '.join(rc['scripts'])})" if rc["scripts"] else "")
        + ": running it runs that code on this computer with your permissions.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# catalogues
# --------------------------------------------------------------------------------------------
def load_user_catalogue() -> dict:
    from MedAILib.models.catalogue import user_catalogue_path

    p = user_catalogue_path()
    if p.is_file():
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    return {"version": 1, "models": []}


def save_user_catalogue(cat: dict) -> Path:
    """Validate against the catalogue schema, then write atomically."""
    import jsonschema

    from MedAILib.models.catalogue import schema_path, user_catalogue_path

    jsonschema.validate(cat, json.loads(schema_path().read_text(encoding="utf-8")))
    p = user_catalogue_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(p) as tmp:
        Path(tmp).write_text(json.dumps(cat, indent=2), encoding="utf-8")
    return p


def modelzoo_entries(path: Optional[Path] = None) -> list:
    """The Model Zoo entries MedAI knows: the shipped catalogue's entries that carry ``modelzoo_name``,
    else Resources/modelzoo_entries.json (URL + published checksum, verified or not)."""
    for p in ([Path(path)] if path else [resources_dir() / "catalogue.json", resources_dir() / MODELZOO_ENTRIES]):
        if p.is_file():
            models = [m for m in json.loads(p.read_text(encoding="utf-8")).get("models", []) if "modelzoo_name" in m]
            if models:
                return models
    return []


def resolve_modelzoo_ref(ref: str, entries: Optional[list] = None) -> dict:
    """'modelzoo:NAME@VERSION' (or without @VERSION: the one catalogued) -> catalogue entry."""
    spec = ref[len(MODELZOO_PREFIX):] if ref.startswith(MODELZOO_PREFIX) else ref
    name, _, version = spec.partition("@")
    entries = modelzoo_entries() if entries is None else entries
    cands = [e for e in entries if e.get("modelzoo_name", e["id"]).lower() == name.lower()]
    if not cands:
        raise ModelError(f"{name} is not a Model Zoo bundle MedAI knows",
                         "see Resources/catalogue.json; or download the bundle yourself and add its folder or zip")
    if version:
        cands = [e for e in cands if e["version"] == version]
        if not cands:
            raise ModelError(f"{name} version {version} is not in MedAI's catalogue, so its checksum is unknown",
                             "use the catalogued version, or download the bundle yourself and add the folder")
    return cands[0]


def expected_checksum(entry: dict) -> tuple:
    """(algorithm, hex value) a download of ``entry`` must match."""
    if entry.get("sha256"):
        return "sha256", entry["sha256"]
    c = entry.get("checksum") or {}
    return c.get("algorithm", "sha256"), c.get("value")


def require_verified(entry: dict) -> None:
    """Refuse to download an entry whose URL and checksum were not read from the publisher's file."""
    _, value = expected_checksum(entry)
    if not entry.get("verified") or not (entry.get("source") or {}).get("url") or not value:
        raise ModelError(f"{entry['id']} has no verified download location and checksum",
                         "download the bundle from the MONAI Model Zoo yourself and run `medai models add FOLDER`")


# --------------------------------------------------------------------------------------------
# medai models add
# --------------------------------------------------------------------------------------------
def _confirm(prompt: str, ask: Callable[[str], str]) -> bool:
    try:
        return ask(prompt).strip().lower() in ("y", "yes")
    except EOFError:  # no terminal (script, CI): never trust silently
        return False


def add_bundle(source: str, assume_yes: bool = False, ask: Optional[Callable[[str], str]] = None,
               say: Callable[[str], None] = print, model_id: Optional[str] = None,
               download: Optional[Callable[[dict, Path], Path]] = None) -> dict:
    """Register a bundle (folder, .zip, or ``modelzoo:NAME@VERSION``) in the user's catalogue.

    Shows what the bundle is and asks for trust (``assume_yes`` answers yes for scripts). When the
    user declines, ModelError is raised and nothing is copied, trusted or registered. Accepted
    bundles are copied to ``MEDAI_HOME/models/<id>`` (later edits of the original cannot change what
    was trusted) and recorded in the trust store with the hash of their configs and scripts.
    ``download(entry, folder) -> archive`` fetches and verifies a Model Zoo archive.
    """
    from MedAILib.models import trust as trust_mod
    from MedAILib.models.download import safe_extract

    with tempfile.TemporaryDirectory(prefix="medai-add-") as tmp:
        zoo_entry = None
        if source.startswith(MODELZOO_PREFIX):
            zoo_entry = resolve_modelzoo_ref(source)
            require_verified(zoo_entry)
            if download is None:
                raise ModelError("no downloader available for Model Zoo bundles",
                                 "download the archive yourself and run `medai models add ARCHIVE.zip`")
            archive = download(zoo_entry, Path(tmp))
            safe_extract(archive, Path(tmp) / "x")
            folder = find_bundle_root(Path(tmp) / "x")
            model_id = model_id or zoo_entry["id"]
        else:
            path = Path(source).expanduser()
            if path.is_dir():
                folder = find_bundle_root(path)
            elif path.is_file() and zipfile.is_zipfile(path):
                safe_extract(path, Path(tmp) / "x")
                folder = find_bundle_root(Path(tmp) / "x")
            else:
                raise InputError(f"{source} is not a bundle folder, a zip or modelzoo:NAME@VERSION",
                                 "give the path of a MONAI bundle (folder with configs/metadata.json) or its .zip")
        facts = bundle_facts(folder)
        require_segmentation(facts, source)  # detection/classification bundles are refused, not mis-run
        entry = entry_from_bundle(folder, model_id=model_id or (folder.name if folder.name != "x" else None),
                                  facts=facts)
        if zoo_entry:  # keep what the publisher says (URL, checksum, verified status, curated labels)
            for k in ("title", "labels", "inputs", "input_count", "licence", "citation", "verified",
                      "provenance", "modelzoo_name", "output_kind"):
                if k in zoo_entry:
                    entry[k] = zoo_entry[k]
            entry["notes"] = entry.get("notes", []) + [f"downloaded from {zoo_entry['source']['url']}"]
        say(describe(entry, facts))
        if not assume_yes and not _confirm("Trust this bundle and add it? [y/N] ", ask or input):
            raise ModelError(f"{entry['id']} was not added: you did not trust it",
                             "read the bundle's configs and scripts, then add it again and answer y (or use --yes)")
        target = bundle_dir(entry["id"])  # refuses ids such as ".." or "/abs/dir" (issue 14)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry['id']}-", dir=target.parent))
        shutil.copytree(folder, staging / "b", ignore=shutil.ignore_patterns("__pycache__"))
        if target.exists() or target.is_symlink():
            remove_tree_in_cache(target)  # only ever inside the cache, links resolved
        (staging / "b").rename(target)  # appears complete or not at all
        shutil.rmtree(staging, ignore_errors=True)
    entry["source"]["location"] = str(target)
    trust_mod.trust(target, reason=f"added with `medai models add {source}`")
    if not zoo_entry:  # trusted now: its own post-processing may run, and says which values it writes
        check_label_values(entry, target, say)
    cat = load_user_catalogue()
    cat.setdefault("version", 1)
    cat["models"] = [m for m in cat.get("models", []) if m.get("id") != entry["id"]] + [entry]
    where = save_user_catalogue(cat)
    say(f"added {entry['id']} ({target}) to {where}")
    return entry
