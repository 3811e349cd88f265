"""The model card (docs/README.md) of the hippocampus bundle, written from the training run's figures."""

from __future__ import annotations


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def model_card(info: dict, meta: dict) -> str:
    d = info.get("val_dice") or {}
    minutes = info.get("train_seconds", 0) / 60
    loop = info.get("val_dice_training_loop") or {}
    if info.get("network", "unet") == "unet":
        arch = (f"MONAI `UNet`, 3D, channels {info['filters']}, strided convolutions (stride 2), two residual "
                "units per level, instance norm, PReLU")
    else:
        arch = f"MONAI `DynUNet`, 3D, filters {info['filters']}, kernel 3, strides 1-2-2-2, instance norm"
    cmd_list = info.get("commands") or [info.get("command") or ""]
    commands = "\n".join(cmd_list)
    cmd_intro = ("Command (from the repository root; `--work-dir` holds checkpoints and the loss log, "
                 "`--resume` continues an interrupted run):")
    if len(cmd_list) > 1:
        cmd_intro = ("Commands, run in this order from the repository root. The later ones continue from the "
                     "checkpoint in `--work-dir` (`--resume`); where `--epochs` grows, the cosine learning-rate "
                     "schedule is recomputed for the new length, so training continues as a warm restart at a "
                     "lower learning rate. Shuffling and augmentation are seeded per epoch, so the sequence is "
                     "reproducible:")
    return f"""# MedAI hippocampus segmentation ({'UNet' if info.get('network', 'unet') == 'unet' else 'DynUNet'}, MONAI bundle)

Segments the **anterior hippocampus** (head, label 1) and the **posterior hippocampus** (body and
tail, label 2) in a 3D MRI crop around one hippocampus (label 0 is background).

## Data
- Medical Segmentation Decathlon **Task04 Hippocampus** (mono-modal MRI, Vanderbilt University
  Medical Center), licence **CC-BY-SA 4.0**. Attribution: Antonelli M., Reinke A., Bakas S., et al.
  "The Medical Segmentation Decathlon", Nature Communications 13, 4128 (2022); Simpson A.L. et al.,
  "A large annotated medical image dataset for the development and evaluation of segmentation
  algorithms", arXiv:1902.09063 (2019); http://medicaldecathlon.com/.
- The copy used is the 250-case set curated by Udacity (`udacity/nd320-c3-3d-imaging-starter`,
  commit 895fee6, `data/TrainingSet`), with the planted outliers removed; see the project's
  `shared/data/SOURCES.md` section 1. Images are 1 mm isotropic crops of about 35x50x36 voxels.
- Split: `Resources/Models/hippocampus_unet/split.json`, a seeded shuffle (seed 0) written once:
  {info['n_train']} training and {info['n_val']} validation cases. Nothing was tuned on other data.

## Model
- {arch}
  (see `configs/inference.json` → `network_def`); weights `models/model.pt` are a plain
  `state_dict` (load with `torch.load(path, weights_only=True)`).
- Pre-processing: orientation RAS, 1 mm spacing, per-volume z-score intensity normalisation.
- Inference: sliding window {meta['network_data_format']['inputs']['image']['spatial_shape']},
  overlap 0.5, Gaussian blending; softmax, back to the input grid (`Invertd`), argmax.

## Training
- Loss Dice + cross-entropy; AdamW (lr {info['lr']}, weight decay 1e-4), 3-epoch warm-up then cosine
  decay; batch {info['batch_size']} of random {meta['network_data_format']['inputs']['image']['spatial_shape']}
  patches (whole crops, zero padded); augmentation: left-right flip only (an anterior-posterior flip
  would swap the two labels), small random rotation (±15°) and scaling (±12 %), Gaussian noise,
  intensity scale/shift, gamma.
- Seed {info['seed']} (`monai.utils.set_determinism`), {info['epochs']} epochs; the kept weights are
  those of the epoch with the best validation mean Dice (epoch {info['best_epoch']}).
- Hardware: CPU only, {info['threads']} torch thread on a 2-core virtual machine shared with several
  other jobs (load average about 9 during the run; one thread was much faster than two under that
  load); training wall time {minutes:.0f} min (excluding data caching).
- {cmd_intro}

```
{commands}
```

  The per-epoch loss and validation Dice are in `docs/training_log.csv`.

## Validation (fixed split, {info['n_val']} cases, Dice per case averaged)

Measured with the shipped pipeline (`configs/inference.json`: preprocessing, sliding window,
softmax, inverted back to each input's own grid, argmax), against the label files as stored.

| label | Dice |
| --- | --- |
| anterior hippocampus | {_fmt(d.get('anterior'))} |
| posterior hippocampus | {_fmt(d.get('posterior'))} |
| mean (excluding background) | {_fmt(d.get('mean'))} |

(The training loop's own validation, on the preprocessed grid, gave mean {_fmt(loop.get('mean'))}.)

For comparison, nnU-Net reports about 0.90 (anterior) and 0.89 (posterior) on MSD Task04 (Isensee
et al., Nature Methods 2021; different data split and a five-fold ensemble).

## Intended use and limitations
- Research, teaching and demonstration only. **Not a medical device**; not validated for clinical use.
- Input must look like the MSD Task04 crops: T1-weighted-like MRI cropped around one hippocampus
  at about 1 mm. Whole-brain MRI is not supported (crop first); other contrasts, pathologies, children,
  and scanners unlike the Vanderbilt cohort are untested.
- The validation set is 50 cases from the same source as the training data, so the figures above
  are optimistic for other sites.
- The selected epoch was chosen on the validation set, which makes the validation figures slightly
  optimistic as well.

## Licence
Weights: CC-BY-SA 4.0 (they derive from CC-BY-SA 4.0 data); see `LICENSE`. Configs and docs: Apache-2.0.
"""


def own_data_card(info: dict) -> str:
    """Model card of a bundle trained on the user's own data (own_data.py): data summary, plan,
    validation Dice per label, command and seed, as measured by that run."""
    p = info["plan"]
    names = info["label_names"]
    rows = "\n".join(f"| {v} | {names[str(v)]} | {_fmt((info['val_dice'] or {}).get(names[str(v)]))} |"
                     for v in info["label_values"][1:])
    init = info.get("init")
    init_line = (f"- Initialised from `{init['source']}`: {init['tensors_loaded']} tensors loaded "
                 f"({100 * init['fraction_of_parameters_loaded']:.1f} % of the parameters), {init['tensors_fresh']} "
                 f"freshly initialised ({', '.join(init['fresh'][:4]) or 'none'}).") if init else \
        "- Trained from scratch (random initialisation)."
    norm = p["normalisation"]
    norm_txt = (f"CT: clipped to [{norm['a_min']:.1f}, {norm['a_max']:.1f}] (foreground 0.5-99.5 percentiles), "
                f"z-scored with foreground mean {norm['mean']:.1f} / std {norm['std']:.1f}") if norm["kind"] == "ct" \
        else f"z-score per volume and channel ({'non-zero voxels only' if norm['nonzero'] else 'all voxels'})"
    commands = "\n".join(info.get("commands") or [])
    return f"""# {', '.join(names[str(v)] for v in info['label_values'][1:])} segmentation (MedAI, trained on your data)

## Data
- {info['data']['n_cases']} labelled case(s), {len(info['channels'])} channel(s): {', '.join(info['channels'])};
  modalities {', '.join(p['modalities'])}; median spacing {p['median_spacing']} mm; median foreground
  size {('%.1f mm' % p['foreground_size_mm']) if p['foreground_size_mm'] else 'n/a'} (cube root of the box volume).
- Split: {info['n_train']} training, {info['n_val']} validation — {info['split']}.
- Label values: {', '.join(f"{v} = {names[str(v)]}" for v in info['label_values'])}.

## Plan (from the data; see `medai_training.plan` in configs/metadata.json)
- Spacing {p['spacing']} mm ({p['spacing_reason']}); patch / inference window {p['patch']};
  MONAI UNet, channels {p['filters']}, estimated training memory {p['estimated_training_memory_gb']} GB
  (budget {p['memory_gb']} GB).
- Intensity: {norm_txt}.
- Augmentation: {('mirroring along axes ' + str(info['flip_axes'])) if info['flip_axes'] else 'no mirroring (label names are directional)'},
  small rotation/scaling, Gaussian noise, intensity scale/shift; one patch in three centred on foreground.
{init_line}

## Training
- Loss Dice + cross-entropy, AdamW lr {info['lr']}, batch {info['batch_size']}, {info['steps_per_epoch']} steps per epoch,
  seed {info['seed']}; {info['epochs_run']} of {info['epochs']} epochs run ({info['stopped']}); kept epoch
  {info['best_epoch']} (best validation mean Dice); {info['train_seconds'] / 60:.1f} min on {info['threads']} CPU thread(s).

```
{commands}
```

## Validation (Dice per label, averaged over the validation cases, on the model's grid)

| value | label | Dice |
| --- | --- | --- |
{rows}
| | mean | {_fmt(info['val_mean_dice'])} |

## Limitations
- Research only; not a medical device. The figures come from {info['n_val']} validation case(s) of the
  same source as the training data and the kept epoch was chosen on them: optimistic.
"""
