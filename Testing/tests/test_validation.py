"""validation.check_inputs / check_labelmap: one clear InputError per problem, warnings for safe fixes."""

import numpy as np
import pytest

from MedAILib.core.errors import InputError
from MedAILib.runtime.validation import check_inputs, check_labelmap, guess_modality, physical_memory_bytes
from MedAILib.core.volume import Volume


def vol(arr=None, spacing=(1.0, 1.0, 1.0), **meta):
    rng = np.random.default_rng(1)
    arr = rng.normal(300, 50, (8, 9, 10)).astype(np.float32) if arr is None else arr
    return Volume(arr, np.diag([*spacing, 1.0]), metadata=meta)


def raises(match, volumes, spec=None):
    with pytest.raises(InputError, match=match) as e:
        check_inputs(volumes, spec or {})
    assert e.value.hint, "every refusal says what to do"
    return e.value


def test_good_input_passes_without_warnings():
    assert check_inputs([vol()], {"n_inputs": 1}) == []


def test_empty_constant_nan_inf():
    raises("is empty", [vol(np.zeros((0, 4, 4), np.float32))])
    raises("is constant: every voxel is 7", [vol(np.full((4, 5, 6), 7, np.int16))])
    a = vol().array.copy()
    a[0, 0, :3] = np.nan
    a[1, 1, 1] = np.inf
    e = raises("4 voxels that are not numbers", [vol(a)])
    assert "3 NaN, 1 Inf" in e.message


def test_2d_and_4d():
    raises("is 2D \\(a single slice", [vol(np.random.rand(1, 30, 40).astype(np.float32))])
    assert check_inputs([vol(np.random.rand(1, 30, 40).astype(np.float32))], {"allow_2d": True}) == []
    raises("is 4D", [vol(np.random.rand(3, 4, 5, 2).astype(np.float32))])


@pytest.mark.parametrize("dtype", [np.int64, np.uint32, np.uint64, np.float64, np.float16])
def test_safe_conversions_warn(dtype):
    v = vol((np.arange(8 * 9 * 10).reshape(8, 9, 10) % 1000).astype(dtype))
    original = v.array
    warnings = check_inputs([v])
    assert len(warnings) == 1 and "converted to" in warnings[0]
    assert v.array.dtype in (np.int32, np.float32)
    assert original.dtype == dtype  # the caller's buffer is untouched
    np.testing.assert_array_equal(v.array, original.astype(v.array.dtype))


def test_unsafe_conversion_refused():
    a = np.zeros((4, 5, 6), np.int64)
    a[0, 0, 0] = 2 ** 40
    raises("do not fit in 32 bits", [vol(a)])
    a = np.zeros((4, 5, 6), np.uint64)
    a[0, 0, 0] = 2 ** 63
    raises("do not fit in 32 bits", [vol(a)])
    a = np.ones((4, 5, 6), np.float64)
    a[0, 0, 0] = 1e300
    raises("beyond the float32 range", [vol(a)])
    raises("complex", [vol(np.ones((4, 5, 6), np.complex64) * (1 + 1j) * np.arange(6))])


def test_spacing():
    raises("zero or degenerate", [vol(spacing=(1, 0, 1))])
    raises("absurd voxel spacing .*more than 100", [vol(spacing=(1, 1, 250))])
    raises("absurd voxel spacing .*less than", [vol(spacing=(1e-5, 1e-5, 1e-5))])
    raises("absurd voxel spacing", [vol(spacing=(1, 1, 12))], {"max_spacing_mm": 10})
    # a negative diagonal is a flip, not a bad spacing
    assert check_inputs([vol(spacing=(-0.5, 1, -2))]) == []


def test_memory_estimate():
    have = physical_memory_bytes()
    assert have > 0
    raises("is too large: .* need about .* this computer has", [vol()], {"memory_factor": have})


def test_number_of_inputs_and_grids():
    spec = {"n_inputs": 2, "input_names": ["T1", "T2"], "model": "brain-model"}
    e = raises("brain-model needs 2 input images \\(T1, T2\\), but 1 was given", [vol()], spec)
    assert "in this order" in e.hint
    raises("needs 2 input images", [vol(), vol(), vol()], spec)
    raises("no input image", [], spec)
    other = vol(spacing=(1, 1, 1.5))
    e = raises("T2 is not on the same voxel grid as T1", [vol(), other], spec)
    assert "medai register" in e.hint
    assert check_inputs([vol(), other], {**spec, "aligned": False}) == []
    assert check_inputs([vol(), vol()], spec) == []


def ct_like():
    rng = np.random.default_rng(2)
    a = rng.normal(40, 30, (10, 20, 20))
    a[:, :5, :] = -1000 + rng.normal(0, 10, (10, 5, 20))  # air around the body
    return vol(a.astype(np.int16))


def test_modality_heuristic():
    assert guess_modality(ct_like())[0] == "CT"
    assert guess_modality(vol())[0] == "not CT"
    raises("looks like CT, not MR", [ct_like()], {"modality": "MR", "model": "hippocampus"})
    assert check_inputs([ct_like()], {"modality": "MR", "modality_check": "warn"})[0].startswith("input 1 looks like CT")
    assert check_inputs([ct_like()], {"modality": "CT"}) == []
    w = check_inputs([vol()], {"modality": "CT"})
    assert len(w) == 1 and "does not look like CT" in w[0]
    assert check_inputs([vol()], {"modality": "MR"}) == []
    # the DICOM tag wins over intensities
    raises("is MR \\(DICOM Modality tag\\) but .* needs CT", [vol(modality="MR")], {"modality": "CT"})


def test_modality_on_real_images(data_dir):
    from MedAILib.io import read_image

    ct = read_image(data_dir / "totalsegmentator-example" / "example_ct_sm.nii.gz")
    mr = read_image(data_dir / "totalsegmentator-example" / "example_mr_sm.nii.gz")
    hippo = read_image(data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz")
    assert guess_modality(ct)[0] == "CT"
    assert guess_modality(mr)[0] == "not CT"
    assert guess_modality(hippo)[0] == "not CT"
    raises("looks like CT, not MR", [ct], {"modality": "MR"})
    assert check_inputs([hippo], {"modality": "MR", "n_inputs": 1}) == []


def test_labelmap_checks():
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1, 1, 1], lab[2, 2, 2] = 1, 2
    assert check_labelmap(vol(lab), [1, 2]) == []
    assert "no voxels with label(s) [3]" in check_labelmap(vol(lab), [1, 2, 3])[0]
    lab[3, 3, 3] = 9
    with pytest.raises(InputError, match="label values 9 that are not among the expected 0, 1, 2"):
        check_labelmap(vol(lab), [1, 2])
    with pytest.raises(InputError, match="non-integer values"):
        check_labelmap(vol(np.full((4, 5, 6), 0.5, np.float32)), [1])
    with pytest.raises(InputError, match="negative values"):
        check_labelmap(vol(np.full((4, 5, 6), -1, np.int16)), [1])
