"""Published pre-processing: window, 1 mm canvas, 8-bit bins, inverse mapping."""

from __future__ import annotations

import numpy as np

from ai_engines.ct_lung import preprocess as pre


def test_constants_as_published():
    assert (pre.WINDOW_WIDTH_HU, pre.WINDOW_LEVEL_HU) == (1500.0, -600.0)
    assert pre.TARGET_SPACING_MM == 1.0 and pre.CANVAS_SIZE == 512 and pre.N_BINS == 256
    assert pre.PREPROCESSING_VERSION


def test_window_bins():
    bins = pre.window_to_bins(np.array([-2000.0, -1350.0, -600.0, 149.9, 150.0, 3000.0]))
    assert bins.dtype == np.uint8
    assert list(bins) == [0, 0, 128, 255, 255, 255]


def test_canvas_is_one_millimetre():
    # A 40 mm wide bar at 0.5 mm spacing becomes 40 canvas pixels.
    hu = np.full((2, 200, 200), -1000.0, dtype=np.float32)
    hu[:, 80:120, 60:140] = 40.0
    canvas, mapping = pre.preprocess(hu, (0.5, 0.5))
    assert canvas.shape == (2, 512, 512)
    bright = canvas[0] > 200
    rows, cols = np.nonzero(bright.any(1))[0], np.nonzero(bright.any(0))[0]
    assert abs(len(rows) - 20) <= 1 and abs(len(cols) - 40) <= 1
    # Centred: the bar's centre maps to the canvas centre region it should.
    r, c = mapping.source_to_canvas(np.array(99.5), np.array(99.5))
    assert np.allclose([r, c], [255.5, 255.5])


def test_outside_field_of_view_is_air():
    canvas, _ = pre.preprocess(np.full((1, 100, 100), 40.0, dtype=np.float32), (0.7, 0.7))
    assert canvas[0, 0, 0] == pre.window_to_bins(np.array([-1024.0]))[0]


def test_inverse_mapping_round_trip():
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 300, 280), dtype=np.float32)
    mask[:, 100:180, 90:200] = 1.0
    mask += rng.normal(0, 0.01, mask.shape).astype(np.float32)
    canvas_hu, mapping = pre.resample_to_canvas(mask, (0.8, 0.75))
    back = pre.canvas_to_source(canvas_hu, mapping)
    assert back.shape == mask.shape
    agreement = ((back > 0.5) == (mask > 0.5)).mean()
    assert agreement > 0.995
