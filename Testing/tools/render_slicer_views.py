"""Render the pictures of docs/images/slicer_*.png with Slicer's own code: each task's result made by
the modules' Logic on real MRML (slicer-core, Testing/slicer_real) with the real engine, drawn by
Slicer's slice logic and displayable managers offscreen (Mesa EGL/OSMesa; see docs/slicer.md).

    python Testing/tools/render_slicer_views.py [--out docs/images] [--only segmentation,...]

Pictures (real data from MEDAI_DATA_DIR):
- slicer_segmentation.png: MedAISegment's hippocampus_unet result on a held-out MSD hippocampus case
  (axial, coronal, sagittal through the structure), next to the reference label in the same views.
- slicer_classification_heatmap.png: MedAI Classify on the right adrenal gland of the TotalSegmentator
  example CT (its reference segment), Grad-CAM heat-map over the CT, the segment outlined.
- slicer_conversion.png: MedAI Convert (t2_to_flair_gan) on the held-out TCIA patient PGBM-003:
  T2 input, converted FLAIR, acquired FLAIR (same slice).
- slicer_registration_checkerboard.png: MedAIFusion on BraTS T1 and T2 of one subject, the T2 moved by
  a known rigid transform: checkerboard before and after Register (rigid, Mattes MI).

Each panel is one rendered slice view (256 x 256 px); captions are added with Pillow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "Testing"), str(REPO / "Testing" / "tests"), str(REPO / "MedAI")]
SIZE = (256, 256)


def setup():
    from slicer_support import real

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    slicer = real.activate()
    return slicer


def ras_of(node, kji):
    from slicer_support.geometry import voxel_ras

    return voxel_ras(node, kji)[0]


def compose(panels, captions, path, title=None, columns=None):
    """Panels (RGB arrays) in rows of ``columns``, a caption under each, a title line on top."""
    from PIL import Image, ImageDraw

    h, w = panels[0].shape[:2]
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    top, cap, gap = (18 if title else 0), 20, 4
    out = Image.new("RGB", (w * columns + gap * (columns - 1), top + rows * (h + cap)), (0, 0, 0))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((4, 3), title, fill=(255, 255, 255))
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        x, y = (i % columns) * (w + gap), top + (i // columns) * (h + cap)
        out.paste(Image.fromarray(panel.astype(np.uint8)), (x, y))
        draw.text((x + 4, y + h + 4), caption, fill=(230, 230, 230))
    out.save(path)
    return path


def render(volume, view, centre, **kwargs):
    from slicer_real.harness import render_slice_png

    return render_slice_png(volume, view=view, offset_ras=centre, size=SIZE, **kwargs).rgb


def segmentation(slicer, data, out):
    import MedAISegment

    from MedAILib.core.paths import resources_dir

    case = json.loads((resources_dir() / "Models" / "hippocampus_unet" / "split.json").read_text())["validation"][0]
    folder = data / "msd-hippocampus"
    volume = slicer.util.loadVolume(str(folder / "imagesTr" / f"{case}.nii.gz"))
    run = MedAISegment.MedAISegmentLogic().process([volume], None, "hippocampus_unet", device="cpu", wait=True)
    seg = run.outputSegmentation
    truth = slicer.util.loadLabelVolume(str(folder / "labelsTr" / f"{case}.nii.gz"), {"show": False})
    # the reference drawn the same way: Slicer's reader makes one segment per label value
    reference = slicer.util.loadSegmentation(str(folder / "labelsTr" / f"{case}.nii.gz"), {"name": "reference"})
    colours = {s.GetLabelValue(): s.GetColor() for s in (seg.GetSegmentation().GetNthSegment(i)
                                                          for i in range(seg.GetSegmentation().GetNumberOfSegments()))}
    for i in range(reference.GetSegmentation().GetNumberOfSegments()):
        segment = reference.GetSegmentation().GetNthSegment(i)
        segment.SetColor(*colours[segment.GetLabelValue()])
    centre = ras_of(truth, np.argwhere(slicer.util.arrayFromVolume(truth) > 0).mean(0))
    panels, captions = [], []
    for node, what in ((seg, "MedAI result"), (reference, "reference")):
        for other in (seg, reference):
            other.GetDisplayNode().SetVisibility(other is node)
        for view, name in (("Red", "axial"), ("Green", "coronal"), ("Yellow", "sagittal")):
            panels.append(render(volume, view, centre, overlay=node))
            captions.append(f"{what}, {name}")
    return compose(panels, captions, out / "slicer_segmentation.png",
                   f"MedAI Segment: hippocampus_unet on {case} (held out); anterior orange, posterior blue", columns=3)


def classification(slicer, data, out):
    import MedAI

    from MedAILib.io import read_segmentation

    folder = data / "totalsegmentator-example"
    ct = slicer.util.loadVolume(str(folder / "example_ct_sm.nii.gz"))
    ct.GetDisplayNode().SetAutoWindowLevel(0)
    ct.GetDisplayNode().SetWindowLevel(400, 40)
    labels = read_segmentation(folder / "example_seg.nii.gz")  # TotalSegmentator (v2 classes): 8 = right adrenal
    tmp = Path(tempfile.mkdtemp())
    from MedAILib.core.volume import LabelInfo
    from MedAILib.io import write_segmentation

    gland = write_segmentation(labels.with_array((labels.array == 8).astype(np.uint8),
                                                 labels=[LabelInfo(1, "right adrenal gland", (0.2, 1.0, 0.2))]),
                               tmp / "gland.seg.nrrd")
    seg = slicer.util.loadSegmentation(str(gland), {"name": "right adrenal gland"})
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    run = MedAI.MedAILogic().classify(ct, "adrenal_classifier", seg, segment_id, explain="gradcam", device="cpu",
                                      wait=True)
    assert run.status == "done", run.errorText
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct)
    centre = ras_of(ct, np.argwhere(mask > 0).mean(0))
    seg.GetDisplayNode().SetVisibility2DFill(False)
    heat = {"foreground": run.heatmapVolume, "foreground_opacity": 0.45}
    panels = [render(ct, "Red", centre, overlay=seg),
              render(ct, "Red", centre, overlay=seg, field_of_view_mm=110, **heat),
              render(ct, "Green", centre, overlay=seg, field_of_view_mm=110, **heat)]
    text = f"{run.predicted} {max(run.probabilities):.2f}"
    return compose(panels, ["CT + segment (axial)", "Grad-CAM, axial (110 mm)", "Grad-CAM, coronal (110 mm)"],
                   out / "slicer_classification_heatmap.png",
                   f"MedAI Classify: adrenal_classifier on a real CT's right adrenal gland: {text}")


def conversion(slicer, data, out):
    import MedAI

    from MedAILib.io import read_image

    base = data / "tcia-brain-tumor-progression-dicom" / "PGBM-003"
    t2, flair = read_image(base / "37830-T2reg-78532"), read_image(base / "36468-FLAIRreg-58706")
    n_t2 = slicer.util.addVolumeFromArray(t2.array, t2.ijk_to_ras, "PGBM-003 T2", "vtkMRMLScalarVolumeNode")
    n_fl = slicer.util.addVolumeFromArray(flair.array, flair.ijk_to_ras, "PGBM-003 FLAIR", "vtkMRMLScalarVolumeNode")
    run = MedAI.MedAILogic().synthesize(n_t2, None, "t2_to_flair_gan", n_fl, device="cpu", wait=True)
    assert run.status == "done", run.errorText
    for node in (n_t2, n_fl, run.outputVolume):
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetAutoWindowLevel(1)
    k = t2.array.shape[0] // 2
    centre = ras_of(n_t2, [[k, t2.array.shape[1] // 2, t2.array.shape[2] // 2]])
    panels = [render(n, "Red", centre) for n in (n_t2, run.outputVolume, n_fl)]
    m = run.metrics
    return compose(panels, ["T2 (input)", "converted FLAIR (MedAI)", "acquired FLAIR"], out / "slicer_conversion.png",
                   f"MedAI Convert: t2_to_flair_gan, held-out patient; MAE {m['mae']:.2f}, SSIM {m['ssim']:.2f} (z-score)")


def registration(slicer, data, out):
    import MedAIFusion

    from MedAILib.io import read_image
    from MedAILib.tasks.registration import registration as R

    folder = data / "brainlesion-brats-examples" / "BraTS-GLI-00001-000"
    t1, t2 = read_image(folder / "BraTS-GLI-00001-000-t1n.nii.gz"), read_image(folder / "BraTS-GLI-00001-000-t2w.nii.gz")
    truth = R.rigid_ras_matrix((6.0, -4.0, 8.0), (8.0, -6.0, 4.0))
    moved = R.move_frame(t2, truth)
    fixed = slicer.util.addVolumeFromArray(t1.array, t1.ijk_to_ras, "BraTS T1", "vtkMRMLScalarVolumeNode")
    moving = slicer.util.addVolumeFromArray(moved.array, moved.ijk_to_ras, "BraTS T2 (moved)", "vtkMRMLScalarVolumeNode")
    logic = MedAIFusion.MedAIFusionLogic()
    before = logic.checkerboard(fixed, moving, squares=(6, 6, 1), wait=True, show=False)
    reg = logic.register(fixed, moving, "rigid", applyToMoving=False, wait=True)
    assert reg.status == "done", reg.errorText
    after = logic.checkerboard(fixed, reg.outputVolume, squares=(6, 6, 1), wait=True, show=False)
    centre = ras_of(fixed, [[t1.array.shape[0] // 2 + 10, t1.array.shape[1] // 2, t1.array.shape[2] // 2]])
    panels = []
    for run in (before, after):
        run.outputVolume.CreateDefaultDisplayNodes()
        run.outputVolume.GetDisplayNode().SetAutoWindowLevel(0)
        run.outputVolume.GetDisplayNode().SetWindowLevel(1.0, 0.5)
        panels.append(render(run.outputVolume, "Red", centre))
    return compose(panels, ["checkerboard before", "checkerboard after Register"],
                   out / "slicer_registration_checkerboard.png",
                   f"MedAIFusion: T1 vs T2 moved 6-8 mm / 4-8 deg; {reg.metricText}")


PICTURES = {"segmentation": segmentation, "classification": classification, "conversion": conversion,
            "registration": registration}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "images"))
    p.add_argument("--only", help="comma-separated: " + ",".join(PICTURES))
    args = p.parse_args(argv)
    slicer = setup()
    from MedAILib.core.paths import data_dir

    data, out = data_dir(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (args.only.split(",") if args.only else PICTURES):
        from slicer_support import real

        real.reset()
        print("wrote", PICTURES[name](slicer, data, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
