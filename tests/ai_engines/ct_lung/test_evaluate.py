"""Evaluation metrics: Dice, HD95, surface Dice, lung-wise detection."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.ct_lung import evaluate as ev


def cube(shape=(20, 40, 40), lo=(5, 10, 10), size=(10, 10, 10)):
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = True
    return m


def test_dice():
    a = cube()
    assert ev.dice(a, a) == 1.0
    assert ev.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    b = cube(lo=(5, 10, 15))
    assert ev.dice(a, b) == pytest.approx(0.5)


def test_hd95_shift_in_mm():
    a = cube()
    b = cube(lo=(5, 10, 12))  # shifted 2 columns
    assert ev.hd95(a, b, (1.0, 1.0, 0.5)) == pytest.approx(1.0)
    assert ev.hd95(a, a, (1.0, 1.0, 1.0)) == 0.0
    assert np.isnan(ev.hd95(a, np.zeros_like(a), (1, 1, 1)))


def test_surface_dice():
    a = cube()
    b = cube(lo=(5, 10, 12))
    assert ev.surface_dice(a, a, (1, 1, 1)) == 1.0
    assert ev.surface_dice(a, b, (1, 1, 1), tolerance_mm=2.0) == 1.0
    assert ev.surface_dice(a, b, (1, 1, 1), tolerance_mm=0.5) < 1.0


def test_lungwise_detection():
    left = np.zeros((4, 10, 20), bool)
    left[:, :, 12:18] = True
    right = np.zeros_like(left)
    right[:, :, 2:8] = True
    truth = np.zeros_like(left)
    truth[1, 5, 14] = True
    predicted = np.zeros_like(left)
    predicted[1, 5, 4] = True
    detection = ev.lungwise_detection(truth, predicted, left, right)
    assert detection == {"L": (True, False), "R": (False, True)}


def test_summary_counts():
    r = ev.CaseResult("a", True, 0.9, 2.0, 0.95, 0.98, 0.97, {"L": (True, True), "R": (False, False)}, 1, 10.0, 9.0, 1.0)
    s = ev.summarise([r])
    assert s["dice_mean"] == 0.9 and s["lungwise_sensitivity"] == 1.0 and s["lungwise_specificity"] == 1.0


def test_nrrd_case_geometry_matches_simpleitk(tmp_path):
    """A NRRD's voxels land where SimpleITK puts them (LPS), so the engine's left and right
    and the label's slices are those of the file."""
    import SimpleITK as sitk  # noqa: N813

    from ai_engines.ct_lung.evaluate import nrrd_case

    voxels = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-100.0, -50.0, 30.0))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))  # feet-first stack
    label = sitk.GetImageFromArray((voxels % 7 == 0).astype(np.uint8))
    label.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(label, str(tmp_path / "label.nrrd"))
    volume, mask = nrrd_case(tmp_path / "ct.nrrd", tmp_path / "label.nrrd")
    assert volume.shape == (4, 5, 6) and volume.voxels[2, 3, 4] == voxels[2, 3, 4]
    assert np.array_equal(mask, voxels % 7 == 0)
    assert volume.geometry.pixel_spacing == (0.8, 0.7) and volume.geometry.slice_spacing == 2.5
    for k, j, i in ((0, 0, 0), (3, 4, 5), (2, 1, 3)):
        expected = image.TransformIndexToPhysicalPoint((i, j, k))
        assert np.allclose(volume.geometry.voxel_to_patient(k, j, i), expected)
