"""Classification from images plus clinical variables (age, sex, lab values...) read from a CSV.

- The table: one row per case with an image path (relative to the CSV), the label, and any
  variable columns. Numeric variables are standardised with the training rows' mean/std;
  categorical ones are one-hot over the training rows' levels. Every variable also gets a
  "missing" indicator, and a missing value is encoded as the training mean (numeric) or all-zero
  (categorical) with the indicator set, so a model trained with gaps can use a case with gaps.
- The network fuses at feature level: a MONAI DenseNet turns the image into a feature vector, a
  small MLP turns the encoded variables into another, and the head classifies their concatenation.
- The bundle declares the variables (``configs/medai.json`` → ``clinical_variables``); `medai
  classify` refuses a case whose variables are not given (``--clinical age=63,sex=F``), and takes
  ``NA`` as an explicit "unknown" (the missing indicator).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from MedAILib.core.errors import InputError

log = logging.getLogger(__name__)

MISSING = ("", "na", "nan", "none", "null", "?", "unknown")


# ---------------------------------------------------------------- variables


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip().lower() in MISSING


def fit_variables(rows: list, names: list) -> list:
    """Encoding spec from the training rows: numeric (mean, std) or categorical (levels)."""
    spec = []
    for n in names:
        vals = [r.get(n) for r in rows if not _is_missing(r.get(n))]
        if not vals:
            raise InputError(f"clinical column {n!r} has no value in any training row", "drop it from --variables")
        try:
            num = np.asarray([float(v) for v in vals])
            spec.append({"name": n, "type": "numeric", "mean": float(num.mean()), "std": float(num.std() or 1.0),
                         "missing_in_training": len(rows) - len(vals)})
        except ValueError:
            levels = sorted({str(v).strip() for v in vals})
            spec.append({"name": n, "type": "categorical", "levels": levels,
                         "missing_in_training": len(rows) - len(vals)})
    return spec


def encoded_size(spec: list) -> int:
    return sum((1 if s["type"] == "numeric" else len(s["levels"])) + 1 for s in spec)


def encode(spec: list, values: dict, strict: bool = False) -> np.ndarray:
    """One case's variables -> a float vector (value(s), then the missing indicator, per variable).

    ``strict``: a variable that is absent from ``values`` is an error (an explicit NA is fine)."""
    out = []
    for s in spec:
        n = s["name"]
        if strict and n not in values:
            raise KeyError(n)
        v = values.get(n)
        miss = _is_missing(v)
        if s["type"] == "numeric":
            if miss:
                x = 0.0
            else:
                try:
                    x = (float(v) - s["mean"]) / s["std"]
                except ValueError:
                    raise InputError(f"clinical variable {n}={v!r} is not a number", f"give {n} as a number or NA") from None
            out += [x]
        else:
            if not miss and str(v).strip() not in s["levels"]:
                raise InputError(f"clinical variable {n}={v!r} is not one of the trained levels {s['levels']}",
                                 f"give one of {', '.join(s['levels'])} or NA")
            out += [0.0 if miss else float(str(v).strip() == lv) for lv in s["levels"]]
        out.append(1.0 if miss else 0.0)
    return np.asarray(out, np.float32)


def parse_clinical_arg(text: str) -> dict:
    """``age=63,sex=F,crp=NA`` -> dict."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in part:
            raise InputError(f"--clinical item {part!r} is not NAME=VALUE", "write --clinical age=63,sex=F (NA = unknown)")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def declared_variables(bundle) -> list:
    from MedAILib.tasks.classification.pipeline import medai_config

    return list(medai_config(bundle).get("clinical_variables") or [])


def clinical_input(bundle, given: Optional[dict]):
    """The (1, F) tensor for a bundle that declares clinical variables, or None for image-only bundles.
    Refuses when a declared variable is not given at all (NA is an explicit 'unknown')."""
    spec = declared_variables(bundle)
    if not spec:
        if given:
            raise InputError(f"{bundle.name} takes no clinical variables but --clinical was given",
                             "leave --clinical out for this model")
        return None
    given = given or {}
    missing = [s["name"] for s in spec if s["name"] not in given]
    if missing:
        want = ", ".join(f"{s['name']} ({'number' if s['type'] == 'numeric' else '/'.join(s['levels'])})" for s in spec)
        raise InputError(f"{bundle.name} needs the clinical variables {want}; not given: {', '.join(missing)}",
                         "add --clinical " + ",".join(f"{s['name']}=VALUE" for s in spec) + " (NA where unknown)")
    extra = sorted(set(given) - {s["name"] for s in spec})
    if extra:
        raise InputError(f"--clinical names {', '.join(extra)}, which {bundle.name} does not use",
                         "use only: " + ", ".join(s["name"] for s in spec))
    return torch.as_tensor(encode(spec, given))[None]


# ---------------------------------------------------------------- the network


class ImageClinicalNet(nn.Module):
    """DenseNet image features ⊕ MLP clinical features -> linear head (feature-level fusion).

    ``n_clinical=0`` gives the same image network without the clinical branch (the baseline)."""

    def __init__(self, n_classes: int = 2, n_clinical: int = 0, in_channels: int = 1, image_features: int = 32,
                 clinical_features: int = 16, init_features: int = 16, growth_rate: int = 12,
                 block_config=(4, 8, 8), dropout: float = 0.2):
        super().__init__()
        from monai.networks.nets import DenseNet

        self.image = DenseNet(spatial_dims=3, in_channels=in_channels, out_channels=image_features,
                              init_features=init_features, growth_rate=growth_rate, block_config=tuple(block_config))
        self.n_clinical = n_clinical
        self.clinical = (nn.Sequential(nn.Linear(n_clinical, clinical_features), nn.ReLU(),
                                       nn.Linear(clinical_features, clinical_features), nn.ReLU())
                         if n_clinical else None)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(image_features + (clinical_features if n_clinical else 0), n_classes))

    def forward(self, x, clinical=None):
        f = self.image(x)
        if self.clinical is not None:
            if clinical is None:
                raise ValueError("this network needs its clinical variables")
            f = torch.cat([f, self.clinical(clinical.to(f.dtype))], 1)
        return self.head(f)


def network_def(n_classes: int, n_clinical: int) -> dict:
    return {"_target_": "MedAILib.tasks.classification.clinical.ImageClinicalNet", "n_classes": n_classes,
            "n_clinical": n_clinical}


# ---------------------------------------------------------------- the table


def read_table(path, image_column: str = "image", label_column: str = "label", variables=()) -> list:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", "give the CSV of cases with --csv") from None
    if not rows:
        raise InputError(f"{path} has no rows", "one row per case: image, label, variables")
    cols = set(rows[0])
    for c in [image_column, label_column, *variables]:
        if c not in cols:
            raise InputError(f"{path} has no column {c!r} (columns: {', '.join(sorted(cols))})",
                             "name the columns with --image-column / --label-column / --variables")
    for i, r in enumerate(rows, start=2):
        p = Path(r[image_column])
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise InputError(f"{path} line {i}: image {p} does not exist", "fix the path (relative to the CSV)")
        r["_image"] = str(p)
        if _is_missing(r[label_column]):
            raise InputError(f"{path} line {i}: no label", "every training row needs a label")
    return rows


def preprocessing_configs(size: int) -> list:
    return [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Resized", "keys": "image", "spatial_size": [size] * 3, "mode": "trilinear"},
        {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    ]


def _load_images(rows: list, size: int) -> np.ndarray:
    from monai.bundle import ConfigParser

    pre = ConfigParser({"imports": ["$import torch"], "t": {"_target_": "Compose",
                                                           "transforms": preprocessing_configs(size)}}).get_parsed_content("t")
    return np.stack([np.asarray(pre({"image": r["_image"]})["image"]) for r in rows]).astype(np.float32)


# ---------------------------------------------------------------- training


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y)) == 2 else float("nan")


def train_clinical(csv_path, out, variables=(), label_column="label", image_column="image", split_column="split",
                   size: int = 28, epochs: int = 10, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                   threads: int = 1, command: str = "", time_limit_min: Optional[float] = None) -> dict:
    """Train on rows with split=train (or all but a seeded 15% validation), keep the best val AUC."""
    import random
    import time

    from monai.utils import set_determinism

    torch.set_num_threads(threads)
    set_determinism(seed=seed)
    rows = read_table(csv_path, image_column, label_column, variables)
    if split_column in rows[0]:
        tr = [r for r in rows if r[split_column] == "train"]
        va = [r for r in rows if r[split_column] in ("val", "validation")]
        te = [r for r in rows if r[split_column] == "test"]
    else:
        idx = list(range(len(rows)))
        random.Random(seed).shuffle(idx)
        n_val = max(1, len(rows) * 15 // 100)
        va, tr, te = [rows[i] for i in idx[:n_val]], [rows[i] for i in idx[n_val:]], []
    classes = sorted({r[label_column] for r in rows})
    spec = fit_variables(tr, list(variables))
    def xy(rs):
        return (_load_images(rs, size), np.asarray([encode(spec, r) for r in rs], np.float32).reshape(len(rs), -1),
                np.asarray([classes.index(r[label_column]) for r in rs]))
    Xtr, Ctr, ytr = xy(tr)
    Xva, Cva, yva = xy(va)
    net_def = network_def(len(classes), encoded_size(spec))
    net = ImageClinicalNet(**{k: v for k, v in net_def.items() if k != "_target_"})
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    from monai.transforms import Compose, RandAffine, RandFlip

    aug = Compose([RandFlip(prob=0.5, spatial_axis=a) for a in range(3)]
                  + [RandAffine(prob=0.5, rotate_range=[0.2] * 3, scale_range=[0.1] * 3, padding_mode="zeros")])
    aug.set_random_state(seed)
    g = torch.Generator().manual_seed(seed)
    best = {"auc": -1.0}
    t_start, last = time.time(), None
    log_rows = []
    for ep in range(epochs):
        if time_limit_min and last and time.time() + 1.2 * last > t_start + time_limit_min * 60:
            break
        t0 = time.time()
        net.train()
        perm = torch.randperm(len(ytr), generator=g).numpy()
        losses = []
        for s in range(0, len(perm), batch_size):
            b = perm[s:s + batch_size]
            x = torch.stack([torch.as_tensor(np.asarray(aug(Xtr[i]))) for i in b])
            c = torch.as_tensor(Ctr[b]) if spec else None
            loss = nn.functional.cross_entropy(net(x, c), torch.as_tensor(ytr[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        p = predict(net, Xva, Cva if spec else None)
        auc = _auc(yva, p[:, 1]) if len(classes) == 2 else float(np.mean(p.argmax(1) == yva))
        val_loss = float(-np.mean(np.log(np.clip(p[np.arange(len(yva)), yva], 1e-7, 1))))
        last = time.time() - t0
        log_rows.append({"epoch": ep + 1, "loss": float(np.mean(losses)), "val_auc": auc, "val_loss": val_loss,
                         "seconds": round(last, 1)})
        log.info("epoch %d/%d loss %.4f val AUC %.4f val loss %.4f (%.0f s)", ep + 1, epochs, np.mean(losses), auc,
                 val_loss, last)
        # best validation AUC; ties (common on small validation sets) go to the lower validation loss
        if auc > best["auc"] or (auc == best["auc"] and val_loss < best["val_loss"]):
            best = {"auc": auc, "val_loss": val_loss, "epoch": ep + 1,
                    "state": {k: v.clone() for k, v in net.state_dict().items()}}
    net.load_state_dict(best["state"])
    info = {"classes": classes, "variables": spec, "n_train": len(tr), "n_val": len(va), "n_test": len(te),
            "best_epoch": best["epoch"], "val_auc": best["auc"], "epochs": epochs, "seed": seed, "size": size,
            "command": command, "log": log_rows}
    if te:
        Xte, Cte, yte = xy(te)
        pt = predict(net, Xte, Cte if spec else None)
        info["test_auc"] = _auc(yte, pt[:, 1]) if len(classes) == 2 else None
        info["test_acc"] = float(np.mean(pt.argmax(1) == yte))
    write_bundle(out, net_def, best["state"], info)
    return info


def predict(net, X, C=None, batch: int = 64) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(X), batch):
            c = torch.as_tensor(C[s:s + batch]) if C is not None else None
            out.append(torch.softmax(net(torch.as_tensor(X[s:s + batch]), c), 1).numpy())
    return np.concatenate(out)


def write_bundle(out, net_def: dict, state: dict, info: dict) -> None:
    """The bundle through the shared atomic writer (MedAILib.models.bundle_writer); an existing ``out``
    is replaced (``run`` refuses one without --overwrite before training starts)."""
    from MedAILib.models.bundle_writer import write_bundle as write_bundle_folder

    out = Path(out)
    inference = {
        "imports": ["$import torch", "$import MedAILib.tasks.classification.clinical"],
        "bundle_root": ".", "device": "$torch.device('cpu')",
        "network_def": net_def, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_configs(info["size"])},
        "postprocessing": {"_target_": "Compose", "transforms": [{"_target_": "Activationsd", "keys": "pred",
                                                                 "softmax": True}]},
    }
    import monai

    meta = {"version": "1.0.0", "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
            "name": "MedAI image + clinical variables classifier", "task": "classification",
            "description": "DenseNet image features fused with clinical variables (feature level); see docs/README.md",
            "intended_use": "Research only; not a medical device.",
            "network_data_format": {"inputs": {"image": {"type": "image", "num_channels": 1,
                                                         "spatial_shape": [info["size"]] * 3}},
                                    "outputs": {"pred": {"type": "probabilities", "num_channels": len(info["classes"]),
                                                         "channel_def": {str(i): c for i, c in enumerate(info["classes"])}}}}}
    medai = {"task": "classification", "classes": {str(i): c for i, c in enumerate(info["classes"])},
             "clinical_variables": info["variables"]}
    vars_txt = "\n".join(f"- `{s['name']}` ({s['type']}" + (f", mean {s['mean']:.3g}, sd {s['std']:.3g}" if s["type"] == "numeric"
                                                           else f", levels {', '.join(s['levels'])}")
                         + f"; missing in {s['missing_in_training']} training rows)" for s in info["variables"]) \
        or "- none (image only)"
    card = f"""# Image + clinical variables classifier (MedAI)

Classes: {', '.join(info['classes'])}. Trained by `{info['command']}` (seed {info['seed']}).

## Clinical variables (required by `medai classify --clinical NAME=VALUE,...`; NA = unknown)
{vars_txt}

## Figures
- training {info['n_train']}, validation {info['n_val']}, test {info['n_test']} rows; kept epoch {info['best_epoch']}
  of {info['epochs']} (best validation AUC {info['val_auc']:.4f}).
- test AUC: {info.get('test_auc', 'n/a')}; test ACC at P>=0.5: {info.get('test_acc', 'n/a')}.

Research only; not a medical device.
"""
    write_bundle_folder(out, inference, meta, state, card=card, overwrite=True,
                        extra_files={"configs/medai.json": medai,
                                     "docs/training.json": json.dumps(info, indent=1, default=str)})


# ---------------------------------------------------------------- `medai train classification-clinical`


def add_arguments(p) -> None:
    p.add_argument("--csv", required=True, help="table: image path (relative to the CSV), label, variables, "
                                                "optional split (train/val/test)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--variables", nargs="*", default=[], help="clinical columns to fuse (none = image only)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--image-column", default="image")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES")
    p.add_argument("--overwrite", action="store_true")


def run(args) -> int:
    if Path(args.out).exists() and not args.overwrite:
        raise InputError(f"{args.out} already exists", "choose another --out or add --overwrite")
    info = train_clinical(args.csv, args.out, args.variables, args.label_column, args.image_column, size=args.size,
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          threads=args.threads, command=getattr(args, "command_line", ""),
                          time_limit_min=args.time_limit)
    print(json.dumps({k: v for k, v in info.items() if k != "log"}, indent=1, default=str))
    return 0


class _WithClinical(nn.Module):
    """The network with one case's clinical variables bound, so callers (and Grad-CAM) call net(x)."""

    def __init__(self, net, clinical):
        super().__init__()
        self.net = net
        self.register_buffer("clinical_values", clinical)

    def forward(self, x):
        return self.net(x, self.clinical_values.expand(x.shape[0], -1))


def with_clinical(net, bundle, given: Optional[dict], device=None):
    """``net`` itself for image-only bundles; else ``net`` bound to the case's encoded variables
    (refused with a clear message when a declared variable is not given)."""
    c = clinical_input(bundle, given)
    if c is None:
        return net
    return _WithClinical(net, c.to(device) if device is not None else c).eval()
