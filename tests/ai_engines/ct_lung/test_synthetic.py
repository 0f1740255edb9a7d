"""Synthetic chest CTs: deterministic, realistic ranges, ground truth consistent."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.ct_lung.synthetic import synthetic_chest_ct


@pytest.fixture(scope="module")
def case():
    return synthetic_chest_ct(3, n_slices=24, slice_thickness=2.5, n_tumours=1, diameter_mm=30, focus_tumour=True)


def test_deterministic_by_seed(case):
    again = synthetic_chest_ct(3, n_slices=24, slice_thickness=2.5, n_tumours=1, diameter_mm=30, focus_tumour=True)
    assert np.array_equal(case.hu, again.hu) and np.array_equal(case.tumour, again.tumour)


def test_ranges_and_geometry(case):
    assert case.hu.shape == (24, 512, 512)
    assert 0.6 <= case.pixel_spacing <= 0.9
    assert case.hu.min() >= -1024 and case.hu.max() > 300  # bone present
    lung_hu = np.median(case.hu[case.lung_left & ~case.tumour])
    assert -900 < lung_hu < -780


def test_tumour_is_solid_and_inside_the_lungs(case):
    assert case.tumour.any()
    assert (case.tumour <= (case.lung_left | case.lung_right)).all()
    assert -40 < np.median(case.hu[case.tumour]) < 100
    volume_ml = case.tumour.sum() * case.pixel_spacing**2 * case.slice_thickness / 1000
    assert 3 < volume_ml < 40  # a 30 mm lesion is about 14 ml


def test_left_lung_is_patient_left(case):
    # Patient left = +x = higher column index.
    assert np.nonzero(case.lung_left.any((0, 1)))[0].mean() > np.nonzero(case.lung_right.any((0, 1)))[0].mean()


def test_case_without_tumour():
    empty = synthetic_chest_ct(5, n_slices=8, n_tumours=0)
    assert not empty.tumour.any()


def test_to_volume(case):
    volume = case.to_volume()
    assert volume.modality == "CT" and volume.shape == case.hu.shape
    assert volume.geometry.slice_spacing == pytest.approx(case.slice_thickness)


def test_forced_kind_places_the_tumour_against_the_mediastinum():
    central = synthetic_chest_ct(11, n_slices=12, slice_thickness=2.5, n_tumours=1, diameter_mm=25,
                                 kind="central", focus_tumour=True)
    assert [spec.kind for spec in central.tumours] == ["central"]
    lung = central.lung_left if central.tumours[0].side == "L" else central.lung_right
    midline = central.hu.shape[2] / 2
    tumour_offset = abs(np.nonzero(central.tumour)[2].mean() - midline)
    lung_offset = abs(np.nonzero(lung)[2].mean() - midline)
    assert tumour_offset < lung_offset  # nearer the midline than its lung's centre


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        synthetic_chest_ct(1, n_slices=4, kind="hilar")


def test_real_anatomy_puts_the_descending_aorta_in_the_left_paravertebral_gutter():
    """anatomy_kind="real": the aorta dents the left lung beside the spine, as on real CT (lung1);
    everything else is the demo anatomy of the same seed (its seeds' images do not change)."""
    demo = synthetic_chest_ct(7, n_slices=8, slice_thickness=5.0, n_tumours=0, slab_position=0.3)
    real = synthetic_chest_ct(7, n_slices=8, slice_thickness=5.0, n_tumours=0, slab_position=0.3, anatomy_kind="real")
    assert np.array_equal(demo.lung_right, real.lung_right)
    taken = demo.lung_left & ~real.lung_left
    assert not (real.lung_left & ~demo.lung_left).any() and taken.sum() > 0.02 * demo.lung_left.sum()
    # What the aorta took from the lung is blood-filled soft tissue, posterior and left of centre.
    assert 20 < np.median(real.hu[taken]) < 320
    rows, cols = np.nonzero(taken.any(axis=0))
    assert cols.mean() > 256 and rows.mean() > 256
    with pytest.raises(ValueError):
        synthetic_chest_ct(7, n_slices=4, anatomy_kind="martian")


def test_clinical_anatomy_paints_the_look_alikes_and_keeps_the_truth_consistent():
    """anatomy_kind="clinical": hilar vessels, azygos and oesophagus in every case, drawn
    pathology (dependent density, atelectasis, effusion, emphysema), kernels and low dose;
    the tumour stays inside the lungs, which lose what the look-alikes took."""
    from ai_engines.ct_lung.synthetic import CONFOUNDERS

    real = synthetic_chest_ct(21, n_slices=10, slice_thickness=5.0, n_tumours=1, diameter_mm=14,
                              anatomy_kind="real", slab_position=0.4)
    clinical = synthetic_chest_ct(21, n_slices=10, slice_thickness=5.0, n_tumours=1, diameter_mm=14,
                                  anatomy_kind="clinical", slab_position=0.4)
    assert {"azygos", "oesophagus", "pulmonary_arteries", "pulmonary_veins"} <= set(clinical.confounders)
    assert set(clinical.confounders) <= set(CONFOUNDERS)
    assert clinical.kernel in ("B20f", "B31f", "B70f") and clinical.to_volume().facts.kernel == clinical.kernel
    lungs = clinical.lung_left | clinical.lung_right
    assert clinical.tumour.any() and (clinical.tumour <= lungs).all()
    # The look-alikes take lung: soft tissue where the "real" anatomy of the seed has lung.
    taken = (real.lung_left | real.lung_right) & ~lungs
    assert taken.sum() > 0.01 * lungs.sum()
    assert np.median(clinical.hu[taken]) > -400
    again = synthetic_chest_ct(21, n_slices=10, slice_thickness=5.0, n_tumours=1, diameter_mm=14,
                               anatomy_kind="clinical", slab_position=0.4)
    assert np.array_equal(clinical.hu, again.hu)


def test_clinical_draws_cover_every_confounder_and_kernel():
    """Over a few seeds every drawn confounder and every kernel occurs (the draws are cheap:
    they are made before any voxel is painted)."""
    from ai_engines.ct_lung.synthetic import _ClinicalDraw

    kernels, seen = set(), set()
    for seed in range(40):
        draw = _ClinicalDraw(np.random.default_rng(seed + 9_000_000))
        seen |= {name for name, on in (("dependent_density", draw.dependent), ("atelectasis", draw.atelectasis),
                                       ("effusion", draw.effusion != "none"), ("emphysema", draw.emphysema)) if on}
        kernels.add(draw.acquisition(5.0)[4])
    assert seen == {"dependent_density", "atelectasis", "effusion", "emphysema"}
    assert kernels == {"B20f", "B31f", "B70f"}
