"""The MR glioma engine on real, tumour-free brains: never a false lesion.

The engine was developed on synthetic brains and one real case (brain2). A hospital will send
real T1 post-contrast series of brains without a tumour, with a skull or already skull-stripped
(as research archives such as BraTS hold them), and with thick slices. The real T1 brain of the
Debian package ``mricron-data`` (the "Colin 27" single-subject average, ``ch2.nii.gz``, and its
skull-stripped copy ``ch2bet.nii.gz``; BSD-3, MRIcron) is shown to the engine as a T1c series:
it has no lesion, so any segment is a false lesion.

The engine's intracranial prior (:mod:`ai_engines.mr_glioma.atlas`) is made from the same
Colin 27 head, so these tests prove the mechanism (the head is moved, scaled and thick-sliced
before the engine sees it), not that the atlas fits every head: ``brain2`` (another real
head, tests/ai_engines/mr_glioma/test_engine.py) and the synthetic heads are that evidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from ai_engines.mr_glioma.engine import MrGliomaEngine
from ai_engines.mr_glioma.evaluate import series_from_image
from ai_engines.volume import StudyInput

pytestmark = pytest.mark.slow

TEMPLATES = Path("/usr/share/mricron/templates")


@pytest.fixture(scope="module")
def engine() -> MrGliomaEngine:
    return MrGliomaEngine(device="cpu", threads=1)


def colin(name: str) -> sitk.Image:
    path = TEMPLATES / f"{name}.nii.gz"
    if not path.is_file():  # scripts/test.sh installs it; a developer machine may lack it
        pytest.fail(f"{path} missing: apt-get install mricron-data")
    return sitk.ReadImage(str(path), sitk.sitkFloat32)


def thick_slices(image: sitk.Image, thickness_mm: float, pixel_mm: float) -> sitk.Image:
    """Axial slices of ``thickness_mm`` as a 2-D acquisition makes them: each slice averages
    its slab (a Gaussian along z), sampled every ``thickness_mm``."""
    spacing = (pixel_mm, pixel_mm, thickness_mm)
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing,
                                                      strict=True)]
    slab = sitk.SmoothingRecursiveGaussian(image, [0.01, 0.01, thickness_mm / 2.5])
    return sitk.Resample(slab, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         spacing, image.GetDirection(), 0.0, sitk.sitkFloat32)


def as_t1c(image: sitk.Image, uid: str) -> StudyInput:
    """The image as a study with one T1 post-contrast series (12-bit-like stored values)."""
    series = series_from_image(sitk.Cast(image * 8.0, sitk.sitkInt16), f"{uid}.1",
                               "AX T1 POST GD", contrast_agent="GADOLINIUM")
    return StudyInput(uid, (series,))


def lesion_ml(findings, spacing: tuple[float, ...]) -> float:  # noqa: ANN001
    return float(sum(int(s.mask.sum()) for s in findings.segments) * np.prod(spacing) / 1000)


def test_real_brain_with_skull_has_no_lesion(engine: MrGliomaEngine) -> None:
    image = colin("ch2")
    findings = engine.run(as_t1c(image, "2.25.27001"))
    assert not findings.declined, findings.decline
    assert not findings.segments, lesion_ml(findings, image.GetSpacing())


def test_skull_stripped_real_brain_has_no_lesion(engine: MrGliomaEngine) -> None:
    image = colin("ch2bet")
    findings = engine.run(as_t1c(image, "2.25.27002"))
    assert not findings.declined, findings.decline
    assert not findings.segments, lesion_ml(findings, image.GetSpacing())
    # Recognised as stripped: the whole brain is the mask, no atlas fitted to a skull it lacks.
    assert any("skull-stripped series" in note for note in findings.notes), findings.notes


def tilted(image: sitk.Image) -> sitk.Image:
    """The head as another scan would place it: rotated 8 degrees (nodding) and 4 degrees
    (turning), 5 % smaller left-right and 4 % larger front-back, shifted 6 mm."""
    transform = sitk.AffineTransform(3)
    centre = image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in image.GetSize()])
    transform.SetCenter(centre)
    rotation = sitk.Euler3DTransform(centre, np.radians(8.0), 0.0, np.radians(4.0))
    transform.SetMatrix(tuple((np.asarray(rotation.GetMatrix()).reshape(3, 3)
                               @ np.diag([0.95, 1.04, 1.0])).ravel()))
    transform.SetTranslation((3.0, -4.0, 3.0))
    return sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


@pytest.mark.parametrize(("thickness_mm", "cut_mm"), [(5.0, 0), (6.5, 20), (3.0, 20)])
def test_thick_slices_of_a_real_head_give_no_false_lesion(engine: MrGliomaEngine,
                                                          thickness_mm: float, cut_mm: int) -> None:
    """Axial slices of 3-6.5 mm over the whole head, from the neck (``cut_mm`` 0) or from
    the skull base (20 mm higher). Before the intracranial prior the brain mask took in the
    orbits and the temporal fat here, and the engine reported 20-123 ml of bilateral
    "tumour" on this normal brain (or declined the whole head as not a brain)."""
    head = tilted(colin("ch2"))
    image = thick_slices(head[:, :, cut_mm:], thickness_mm, 0.9)
    findings = engine.run(as_t1c(image, f"2.25.2700{int(thickness_mm * 10)}{cut_mm}"))
    assert not findings.declined, findings.decline
    assert not findings.segments, lesion_ml(findings, image.GetSpacing())
    assert any("intracranial prior: Colin 27 atlas" in note for note in findings.notes)
