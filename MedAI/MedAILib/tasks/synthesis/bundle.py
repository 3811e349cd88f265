"""Synthesis models as MONAI bundles: configs/metadata.json, configs/inference.json, models/model.pt.

``inference.json`` holds MONAI's usual ``network_def`` and ``inferer`` plus a ``medai_synthesis``
section describing the model space (source/target contrast, 2.5D slice count, in-plane pixel size,
intensity normalisations, output units). The network is built from ``network_def`` without
evaluating any expression: only plain keyword values and a class from ``monai.networks.nets`` are
accepted, and weights load with ``torch.load(weights_only=True)``. Bundles are written by the shared
:func:`MedAILib.models.bundle_writer.write_bundle` (see the trainer); checksums come from
:func:`MedAILib.models.checksums.digest_file`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from MedAILib.core.paths import resources_dir
from MedAILib.core.errors import ModelError
from MedAILib.models.checksums import digest_file

# Network classes a bundle may name (looked up in monai.networks.nets, never imported by path).
ALLOWED_NETWORKS = {"UNet", "BasicUNet", "AttentionUnet", "SegResNet"}


def _plain(value, where: str):
    """Reject MONAI config expressions ('$...', '@...', '%...'): bundles here are data, not code."""
    if isinstance(value, str) and value[:1] in ("$", "@", "%"):
        raise ModelError(f"bundle config {where} uses an expression ({value!r})",
                         "synthesis bundles must give plain values in network_def")
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    return value


def build_network(network_def: dict) -> torch.nn.Module:
    from monai.networks import nets

    d = _plain(dict(network_def), "network_def")
    full = str(d.pop("_target_", ""))
    target = full.rsplit(".", 1)[-1]
    if full in ("MedAILib.tasks.synthesis.networks.ResidualUNet", "ResidualUNet"):
        from MedAILib.tasks.synthesis.networks import ResidualUNet

        return ResidualUNet(**d)
    if target not in ALLOWED_NETWORKS:
        raise ModelError(f"network {target!r} is not one MedAI builds for synthesis",
                         f"use one of {sorted(ALLOWED_NETWORKS)} in configs/inference.json network_def")
    return getattr(nets, target)(**d)


class SynthesisBundle:
    """A loaded synthesis bundle folder."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.metadata = json.loads((self.path / "configs" / "metadata.json").read_text(encoding="utf-8"))
            self.inference = json.loads((self.path / "configs" / "inference.json").read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ModelError(f"{self.path} is not a model bundle ({e.filename} missing)",
                             "give a bundle folder with configs/metadata.json and configs/inference.json") from e
        if "medai_synthesis" not in self.inference:
            raise ModelError(f"{self.path} is not a synthesis bundle (no medai_synthesis section)",
                             "pick a modality-conversion model (see `medai models`)")
        self.cfg = self.inference["medai_synthesis"]
        stats = self.path / "configs" / "training_stats.json"
        self.training_stats = json.loads(stats.read_text(encoding="utf-8")) if stats.exists() else None
        self._network = None

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.path.name)

    @property
    def source(self) -> str:
        return self.cfg["source"]

    @property
    def target(self) -> str:
        return self.cfg["target"]

    @property
    def weights_path(self) -> Path:
        return self.path / "models" / "model.pt"

    def network(self, device="cpu") -> torch.nn.Module:
        if self._network is None:
            net = build_network(self.inference["network_def"])
            if not self.weights_path.exists():
                raise ModelError(f"weights missing: {self.weights_path}", "re-install or re-train the model")
            try:
                state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
            except Exception as e:  # corrupt file or wrong architecture
                raise ModelError(f"cannot load weights {self.weights_path}: {e}",
                                 "the file is corrupt or does not match network_def; re-install the model") from e
            net.eval()
            self._network = net
        return self._network.to(device)

    def inferer_args(self) -> dict:
        d = _plain(dict(self.inference.get("inferer", {})), "inferer")
        d.pop("_target_", None)
        return d


def find_bundle(model_id: str) -> SynthesisBundle:
    """A bundle by folder path, or by id among the shipped models (Resources/Models/<id>)."""
    p = Path(model_id).expanduser()
    if p.is_dir():
        return SynthesisBundle(p)
    try:  # a catalogue id (shipped location, or the verified download cache)
        from MedAILib.models.catalogue import load_catalogue

        catalogue = load_catalogue()
    except (ImportError, ModelError):
        catalogue = None
    if catalogue is not None and model_id in catalogue:
        entry = catalogue.get(model_id)
        if entry.is_shipped:
            bundle = SynthesisBundle(entry.shipped_path())
            expected = entry.raw.get("sha256")
            if expected and bundle.weights_path.exists() and digest_file(bundle.weights_path) != expected:
                raise ModelError(f"the weights of {model_id} do not match the catalogue checksum",
                                 "the installed file was changed or damaged; re-install MedAI")
            return bundle
        from MedAILib.models.download import ensure_model

        return SynthesisBundle(ensure_model(entry))
    candidate = resources_dir() / "Models" / model_id
    if candidate.is_dir():
        return SynthesisBundle(candidate)
    raise ModelError(f"no synthesis model {model_id!r}",
                     f"give a bundle folder or a shipped model id (e.g. t2_to_flair_gan); looked in {candidate.parent}")
