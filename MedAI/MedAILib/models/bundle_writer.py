"""The one writer of MONAI bundle folders that MedAI's trainers produce.

Every trainer (segmentation, classification, synthesis, sequences, detection, denoising...) ends with
the same layout: ``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``, a model
card ``docs/README.md``, a ``LICENSE`` and optional extra files. The folder is built in a staging
folder next to the target and renamed into place, so a bundle folder is either complete or absent
(a crash or Ctrl-C mid-write never leaves one that looks usable), and an existing folder is only
replaced when the caller says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Optional

from MedAILib.core.errors import OutputError


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_bundle(out_dir, inference: dict, metadata: dict, state_dict: Optional[dict], *,
                 card: Optional[str] = None, license_text: Optional[str] = None,
                 extra_files: Optional[Mapping[str, object]] = None, overwrite: bool = True) -> Path:
    """Write a bundle folder atomically and return its path.

    ``extra_files`` maps a path inside the bundle to ``str`` (text), ``bytes``, a ``dict``/``list``
    (JSON) or an existing file path (copied). ``state_dict`` None writes no weights (configs-only
    bundles). ``overwrite=False`` refuses an existing folder (trainers that write in place when
    the user asked with ``--overwrite`` pass True).
    """
    import torch

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists", "pass --overwrite to replace it, or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for sub in ("configs", "models", "docs"):
            (stage / sub).mkdir()
        _dump(stage / "configs" / "inference.json", inference)
        _dump(stage / "configs" / "metadata.json", metadata)
        if state_dict is not None:
            torch.save(state_dict, stage / "models" / "model.pt")
        if card is not None:
            (stage / "docs" / "README.md").write_text(card, encoding="utf-8")
        if license_text is not None:
            (stage / "LICENSE").write_text(license_text, encoding="utf-8")
        for rel, content in (extra_files or {}).items():
            target = stage / rel
            if stage.resolve() not in target.resolve().parents:
                raise ValueError(f"bundle file outside the bundle: {rel}")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, (dict, list)):
                _dump(target, content)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            elif isinstance(content, Path):
                if content.is_file():
                    shutil.copyfile(content, target)
            else:
                target.write_text(str(content), encoding="utf-8")
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _publish(stage: Path, out: Path) -> None:
    """Rename the staged folder into place; an old folder is moved aside first and removed last."""
    if not out.exists():
        stage.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:
        old.rename(out)  # put the user's bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)
