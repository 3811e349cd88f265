"""``medai info PATH``: what a person needs to trust an image before running a model on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from MedAILib.io import list_dicom_series, read_image


def register(sub) -> None:
    p = sub.add_parser("info", help="show geometry, type and intensity range of an image or DICOM folder")
    p.add_argument("path", help="image file (.nii/.nii.gz/.nrrd/.mha/.seg.nrrd) or DICOM folder")
    p.add_argument("--series", help="DICOM SeriesInstanceUID to describe (default: largest series)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true",
                   help="also run the checks done before a model runs (NaN, constant, 2D, spacing, memory, types); "
                        "exit non-zero with the reason when the image would be refused")
    p.add_argument("--modality", help="with --check: the modality a model expects (CT or MR)")
    p.add_argument("--allow-2d", action="store_true", help="with --check: accept single-slice images")
    p.add_argument("--accept-input-warnings", action="store_true",
                   help="with --check: report the sanity findings (label map, absurd outliers, too thin, anisotropic, "
                        "sheared) as warnings instead of refusing the image")
    p.set_defaults(func=run)


def describe(volume) -> dict:
    a = volume.array
    finite = np.isfinite(a) if np.issubdtype(a.dtype, np.floating) else None
    vals = a[finite] if finite is not None else a
    d = {
        "size_ijk": list(volume.size_ijk),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "origin_ras_mm": [round(float(o), 4) for o in volume.origin],
        "orientation": volume.axis_codes,
        "direction_ras": [[round(float(x), 6) for x in row] for row in volume.direction],
        "pixel_type": str(a.dtype),
        "intensity_range": [float(vals.min()), float(vals.max())] if vals.size else None,
        "non_finite_voxels": int(a.size - finite.sum()) if finite is not None else 0,
    }
    if volume.labels is not None:
        d["labels"] = [l.to_dict() for l in volume.labels]
    for key in ("series_uid", "modality", "description"):
        if volume.metadata.get(key):
            d[key] = volume.metadata[key]
    return d


def run(args) -> int:
    path = Path(args.path)
    series = list_dicom_series(path) if path.is_dir() else []
    volume = read_image(path, series_uid=args.series)
    warnings = []
    if args.check:
        from MedAILib.runtime.validation import check_inputs

        warnings = check_inputs([volume], {"n_inputs": 1, "modality": args.modality, "allow_2d": args.allow_2d,
                                           "accept_input_warnings": args.accept_input_warnings,
                                           "model": f"a model for {args.modality}" if args.modality else "a model"})
    info = describe(volume)
    if args.check:
        info["check"] = {"ok": True, "warnings": warnings}
    if series:
        info["dicom_series"] = [
            {"uid": s.uid, "files": s.n_files, "modality": s.modality, "description": s.description,
             "series_number": s.series_number, "transfer_syntax": s.transfer_syntax}
            for s in series
        ]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fmt = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
    print(f"file:        {path}")
    print(f"size (IJK):  {fmt(info['size_ijk'])}")
    print(f"spacing:     {fmt(info['spacing_mm'])} mm")
    print(f"origin:      ({', '.join(f'{x:g}' for x in info['origin_ras_mm'])}) mm RAS")
    print(f"orientation: {info['orientation']}")
    print("direction:   " + "  ".join("[" + " ".join(f"{x:+.4f}" for x in row) + "]" for row in info["direction_ras"]))
    print(f"pixel type:  {info['pixel_type']}")
    if info["intensity_range"]:
        print(f"intensity:   {info['intensity_range'][0]:g} .. {info['intensity_range'][1]:g}")
    if info["non_finite_voxels"]:
        print(f"WARNING:     {info['non_finite_voxels']} NaN/Inf voxels")
    for l in info.get("labels", []):
        print(f"label {l['value']:>4}: {l['name']}  colour {tuple(round(c, 3) for c in l['color'])}"
              + (f"  [{l['terminology'].split('~')[2]}]" if l.get("terminology") else ""))
    for w in warnings:
        print(f"WARNING:     {w}")
    if args.check:
        print("check:       ok (a model would accept this image)")
    if series:
        print(f"DICOM series ({len(series)}; reading {volume.metadata.get('series_uid') or 'the largest'}):")
        for s in series:
            print(f"  {s.uid or '(no SeriesInstanceUID)'}  {s.n_files:>4} files  {s.modality:<3} #{s.series_number:<4} {s.description}")
    return 0
