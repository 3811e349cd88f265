"""Load a MONAI bundle with MONAI's own machinery (``monai.bundle.ConfigParser``) and expose the
parts MedAI runs: network (weights via ``torch.load(weights_only=True)``), preprocessing, inferer,
postprocessing and the label/channel names of ``network_data_format``.

The bundle's config decides *what* is computed; MedAI decides device, precision, memory fall-back,
progress, cancellation and I/O around it (see :mod:`MedAILib.runtime`, :mod:`MedAILib.tasks.segmentation.pipeline`).
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Optional

import torch

from MedAILib.core.errors import ModelError
from MedAILib.io.segmentations import default_color
from MedAILib.core.volume import LabelInfo
from MedAILib.models import trust as trust_mod

log = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHT_NAMES = ("model.pt", "model.pth")
# Transforms that read or write files: MedAI does its own I/O, so these are skipped when running.
IO_TRANSFORMS = ("LoadImaged", "LoadImage", "SaveImaged", "SaveImage")


def _find(folder: Path, names) -> Optional[Path]:
    for n in names:
        if (folder / n).exists():
            return folder / n
    return None


def load_weights(path) -> dict:
    """A state_dict from ``path`` using ``weights_only=True``: a pickle that would run code is refused."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as e:
        raise ModelError(
            f"refusing to load weights {path}: not a plain tensor file ({str(e).splitlines()[0][:160]})",
            "weights must be a state_dict saved with torch.save(model.state_dict()); get the file again "
            "from its official source") from e
    for key in ("model", "state_dict", "network"):  # Model Zoo checkpoints sometimes wrap the dict
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state_dict of tensors", "check the bundle's models/ folder")
    return obj


class Bundle:
    """A loaded (trusted) MONAI bundle. Parts are instantiated on first use."""

    def __init__(self, path, entry=None, fast: bool = False):
        from monai.bundle import ConfigParser

        self.path = Path(path).resolve()
        self.entry = entry
        configs = self.path / "configs"
        cfg = _find(configs, CONFIG_NAMES)
        if cfg is None:
            raise ModelError(f"{self.path} has no configs/inference.json", "is this a MONAI bundle folder?")
        meta_file = configs / "metadata.json"
        self.metadata = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
        self.parser = ConfigParser()
        self.parser.read_meta(str(meta_file)) if meta_file.exists() else None
        self.parser.read_config(str(cfg))
        self.parser["bundle_root"] = str(self.path)
        from MedAILib.models.overrides import apply_overrides  # old bundles vs current MONAI: fixed in memory, never on disk

        self.overrides_applied = apply_overrides(self.parser)
        self.fast = False
        if fast:
            self._apply_fast_spacing()
        self._network = None

    # --- config parts ----------------------------------------------------------------------
    def _parsed(self, key: str):
        if key not in self.parser:
            raise ModelError(f"bundle {self.path.name} has no '{key}' in its inference config",
                             "MedAI needs network_def, preprocessing, inferer and postprocessing")
        try:
            return self.parser.get_parsed_content(key)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"bundle {self.path.name}: cannot build '{key}' ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})",
                             "the bundle may need a newer/older MONAI or a package it imports") from e

    @property
    def preprocessing(self):
        return self._parsed("preprocessing")

    @property
    def postprocessing(self):
        return self._parsed("postprocessing") if "postprocessing" in self.parser else None

    @property
    def inferer(self):
        return self._parsed("inferer")

    def _transform_configs(self, key: str) -> list:
        raw = self.parser.get(key)
        if isinstance(raw, dict) and isinstance(raw.get("transforms"), list):
            return raw["transforms"]
        return []

    def spacing_transform_config(self) -> Optional[dict]:
        for t in self._transform_configs("preprocessing"):
            if isinstance(t, dict) and str(t.get("_target_", "")).split(".")[-1] in ("Spacingd", "Spacing"):
                return t
        return None

    def _apply_fast_spacing(self) -> None:
        fast = self.entry.fast_spacing if self.entry is not None else None
        if not fast:
            raise ModelError(f"model {self.path.name} has no fast mode",
                             "run without --fast (the catalogue entry gives no coarser spacing for it)")
        t = self.spacing_transform_config()
        if t is None:
            raise ModelError(f"model {self.path.name} has no Spacingd transform to coarsen", "run without --fast")
        t["pixdim"] = [float(x) for x in fast]  # edited before parsing: Invertd inverts the same instance
        self.fast = True

    # --- network ---------------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        w = _find(self.path / "models", WEIGHT_NAMES) or self._checkpoint_loader_path()
        if w is None:
            raise ModelError(f"bundle {self.path.name} has no models/model.pt",
                             "download the model again (`medai models download ID`) or check the bundle folder")
        return w

    def _checkpoint_loader_path(self) -> Optional[Path]:
        """Weights named by the config's own CheckpointLoader (Model Zoo bundles such as
        pediatric_abdominal_ct_segmentation load models/dynunet_FT.pt, not models/model.pt)."""
        for section in ("handlers", "checkpointloader"):
            raw = self.parser.get(section)
            items = raw if isinstance(raw, list) else [raw]
            for i, h in enumerate(items):
                if isinstance(h, dict) and str(h.get("_target_", "")).split(".")[-1] == "CheckpointLoader":
                    key = f"{section}#{i}#load_path" if isinstance(raw, list) else f"{section}#load_path"
                    try:
                        p = Path(str(self.parser.get_parsed_content(key)))
                    except Exception:  # noqa: BLE001 - an unresolvable path just means "not found"
                        continue
                    p = p if p.is_absolute() else self.path / p
                    if p.is_file() and self.path in p.resolve().parents:
                        return p
        return None

    @property
    def network(self) -> torch.nn.Module:
        if self._network is None:
            net = self._parsed("network_def")
            expected = self.entry.raw.get("sha256") if self.entry is not None and self.entry.is_shipped else None
            if expected:
                from MedAILib.models.cache import sha256_file

                if sha256_file(self.weights_path) != expected:
                    raise ModelError(f"weights of {self.name} do not match the catalogue checksum (damaged file?)",
                                     "reinstall MedAI or restore Resources/Models from the repository")
            state = load_weights(self.weights_path)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ModelError(f"weights of {self.path.name} do not fit its network_def "
                                 f"({str(e).splitlines()[0][:200]})", "the bundle is inconsistent; get it again") from e
            self._network = net.eval()
        return self._network

    # --- metadata --------------------------------------------------------------------------
    def _ndf(self) -> dict:
        return self.metadata.get("network_data_format", {})

    @property
    def output_channel_names(self) -> dict:
        """{channel index: name} of the prediction, from metadata ``outputs.pred.channel_def``."""
        outputs = self._ndf().get("outputs", {})
        out = outputs.get("pred") or (next(iter(outputs.values())) if outputs else {})
        return {int(k): str(v) for k, v in (out.get("channel_def") or {}).items()}

    @property
    def input_names(self) -> list:
        """Input channel names (e.g. ["T1c", "T1", "T2", "FLAIR"]), from metadata ``inputs``."""
        inputs = self._ndf().get("inputs", {})
        inp = inputs.get("image") or (next(iter(inputs.values())) if inputs else {})
        chans = inp.get("channel_def") or {}
        if chans:
            return [str(chans[k]) for k in sorted(chans, key=lambda k: int(k))]
        n = int(inp.get("num_channels", 1) or 1)
        return ["image"] if n == 1 else [f"image_{i}" for i in range(n)]

    @property
    def labels(self) -> list:
        """The label table: the catalogue's (colours, terminology) or else the metadata's channel names."""
        if self.entry is not None:
            return self.entry.label_infos
        return [LabelInfo(v, n, default_color(v)) for v, n in sorted(self.output_channel_names.items())
                if v != 0 and n.lower() not in ("background", "bg")]

    @property
    def name(self) -> str:
        return self.entry.id if self.entry is not None else self.metadata.get("name", self.path.name)


def _prepare_scripts(path: Path) -> None:
    """Model Zoo bundles import ``scripts.xxx`` from the bundle root: put it on sys.path (trusted only).

    Bytecode writing is switched off first: a ``__pycache__`` written into the bundle by its own run
    would make it untrusted (compiled Python is refused, see models.trust)."""
    sys.dont_write_bytecode = True
    if (path / "scripts").is_dir():
        for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[mod]  # another bundle's scripts package must not shadow this one's
        if str(path) in sys.path:
            sys.path.remove(str(path))
        sys.path.insert(0, str(path))


# Set by the warm engine (``medai serve``) to keep loaded bundles between jobs; None: load every time.
bundle_cache = None


def load_bundle(path, entry=None, catalogue=None, fast: bool = False) -> Bundle:
    """Load a bundle folder after checking it is trusted (catalogue or user-trusted)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist", "check the path or use a catalogue id")
    trust_mod.require_trusted(path, catalogue)
    _prepare_scripts(path.resolve())
    if bundle_cache is not None:  # the warm engine keeps loaded bundles (MedAILib.server.bundles)
        return bundle_cache.get(path, entry, fast, lambda: Bundle(path, entry=entry, fast=fast))
    return Bundle(path, entry=entry, fast=fast)


def resolve_model(model: Optional[str] = None, task: str = "segmentation", fast: bool = False,
                  trust_paths=(), allow_download: bool = True, progress=None) -> Bundle:
    """A catalogue id, a bundle folder path, or None (the catalogue's default for ``task``) -> Bundle.

    Catalogue models that are not shipped come from the cache, downloaded first when needed.
    ``trust_paths`` are folders the user trusts for this and later runs (``--trust``).
    """
    from MedAILib.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    for p in trust_paths or ():
        trust_mod.trust(p)
    if model is None:
        entry = catalogue.default_for(task)
    elif model in catalogue:
        entry = catalogue.get(model)
    else:
        path = Path(model).expanduser()
        if not path.exists():
            catalogue.get(model)  # raises "no model called ..." with the list of ids
        # A path that is a shipped catalogue bundle keeps its entry (labels, colours, fast mode).
        entry = next((e for e in catalogue if e.origin == "shipped" and e.shipped_path()
                      and e.shipped_path().resolve() == path.resolve()), None)
        return load_bundle(path, entry=entry, catalogue=catalogue, fast=fast)
    if entry.is_shipped:
        return load_bundle(entry.shipped_path(), entry=entry, catalogue=catalogue, fast=fast)
    from MedAILib.models.download import ensure_model

    folder = ensure_model(entry, allow_download=allow_download, progress=progress)
    return load_bundle(folder, entry=entry, catalogue=catalogue, fast=fast)

