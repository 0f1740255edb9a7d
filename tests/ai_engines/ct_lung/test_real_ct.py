"""The engine on a real chest CT (`lung1`: 5 mm slices, one 1.4 ml right-upper-lobe nodule).

Engine 1.3.0 delineated the descending aorta there as a 52 ml GTV.  The case is a development
case (real-dev), not a training set: it guards against false tumours on real anatomy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from ai_engines.ct_lung.engine import SMALLEST_VALIDATED_NOTE
from ai_engines.ct_lung.evaluate import dice, nrrd_case
from ai_engines.registry import get_engine
from ai_engines.volume import StudyInput

LUNG1_SHA256 = {
    "lung1_image.nrrd": "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
    "lung1_label.nrrd": "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
}


def real_dev_folder() -> Path | None:
    """The shared real development cases: $CT_LUNG_REAL_DEV, else ../shared or ../../shared."""
    root = Path(__file__).resolve().parents[3]
    candidates = [os.environ.get("CT_LUNG_REAL_DEV", "")] + [
        str(up / "shared" / "reference-data" / "real-dev") for up in (root.parent, root.parent.parent)
    ]
    for folder in filter(None, candidates):
        if all((Path(folder) / name).is_file() for name in LUNG1_SHA256):
            return Path(folder)
    return None


@pytest.fixture(scope="module")
def lung1():
    folder = real_dev_folder()
    if folder is None:
        pytest.skip("real development cases (lung1) not available")
    for name, sha in LUNG1_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name
    return nrrd_case(folder / "lung1_image.nrrd", folder / "lung1_label.nrrd")


@pytest.mark.slow
def test_lung1_no_false_positive_gtv(lung1):
    volume, label = lung1
    findings = get_engine("ct_lung", None, "cpu").run(StudyInput("2.25.11", (volume,)))
    assert not findings.declined
    gtvs = [s for s in findings.segments if s.rt_interpreted_type == "GTV"]
    voxel_ml = float(np.prod(volume.geometry.spacing_zyx)) / 1000
    for gtv in gtvs:
        print(f"{gtv.label}: {gtv.mask.sum() * voxel_ml:.2f} ml, probability {gtv.probability}, "
              f"Dice with the nodule {dice(gtv.mask, label):.3f}")
    # No predicted lesion without overlap with the label (the aorta was one, 52 ml).
    assert all((gtv.mask & label).any() for gtv in gtvs), [g.label for g in gtvs]
    # Lesions are numbered as the SR tracks them.
    assert [g.label for g in gtvs] == [f"GTV_{n}" for n in range(1, len(gtvs) + 1)]
    assert all(g.tracking_id == g.label for g in gtvs)
    found = np.logical_or.reduce([g.mask for g in gtvs]) if gtvs else np.zeros_like(label)
    nodule_dice = dice(found, label)
    print(f"lung1 nodule Dice {nodule_dice:.3f} ({'found' if gtvs else 'not found'}); notes: {findings.notes}")
    if gtvs:
        assert nodule_dice >= 0.5
    else:
        # Not found: the report must say how small a lesion the engine was validated to find.
        assert SMALLEST_VALIDATED_NOTE in findings.notes, findings.notes


@pytest.mark.slow
def test_synthetic_paravertebral_aorta_is_no_gtv():
    """The synthetic CT with the aorta where real CTs have it (anatomy_kind="real"): the detector
    takes it for tumour in pieces over 85 mm (confirming the cause seen on lung1), and the
    lesion checks reject every piece, so no GTV overlaps the aorta."""
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct

    case = synthetic_chest_ct(900_001, n_slices=48, slice_thickness=5.0, n_tumours=0, anatomy_kind="real", slab_position=0.5)
    volume = case.to_volume()
    findings = get_engine("ct_lung", None, "cpu").run(StudyInput("2.25.12", (volume,)))
    (rejected,) = [n for n in findings.notes if "rejected as not lung tumours" in n]
    assert "tube" in rejected  # the detector did fire on the aorta
    hu, lungs = case.hu, case.lung_left | case.lung_right
    # The aorta: blood-filled soft tissue outside the lungs, posterior and left of centre.
    aorta = (hu > 20) & (hu < 320) & ~lungs
    aorta[:, :240, :] = False
    aorta[:, :, :280] = False
    for gtv in (s for s in findings.segments if s.rt_interpreted_type == "GTV"):
        assert (gtv.mask & aorta).sum() < 0.2 * gtv.mask.sum(), gtv.label
