"""``medai demo``: segment a real hippocampus MRI (a validation case of the shipped model) and
compare with its reference label. Data from MEDAI_DATA_DIR, else MSD Task04 downloaded from its
official source (URL and MD5 as recorded in MONAI's ``DecathlonDataset``) into MEDAI_HOME."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from MedAILib.cli import batch
from MedAILib.core.errors import DownloadError, InputError

MODEL_ID = "hippocampus_unet"
TASK = "Task04_Hippocampus"


def register(sub) -> None:
    p = sub.add_parser("demo", help="segment a sample hippocampus MRI with the shipped model and print Dice")
    p.add_argument("-o", "--output", default="medai-demo", help="output folder (default ./medai-demo)")
    p.add_argument("--case", help="case id (default: the first validation case of the shipped model)")
    p.add_argument("--no-download", action="store_true", help="never download the sample data")
    batch.add_arguments(p, report=False, resume=False, progress=None)
    p.set_defaults(func=run)


def _find_case(case: str, allow_download: bool) -> tuple:
    from MedAILib.models.cache import medai_home
    from MedAILib.core.paths import data_dir

    candidates = [data_dir() / "msd-hippocampus", medai_home() / "data" / TASK]
    for root in candidates:
        img, lab = root / "imagesTr" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz"
        if img.exists() and lab.exists():
            return img, lab
    if not allow_download:
        raise InputError(f"sample {case} not found in {candidates[0]} or {candidates[1]}",
                         "set MEDAI_DATA_DIR to the folder holding msd-hippocampus/, or allow the download")
    from monai.apps import DecathlonDataset, download_and_extract

    url, md5 = DecathlonDataset.resource[TASK], DecathlonDataset.md5[TASK]
    target = medai_home() / "data"
    target.mkdir(parents=True, exist_ok=True)
    print(f"downloading MSD {TASK} (about 27 MB) from {url} (md5 {md5}) into {target}", file=sys.stderr)
    try:
        download_and_extract(url, str(target / f"{TASK}.tar"), str(target), hash_val=md5, hash_type="md5")
    except Exception as e:  # noqa: BLE001 - network, proxy, disk: one clear message
        raise DownloadError(f"could not download the sample data ({type(e).__name__}: {e})",
                            f"the demo needs either MEDAI_DATA_DIR with msd-hippocampus/, or internet access "
                            f"to {url}") from e
    img, lab = target / TASK / "imagesTr" / f"{case}.nii.gz", target / TASK / "labelsTr" / f"{case}.nii.gz"
    if not (img.exists() and lab.exists()):
        raise InputError(f"{case} is not in the downloaded {TASK}", "choose another --case")
    return img, lab


def dice_per_label(pred: np.ndarray, ref: np.ndarray, values) -> dict:
    out = {}
    for v in values:
        a, b = pred == v, ref == v
        denom = a.sum() + b.sum()
        out[v] = float(2.0 * (a & b).sum() / denom) if denom else float("nan")
    return out


def run(args) -> int:
    return batch.Batch(args, "demo").execute(lambda b: _run(args, b))


def _run(args, b: batch.Batch) -> int:
    from MedAILib.models import load_catalogue, resolve_model
    from MedAILib.io import read_image, read_segmentation, write_segmentation
    from MedAILib.tasks.segmentation.postprocess import label_volumes_ml
    from MedAILib.io.preview import overlay_png
    from MedAILib.tasks.segmentation.pipeline import segment
    from MedAILib.core.atomic import atomic_output

    import warnings

    warnings.filterwarnings("ignore", module="monai")
    entry = load_catalogue().get(MODEL_ID)
    split_file = entry.shipped_path() / "split.json"
    if not split_file.exists():
        raise InputError(f"the shipped model's split.json is missing ({split_file})", "reinstall MedAI")
    case_id = args.case or json.loads(split_file.read_text(encoding="utf-8"))["validation"][0]
    img_path, lab_path = _find_case(case_id, allow_download=not args.no_download)
    out = Path(args.output)
    b.plan([batch.Case(0, case_id, [img_path, lab_path], case_id)],
           lambda case: {"output": out / f"{case_id}.seg.nrrd", "preview": out / f"{case_id}.png",
                         "report": out / "report.json"})

    def one(case, progress):
        bundle = resolve_model(MODEL_ID)
        image, reference = read_image(img_path), read_segmentation(lab_path)
        result = segment(image, bundle, device=args.device, progress=progress)
        seg_path = write_segmentation(result.labelmap, case.outputs["output"])
        png = overlay_png(image, case.outputs["preview"], labelmap=result.labelmap, title=f"{case_id}: {bundle.name}")
        names = {l.value: l.name for l in result.labelmap.labels}
        dice = dice_per_label(result.labelmap.array, reference.array, sorted(names))
        report = {"case": case_id, "image": str(img_path), "reference": str(lab_path), "model": bundle.name,
                  "seconds": round(result.seconds, 2), "device": result.device, "output": str(seg_path),
                  "preview": str(png), "dice": {names[v]: round(d, 4) for v, d in dice.items()},
                  "label_volumes_ml": label_volumes_ml(result.labelmap)}
        with atomic_output(case.outputs["report"]) as tmp:
            tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"segmented {case_id} (validation case, not used in training) in {result.seconds:.1f} s on "
              f"{result.device}")
        for v, d in dice.items():
            print(f"  Dice {names[v]:<12} {d:.3f}")
        print(f"  mean Dice     {np.nanmean(list(dice.values())):.3f}")
        print(f"wrote {seg_path}, {png} and {case.outputs['report']}")
        return {"device": result.device, "dice": report["dice"]}

    return b.process(one)
