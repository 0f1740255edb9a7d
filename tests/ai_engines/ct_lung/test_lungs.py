"""Rule-based lung isolation on synthetic chest CT."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.ct_lung.evaluate import dice
from ai_engines.ct_lung.lungs import isolate_lungs
from ai_engines.ct_lung.synthetic import synthetic_chest_ct


@pytest.fixture(scope="module")
def case():
    return synthetic_chest_ct(11, n_slices=40, slice_thickness=5.0)


def test_lungs_match_ground_truth(case):
    masks = isolate_lungs(case.hu, (case.pixel_spacing,) * 2, case.slice_thickness)
    assert dice(masks.left, case.lung_left) >= 0.9
    assert dice(masks.right, case.lung_right) >= 0.9
    assert not (masks.left & masks.right).any()


def test_left_is_patient_left(case):
    # Mirror the columns and declare it: the same anatomy must keep its sides.
    masks = isolate_lungs(case.hu[:, :, ::-1], (case.pixel_spacing,) * 2, case.slice_thickness, column_is_patient_left=False)
    assert dice(masks.left[:, :, ::-1], case.lung_left) >= 0.9


def test_trachea_removed(case):
    masks = isolate_lungs(case.hu, (case.pixel_spacing,) * 2, case.slice_thickness)
    top = case.hu.shape[0] - 1
    centre = case.hu.shape[2] // 2
    if masks.airway_found:
        # No lung label on the midline of the upper slices (trachea, mediastinum).
        assert not masks.both[top - 2 :, :, centre - 3 : centre + 3].any()


def test_no_lungs_in_an_abdomen_like_volume():
    hu = np.full((20, 64, 64), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[:64, :64]
    hu[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2] = 40.0
    masks = isolate_lungs(hu, (0.8, 0.8), 5.0)
    assert masks.both.sum() == 0


def test_closing_on_the_bounding_box_equals_whole_volume_closing():
    import numpy as np
    from scipy import ndimage

    from ai_engines.ct_lung import lungs

    rng = np.random.default_rng(0)
    piece = np.zeros((12, 120, 120), bool)
    piece[:, 10:118, 30:90] = rng.random((12, 108, 60)) > 0.3
    piece[:, 0:5, 40:50] = True  # touches the first rows
    disk, radius = lungs._disk(4), 4
    whole = ndimage.binary_closing(np.pad(piece, ((0, 0), (radius,) * 2, (radius,) * 2)),
                                   structure=disk)[:, radius:-radius, radius:-radius]
    whole = ndimage.binary_fill_holes(whole, structure=lungs._SLICE_2D)
    assert np.array_equal(lungs._close_and_fill(piece, disk, radius), whole)


def test_airway_status_says_what_happened(case):
    """Found and removed, leaked into the lungs, or not in view: three different notes."""
    masks = isolate_lungs(case.hu, (case.pixel_spacing,) * 2, case.slice_thickness)
    assert masks.airway in ("removed", "leaked", "not in view")
    assert masks.airway_found == (masks.airway == "removed")
    below_carina = isolate_lungs(case.hu[: case.hu.shape[0] // 3], (case.pixel_spacing,) * 2,
                                 case.slice_thickness)
    assert below_carina.airway == "not in view"
