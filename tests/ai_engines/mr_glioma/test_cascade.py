"""The T1c-only cascade: the detector decides whether there is a lesion, the extent network how far it reaches."""

from __future__ import annotations

import numpy as np

from ai_engines.mr_glioma.engine import (
    EXTENT_MARGIN_MM,
    bound_extent,
    find_lesions,
    keep_lesions,
    within,
)


def _probabilities(shape, boxes):
    """Class probabilities with an enhancing core in each box and oedema in a 4-voxel shell around it."""
    p = np.zeros((4, *shape), np.float16)
    p[0] = 1.0
    for box in boxes:
        shell = tuple(slice(s.start - 4, s.stop + 4) for s in box)
        p[0][shell], p[2][shell] = 0.1, 0.9
        p[0][box], p[2][box], p[3][box] = 0.05, 0.0, 0.95
    return p


def _brain(shape=(100, 100, 140)):
    brain = np.zeros(shape, bool)
    brain[5:95, 5:95, 5:135] = True
    return brain


def test_no_detection_means_no_lesion_whatever_the_extent_network_sees():
    brain = _brain()
    detector = _probabilities(brain.shape, [])
    extent = _probabilities(brain.shape, [np.s_[40:60, 40:60, 40:60]])
    labels, count = find_lesions(detector, brain, extent)
    assert count == 0 and not labels.any()
    # the same extent on its own would be kept: the cascade, not the checks, removed it
    assert keep_lesions(extent, brain)[1] == 1


def test_extent_kept_only_at_a_detected_lesion_and_within_the_margin():
    brain = _brain()
    # the detector under-segments the lesion at the centre and sees nothing at the corner
    detector = _probabilities(brain.shape, [np.s_[46:54, 46:54, 46:54]])
    # the extent network's lesion reaches 38 mm from the detection along the diagonals: cut there
    extent = _probabilities(brain.shape, [np.s_[24:76, 24:76, 24:76], np.s_[30:60, 30:60, 96:126]])
    assert keep_lesions(extent, brain)[1] == 2  # both pass the lesion checks on their own
    labels, count = find_lesions(detector, brain, extent)
    assert count == 1
    detected_ml = float((keep_lesions(detector, brain)[0] > 0).sum()) / 1000
    found_ml = float((labels > 0).sum()) / 1000
    assert found_ml > 3 * detected_ml  # the extent network's reach, not the detector's
    assert not labels[:, :, 90:].any()  # the undetected second "lesion" is dropped
    # bounded: nothing further than the margin from what the detector found
    near = within(keep_lesions(detector, brain)[0] > 0, EXTENT_MARGIN_MM)
    assert not (labels.astype(bool) & ~near).any()
    assert (np.argmax(extent, axis=0) > 0)[~near].any()  # there was something to cut
    narrow = bound_extent(extent, keep_lesions(detector, brain)[0] > 0, brain, margin_mm=2.0)
    assert (np.argmax(narrow, axis=0) > 0).sum() < (labels > 0).sum()


def test_without_an_extent_network_the_detector_labels_are_the_result():
    brain = _brain()
    detector = _probabilities(brain.shape, [np.s_[40:60, 40:60, 40:60]])
    labels, count = find_lesions(detector, brain)
    expected, expected_count = keep_lesions(detector, brain)
    assert count == expected_count == 1 and np.array_equal(labels, expected)


def test_within_is_a_euclidean_distance_in_mm():
    mask = np.zeros((40, 40, 40), bool)
    mask[20, 20, 20] = True
    near = within(mask, 5.0)
    assert near[20, 20, 25] and not near[20, 20, 26]
    assert near[23, 24, 20] and not near[24, 24, 20]  # 5.0 mm in, 5.66 mm out
    assert not within(np.zeros_like(mask), 5.0).any()
