"""Where the brain can be: an intracranial prior from a real head atlas.

The intensity-based brain mask (:func:`ai_engines.mr_glioma.preprocess.brain_mask`) separates
brain from scalp by depth and erosion. On real heads with thick slices (3-6.5 mm) the orbital
roof and the skull base are blurred across slices, and the mask takes in the orbits, the
temporal fat and the face; the network then calls orbital fat, bright on T1 with or without
contrast, an enhancing tumour (a normal real brain, Colin 27 at 5 mm: 123 ml of "tumour",
bilateral). Position, not intensity, tells them apart: the orbits are outside the skull.

A real adult head with its skull (Colin 27, the single-subject MNI average ``ch2``, 2 mm) is
registered to the study's reference series (affine, Mattes mutual information, centred by
image moments), and its brain mask (``ch2bet``, closed and filled: brain, CSF and ventricles)
is carried onto the working grid and widened by :data:`PRIOR_MARGIN_MM` for the difference
between two heads that an affine map leaves. The brain mask is then kept inside it.

Skull-stripped series (as research archives such as BraTS hold them) need no prior: their
head is their brain, and the atlas, which has a skull, cannot be fitted to them.

Atlas files: ``atlas/colin27_head_2mm.nii.gz`` and ``atlas/colin27_brain_2mm.nii.gz``, made
from Debian's ``mricron-data`` (``/usr/share/mricron/templates/ch2.nii.gz``, smoothed 0.8 mm
and resampled to 2 mm; ``ch2bet.nii.gz`` > 0, closed twice, holes filled, 2 mm). Colin 27:
Holmes et al., J Comput Assist Tomogr 1998, (c) 1993-2009 Louis Collins, McConnell Brain
Imaging Centre, Montreal Neurological Institute, permission to use, copy, modify and
distribute granted with this notice; packaged with MRIcron (c) Chris Rorden, BSD-3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from ai_engines.mr_glioma.registration import mattes_mi_method

ATLAS_DIR = Path(__file__).resolve().parent / "atlas"
ATLAS_HEAD = "colin27_head_2mm.nii.gz"
ATLAS_BRAIN = "colin27_brain_2mm.nii.gz"
# The atlas is data the engine's decisions depend on: checked like model weights.
ATLAS_SHA256 = {
    ATLAS_HEAD: "d318cd8c5076bff43c98594302e21614864b4287dccc8672a3dcff6813a73389",
    ATLAS_BRAIN: "15aaab6789bcbb477407bbe3129789d0bea400b6b4138c2832a96bb26e767e0b",
}
PRIOR_MARGIN_MM = 6.0  # two adult heads after an affine map differ by a few mm at the cortex
# An affine fit outside these bounds is not a head matched to a head: no prior, and the
# engine declines (MR_NOT_BRAIN) rather than trust an unbounded mask.
MIN_SCALE, MAX_SCALE = 0.7, 1.5  # Colin 27 is an adult male head; the synthetic heads fit at 1.1-1.33
MIN_HEAD_DICE = 0.75
SKULL_STRIPPED_MAX_HEAD_ML = 2000.0  # a stripped brain: its "head" is brain, CSF and ventricles
SKULL_STRIPPED_ZERO_FRACTION = 0.98  # of the voxels just outside the head, exactly 0
_OUTSIDE = -1.0  # resampled value outside the atlas's field of view (its intensities are >= 0)


class AtlasError(RuntimeError):
    """The atlas files are missing or altered."""


@dataclass(frozen=True)
class PriorFit:
    """How the atlas fitted the study (for the report's notes and the decline)."""

    method: str  # "atlas" or "skull-stripped"
    scales: tuple[float, float, float]
    head_dice: float
    ok: bool

    def note(self) -> str:
        if self.method == "skull-stripped":
            return "intracranial prior: skull-stripped series, the head is the brain"
        scales = "/".join(f"{s:.2f}" for s in self.scales)
        return (f"intracranial prior: Colin 27 atlas, affine scales {scales}, head Dice "
                f"{self.head_dice:.2f}{'' if self.ok else ' (not a fit: rejected)'}")


@lru_cache(maxsize=1)
def _atlas() -> tuple[sitk.Image, sitk.Image]:
    images = []
    for name in (ATLAS_HEAD, ATLAS_BRAIN):
        path = ATLAS_DIR / name
        if not path.is_file():
            raise AtlasError(f"atlas file {name} missing from the package")
        if hashlib.sha256(path.read_bytes()).hexdigest() != ATLAS_SHA256[name]:
            raise AtlasError(f"atlas file {name} does not match its SHA-256")
        images.append(sitk.ReadImage(str(path), sitk.sitkFloat32))
    return images[0], images[1]


def is_skull_stripped(values: np.ndarray, head: np.ndarray, voxel_ml: float) -> bool:
    """A series whose head is a brain (small) and whose surroundings are exactly zero."""
    if not head.any() or head.sum() * voxel_ml > SKULL_STRIPPED_MAX_HEAD_ML:
        return False
    # A few voxels out: the interpolated edge of the brain itself is not background.
    near = ndimage.binary_dilation(head, iterations=2)
    shell = ndimage.binary_dilation(near, iterations=3) & ~near
    return bool(shell.any()) and float(np.mean(values[shell] == 0)) >= SKULL_STRIPPED_ZERO_FRACTION


def intracranial_prior(reference: sitk.Image, head_of: Callable[[np.ndarray], np.ndarray],
                       grid: sitk.Image, seed: int = 1) -> tuple[np.ndarray, PriorFit]:
    """Where the brain can be on ``grid``: the atlas brain, fitted to ``reference``, widened.

    Parameters
    ----------
    reference
        The reference series on a 2 mm grid (registration is done there).
    head_of
        The head outline of an array (the same function the registration check uses).
    grid
        The working grid the prior is returned on.
    """
    atlas_head, atlas_brain = _atlas()
    fixed = sitk.Cast(reference, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, atlas_head, sitk.AffineTransform(3),
        sitk.CenteredTransformInitializerFilter.MOMENTS)
    # Affine between two heads: finer steps and a coarser first level than the rigid registration.
    method = mattes_mi_method(sampling=0.1, learning_rate=1.0, min_step=1e-4, iterations=200,
                              shrink_factors=(4, 2, 1), smoothing_mm=(4.0, 2.0, 0.0), seed=seed)
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, atlas_head)
    affine = sitk.AffineTransform(sitk.CompositeTransform(transform).GetNthTransform(0)) \
        if transform.GetName() == "CompositeTransform" else sitk.AffineTransform(transform)
    matrix = np.asarray(affine.GetMatrix()).reshape(3, 3)
    s0, s1, s2 = (float(s) for s in np.linalg.svd(matrix, compute_uv=False))
    scales = (s0, s1, s2)
    # The head outlines must agree where the atlas covers the study.  The atlas is >= 0, so
    # a negative default value marks the voxels outside its field of view (one resample).
    moved = sitk.GetArrayFromImage(sitk.Resample(atlas_head, fixed, transform, sitk.sitkLinear,
                                                 _OUTSIDE, sitk.sitkFloat32))
    covered = moved != _OUTSIDE
    moved[~covered] = 0.0
    study_head = head_of(sitk.GetArrayFromImage(fixed))
    atlas_head_mask = head_of(moved) & covered
    study_head = study_head & covered
    both = int(study_head.sum() + atlas_head_mask.sum())
    dice = 2.0 * float((study_head & atlas_head_mask).sum()) / both if both else 0.0
    ok = all(MIN_SCALE <= s <= MAX_SCALE for s in scales) and dice >= MIN_HEAD_DICE
    brain = sitk.GetArrayFromImage(sitk.Resample(atlas_brain, grid, transform, sitk.sitkLinear,
                                                 0.0, sitk.sitkFloat32)) >= 0.5
    spacing = float(grid.GetSpacing()[0])
    margin = max(1, int(round(PRIOR_MARGIN_MM / spacing)))
    prior = ndimage.binary_dilation(brain, structure=ndimage.generate_binary_structure(3, 1),
                                    iterations=margin)
    return prior, PriorFit("atlas", scales, dice, ok)
