"""Geometry: the one LPS<->RAS place, axis codes and point mapping, checked against independent sources."""

import numpy as np
import pytest

from conftest import oblique_ijk_to_ras
from MedAILib.core import geometry
from MedAILib.core.volume import Volume


def test_lps_ras_round_trip_is_exact():
    m = oblique_ijk_to_ras()
    spacing, origin_lps, direction_lps = geometry.lps_from_ijk_to_ras(m)
    np.testing.assert_allclose(spacing, (0.7, 1.3, 2.9), atol=1e-12)
    # LPS origin has x and y negated, z unchanged
    np.testing.assert_allclose(origin_lps, (12.5, -33.0, 7.25), atol=1e-12)
    np.testing.assert_allclose(direction_lps.T @ direction_lps, np.eye(3), atol=1e-12)
    back = geometry.ijk_to_ras_from_lps(spacing, origin_lps, direction_lps)
    np.testing.assert_allclose(back, m, atol=1e-12)
    # 4x4 form (NRRD / slicerio) agrees with the spacing/origin/direction form
    lps4 = geometry.ijk_to_lps_from_ijk_to_ras(m)
    np.testing.assert_allclose(lps4[:3, 3], origin_lps, atol=1e-12)
    np.testing.assert_allclose(lps4[:3, :3], direction_lps @ np.diag(spacing), atol=1e-12)
    np.testing.assert_allclose(geometry.ijk_to_ras_from_ijk_to_lps(lps4), m, atol=1e-12)


@pytest.mark.parametrize("diag,codes", [((1, 1, 1), "RAS"), ((-1, -1, 1), "LPS"), ((-1, 1, 1), "LAS"),
                                        ((1, -1, -1), "RPI")])
def test_axis_codes_match_nibabel(diag, codes):
    import nibabel as nib

    m = np.diag([*diag, 1.0]) @ np.diag([0.5, 2.0, 3.0, 1.0])
    assert geometry.axis_codes(m) == codes
    assert "".join(nib.aff2axcodes(m)) == codes


def test_axis_codes_oblique_match_nibabel():
    import nibabel as nib

    m = oblique_ijk_to_ras()
    assert geometry.axis_codes(m) == "".join(nib.aff2axcodes(m))
    assert geometry.is_oblique(m)
    assert not geometry.is_oblique(np.diag([2.0, 3.0, 4.0, 1.0]))


def test_points_round_trip_and_sitk_agree():
    import SimpleITK as sitk

    from MedAILib.io import to_sitk

    vol = Volume(np.zeros((9, 11, 13), np.float32), oblique_ijk_to_ras())
    ijk = np.array([[0, 0, 0], [4, 3, 2], [12, 10, 8]], dtype=float)
    ras = vol.ijk_to_ras_points(ijk)
    np.testing.assert_allclose(vol.ras_to_ijk_points(ras), ijk, atol=1e-9)
    # SimpleITK (independent) maps the same index to the LPS point = RAS with x, y negated
    img = to_sitk(vol)
    for idx, p in zip(ijk.astype(int), ras):
        lps = img.TransformIndexToPhysicalPoint([int(i) for i in idx])
        np.testing.assert_allclose(lps, (-p[0], -p[1], p[2]), atol=1e-9)


def test_volume_properties():
    m = oblique_ijk_to_ras()
    vol = Volume(np.zeros((9, 11, 13), np.int16), m)
    assert vol.size_ijk == (13, 11, 9)
    np.testing.assert_allclose(vol.spacing, (0.7, 1.3, 2.9))
    np.testing.assert_allclose(vol.origin, (-12.5, 33.0, 7.25))
    np.testing.assert_allclose(vol.direction @ np.diag(vol.spacing), m[:3, :3])
    assert vol.same_grid(vol.copy())
    other = Volume(vol.array, m @ np.diag([1, 1, 1.001, 1]))
    assert not vol.same_grid(other)
    with pytest.raises(ValueError):
        vol.with_array(np.zeros((9, 11, 12)))


def test_zero_axis_refused():
    m = np.diag([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        geometry.lps_from_ijk_to_ras(m)
