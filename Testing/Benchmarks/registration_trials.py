"""Known-offset rigid registration trials on real thick-slice brain MR (TCIA Brain-Tumor-Progression).

The contrasts of a TCIA PGBM case share one grid (TCIA co-registered them), so the ground-truth
fixed->moving transform between two of them is the identity -- only as exactly as TCIA's own
co-registration. The default pair is the one of issue 21: **T2 (moving) onto FLAIR (fixed)**, both
"*reg" series (each was registered and resampled by TCIA onto the T1post grid, so the pair compounds
two TCIA registrations). Each trial draws a random rigid offset A (each Euler angle uniform in
[-R, R] degrees about the head centre, each shift uniform in [-S, S] mm; R = S = 8 by default;
seeded), places the MOVING image's voxels at A (a change of its frame only: no voxel is
interpolated; ``--offset-mode resample`` moves the content on the image's own grid instead, with
linear interpolation across the thick slices), registers it to FIXED with MedAI's defaults and measures the target registration
error over every 10th voxel of the head (union of the Otsu head masks of the case's contrasts):

    TRE(p) = | T_found(p) - A(p) |   (mm, fixed-space RAS points p)

Per trial: mean / median / max TRE over the head points "before" (the offset left uncorrected) and
"after"; per case and over all trials: the median and the max of the per-trial mean TRE. With
``--base`` the un-offset pair is registered once too: its TRE against the identity is where the
metric itself puts the pair (the floor no optimiser setting removes).

    .venv/bin/python Testing/Benchmarks/registration_trials.py OUT_DIR [--cases PGBM-003 PGBM-006]
        [--trials 5] [--fixed FLAIR] [--moving T2] [--max-rotation 8] [--max-shift 8] [--base]
        [--module path/to/registration.py] [--option KEY=VALUE ...]

``--module`` runs another copy of ``MedAILib/tasks/registration/registration.py`` (e.g. the previous
commit's, for before/after figures). Runtime: one registration of a 512x512x24 pair takes 1-3 min on
the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "MedAI"))

from MedAILib.core.paths import data_dir  # noqa: E402
from MedAILib.io import read_image  # noqa: E402
from MedAILib.tasks.registration import blend  # noqa: E402
from MedAILib.tasks.registration import registration as R  # noqa: E402

SERIES = {"FLAIR": "FLAIRreg", "T2": "T2reg", "T1pre": "T1prereg", "T1post": "T1post"}  # series folder name part


def load_module(path):
    spec = importlib.util.spec_from_file_location("registration_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def parse_overrides(options) -> dict:
    overrides = {}
    for o in options:
        k, v = o.split("=", 1)
        try:
            value = json.loads(f"[{v}]") if "," in v else json.loads(v)
        except json.JSONDecodeError:
            value = v  # plain word, e.g. metric_interpolator=bspline
        overrides[k] = tuple(value) if isinstance(value, list) else value
    return overrides


def case_series(case: str):
    d = data_dir() / "tcia-brain-tumor-progression-dicom" / case
    if not d.is_dir():
        sys.exit(f"{d} not found")
    out = {}
    for name, part in SERIES.items():  # folders are "<number>-<description>-<number>" and differ per case
        found = [f for f in d.iterdir() if f.is_dir() and f.name.split("-")[1:2] == [part]]
        if found:
            out[name] = found[0]
    return out


def head_points(series: dict, fixed) -> np.ndarray:
    """RAS points: every 10th voxel of the union of the head masks of the case's contrasts, so every
    pair is scored on the same points (Otsu on a T1 keeps only ~1/3 of the head it keeps on FLAIR)."""
    head = np.zeros(fixed.array.shape, bool)
    for path in series.values():
        other = read_image(path)
        if other.same_grid(fixed):
            head |= R.foreground_mask(other).array > 0
    k, j, i = np.nonzero(head)
    return fixed.ijk_to_ras_points(np.stack([i, j, k], 1)[::10])


def tre(found_pts, truth_pts) -> dict:
    d = np.linalg.norm(found_pts - truth_pts, axis=1)
    return {"mean": float(d.mean()), "median": float(np.median(d)), "max": float(d.max())}


def reliability_of(res) -> dict:
    rel = getattr(res, "reliability", None)
    return dict(rel) if isinstance(rel, dict) else {}


def run_case(case, args, reg, overrides, rng, out: Path) -> dict:
    series = case_series(case)
    for name in (args.fixed, args.moving):
        if name not in series:
            sys.exit(f"{case} has no {name} series ({SERIES[name]})")
    fixed, moving = read_image(series[args.fixed]), read_image(series[args.moving])
    assert fixed.same_grid(moving), "the benchmark needs two contrasts on one grid (identity ground truth)"
    pts = head_points(series, fixed)
    # rotations about the head centre, or about the image's first voxel (how a test that rotates about the
    # DICOM origin would move the head: 8 deg there shift the head by ~15 mm more)
    center = pts.mean(0) if args.rotation_centre == "head" else fixed.ijk_to_ras_points(np.zeros((1, 3)))[0]
    print(f"\n{case}: fixed {args.fixed}, moving {args.moving}; grid {fixed.size_ijk}, spacing "
          f"{tuple(round(float(s), 4) for s in fixed.spacing)} mm; {len(pts)} head points; "
          f"offsets up to {args.max_rotation} deg / {args.max_shift} mm about the {args.rotation_centre}; overrides {overrides or 'none'}", flush=True)
    base = None
    result = {"case": case, "grid": list(fixed.size_ijk), "spacing_mm": [float(s) for s in fixed.spacing],
              "n_points": int(len(pts)), "trials": []}
    if args.base:
        t0 = time.time()
        base = reg.register(fixed, moving, **overrides)
        result["unoffset_pair_tre_vs_identity_mm"] = tre(base.map_points_ras(pts), pts)
        result["unoffset_pair_reliability"] = reliability_of(base)
        result["unoffset_pair_fixed_to_moving_ras"] = base.fixed_to_moving_ras().tolist()
        print(f"un-offset pair: TRE vs identity mean {result['unoffset_pair_tre_vs_identity_mm']['mean']:.3f} mm "
              f"({time.time() - t0:.0f} s)", flush=True)
    print(f"{'trial':>5} {'rot (deg) x,y,z':>18} {'shift (mm) x,y,z':>18} {'before':>7} {'after':>7} "
          f"{'median':>7} {'max':>7} {'metric':>8} {'fwd/inv':>7} {'reliable':>8} {'s':>5}")
    for t in range(args.trials):
        rot = rng.uniform(-args.max_rotation, args.max_rotation, 3)
        shift = rng.uniform(-args.max_shift, args.max_shift, 3)
        a = R.rigid_ras_matrix(rot, shift, center)
        moved = R.move_frame(moving, a)
        if args.offset_mode == "resample":  # the content moves, the grid stays: thick slices get interpolated
            moved = R.resample_to(moved, moving, "linear")
        truth = pts @ a[:3, :3].T + a[:3, 3]
        t1 = time.time()
        res = reg.register(fixed, moved, **overrides)
        seconds = time.time() - t1
        before, after = tre(pts, truth), tre(res.map_points_ras(pts), truth)
        if args.base:  # distance from where the same method puts the un-offset pair (A o T_base): the method's
            # own share of the error, apart from where the metric's optimum lies
            after["consistency_mean"] = tre(res.map_points_ras(pts), base.map_points_ras(pts) @ a[:3, :3].T + a[:3, 3])["mean"]
        rel = reliability_of(res)
        row = {"trial": t, "rotation_deg": rot.round(3).tolist(), "shift_mm": shift.round(3).tolist(),
               "tre_before_mm": before, "tre_after_mm": after, "metric_before": res.metric_before,
               "metric_after": res.metric_after, "reliability": rel, "note": getattr(res, "note", None),
               "seconds": round(seconds, 1), "found_fixed_to_moving_ras": res.fixed_to_moving_ras().tolist(),
               "true_fixed_to_moving_ras": a.tolist()}
        result["trials"].append(row)
        fi = rel.get("forward_inverse_mm")
        print(f"{t:>5} {','.join(f'{x:+.1f}' for x in rot):>18} {','.join(f'{x:+.1f}' for x in shift):>18} "
              f"{before['mean']:>7.2f} {after['mean']:>7.3f} {after['median']:>7.3f} {after['max']:>7.3f} "
              f"{res.metric_after:>8.4f} {fi if fi is None else round(fi, 3)!s:>7} "
              f"{str(rel.get('reliable', '-')):>8} {seconds:>5.0f}", flush=True)
        if t == 0 and args.figure:
            png = blend.save_png([blend.checkerboard(fixed, R.resample_to(moved, fixed, "linear")),
                                  blend.checkerboard(fixed, res.resampled)],
                                 out / f"checkerboard_{case}_{args.fixed}_{args.moving}_trial0.png",
                                 titles=[f"before: {args.moving} offset (world coords)", "after rigid registration"])
            print(f"      figure: {png}", flush=True)
    result.update(summarise(result["trials"]))
    return result


def summarise(trials) -> dict:
    after = np.array([r["tre_after_mm"]["mean"] for r in trials])
    before = np.array([r["tre_before_mm"]["mean"] for r in trials])
    return {"n_trials": len(trials),
            "tre_before_mean_mm_median": float(np.median(before)), "tre_before_mean_mm_max": float(before.max()),
            "tre_after_mean_mm_median": float(np.median(after)), "tre_after_mean_mm_max": float(after.max()),
            "tre_after_max_mm_max": float(max(r["tre_after_mm"]["max"] for r in trials)),
            "n_sub_mm": int((after < 1.0).sum()),
            "n_flagged_unreliable": int(sum(1 for r in trials if r["reliability"].get("reliable") is False))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder for results JSON (and checkerboard PNGs with --figure)")
    p.add_argument("--cases", nargs="+", default=["PGBM-003", "PGBM-006"])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--fixed", default="FLAIR", choices=SERIES)
    p.add_argument("--moving", default="T2", choices=SERIES)
    p.add_argument("--max-rotation", type=float, default=8.0, help="degrees, each Euler angle")
    p.add_argument("--max-shift", type=float, default=8.0, help="mm, each axis")
    p.add_argument("--offset-mode", choices=("frame", "resample"), default="frame",
                   help="frame: move the moving image's header (lossless); resample: move its content on its own "
                        "grid (linear interpolation across the thick slices, as a resampled test image would be)")
    p.add_argument("--rotation-centre", choices=("head", "origin"), default="head",
                   help="rotate about the head centre (default) or the image's first voxel")
    p.add_argument("--base", action="store_true", help="also register the un-offset pair (TRE vs identity)")
    p.add_argument("--figure", action="store_true", help="checkerboard PNG of trial 0 per case")
    p.add_argument("--module", help="registration.py to test instead of the package's (e.g. an older copy)")
    p.add_argument("--label", default=None, help="name of this run in the results file name")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="registration setting override, e.g. multi_start=false (repeatable)")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.option)
    reg = load_module(args.module) if args.module else R
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)  # one stream: case k's offsets do not depend on other runs' code
    cases = [run_case(c, args, reg, overrides, rng, out) for c in args.cases]
    all_trials = [t for c in cases for t in c["trials"]]
    summary = {"pair": f"{args.moving} (moving) onto {args.fixed} (fixed)", "module": args.module or "MedAILib",
               "offset_mode": args.offset_mode, "rotation_centre": args.rotation_centre,
               "overrides": overrides, "seed": args.seed, "max_rotation_deg": args.max_rotation,
               "max_shift_mm": args.max_shift, **summarise(all_trials),
               "per_case": {c["case"]: {k: v for k, v in c.items() if k != "trials"} for c in cases}}
    print(json.dumps(summary, indent=1))
    name = f"registration_trials_{args.moving}_to_{args.fixed}{'_' + args.label if args.label else ''}.json"
    (out / name).write_text(json.dumps({"summary": summary, "cases": cases}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
