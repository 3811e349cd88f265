"""The segmentation models of the catalogue (MedAILib.models.catalogue), as the module lists them.

What a model needs as inputs is the catalogue entry's own spec (``CatalogueEntry.input_spec``) and
is checked with the engine's own rule (``MedAILib.runtime.validation.check_input_count``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from MedAILib.core.volume import LabelInfo


@dataclasses.dataclass
class ModelChoice:
    id: str
    title: str
    task: str
    inputs: list  # [(name, modality)] in the order the engine expects them
    labels: list  # [LabelInfo]
    size_bytes: int = 0
    licence: str = ""
    description: str = ""
    spec: dict = dataclasses.field(default_factory=dict)  # the catalogue entry's input_spec()

    @property
    def input_count(self) -> int:
        return int(self.spec.get("n_inputs", len(self.inputs)))

    def check_input_count(self, volumes) -> None:
        """ValueError with the engine's own words when ``volumes`` is not the number of inputs the
        model needs (a wrong count would reach the engine as several cases)."""
        from MedAILib.core.errors import InputError
        from MedAILib.runtime.validation import check_input_count

        try:
            check_input_count(len(volumes), self.spec or {"model": self.id})
        except InputError as e:
            raise ValueError(str(e)) from None

    def size_text(self) -> str:
        mb = self.size_bytes / 1e6
        return f"{mb:.1f} MB" if mb >= 0.1 else f"{self.size_bytes / 1e3:.0f} kB"

    def display_text(self) -> str:
        """One combo-box line: title, task, size, licence."""
        return f"{self.title}  ({self.task}, {self.size_text()}, {self.licence})"

    def matches(self, text: str) -> bool:
        """Filter box: every word must appear in the id, title, description, licence or a label name."""
        hay = " ".join([self.id, self.title, self.task, self.description, self.licence,
                        *[m for _, m in self.inputs], *[l.name for l in self.labels]]).lower()
        return all(w in hay for w in text.lower().split())


def from_entry(entry: dict) -> ModelChoice:
    from MedAILib.models.catalogue import CatalogueEntry

    return ModelChoice(
        id=entry["id"],
        title=entry.get("title", entry["id"]),
        task=entry.get("task", ""),
        inputs=[(i.get("name", f"input {n + 1}"), i.get("modality", "")) for n, i in enumerate(entry.get("inputs", []))],
        labels=[LabelInfo.from_dict(l) for l in entry.get("labels", [])],
        size_bytes=int(entry.get("size_bytes", 0)),
        licence=entry.get("licence", ""),
        description=entry.get("description", ""),
        spec=CatalogueEntry(entry, "given").input_spec(),
    )


def load_models(path=None, task: Optional[str] = "segmentation") -> list:
    """Catalogue models for ``task`` (all tasks when None): the engine's catalogue (shipped + the
    user's, validated against the schema), or only the file ``path`` when given."""
    from MedAILib.models.catalogue import load_catalogue, read_catalogue_file

    entries = read_catalogue_file(Path(path), "given") if path else list(load_catalogue())
    models = [from_entry(e.raw) for e in entries]
    return [m for m in models if task is None or m.task == task]


def find_model(model_id: str, path=None) -> ModelChoice:
    for m in load_models(path, task=None):
        if m.id == model_id:
            return m
    raise KeyError(f"model '{model_id}' is not in the catalogue")


@dataclasses.dataclass
class InputSelector:
    """What one slot of the widget's fixed pool of input selectors shows (Qt-free, so it is testable)."""

    visible: bool
    label: str = ""  # text of the QLabel next to the selector, e.g. "T1c:"
    toolTip: str = ""


def input_selectors(model: Optional[ModelChoice], pool_size: int) -> list:
    """One ``InputSelector`` per slot of a pool of ``pool_size`` node selectors: the first
    ``model.input_count`` are shown, labelled by the bundle's channel names (T1c, T1, T2, FLAIR);
    the rest are hidden. A model needing more inputs than the pool is refused here (ValueError)
    rather than run with missing channels."""
    if model is None:
        return [InputSelector(False) for _ in range(pool_size)]
    if model.input_count > pool_size:
        raise ValueError(f"'{model.title}' needs {model.input_count} inputs; this module shows at most {pool_size}.")
    slots = []
    for i in range(pool_size):
        if i >= model.input_count:
            slots.append(InputSelector(False))
            continue
        name, modality = model.inputs[i]
        # the channel name says which contrast goes where; the modality alone ("MR" x4) would not
        shown = name if model.input_count > 1 or not modality else modality
        tip = f"Input {i + 1} of {model.input_count}: {name}" + (f" ({modality})" if modality else "")
        slots.append(InputSelector(True, f"{shown}:", tip))
    return slots
