"""Pre-processing of brain MR sequences: co-registration, N4, 1 mm grid, brain mask, z-score.

As in the seeds' (BraTS-style) pipelines:

1. every sequence is rigidly registered to a reference sequence (T1c if present, else FLAIR,
   T2, T1) with SimpleITK: Euler 3-D transform, Mattes mutual information, on 2 mm copies at two
   resolution levels (4 and 2 mm); the quality is recorded as the final metric and as the Dice of the two head masks
   after registration (a failed registration leaves the heads apart);
2. all sequences are resampled (linear) onto one 1 mm isotropic grid with the reference
   series' orientation, covering the reference field of view;
3. N4 bias-field correction of each sequence, fitted on a 4x shrunk copy inside the head mask
   (for speed) and applied at full resolution;
4. brain mask (:func:`brain_mask`): head by Otsu, brain = what lies deeper than the scalp
   and skull in each slice and is brighter than CSF/bone, largest component, holes filled;
5. z-score inside the brain mask per sequence; zero outside (the network sees a skull-stripped
   brain, as BraTS data are).

The constants are part of the model contract (:data:`PREPROCESSING_VERSION`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from ai_engines.mr_glioma.atlas import PriorFit, intracranial_prior, is_skull_stripped
from ai_engines.mr_glioma.registration import mattes_mi_method
from ai_engines.volume import SeriesVolume, VolumeGeometry

PREPROCESSING_VERSION = "mr-glioma-pre-1.0"  # the network inputs; the intracranial prior only bounds lesions
GRID_MM = 1.0
REGISTRATION_GRID_MM = 2.0
N4_SHRINK = 4
N4_ITERATIONS = (20, 10)  # two fitting levels
REGISTRATION_MIN_HEAD_DICE = 0.80  # below: MR_REGISTRATION_FAILED
REGISTRATION_MAX_SHIFT_MM = 40.0
REGISTRATION_MAX_ROTATION_DEG = 20.0
SKIN_DEPTH_MM = 3.0  # skin: never brain
SCALP_SKULL_DEPTH_MM = 8.0  # brain seeds lie at least this deep below the head outline in-plane
BRAIN_EROSION_MM = 7.0  # cuts the scalp-brain bridges through a thin or partial-volumed skull
Z_CLIP = 5.0
BRAIN_PIECE_FRACTION = 0.1  # brain-mask components kept: at least this share of the largest


@dataclass(frozen=True)
class RegistrationResult:
    """How well one sequence lines up with the reference."""

    role: str
    metric: float  # final Mattes mutual information (negative: lower is better)
    head_dice: float
    shift_mm: float
    rotation_deg: float

    @property
    def ok(self) -> bool:
        return (
            self.head_dice >= REGISTRATION_MIN_HEAD_DICE
            and self.shift_mm <= REGISTRATION_MAX_SHIFT_MM
            and self.rotation_deg <= REGISTRATION_MAX_ROTATION_DEG
        )

    def note(self) -> str:
        return (
            f"registration {self.role} -> reference: Mattes MI {self.metric:.3f}, head Dice {self.head_dice:.3f}, "
            f"shift {self.shift_mm:.1f} mm, rotation {self.rotation_deg:.1f} deg"
        )


@dataclass(frozen=True)
class Prepared:
    """Sequences on the 1 mm working grid, z-scored inside the brain."""

    channels: dict[str, np.ndarray]  # role -> float32 [z, y, x] on the working grid
    brain: np.ndarray  # bool, working grid
    grid: sitk.Image  # the working grid (a float32 image of zeros; geometry only)
    registrations: tuple[RegistrationResult, ...]
    prior: PriorFit | None = None  # the intracranial prior's fit (None: not applied)


def series_to_image(volume: SeriesVolume) -> sitk.Image:
    """The volume as a SimpleITK image in LPS millimetres (slices stacked along their order)."""
    geometry = volume.geometry
    image = sitk.GetImageFromArray(np.asarray(volume.voxels, dtype=np.float32))
    row = np.asarray(geometry.row_direction, float)
    col = np.asarray(geometry.column_direction, float)
    origins = np.asarray(geometry.slice_origins, float)
    if len(origins) >= 2:
        step = origins[-1] - origins[0]
        normal = step / np.linalg.norm(step)
        spacing_z = float(np.linalg.norm(step)) / (len(origins) - 1)
    else:
        normal = np.cross(row, col)
        spacing_z = float(geometry.slice_thickness or 1.0)
    image.SetOrigin(tuple(origins[0]))
    image.SetSpacing((geometry.pixel_spacing[1], geometry.pixel_spacing[0], spacing_z))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return image


def working_grid(reference: sitk.Image, spacing: float = GRID_MM) -> sitk.Image:
    """A ``spacing`` mm isotropic grid in the reference's orientation covering its extent."""
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(reference.GetSize(), reference.GetSpacing(), strict=True)]
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    # Keep the field of view: the first voxel centre moves by half the spacing difference.
    shift = sum(direction[:, a] * (spacing - s) / 2 for a, s in enumerate(reference.GetSpacing()))
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((spacing,) * 3)
    grid.SetDirection(reference.GetDirection())
    grid.SetOrigin(tuple(np.asarray(reference.GetOrigin()) + shift))
    return grid


def resample(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform | None = None,
             interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """``image`` on ``grid`` (through ``transform`` from grid to image space), 0 outside."""
    return sitk.Resample(image, grid, transform or sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)


def head_mask_array(values: np.ndarray) -> np.ndarray:
    """The head (everything brighter than background air), holes filled, per-slice fill too."""
    positive = values[values > 0]
    if positive.size < 100:
        return np.zeros(values.shape, bool)
    threshold = _otsu(positive) * 0.5
    head = values > threshold
    head = ndimage.binary_opening(head, iterations=1)
    labels, n = ndimage.label(head)
    if n == 0:
        return head
    sizes = ndimage.sum_labels(head, labels, index=np.arange(1, n + 1))
    head = labels == (int(np.argmax(sizes)) + 1)
    head = ndimage.binary_closing(head, iterations=2)
    head = np.stack([ndimage.binary_fill_holes(s) for s in head])
    return ndimage.binary_fill_holes(head)


def head_outline(values: np.ndarray) -> np.ndarray:
    """The head against air, the same whatever the contrast (for the registration check):
    above a tenth of the 99th percentile, largest component, holes filled per slice."""
    head = values > 0.1 * float(np.percentile(values, 99))
    labels, n = ndimage.label(head)
    if n == 0:
        return head
    sizes = ndimage.sum_labels(head, labels, index=np.arange(1, n + 1))
    head = labels == (int(np.argmax(sizes)) + 1)
    return np.stack([ndimage.binary_fill_holes(s) for s in head])


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu threshold of a 1-D sample (clipped to its 99.5th percentile)."""
    high = float(np.percentile(values, 99.5))
    hist, edges = np.histogram(np.clip(values, 0, high), bins=bins, range=(0, high if high > 0 else 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def brain_mask(values: np.ndarray, spacing_mm: float = GRID_MM, keep_pieces: bool = False) -> np.ndarray:
    """An approximate brain mask on an isotropic grid (no trained skull stripper).

    Head by Otsu; tissue = head voxels brighter than half the head's Otsu threshold (dark
    skull and CSF out) and more than :data:`SKIN_DEPTH_MM` below the head outline in their
    slice; seeds = tissue deeper than :data:`SCALP_SKULL_DEPTH_MM` in-plane, eroded by
    :data:`BRAIN_EROSION_MM` so that scalp and temporal muscle come loose from the brain;
    the largest 3-D component (``keep_pieces``: and any at least
    :data:`BRAIN_PIECE_FRACTION` of it, for slabs where skull-base pieces are separate),
    dilated back inside the tissue; holes (ventricles, necrosis) filled.
    """
    head = head_mask_array(values)
    if not head.any():
        return head
    depth = np.stack([ndimage.distance_transform_edt(s) for s in head]) * spacing_mm
    threshold = _otsu(values[head])
    tissue = head & (depth > SKIN_DEPTH_MM) & (values > 0.5 * threshold)
    radius = max(1, int(round(BRAIN_EROSION_MM / spacing_mm)))
    ball = ndimage.generate_binary_structure(3, 1)
    core = ndimage.binary_erosion(tissue & (depth > SCALP_SKULL_DEPTH_MM), structure=ball, iterations=radius)
    labels, n = ndimage.label(core)
    if n == 0:
        return core
    sizes = ndimage.sum_labels(core, labels, index=np.arange(1, n + 1))
    if keep_pieces:
        keep = np.nonzero(sizes >= BRAIN_PIECE_FRACTION * sizes.max())[0] + 1
    else:
        keep = np.array([int(np.argmax(sizes)) + 1])
    brain = np.isin(labels, keep)
    brain = ndimage.binary_dilation(brain, structure=ball, iterations=radius + 1, mask=tissue)
    brain = np.stack([ndimage.binary_fill_holes(s) for s in brain])
    return ndimage.binary_fill_holes(brain)


def n4_correct(image: sitk.Image, mask: np.ndarray) -> sitk.Image:
    """N4 bias-field correction fitted on a shrunk copy, applied at full resolution."""
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(image)
    shrink = [N4_SHRINK] * 3
    small = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(mask_image, shrink)
    if sitk.GetArrayViewFromImage(small_mask).sum() < 50:
        return image
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    n4.Execute(sitk.Cast(small, sitk.sitkFloat32) + 1e-3, small_mask)
    # The field is smooth: evaluated on the shrunk grid and interpolated, not at every voxel.
    log_bias = resample(n4.GetLogBiasFieldAsImage(small), image)
    return image / sitk.Exp(log_bias)


def zscore(values: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """z-score inside the brain (robust: mean/SD of the 1st-99th percentile), 0 outside."""
    inside = values[brain]
    if inside.size < 10:
        return np.zeros_like(values, dtype=np.float32)
    low, high = np.percentile(inside, [1, 99])
    core = inside[(inside >= low) & (inside <= high)]
    z = (values - core.mean()) / max(float(core.std()), 1e-6)
    return np.where(brain, np.clip(z, -Z_CLIP, Z_CLIP), 0.0).astype(np.float32)


def register(fixed: sitk.Image, moving: sitk.Image, role: str, seed: int = 1) -> tuple[sitk.Transform, RegistrationResult]:
    """Rigid registration of ``moving`` onto ``fixed`` (Mattes MI, 2 levels); quality measured."""
    method = mattes_mi_method(sampling=0.05, learning_rate=2.0, min_step=1e-3, iterations=100,
                              shrink_factors=(2, 1), smoothing_mm=(2.0, 0.0), seed=seed)
    # One session, one scanner frame: identity is the right start; rotate about the head centre.
    initial = sitk.Euler3DTransform()
    size = np.asarray(fixed.GetSize()) - 1
    initial.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint(tuple(size / 2)))
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32))
    metric = float(method.GetMetricValue())
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetNthTransform(0)) \
        if transform.GetName() == "CompositeTransform" else sitk.Euler3DTransform(transform)
    rotation = float(np.degrees(np.max(np.abs(euler.GetParameters()[:3]))))
    shift = float(np.linalg.norm(euler.GetTranslation()))
    fixed_head = head_outline(sitk.GetArrayFromImage(fixed))
    moved = sitk.GetArrayFromImage(resample(moving, fixed, transform))
    moved_head = head_outline(moved)
    both = fixed_head.sum() + moved_head.sum()
    dice = float(2 * (fixed_head & moved_head).sum() / both) if both else 0.0
    return transform, RegistrationResult(role, metric, dice, shift, rotation)


def prepare(sequences: dict[str, SeriesVolume], reference_role: str, correct_bias: bool = True,
            use_prior: bool = True) -> Prepared:
    """Register, resample, bias-correct, skull-strip and z-score the sequences.

    Parameters
    ----------
    sequences
        Role -> series (roles of :data:`ai_engines.mr_glioma.sequences.ROLES`).
    reference_role
        The role whose series defines the working grid.
    correct_bias
        N4 on (False only for training on synthetic data without bias, to save time).
    use_prior
        Keep the brain mask inside the atlas's intracranial prior
        (:mod:`ai_engines.mr_glioma.atlas`); a skull-stripped series is its own brain mask.
    """
    reference = series_to_image(sequences[reference_role])
    grid = working_grid(reference)
    # Registration runs on 2 mm copies: as accurate for a rigid head fit, far cheaper.
    fixed = resample(reference, working_grid(reference, REGISTRATION_GRID_MM))
    on_grid: dict[str, np.ndarray] = {}
    results = []
    for role, volume in sequences.items():
        image = series_to_image(volume)
        transform = None
        if role != reference_role:
            moving = resample(image, working_grid(image, REGISTRATION_GRID_MM))
            transform, result = register(fixed, moving, role)
            results.append(result)
        on_grid[role] = sitk.GetArrayFromImage(resample(image, grid, transform))
    head = head_mask_array(on_grid[reference_role])
    if correct_bias:
        for role, values in on_grid.items():
            image = sitk.GetImageFromArray(values)
            image.CopyInformation(grid)
            on_grid[role] = sitk.GetArrayFromImage(n4_correct(image, head))
    # Pieces too: dark sulci and the fissure (FLAIR, T1) split the eroded brain into lobes.
    brain = brain_mask(on_grid[reference_role], keep_pieces=True)
    # Intensities are normalised on the intensity-based mask, as in training; the prior only
    # bounds where lesions may be (and is what Prepared.brain holds).
    normalised_on = brain
    prior: PriorFit | None = None
    if use_prior:
        if is_skull_stripped(on_grid[reference_role], head, GRID_MM ** 3 / 1000.0):
            # Stripped already: the outer cortex is not skin, keep all of it.
            brain = normalised_on = np.stack([ndimage.binary_fill_holes(s) for s in head])
            prior = PriorFit("skull-stripped", (1.0, 1.0, 1.0), 1.0, True)
        else:
            inside, prior = intracranial_prior(fixed, head_outline, grid)
            if prior.ok:
                brain = brain & inside
    channels = {role: zscore(values, normalised_on) for role, values in on_grid.items()}
    return Prepared(channels, brain, grid, tuple(results), prior)


def geometry_of(image: sitk.Image) -> VolumeGeometry:
    """The :class:`VolumeGeometry` of a SimpleITK image (for synthetic and NRRD inputs)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    n = image.GetSize()[2]
    origins = np.asarray(image.GetOrigin())[None, :] + np.arange(n)[:, None] * direction[:, 2] * spacing[2]
    return VolumeGeometry(
        slice_origins=origins, row_direction=tuple(direction[:, 0]), column_direction=tuple(direction[:, 1]),
        pixel_spacing=(spacing[1], spacing[0]), slice_thickness=spacing[2],
    )
