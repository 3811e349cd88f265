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
