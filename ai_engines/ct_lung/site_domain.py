"""A shifted synthetic "site" domain for showing site adaptation (issue #12 item 4).

A site's scanner differs from what the packaged weights were trained on.  This module imitates
one such site on top of the demo anatomy of :func:`ai_engines.ct_lung.synthetic.synthetic_chest_ct`:
every series is reconstructed with **5 mm slices**, a **sharp lung kernel** (edge overshoot, as
an unsharp mask, on top of the generator's own blur) and **ultra-low-dose noise** (fine-grained,
250 HU standard deviation in the body at the native pixel, against 10-25 HU in the demo data;
sharp kernels at screening doses reach such figures).  The anatomy, the
tumour and its mask are those of the demo seed, so only the acquisition changes.

``benchmarks/ct_lung_site_adaptation.py`` writes such cases as DICOM CT series with their GTV as
an RTSTRUCT, the export a site makes of its approved plans, and runs ``dicom-node train-model
ct_lung --data-dir`` / ``evaluate-model ct_lung --data-dir`` on them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from ai_engines.ct_lung.synthetic import SyntheticCase, synthetic_chest_ct

SITE_SLICE_THICKNESS_MM = 5.0
SITE_NOISE_HU = 250.0  # ultra-low-dose noise in the body (standard deviation, native pixels)
SITE_SHARPEN = 2.0  # unsharp-mask amount of the sharp kernel
SITE_KERNEL = "B70f-lowdose"
# Seeds: training cases below the held-out range (as every training seed), evaluation cases in
# a range no other set uses (held-out 100000-, validation 300000-/310000-, large 500000-/510000-).
SITE_TRAINING_FIRST_SEED = 60_000
SITE_EVALUATION_FIRST_SEED = 620_000


def site_acquisition(hu: np.ndarray, seed: int) -> np.ndarray:
    """Re-acquire a demo case's HU volume the site's way: sharp kernel, then ultra-low-dose noise.

    Parameters
    ----------
    hu
        HU voxels ``[slice, row, col]`` as the generator made them (already blurred and noisy).
    seed
        Seeds the noise, so a case is reproducible.

    Returns
    -------
    numpy.ndarray
        float32 HU, clipped to -1024...3071.
    """
    rng = np.random.default_rng(seed + 11_000_000)
    hu = hu.astype(np.float32)
    # Sharp lung kernel: edges overshoot (vessel walls, nodule margins ring).
    sharp = hu + SITE_SHARPEN * (hu - ndimage.gaussian_filter(hu, (0, 1.2, 1.2), mode="nearest"))
    # Low-dose quantum noise: fine-grained (a sharp kernel passes high frequencies), in the body
    # only; the air around the patient keeps a tenth of it.
    noise = ndimage.gaussian_filter(rng.normal(0, 1, hu.shape).astype(np.float32), (0, 0.4, 0.4))
    noise *= SITE_NOISE_HU / max(float(noise.std()), 1e-6)
    body = ndimage.binary_fill_holes(hu > -500, structure=np.ones((1, 3, 3), bool))
    sharp += np.where(body, noise, 0.1 * noise)
    return np.clip(sharp, -1024, 3071).astype(np.float32)


def site_case(seed: int, *, n_slices: int | None = None, n_tumours: int | None = 1) -> SyntheticCase:
    """One CT of the shifted site domain (demo anatomy, 5 mm slices, sharp kernel, low dose).

    Parameters
    ----------
    seed
        The demo seed; the anatomy and tumours are those of ``synthetic_chest_ct(seed, ...)``.
    n_slices
        Default: 48 slices (240 mm, the whole chest at 5 mm); a shorter slab is centred on the
        tumour.
    n_tumours
        Default one tumour, so every case scores a Dice; ``None`` lets the generator draw.
    """
    n_slices = n_slices or 48
    case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=SITE_SLICE_THICKNESS_MM,
                              n_tumours=n_tumours, focus_tumour=n_slices < 48 and n_tumours != 0)
    return replace(case, hu=site_acquisition(case.hu, seed), kernel=SITE_KERNEL)
