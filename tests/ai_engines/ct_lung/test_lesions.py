"""lesion_masks: the box-restricted search gives exactly what a whole-volume search gives;
refine_extent: the extent model widens detected lesions, never adds one, and never grows one
into a distant structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ai_engines.ct_lung.lesions import (
    LUNG_MARGIN_MM,
    TUMOUR_THRESHOLD,
    _in_plane_disk,
    keep_components,
    lesion_masks,
    refine_extent,
)


def whole_volume_reference(probability, lungs, spacing):
    """The same filter on volume-sized arrays (the engine's method before 1.1.1)."""
    tumour = probability >= TUMOUR_THRESHOLD
    labels, count = ndimage.label(tumour, structure=np.ones((3, 3, 3), bool))
    margin = max(1, int(round(LUNG_MARGIN_MM / min(spacing[1:]))))
    near = ndimage.binary_dilation(lungs[:, ::2, ::2], structure=_in_plane_disk(max(1, margin // 2)))
    near = np.repeat(np.repeat(near, 2, axis=1), 2, axis=2)[:, : lungs.shape[1], : lungs.shape[2]]
    return [labels == i for i in keep_components(labels, count, probability, lungs, near, spacing)]


def random_case(seed: int, shape=(40, 97, 91)):
    """Lungs as two boxes, lesion-like blobs inside, at and outside their edges."""
    rng = np.random.default_rng(seed)
    lungs = np.zeros(shape, bool)
    z0, z1 = rng.integers(0, 8), rng.integers(30, 40)
    lungs[z0:z1, 10:80, 8:40] = True
    lungs[z0:z1, 10:80, 50:85] = True
    probability = np.zeros(shape, np.float16)
    for _ in range(rng.integers(1, 7)):
        centre = rng.integers(0, shape)
        radius = rng.uniform(1.5, 9.0, size=3)
        zz, rr, cc = np.ogrid[: shape[0], : shape[1], : shape[2]]
        blob = ((zz - centre[0]) / radius[0]) ** 2 + ((rr - centre[1]) / radius[1]) ** 2 + \
            ((cc - centre[2]) / radius[2]) ** 2 <= 1
        probability[blob] = np.float16(rng.uniform(0.55, 1.0))
    # A confident blob a few mm outside the left lung's outer edge: kept only if the lungs'
    # margin reaches it, which a too-tight box would miss.
    gap, z = int(rng.integers(2, 14)), int(rng.integers(z0 + 2, z1 - 6))
    probability[z : z + 5, 40:50, max(0, 8 - gap - 6) : 8 - gap] = 0.99
    return probability, lungs


@pytest.mark.parametrize("seed", range(25))
def test_box_restricted_search_equals_whole_volume(seed):
    probability, lungs = random_case(seed)
    spacing = (2.0, 0.7, 0.7) if seed % 2 else (1.0, 0.9, 0.9)
    got = lesion_masks(probability, lungs, spacing, anatomy_checks=False).masks
    want = whole_volume_reference(probability, lungs, spacing)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.shape == lungs.shape and np.array_equal(a, b)


def test_some_random_cases_keep_lesions():
    """The comparison above is not vacuous: several cases keep lesions, several drop some."""
    kept = [len(lesion_masks(*random_case(seed), (1.0, 0.9, 0.9), anatomy_checks=False).masks) for seed in range(25)]
    assert sum(k > 0 for k in kept) >= 5


def test_no_candidates_no_lesions():
    probability, lungs = random_case(0)
    assert lesion_masks(np.zeros_like(probability), lungs, (1.0, 1.0, 1.0)).masks == []
    assert lesion_masks(probability, np.zeros_like(lungs), (1.0, 1.0, 1.0)).masks == []


@pytest.mark.parametrize("gap_px", [2, 5, 8, 11, 14])
def test_lone_lesion_beside_the_lungs(gap_px):
    """A single candidate a few pixels outside the lungs: the box must still see the lungs
    within the margin (kept when nearer than LUNG_MARGIN_MM, dropped when farther)."""
    shape = (30, 60, 60)
    lungs = np.zeros(shape, bool)
    lungs[2:28, 10:50, 30:55] = True
    probability = np.zeros(shape, np.float16)
    probability[10:16, 25:35, 30 - gap_px - 8 : 30 - gap_px] = 0.99
    spacing = (2.0, 1.0, 1.0)
    got = lesion_masks(probability, lungs, spacing, anatomy_checks=False).masks
    assert len(got) == (1 if gap_px < LUNG_MARGIN_MM else 0)
    assert [m.sum() for m in got] == [m.sum() for m in whole_volume_reference(probability, lungs, spacing)]


def box_mask(shape, z, r, c):
    mask = np.zeros(shape, bool)
    mask[z[0]:z[1], r[0]:r[1], c[0]:c[1]] = True
    return mask


def test_extent_widens_a_detected_lesion_on_its_slab_only():
    shape = (30, 60, 60)
    lesion = box_mask(shape, (10, 14), (20, 30), (20, 30))  # the detector stopped short
    z0 = 5  # the extent model ran on slices 5..24
    extent = np.zeros((20, 60, 60), np.float16)
    extent[3:12, 15:35, 15:35] = 0.9  # slices 8..16: the whole tumour, within the reach
    (refined,) = refine_extent([lesion], extent, z0, np.ones(shape, bool), (1.0, 1.0, 1.0))
    expected = box_mask(shape, (8, 17), (15, 35), (15, 35)) | lesion
    assert np.array_equal(refined, expected)
    assert lesion.sum() == 400  # the detector's mask itself is not modified


def test_extent_components_touching_no_lesion_add_nothing():
    shape = (20, 60, 60)
    lesion = box_mask(shape, (5, 9), (10, 20), (10, 20))
    extent = np.zeros(shape, np.float16)
    extent[5:9, 40:50, 40:50] = 0.99  # the extent model's own finding: not a lesion
    extent[5:9, 10:20, 10:20] = 0.4  # below the threshold over the lesion
    refined = refine_extent([lesion], extent, 0, np.ones(shape, bool), (1.0, 1.0, 1.0))
    assert len(refined) == 1 and np.array_equal(refined[0], lesion)
    assert refine_extent([], extent, 0, np.ones(shape, bool), (1.0, 1.0, 1.0)) == []


def test_lesions_joined_by_one_extent_component_become_one_largest_first():
    shape = (20, 80, 80)
    small = box_mask(shape, (5, 8), (10, 14), (10, 14))
    part_a = box_mask(shape, (5, 10), (40, 46), (10, 16))
    part_b = box_mask(shape, (5, 10), (40, 46), (30, 36))
    extent = np.zeros(shape, np.float16)
    extent[5:10, 40:46, 10:36] = 0.95  # one mass under both parts
    refined = refine_extent([part_a, small, part_b], extent, 0, np.ones(shape, bool), (1.0, 1.0, 1.0))
    assert len(refined) == 2
    assert np.array_equal(refined[0], box_mask(shape, (5, 10), (40, 46), (10, 36)))
    assert np.array_equal(refined[1], small)


def test_extent_is_cut_where_it_runs_on_into_a_distant_structure():
    """An extent component that starts on the lesion and runs on along a tube (the aorta, the
    chest wall) adds only the lesion's surroundings: within max(10 mm, 0.5 x its diameter)."""
    shape = (40, 60, 120)
    lesion = box_mask(shape, (10, 15), (20, 30), (20, 30))  # 10 mm wide
    extent = np.zeros(shape, np.float16)
    extent[8:17, 18:32, 18:32] = 0.9  # the tumour's true extent, 2 mm beyond the detector's
    extent[10:15, 22:28, 32:118] = 0.9  # ...and on along a structure 86 mm long
    lungs = np.ones(shape, bool)
    (refined,) = refine_extent([lesion], extent, 0, lungs, (1.0, 1.0, 1.0))
    assert refined[8:17, 18:32, 18:32].all()  # the tumour itself is completed
    cols = np.nonzero(refined.any(axis=(0, 1)))[0]
    assert cols[-1] <= 29 + 10  # the run along the structure stops 10 mm from the lesion
    assert (refined & ~lesion & ~(extent >= 0.5)).sum() == 0  # only extent voxels are added


def test_extent_stays_inside_the_lung_border():
    """Beyond the lungs' envelope widened by EXTENT_BORDER_MM (the mediastinum proper, the chest
    wall) the extent model adds nothing, however near the lesion."""
    from ai_engines.ct_lung.lesions import EXTENT_BORDER_MM

    shape = (20, 80, 80)
    lungs = np.zeros(shape, bool)
    lungs[:, :, :40] = True  # a flat lung border at column 40
    lesion = box_mask(shape, (5, 12), (30, 50), (34, 44))  # 20 mm lesion astride the border
    extent = np.zeros(shape, np.float16)
    extent[5:12, 30:50, 30:80] = 0.9  # runs 40 mm into the mediastinum
    (refined,) = refine_extent([lesion], extent, 0, lungs, (1.0, 1.0, 1.0))
    cols = np.nonzero(refined.any(axis=(0, 1)))[0]
    assert cols[-1] <= 40 + EXTENT_BORDER_MM
    assert cols[-1] >= 44  # but it may reach into the border
