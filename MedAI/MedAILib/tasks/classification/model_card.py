"""The model card (docs/README.md) of the adrenal classifier bundle, written from measured figures."""

from __future__ import annotations

from MedAILib.tasks.classification.metrics import format_metrics

# MedMNIST v2 (Yang et al., Scientific Data 10, 41, 2023), table of 3D results, AdrenalMNIST3D
# column (test split, AUC / ACC). Quoted from memory of the paper / medmnist.com benchmark table;
# the card says so.
MEDMNIST_V2_ADRENAL = [
    ("ResNet-18 + 2.5D", 0.718, 0.772),
    ("ResNet-18 + 3D", 0.827, 0.721),
    ("ResNet-18 + ACS", 0.839, 0.754),
    ("ResNet-50 + 2.5D", 0.732, 0.763),
    ("ResNet-50 + 3D", 0.828, 0.745),
    ("ResNet-50 + ACS", 0.828, 0.758),
    ("auto-sklearn", 0.828, 0.802),
    ("AutoKeras", 0.804, 0.705),
]


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def model_card(summary: dict, result: dict, command: str, size_bytes: int, sha256: str, notes: str = "") -> str:
    """The whole card; ``result`` is :func:`MedAILib.tasks.classification.calibration.calibrate`'s output."""
    s = summary
    smoke = (f"\n> **Smoke run:** only the first {s['limit']} cases of each split were used; the figures "
             "below say nothing about the model's real accuracy.\n" if s.get("limit") else "")
    return f"""# MedAI adrenal gland classifier (AdrenalMNIST3D, MONAI bundle)

Classifies the **3D shape of one adrenal gland** (a binary mask) as **normal (0)** or
**hyperplasia (1)**. Output: two calibrated softmax probabilities and a decision at the operating point
chosen on the validation split (see Results). Research and teaching only; not a medical
device.
{smoke}
## Data
- **AdrenalMNIST3D** from MedMNIST v2: 1,584 left and right adrenal glands of 792 patients
  (Zhongshan Hospital, Fudan University), each a 3D mask drawn by an expert endocrinologist on
  abdominal CT, with a normal / hyperplasia label. No CT intensities: masks only (stored 0/255).
- Licence **CC BY 4.0**. Attribution: Yang J., Shi R., Wei D., Liu Z., Zhao L., Ke B., Pfister H.,
  Ni B. "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
  classification." Scientific Data 10, 41 (2023). https://medmnist.com/
- File: `adrenalmnist3d.npz` ({s['size']}³), SHA-256 identical to the official MedMNIST v2 file
  (see the project's shared `data/SOURCES.md`, section 2).
- **Official split** (patient level): train 1,188 (929 normal / 259 hyperplasia), val 98 (76 / 22),
  test 298 (229 / 69). Training used train only; the epoch and every setting were chosen on val;
  test was evaluated once, for the model shipped here.

## How the input must be prepared (the Slicer Logic / engine must do exactly this)
MedMNIST describes the preparation as: *"We calculate the center of adrenal and resize the
center-cropped 64mm×64mm×64mm volume into 28×28×28."* Measured on the files:
- the mask's **centre of mass** sits at voxel index 13.9 (SD 0.2–0.4) in the 28³ file and 32.5
  (SD 0.4–0.9) in the 64³ file on every axis (first 300 training masks), while its bounding-box
  centre wanders more (SD 0.7–0.85 voxel at 28³, mean 13.4–15.3): the centre is the **centroid**,
  not the box centre;
- one voxel is 64/28 = **2.286 mm** (64/64 = 1 mm for the 64³ file), isotropic;
- values are strictly binary (0/255): the resampled mask was binarised again. Downsampling the
  64³ masks trilinearly and thresholding at 0.5 reproduces the 28³ masks at 99.87 % of voxels
  (Dice 0.96), so we use **linear interpolation + threshold 0.5**; the exact MedMNIST resampler is
  not published;
- one gland per volume: a segment holding both glands must be split (left / right) first.
- Unknown and therefore not enforced: which array axis is cranio-caudal. Flips are harmless (the
  model is trained with random flips on all three axes and the test-time figures below use none).

The recipe is machine-readable in `configs/medai.json` (`preparation`) and in `metadata.json`
(`medai.preparation`): centroid of the mask → 64 mm cube (physical size) → {s['size']}³ grid →
binary 0/1 float. `configs/inference.json` (standard MONAI sections: network_def, preprocessing,
SimpleInferer, softmax postprocessing, evaluator) takes volumes that are already prepared, e.g. one
`.npy` per case as stored in the npz (0/255 → scaled to 0/1, resized to {s['size']}³ if needed); the
centroid crop from a full CT-sized segment is the engine's job, following the recipe above.

## Model and training
- Network: `{s['network_def']['_target_']}` with {', '.join(f'{k}={v}' for k, v in s['network_def'].items() if k != '_target_')}.
- Input 1×{s['size']}×{s['size']}×{s['size']} float in [0, 1]; output 2 logits → softmax.
- Loss: cross-entropy (label smoothing {s['label_smoothing']}, class weights {'on' if s['class_weight'] else 'off'});
  AdamW, one-cycle LR (max {s['lr']}), weight decay {s['weight_decay']}, batch {s['batch_size']}, {s['epochs']} epochs,
  EMA of weights {s['ema'] or 'off'}; augmentation `{s['augment']}` (MONAI RandFlip on 3 axes,
  RandAffine ±15° rotation, ±5 % scale, ±2 voxel shift); seed {s['seed']}; CPU, 1 thread.
- Kept: the epoch with the best **validation AUC** (epoch {s['best_epoch']} of {s['epochs']}).
- Reproduce (from the repository root, needs the shared data folder):

      {command}

- Weights: `models/model.pt` (state_dict, `torch.load(..., weights_only=True)`), {size_bytes:,} bytes,
  SHA-256 `{sha256}`.

{results_section(result)}The baseline figures are quoted from the MedMNIST v2 paper's table of 3D results (Yang et al.
2023) as remembered by the author of this card; they could not be re-checked against the PDF while
writing it, so verify them there before citing.

{notes}
"""


RESULTS_START = "## Results\n"
RESULTS_END = "The baseline figures are quoted"


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_ci95", [None, None])
    return "" if lo is None else f" ({lo:.2f}–{hi:.2f})"


def results_section(result: dict) -> str:
    """The card's "Results" section (up to the baselines' disclaimer) from ``calibrate``'s output."""
    op, val, test, t = result["operating_point"], result["val"], result["test"], result["temperature"]
    d = result["default_threshold_test"]
    cv, ct = val["calibration"], test["calibration"]
    cm = test["confusion_matrix"]
    rows = "\n".join(f"| {n} | {a:.3f} | {c:.3f} |" for n, a, c in MEDMNIST_V2_ADRENAL)
    how = ("maximising Youden's J (sensitivity + specificity − 1)" if op["method"] == "youden"
           else f"the highest threshold reaching sensitivity {op.get('target_sensitivity')}")
    alt_rows = ""
    for name, a in result.get("alternatives", {}).items():
        av, at = a["val"], a["test"]
        alt_rows += (f"| {name.replace('_', ' ')} (val) | {av['threshold']:.3f} | {_f(at['recall'])}{_ci(at, 'sensitivity')} | "
                     f"{_f(at['specificity'])}{_ci(at, 'specificity')} | {_f(at['accuracy'])} | "
                     f"{_f(av['sensitivity'])} / {_f(av['specificity'])} |\n")
    return f"""{RESULTS_START}
### Calibration and operating point (chosen on the validation split only)
- **Probabilities**: temperature scaling (Guo et al. 2017): P = softmax(logits / T), T fitted by
  minimising the validation negative log-likelihood: **T = {t:.4f}**. Validation NLL
  {cv['uncalibrated']['nll']:.4f} → {cv['calibrated']['nll']:.4f}, Brier {cv['uncalibrated']['brier']:.4f} →
  {cv['calibrated']['brier']:.4f}, ECE (10 bins) {cv['uncalibrated']['ece']:.3f} → {cv['calibrated']['ece']:.3f}; test NLL
  {ct['uncalibrated']['nll']:.4f} → {ct['calibrated']['nll']:.4f}, ECE {ct['uncalibrated']['ece']:.3f} →
  {ct['calibrated']['ece']:.3f}. {'T is about 1: the network was already calibrated on validation (in NLL), so the scaling changes the probabilities only in the third decimal; it is kept so that a retrained model gets the same treatment.' if abs(t - 1) < 0.05 else 'The scaling changes the probabilities, not the ranking (AUC).'}
- **Decision**: hyperplasia when the calibrated P(hyperplasia) ≥ **{op['threshold']:.4f}**, chosen by
  {how} on the {op['n']} validation cases ({op['n_positive']} hyperplasia): validation sensitivity
  {op['sensitivity']:.3f}, specificity {op['specificity']:.3f}. The threshold lies halfway between the two
  validation scores around the cut. Stored in `configs/medai.json` (`temperature`, `decision_threshold`,
  `operating_point`); `medai classify` and `medai evaluate classification` use it (and print it), the
  probabilities are reported unchanged. `configs/inference.json` divides the logits by T before the softmax.
- Fitted with `python -m MedAILib.tasks.classification.calibration --bundle BUNDLE --data
  ../shared/data/medmnist3d/adrenalmnist3d.npz` (training with `medai train classification` runs the same
  step at the end). The validation split has only {op['n']} cases, so the threshold is uncertain: the
  test figures below are the honest measure of what it gives.

### Figures (official test split measured once; nothing chosen on it)
Sensitivity/specificity with 95 % Wilson intervals.

| split, decision rule | n | AUC | ACC | sensitivity (recall) | specificity | precision | F1 |
| --- | --- | --- | --- | --- | --- | --- | --- |
| val, operating point | {val['n']} | {_f(val['auc'])} | {_f(val['accuracy'])} | {_f(val['recall'])} | {_f(val.get('specificity'))} | {_f(val['precision'])} | {_f(val['f1'])} |
| **test, operating point P ≥ {op['threshold']:.3f}** | {test['n']} | **{_f(test['auc'])}** | **{_f(test['accuracy'])}** | **{_f(test['recall'])}**{_ci(test, 'sensitivity')} | **{_f(test.get('specificity'))}**{_ci(test, 'specificity')} | {_f(test['precision'])} | {_f(test['f1'])} |
| test, P ≥ 0.5 (arg-max, MedMNIST convention; before) | {d['n']} | {_f(d['auc'])} | {_f(d['accuracy'])} | {_f(d['recall'])}{_ci(d, 'sensitivity')} | {_f(d.get('specificity'))}{_ci(d, 'specificity')} | {_f(d['precision'])} | {_f(d['f1'])} |

Other operating point, also chosen on validation (stored in `operating_point.alternatives`, usable
with `medai evaluate classification --threshold`):

| point | threshold | test sensitivity | test specificity | test ACC | val sensitivity / specificity |
| --- | --- | --- | --- | --- | --- |
{alt_rows}
The operating point trades accuracy for sensitivity: with {100 * sum(cm[1]) / test['n']:.0f} % hyperplasia in the test split, the
arg-max rule has the higher ACC but misses most hyperplasia cases.

Test confusion matrix at the operating point (rows: true, columns: predicted):

| | normal | hyperplasia |
| --- | --- | --- |
| normal | {cm[0][0]} | {cm[0][1]} |
| hyperplasia | {cm[1][0]} | {cm[1][1]} |

```
{format_metrics(test, title='test split, operating point')}
```

### Beside the MedMNIST v2 baselines (AdrenalMNIST3D, official test split)
ACC here is at the arg-max (P ≥ 0.5), as in the MedMNIST benchmark.

| method | AUC | ACC |
| --- | --- | --- |
{rows}
| **this model** | **{_f(d['auc'])}** | **{_f(d['accuracy'])}** |

"""


def replace_results_section(card: str, section: str) -> str:
    """``card`` with its Results section (from "## Results" to the baselines' disclaimer) replaced."""
    i, j = card.find(RESULTS_START), card.find(RESULTS_END)
    if i < 0 or j < i:
        raise ValueError("the model card has no '## Results' section ending at the baselines' disclaimer")
    return card[:i] + section + card[j:]
