"""Finding and orienting the anterior and posterior views for every input layout, and the
coded declines (torch-free)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ai_engines.bone_scan.spec import GEOMETRY
from ai_engines.bone_scan.synthetic import synthetic_scan
from ai_engines.bone_scan.views import (
    NM_NO_COUNTS,
    NM_NOT_WHOLE_BODY,
    NM_SINGLE_VIEW,
    NM_VIEW_MISSING,
    ViewPair,
    find_views,
    normalise_view,
)
from ai_engines.findings import Decline
from ai_engines.quality import QC_LOSSY_COMPRESSION, QC_WRONG_MODALITY
from ai_engines.volume import SeriesVolume, StudyInput, VolumeGeometry


def views_of(scan) -> ViewPair:
    pair = find_views(scan.study, GEOMETRY)
    assert isinstance(pair, ViewPair), pair
    return pair


def assert_canonical(pair: ViewPair, scan) -> None:
    """The canonical views are exactly the generator's (head up, posterior mirrored to match)."""
    np.testing.assert_array_equal(pair.anterior.canonical(), scan.anterior)
    np.testing.assert_array_equal(pair.posterior.canonical(), scan.posterior)


@pytest.mark.parametrize("matrix", [(1024, 256), (512, 128)])
@pytest.mark.parametrize("mirrored", [False, True])
def test_multiframe_anterior_posterior(matrix, mirrored):
    scan = synthetic_scan(11, matrix=matrix, layout="multiframe", posterior_mirrored=mirrored, energy_windows=1)
    assert len(scan.study.series) == 1 and scan.study.series[0].shape == (2, *matrix)
    pair = views_of(scan)
    assert pair.anterior.series is pair.posterior.series
    assert (pair.anterior.index, pair.posterior.index) == (0, 1)
    assert_canonical(pair, scan)
    assert any(("kept as stored" if mirrored else "mirrored left-right") in n for n in pair.notes)


@pytest.mark.parametrize("mirrored", [False, True])
def test_two_single_frame_series(mirrored):
    scan = synthetic_scan(12, matrix=(1024, 256), layout="two_series", posterior_mirrored=mirrored)
    assert len(scan.study.series) == 2
    pair = views_of(scan)
    assert pair.anterior.series is scan.study.series[0] and pair.posterior.series is scan.study.series[1]
    assert_canonical(pair, scan)


def test_posterior_orientation_is_detected():
    """Either storage convention of the posterior gives the same canonical posterior; where the
    image cannot tell (a body centred on the table), the two candidates are nearly the same."""
    exact = 0
    for seed in range(20, 32):
        results = []
        for mirrored in (False, True):
            scan = synthetic_scan(seed, matrix=(512, 128), layout="multiframe", posterior_mirrored=mirrored, energy_windows=1)
            results.append(views_of(scan).posterior.canonical())
        if np.array_equal(results[0], results[1]):
            exact += 1
        else:
            assert np.corrcoef(results[0].ravel(), results[1].ravel())[0, 1] > 0.95
    assert exact >= 10


def test_energy_windows_photopeak_has_most_counts():
    scan = synthetic_scan(13, matrix=(512, 128), layout="multiframe", energy_windows=3)
    series = scan.study.series[0]
    assert series.shape[0] == 6 and {r.energy_window for r in series.slices} == {1, 2, 3}
    pair = views_of(scan)
    assert pair.energy_window == 1
    assert_canonical(pair, scan)
    # Renumber the windows so the photopeak is window 3: the counts decide, not the number.
    renumber = {1: 3, 2: 1, 3: 2}
    slices = tuple(dataclasses.replace(r, energy_window=renumber[r.energy_window]) for r in series.slices)
    study = StudyInput("2.25.1", (dataclasses.replace(series, slices=slices),))
    pair = find_views(study, GEOMETRY)
    assert pair.energy_window == 3
    np.testing.assert_array_equal(pair.anterior.canonical(), scan.anterior)


@pytest.mark.parametrize("matrix", [(1024, 256), (512, 128)])
def test_transposed_256x1024_with_geometry(matrix):
    scan = synthetic_scan(14, matrix=matrix, layout="multiframe", transposed=True, energy_windows=1)
    assert scan.study.series[0].shape == (2, matrix[1], matrix[0])
    pair = views_of(scan)
    assert pair.anterior.transpose
    assert_canonical(pair, scan)


def test_transposed_without_geometry_uses_aspect_ratio():
    scan = synthetic_scan(15, matrix=(512, 128), transposed=True, geometry_known=False, layout="two_series")
    pair = views_of(scan)
    assert any("aspect ratio" in n for n in pair.notes)
    assert_canonical(pair, scan)


def test_head_at_the_bottom_is_turned_up():
    scan = synthetic_scan(16, matrix=(512, 128), layout="multiframe", energy_windows=1)
    series = scan.study.series[0]
    # Stored feet first: rows reversed, column direction pointing to the head (+z).
    flipped = dataclasses.replace(
        series, voxels=series.voxels[:, ::-1].copy(),
        geometry=dataclasses.replace(series.geometry, column_direction=(0.0, 0.0, 1.0)),
    )
    pair = find_views(StudyInput("2.25.2", (flipped,)), GEOMETRY)
    assert pair.anterior.flip_rows
    assert_canonical(pair, scan)


def test_to_source_inverts_canonical():
    scan = synthetic_scan(17, matrix=(512, 128), transposed=True, posterior_mirrored=False, layout="multiframe", energy_windows=1)
    pair = views_of(scan)
    for frame in (pair.anterior, pair.posterior):
        np.testing.assert_array_equal(frame.to_source(frame.canonical()), frame.series.voxels[frame.index])


def _only(series: SeriesVolume, keep: list[int], **changes) -> SeriesVolume:
    geometry = dataclasses.replace(series.geometry, slice_origins=series.geometry.slice_origins[keep])
    return dataclasses.replace(series, voxels=series.voxels[keep], slices=tuple(series.slices[k] for k in keep),
                               geometry=geometry, **changes)


@pytest.fixture(scope="module")
def multiframe():
    return synthetic_scan(18, matrix=(512, 128), layout="multiframe", energy_windows=1).study.series[0]


def test_single_view_declined(multiframe):
    decline = find_views(StudyInput("2.25.3", (_only(multiframe, [0]),)), GEOMETRY)
    assert isinstance(decline, Decline) and decline.code == NM_SINGLE_VIEW
    assert "anterior" in decline.reason.lower()


def test_uncoded_views_declined(multiframe):
    slices = tuple(dataclasses.replace(r, view=None) for r in multiframe.slices)
    decline = find_views(StudyInput("2.25.4", (dataclasses.replace(multiframe, slices=slices),)), GEOMETRY)
    assert decline.code == NM_VIEW_MISSING
    one = find_views(StudyInput("2.25.5", (_only(dataclasses.replace(multiframe, slices=slices), [0]),)), GEOMETRY)
    assert one.code == NM_SINGLE_VIEW


def test_lateral_views_are_not_anterior_posterior(multiframe):
    slices = (dataclasses.replace(multiframe.slices[0], view="LEFT_LATERAL"), multiframe.slices[1])
    decline = find_views(StudyInput("2.25.6", (dataclasses.replace(multiframe, slices=slices),)), GEOMETRY)
    assert decline.code == NM_SINGLE_VIEW


def test_spot_view_not_whole_body(multiframe):
    spot = dataclasses.replace(multiframe, voxels=multiframe.voxels[:, 100:228, :].copy())
    decline = find_views(StudyInput("2.25.7", (spot,)), GEOMETRY)
    assert decline.code == NM_NOT_WHOLE_BODY
    assert "128x128" in decline.reason


def test_short_field_not_whole_body(multiframe):
    small = dataclasses.replace(multiframe, geometry=dataclasses.replace(multiframe.geometry, pixel_spacing=(1.5, 1.5)))
    assert find_views(StudyInput("2.25.8", (small,)), GEOMETRY).code == NM_NOT_WHOLE_BODY


def test_blank_view_declined(multiframe):
    voxels = multiframe.voxels.copy()
    voxels[1] = 0
    decline = find_views(StudyInput("2.25.9", (dataclasses.replace(multiframe, voxels=voxels),)), GEOMETRY)
    assert decline.code == NM_NO_COUNTS


def test_lossy_declined(multiframe):
    lossy = dataclasses.replace(multiframe, facts=dataclasses.replace(multiframe.facts, lossy_compressed=True))
    assert find_views(StudyInput("2.25.10", (lossy,)), GEOMETRY).code == QC_LOSSY_COMPRESSION


def test_no_nm_series_declined(multiframe):
    ct = dataclasses.replace(multiframe, facts=dataclasses.replace(multiframe.facts, modality="CT"))
    assert find_views(StudyInput("2.25.11", (ct,)), GEOMETRY).code == QC_WRONG_MODALITY


def test_view_names():
    assert normalise_view("anterior") == "ANTERIOR" and normalise_view("POST") == "POSTERIOR"
    assert normalise_view("LEFT_LATERAL") is None and normalise_view(None) is None


def test_default_geometry_is_planar():
    assert GEOMETRY.planar and not GEOMETRY.uniform_spacing
    assert isinstance(VolumeGeometry, type)
