"""The model catalogue: ``Resources/catalogue.json`` (validated against ``catalogue.schema.json``)
with the user's ``MEDAI_HOME/catalogue.json`` merged on top (same schema; same id replaces)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional

from MedAILib.core.paths import resources_dir
from MedAILib.core.errors import ModelError
from MedAILib.models.cache import medai_home


@dataclasses.dataclass
class CatalogueEntry:
    raw: dict
    origin: str  # "shipped" or "user"

    def __getattr__(self, name):  # entry.id, entry.title, ... straight from the JSON
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def label_infos(self) -> list:
        from MedAILib.core.volume import LabelInfo  # numpy: only when labels are asked for

        return [LabelInfo.from_dict(d) for d in self.raw["labels"]]

    @property
    def is_shipped(self) -> bool:
        return "location" in self.raw["source"]

    def shipped_path(self) -> Optional[Path]:
        loc = self.raw["source"].get("location")
        return (resources_dir() / loc) if loc else None

    def input_spec(self) -> dict:
        """What the model needs as inputs, for :mod:`MedAILib.runtime.validation` (no bundle loading)."""
        inputs = list(self.raw.get("inputs") or [])
        n = int(self.raw.get("input_count", len(inputs) or 1))
        return {"model": self.id, "n_inputs": n, "input_count": n,
                "input_names": [i.get("name", f"input {k + 1}") for k, i in enumerate(inputs)],
                "modalities": [i["modality"] for i in inputs if i.get("modality")]}

    @property
    def fast_spacing(self):
        return self.raw["spatial"].get("fast_spacing")


class Catalogue:
    def __init__(self, entries: list):
        self.entries = {e.id: e for e in entries}

    def __iter__(self):
        return iter(self.entries.values())

    def __contains__(self, model_id) -> bool:
        return model_id in self.entries

    def get(self, model_id: str) -> CatalogueEntry:
        if model_id not in self.entries:
            known = ", ".join(sorted(self.entries)) or "(none)"
            raise ModelError(f"no model called {model_id!r} in the catalogue",
                             f"use one of: {known} (see `medai models list`), or give a bundle folder path")
        return self.entries[model_id]

    def default_for(self, task: str) -> CatalogueEntry:
        for e in self.entries.values():
            if e.task == task:
                return e
        raise ModelError(f"no {task} model in the catalogue", "give --model PATH to a bundle folder")


def schema_path() -> Path:
    return resources_dir() / "catalogue.schema.json"


def user_catalogue_path() -> Path:
    return medai_home() / "catalogue.json"


_VALIDATORS: dict = {}


def catalogue_validator(path: Optional[Path] = None):
    """A validator for the catalogue schema, built once per schema file version (path, mtime, size).

    Why: ``jsonschema.validate`` first checks the *schema* against its meta-schema on every call,
    ~0.14 s idle and ~0.3 s under load per ``medai`` run or Slicer start() (docs/performance.md);
    the schema's own validity is checked once by the tests (test_catalogue_schema_is_valid)."""
    path = Path(path or schema_path())
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _VALIDATORS:
        schema = json.loads(path.read_text(encoding="utf-8"))
        _VALIDATORS.clear()
        import jsonschema  # only when a catalogue text has not been validated before (start-up time)

        _VALIDATORS[key] = jsonschema.validators.validator_for(schema)(schema)
    return _VALIDATORS[key]


_VALID_DIGESTS: set = set()


def _validated_marker(digest: str) -> Path:
    return medai_home() / "cache" / "catalogue-valid" / digest


def _known_valid(digest: str) -> bool:
    """This exact catalogue text was already found valid against this exact schema (in this process,
    or by an earlier run: a marker file named by the SHA-256 of both texts)."""
    if digest in _VALID_DIGESTS:
        return True
    try:
        return _validated_marker(digest).is_file()
    except OSError:
        return False


def _remember_valid(digest: str) -> None:
    _VALID_DIGESTS.add(digest)
    try:
        marker = _validated_marker(digest)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # read-only home: validate again next time, nothing else changes
        pass


def _unreadable(path: Path, why: str, origin: str) -> ModelError:
    fix = ("fix it, or move it away to use only the shipped catalogue (`medai models add` writes a new one)"
           if origin == "user" else "reinstall MedAI (or restore the file from the repository)")
    return ModelError(f"model catalogue {path} {why}", fix)


def _check_shape(doc, path: Path) -> None:
    """What the entries' readers rely on, when the full schema cannot be checked."""
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in models):
        raise ModelError(f"model catalogue {path} is invalid: it needs a 'models' list of entries with an 'id'",
                         "fix the entry (schema: MedAILib/resources/catalogue.schema.json)")


def read_catalogue_file(path: Path, origin: str) -> list:
    path = Path(path)
    try:
        text = path.read_bytes()
    except IsADirectoryError:
        raise _unreadable(path, "is a folder, not a file", origin) from None
    except PermissionError:
        raise _unreadable(path, "cannot be read: permission denied", origin) from None
    except OSError as e:
        raise _unreadable(path, f"cannot be read ({e.strerror or e})", origin) from None
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        raise _unreadable(path, "is not a text file (random or binary bytes, not JSON)", origin) from None
    if not text.strip():
        raise _unreadable(path, "is empty (0 bytes of JSON)", origin)
    try:
        doc = json.loads(text)
        # Validating the document costs ~0.1 s (idle) per run; a text already validated against this
        # schema text is not validated again (any edit of either changes the digest).
        digest = hashlib.sha256(text + b"\0" + schema_path().read_bytes()).hexdigest()
        if not _known_valid(digest):
            try:
                import jsonschema
            except ImportError:
                # Slicer before its first-use install of the engine packages: the model list must
                # still show, so check the shape only and validate fully once jsonschema is there.
                jsonschema = None
                _check_shape(doc, path)
            if jsonschema is not None:
                # same error as jsonschema.validate (its best match), without re-checking the schema itself
                error = jsonschema.exceptions.best_match(catalogue_validator().iter_errors(doc))
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path)
                    raise ModelError(f"model catalogue {path} is invalid at {where or '(top)'}: {error.message[:300]}",
                                     "fix the entry (schema: MedAILib/resources/catalogue.schema.json)")
                _remember_valid(digest)
    except json.JSONDecodeError as e:
        raise _unreadable(path, f"is not valid JSON ({e})", origin) from None
    except RecursionError:
        raise _unreadable(path, "is nested too deeply to be a catalogue", origin) from None
    return [CatalogueEntry(m, origin) for m in doc["models"]]


def load_catalogue() -> Catalogue:
    shipped = resources_dir() / "catalogue.json"
    entries = read_catalogue_file(shipped, "shipped") if shipped.exists() else []
    user = user_catalogue_path()
    if user.exists() or user.is_symlink():
        by_id = {e.id: e for e in entries}
        for e in read_catalogue_file(user, "user"):
            by_id[e.id] = e
        entries = list(by_id.values())
    return Catalogue(entries)
