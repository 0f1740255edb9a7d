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


def _trachea_phantom(lung_joined: bool) -> np.ndarray:
    """Soft tissue with a vertical air tube (trachea: -1000 HU lumen, a -915 HU partial-volume
    rim) and, when ``lung_joined``, a large air block joined to the tube (a leak path)."""
    hu = np.full((30, 96, 96), 40.0, dtype=np.float32)
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 48, xx - 48)
    hu[:, r <= 8] = -915.0
    hu[:, r <= 6.5] = -1000.0
    if lung_joined:
        hu[2:28, 20:90, 60:94] = -1000.0  # a lung-sized air block (over 300 ml)...
        hu[2:28, 46:51, 48:60] = -1000.0  # ...reached from the tube
    return hu


def test_airway_grows_from_the_lumen_not_from_its_rim():
    from ai_engines.ct_lung import lungs

    hu = _trachea_phantom(lung_joined=False)
    internal = hu < lungs.LUNG_THRESHOLD_HU
    tree, status = lungs._airways(hu, internal, 1.2, 5.0)
    assert status == "removed"
    assert tree[:, 48, 48].all()  # the whole tube, top to bottom


def test_airway_that_runs_into_a_lung_is_reported_as_leaked():
    from ai_engines.ct_lung import lungs

    hu = _trachea_phantom(lung_joined=True)
    tree, status = lungs._airways(hu, hu < lungs.LUNG_THRESHOLD_HU, 1.2, 5.0)
    assert (tree, status) == (None, "leaked")


def test_trachea_removed_from_a_full_chest():
    full = synthetic_chest_ct(4242, n_slices=60, slice_thickness=5.0)
    masks = isolate_lungs(full.hu, (full.pixel_spacing,) * 2, full.slice_thickness)
    assert masks.airway == "removed"
    centre = full.hu.shape[2] // 2
    top = (slice(-3, None), slice(None), slice(centre - 40, centre + 40))
    lumen = full.hu[top] < -950
    assert lumen.sum() > 100 and not masks.both[top][lumen].any()  # trachea is not lung
    assert dice(masks.left, full.lung_left) >= 0.95 and dice(masks.right, full.lung_right) >= 0.95


def test_no_specks_of_airway_rim_left_in_the_lungs():
    from scipy import ndimage

    from ai_engines.ct_lung.lungs import _SLICE_2D, MIN_ISLAND_MM2

    full = synthetic_chest_ct(11, n_slices=60, slice_thickness=5.0)
    masks = isolate_lungs(full.hu, (full.pixel_spacing,) * 2, full.slice_thickness)
    assert masks.airway == "removed"
    for lung in (masks.left, masks.right):
        labels, _ = ndimage.label(lung, structure=_SLICE_2D)
        smallest = np.bincount(labels.ravel())[1:].min() * full.pixel_spacing**2
        assert smallest >= MIN_ISLAND_MM2  # each piece becomes an RTSTRUCT contour
