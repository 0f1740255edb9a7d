"""The anatomical checks a lung-tumour candidate must pass (ai_engines.ct_lung.lesion_checks),
each on constructed masks: one shape that must fail and one that must pass."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ai_engines.ct_lung.lesion_checks import (
    FLAT_RATIO,
    TUBE_MIN_LENGTH_MM,
    LesionAnatomy,
    lung_envelope,
    measure_lesion,
    tube_length,
)
from ai_engines.ct_lung.lesions import keep_components

SPACING = (5.0, 1.0, 1.0)  # 5 mm slices like lung1, 1 mm pixels


def disk(shape2d, centre, radius):
    rr, cc = np.indices(shape2d)
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def ball(shape, centre, radius_mm, spacing=SPACING):
    zz, rr, cc = np.indices(shape)
    return (((zz - centre[0]) * spacing[0]) ** 2 + ((rr - centre[1]) * spacing[1]) ** 2
            + ((cc - centre[2]) * spacing[2]) ** 2) <= radius_mm**2


def chest(shape=(24, 160, 160)):
    """One lung: a disk of radius 50 mm centred in the slice, on every slice."""
    lungs = np.zeros(shape, bool)
    lungs[:] = disk(shape[1:], (80, 80), 50)
    return lungs


def test_aorta_like_tube_beside_the_lung_fails_tube_and_lung_side():
    lungs = chest()
    tube = np.zeros_like(lungs)
    tube[2:22] = disk(lungs.shape[1:], (80, 143), 12)  # 24 mm wide, 100 mm long, outside the lung
    lungs &= ~tube
    found = measure_lesion(tube, lungs, np.full(lungs.shape, 40.0, np.float32), SPACING)
    assert found.tube_mm >= 90 and found.in_lung == 0.0
    assert "tube" in found.failed(SPACING[0])


def test_wandering_tube_and_tube_inside_the_lung_are_not_tubes():
    lungs = chest()
    wandering = np.zeros_like(lungs)
    for k in range(2, 22):  # the centroid jumps more than a radius every slice
        wandering[k] = disk(lungs.shape[1:], (30 + 20 * (k % 2) * 2, 143), 8)
    assert tube_length(wandering, lungs, SPACING) == 0.0
    inside = np.zeros_like(lungs)
    inside[2:22] = disk(lungs.shape[1:], (80, 80), 8)  # a vessel-like column in the lung
    assert tube_length(inside, lungs, SPACING) == 0.0


def test_a_round_tumour_is_not_a_tube_however_long():
    lungs = chest((40, 160, 160))
    tumour = ball(lungs.shape, (20, 80, 80), 60.0)  # 120 mm across, as long as wide
    assert tube_length(tumour, np.zeros_like(lungs), SPACING) == 0.0
    short = np.zeros_like(lungs)
    short[2:2 + int(TUBE_MIN_LENGTH_MM // SPACING[0]) - 1] = disk(lungs.shape[1:], (80, 143), 4)
    assert tube_length(short, np.zeros_like(lungs), SPACING) == 0.0  # under the minimum length


def test_chest_wall_blob_against_a_convex_lung_fails_lung_side():
    lungs = chest()
    wall = np.zeros_like(lungs)
    wall[8:12] = disk(lungs.shape[1:], (80, 138), 9) & ~lungs[8]  # outside the lung's round edge
    found = measure_lesion(wall, lungs, None, SPACING)
    assert found.lung_side < 0.2
    assert found.failed(SPACING[0]) == ("lung_side",)


def test_juxtapleural_tumour_that_dents_the_lung_passes_lung_side():
    lungs = chest()
    tumour = ball(lungs.shape, (10, 80, 114), 16.0)  # on the chest wall, bulging into the lung
    lungs &= ~tumour  # the lung mask stops at the tumour: in_lung is 0
    found = measure_lesion(tumour, lungs, np.full(lungs.shape, 30.0, np.float32), SPACING)
    assert found.in_lung == 0.0 and found.lung_side >= 0.8
    assert found.failed(SPACING[0]) == ()


def test_nodule_inside_the_lung_passes():
    lungs = chest()
    nodule = ball(lungs.shape, (10, 70, 70), 6.0)
    found = measure_lesion(nodule, lungs, np.full(lungs.shape, 20.0, np.float32), SPACING)
    assert found.in_lung == 1.0 and found.failed(SPACING[0]) == ()


def test_envelope_fills_dents_not_convex_outside():
    lungs = chest((1, 160, 160))
    dent = disk(lungs.shape[1:], (80, 130), 10)
    dented = lungs & ~dent
    envelope = lung_envelope(dented, 20.0, (1.0, 1.0))  # radius = the dent's width, as the engine sets it
    # The dent is filled but for a rim at its mouth, where the disk dips in from outside.
    assert envelope[0][dent & lungs[0]].mean() >= 0.7
    outside = ~disk(lungs.shape[1:], (80, 80), 53)
    assert not (envelope[0] & outside).any()  # nothing beyond the round edge


@pytest.mark.parametrize(("slices", "thickness", "diameter", "flat"), [
    (1, 5.0, 30.0, True),  # a 30 mm "lesion" on one 5 mm slice: a dome cut tangentially
    (3, 2.5, 40.0, True),
    (2, 5.0, 20.0, False),  # a 20 mm nodule on two 5 mm slices: possible
    (6, 1.0, 13.0, False),  # a 13 mm juxtapleural nodule 6 mm deep (validation case 300007)
    (8, 2.5, 20.0, False),
])
def test_flat_sheet_versus_round_lesion(slices, thickness, diameter, flat):
    anatomy = LesionAnatomy(in_lung=1.0, lung_side=1.0, z_mm=slices * thickness, diameter_mm=diameter,
                            tube_mm=0.0, mean_hu=20.0)
    assert ("flat" in anatomy.failed(thickness)) == flat
    assert ((slices + 1) * thickness < FLAT_RATIO * diameter) == flat


@pytest.mark.parametrize(("hu", "ok"), [(-700.0, False), (-100.0, True), (45.0, True), (180.0, True), (400.0, False)])
def test_density_is_soft_tissue(hu, ok):
    anatomy = LesionAnatomy(in_lung=1.0, lung_side=1.0, z_mm=20.0, diameter_mm=15.0, tube_mm=0.0, mean_hu=hu)
    assert ("density" not in anatomy.failed(2.0)) == ok


def test_rejected_false_lesion_does_not_hide_a_true_one():
    """The relative-weight rule compares with the largest candidate that passed the checks:
    a 30 ml aorta no longer hides a 1 ml nodule (the nodule is 3 % of its weight)."""
    shape = (24, 160, 160)
    lungs = chest(shape)
    probability = np.zeros(shape, np.float16)
    aorta = np.zeros(shape, bool)
    aorta[2:22] = disk(shape[1:], (80, 143), 12)
    probability[aorta] = 0.97
    nodule = ball(shape, (10, 60, 60), 6.0)
    probability[nodule] = 0.95
    labels, count = ndimage.label(probability >= 0.5, structure=np.ones((3, 3, 3), bool))
    near = np.ones(shape, bool)
    assert len(keep_components(labels, count, probability, lungs, near, SPACING)) == 1  # only the aorta

    def failed(label, box):
        return measure_lesion(labels[box] == label, lungs[box], None, SPACING).failed(SPACING[0])

    (kept,) = keep_components(labels, count, probability, lungs, near, SPACING, failed_checks=failed)
    assert (labels == kept)[nodule].all()


def test_pieces_of_a_rejected_tube_are_rejected_distant_lesions_are_not():
    """A candidate outside the lungs within VESSEL_PIECE_MM of a rejected tube is a piece of
    that vessel (the aortic knob above the arch on lung1); one farther away is judged alone."""
    from ai_engines.ct_lung.lesions import VESSEL_PIECE_MM

    shape = (30, 160, 160)
    lungs = chest(shape)
    probability = np.zeros(shape, np.float16)
    aorta = np.zeros(shape, bool)
    aorta[2:22] = disk(shape[1:], (80, 143), 12)
    lungs &= ~aorta
    probability[aorta] = 0.97
    knob = np.zeros(shape, bool)
    knob[23:26] = disk(shape[1:], (80, 124), 8)  # 10 mm above the tube's end, denting the lung
    far = ball(shape, (12, 80, 38), 9.0)  # a juxtapleural nodule on the other side, 90 mm away
    lungs &= ~knob & ~far
    probability[knob] = 0.95
    probability[far] = 0.95
    labels, count = ndimage.label(probability >= 0.5, structure=np.ones((3, 3, 3), bool))
    reported = []

    def failed(label, box):
        if box is None:
            reported.append(label)
            return ("tube",)
        return measure_lesion(labels[box] == label, lungs[box], None, SPACING).failed(SPACING[0])

    assert VESSEL_PIECE_MM >= 5.0
    kept = keep_components(labels, count, probability, lungs, np.ones(shape, bool), SPACING, failed_checks=failed)
    knob_label, far_label = labels[24, 80, 124], labels[12, 80, 38]
    assert reported == [knob_label] and knob_label not in kept
    assert far_label in kept


def test_piece_on_the_axis_of_a_rejected_tube_is_rejected():
    """Where the detector loses a straight vessel for a few centimetres, the next piece lies on
    the same line (the synthetic paravertebral aorta: 35 mm gap); one off the axis is judged alone."""
    shape = (40, 160, 160)
    lungs = chest(shape)
    probability = np.zeros(shape, np.float16)
    aorta = np.zeros(shape, bool)
    aorta[22:38] = disk(shape[1:], (80, 143), 12)  # 80 mm of tube
    piece = np.zeros(shape, bool)
    piece[8:13] = disk(shape[1:], (81, 142), 12)  # 45 mm below its end, same line
    off_axis = np.zeros(shape, bool)
    off_axis[8:13] = disk(shape[1:], (40, 120), 10)  # beside the lung, far from the line
    lungs &= ~(aorta | piece | off_axis)
    for mask in (aorta, piece, off_axis):
        probability[mask] = 0.97
    labels, count = ndimage.label(probability >= 0.5, structure=np.ones((3, 3, 3), bool))
    reported = []

    def failed(label, box):
        if box is None:
            reported.append(label)
            return ("tube",)
        return ("tube",) if label == labels[30, 80, 143] else ()

    kept = keep_components(labels, count, probability, lungs, np.ones(shape, bool), SPACING, failed_checks=failed)
    assert reported == [labels[10, 81, 142]]
    assert kept == [labels[10, 40, 120]]


@pytest.mark.parametrize(("lung_side", "passes"), [
    (0.43, True),  # the 0.83 ml juxtapleural validation tumour that 0.5 rejected
    (0.25, False),  # the highest of lung1's chest-wall / mediastinal candidates (engine 1.4.0)
    (0.10, False),
])
def test_lung_side_threshold_keeps_a_juxtapleural_tumour_and_rejects_chest_wall(lung_side, passes):
    anatomy = LesionAnatomy(in_lung=0.07, lung_side=lung_side, z_mm=15.0, diameter_mm=12.0, tube_mm=0.0, mean_hu=30.0)
    assert ("lung_side" not in anatomy.failed(2.5)) is passes


def _pieces_in_a_dent(shape, spans, centres, radii):
    """A lung dented by pieces of soft tissue: the pieces' slice ranges, in-plane centres and radii."""
    lungs = chest(shape)
    pieces = []
    for (k0, k1), centre, radius in zip(spans, centres, radii, strict=True):
        piece = np.zeros(shape, bool)
        piece[k0:k1] = disk(shape[1:], centre, radius)
        pieces.append(piece)
        lungs &= ~piece
    return lungs, pieces


def _keep(lungs, pieces, shape):
    probability = np.zeros(shape, np.float16)
    for piece in pieces:
        probability[piece] = 0.97
    labels, count = ndimage.label(probability >= 0.5, structure=np.ones((3, 3, 3), bool))
    reported = []

    def failed(label, box):
        if box is None:
            reported.append(int(label))
            return ("tube",)
        return measure_lesion(labels[box] == label, lungs[box], None, SPACING).failed(SPACING[0])

    kept = keep_components(labels, count, probability, lungs, np.ones(shape, bool), SPACING, failed_checks=failed)
    return labels, kept, reported


def test_a_tube_broken_into_short_pieces_along_one_axis_is_rejected():
    """A vessel the detector answers on in short pieces in a dent of the lung: each piece passes
    every check alone (too short for a tube), but together they line up along one tube of
    near-constant section, and all are rejected; a nodule in the lung beside them is kept."""
    shape = (30, 160, 160)
    spans = [(2, 6), (8, 12), (14, 18)]  # three 20 mm pieces, 10 mm gaps: 80 mm in all
    lungs, pieces = _pieces_in_a_dent(shape, spans, [(80, 124), (81, 125), (82, 124)], [12, 12, 12])
    nodule = ball(shape, (10, 60, 60), 7.0)
    lungs_with_nodule = lungs.copy()
    for piece in pieces:
        alone = measure_lesion(piece, lungs, None, SPACING)
        assert alone.failed(SPACING[0]) == () and alone.tube_mm == 0.0  # each piece alone passes
    labels, kept, reported = _keep(lungs_with_nodule, [*pieces, nodule], shape)
    piece_labels = sorted(int(labels[k0, 80, 124]) for k0, _ in spans)
    assert sorted(reported) == piece_labels
    assert kept == [int(labels[10, 60, 60])]


@pytest.mark.parametrize(("why", "centres", "radii", "spans"), [
    ("off the line", [(80, 124), (50, 118)], [12, 12], [(2, 6), (8, 12)]),
    ("calibre changes", [(80, 124), (80, 124)], [14, 7], [(2, 6), (8, 12)]),
    ("gap too long", [(80, 124), (80, 124)], [10, 10], [(2, 6), (16, 20)]),
    ("a round lesion cut in two", [(80, 122), (80, 122)], [14, 14], [(4, 7), (8, 11)]),
])
def test_pieces_that_do_not_make_one_tube_are_judged_alone(why, centres, radii, spans):
    shape = (30, 160, 160)
    lungs, pieces = _pieces_in_a_dent(shape, spans, centres, radii)
    labels, kept, reported = _keep(lungs, pieces, shape)
    assert reported == [], why
    assert sorted(kept) == sorted(int(labels[k0, c[0], c[1]]) for (k0, _), c in zip(spans, centres, strict=True)), why
