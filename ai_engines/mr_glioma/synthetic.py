"""Synthetic brain MR studies with gliomas, for training and testing only (never at run time).

Anatomy is built on a 1 mm grid (LPS, axial, slices from inferior to superior): a head whose
outline wobbles; skin, scalp fat, skull with fatty diploe, subarachnoid CSF; a cortical
grey-matter ribbon folded by sulci (thin CSF lines along the iso-surfaces of a smooth random
field); white matter; basal ganglia and thalami; lateral and third ventricles with enhancing
choroid plexus; the interhemispheric fissure with the falx and the superior sagittal sinus;
cortical vessels that enhance on T1c and are flow voids on T2; below the brain the skull base
and face (muscle, fat, air sinuses, orbits with fat).

Tumours (``kind``): ``"hgg"`` an enhancing rim (2-6 mm) around a necrotic core with oedema
spreading 3-25 mm mostly into white matter; ``"solid"`` a small (6-20 mm) solidly enhancing
lesion near the cortex, little oedema (as in the real development case brain2); ``"lgg"`` a
non-enhancing T2/FLAIR-bright core with a thin oedema margin; ``"none"``.

Label convention (BraTS with the enhancing label 4 renumbered 3 so classes are contiguous):
0 background, 1 necrosis / non-enhancing tumour core, 2 oedema, 3 enhancing tumour.

Relative signal per tissue and sequence (jittered +-12 % per case): T1 WM > GM > CSF, fat
bright; T1c as T1 plus enhancing rim (its excess over white matter scaled by 0.35-1 per case:
real enhancement can be faint), vessels, choroid plexus, dura and sinus bright; T2 CSF
and oedema bright; FLAIR CSF dark, oedema bright.  Acquisition: slice thickness 1-6.5 mm
(slice profile as a box average), in-plane 0.5-1 mm, multiplicative bias field, Rician noise,
vendor-like series descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference

SHAPE = (168, 216, 176)  # z, y, x at 1 mm
ROLES = ("T1", "T1c", "T2", "FLAIR")
KINDS = ("hgg", "solid", "lgg", "none")
KIND_WEIGHTS = (0.4, 0.3, 0.18, 0.12)  # solid: the real brain2 kind, hardest on T1c alone

# Tissue classes of the anatomy map.
AIR, SKIN, FAT, BONE, MARROW, CSF, GM, WM, DEEP_GM, VESSEL, PLEXUS, DURA, MUSCLE, SINUS_BLOOD = range(14)
TUMOUR_NECROSIS, TUMOUR_OEDEMA, TUMOUR_ENHANCING, TUMOUR_NONENH = 20, 21, 22, 23

# Signal (T1, T1c, T2, FLAIR) per tissue class.
SIGNAL = {
    AIR: (0.0, 0.0, 0.0, 0.0),
    SKIN: (0.55, 0.6, 0.5, 0.5),
    FAT: (1.0, 1.0, 0.75, 0.65),
    BONE: (0.05, 0.05, 0.04, 0.04),
    MARROW: (0.75, 0.78, 0.5, 0.45),
    CSF: (0.15, 0.15, 1.0, 0.07),
    GM: (0.45, 0.47, 0.62, 0.55),
    WM: (0.66, 0.67, 0.42, 0.42),
    DEEP_GM: (0.5, 0.52, 0.52, 0.5),
    VESSEL: (0.4, 1.0, 0.08, 0.1),
    PLEXUS: (0.45, 0.95, 0.7, 0.45),
    DURA: (0.3, 0.85, 0.3, 0.35),
    MUSCLE: (0.4, 0.42, 0.35, 0.35),
    SINUS_BLOOD: (0.35, 0.98, 0.1, 0.1),
    TUMOUR_NECROSIS: (0.2, 0.22, 0.9, 0.45),
    TUMOUR_OEDEMA: (0.42, 0.43, 0.85, 0.85),
    TUMOUR_ENHANCING: (0.45, 1.05, 0.7, 0.7),
    TUMOUR_NONENH: (0.35, 0.36, 0.8, 0.78),
}

DESCRIPTIONS = {
    "T1": ("AX T1 PRE", "t1_se_tra", "T1W_SE", "T1 AX", "t1_mprage_sag_p2_iso", "Ax T1 FLAIR"),
    "T1c": ("AX T1 POST GD", "t1_mprage_tra_KM", "T1W_3D_TFE+C", "T1 +C AX", "Ax T1 BRAVO C+", "t1_se_tra_post"),
    "T2": ("t2_tse_tra", "AX T2 FSE", "T2W_TSE", "T2 AX PROPELLER", "t2_blade_tra"),
    "FLAIR": ("FLAIR AX", "t2_tirm_tra_dark-fluid", "T2W_FLAIR", "Ax T2 FLAIR", "3D FLAIR CUBE"),
}
TIMING = {  # (TR, TE, TI) ms
    "T1": (500.0, 12.0, None), "T1c": (2000.0, 2.5, 900.0), "T2": (4500.0, 95.0, None), "FLAIR": (9000.0, 90.0, 2500.0),
}


@dataclass(frozen=True)
class SyntheticBrain:
    """One synthetic brain on the 1 mm truth grid."""

    images: dict[str, np.ndarray]  # role -> float32 [z, y, x], noise-free
    labels: np.ndarray  # uint8, 0/1/2/3 as in the module docstring
    kind: str
    seed: int
    first_slice: int = 0  # of the full grid, for slabs

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position of voxel [0, 0, 0] (the full grid is centred on the head)."""
        z, y, x = SHAPE
        return (-(x - 1) / 2, -(y - 1) / 2, -(z - 1) / 2 - 20.0 + self.first_slice)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: int, sigma: float) -> np.ndarray:
    """A smooth random field in [-1, 1]-ish, built at 1/``scale`` resolution and zoomed."""
    small = tuple(max(2, s // scale + 2) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(small), sigma)
    field /= field.std() + 1e-9
    zoomed = ndimage.zoom(field, scale, order=1)
    return zoomed[: shape[0], : shape[1], : shape[2]].astype(np.float32)


def synthetic_brain(seed: int, kind: str | None = None, z_range: tuple[int, int] | None = None) -> SyntheticBrain:
    """Anatomy, tumour and noise-free images of one case.

    ``z_range`` (slice indices of the full grid) makes a slab only, with the tumour centred in
    it: four times cheaper, for training.
    """
    rng = np.random.default_rng(seed)
    kind = kind or str(rng.choice(KINDS, p=KIND_WEIGHTS))
    nz, ny, nx = SHAPE
    z0, z1 = z_range or (0, nz)
    shape = (z1 - z0, ny, nx)
    z, y, x = np.meshgrid(
        np.arange(z0, z1, dtype=np.float32) - (nz - 1) / 2 - 20.0,
        np.arange(ny, dtype=np.float32) - (ny - 1) / 2,
        np.arange(nx, dtype=np.float32) - (nx - 1) / 2,
        indexing="ij", sparse=True,
    )
    ax, ay, az = rng.uniform(66, 76), rng.uniform(84, 96), rng.uniform(72, 84)
    wobble = 4.0 * _smooth_noise(rng, shape, 8, 1.0)
    # Head: an ellipsoid above z=0 continued below by a wider, longer face/neck.
    lower = z < 0
    r_head = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / np.where(lower, az * 1.5, az)) ** 2)
    depth = (1.0 - r_head) * 80.0 + wobble  # mm below the head surface (approximate)
    skin_t, fat_t, skull_t, csf_t = rng.uniform(1.5, 2.5), rng.uniform(2.5, 5), rng.uniform(5, 8), rng.uniform(1.5, 3)
    tissue = np.zeros(shape, np.uint8)
    tissue[depth > 0] = SKIN
    tissue[depth > skin_t] = FAT
    bone_start = skin_t + fat_t
    tissue[depth > bone_start] = BONE
    tissue[(depth > bone_start + skull_t * 0.3) & (depth < bone_start + skull_t * 0.7)] = MARROW
    brain_start = bone_start + skull_t + csf_t
    tissue[depth > bone_start + skull_t] = CSF
    # The brain sits above the skull base; anteriorly the base is higher (orbits, sinuses).
    base = -28.0 + 18.0 * np.clip(-y / ay, 0, 1) + 3.0 * wobble
    brain_depth = depth - brain_start
    brain = (brain_depth > 0) & (z > base)
    cerebellum = (brain_depth > 0) & (z > base - 25) & (y > 25) & (np.abs(x) < ax * 0.6)
    brain |= cerebellum
    # Below the brain: muscle, fat, air sinuses and orbits inside the skull-base region.
    face = (depth > bone_start) & ~brain & (z < base + 2)
    face_noise = _smooth_noise(rng, shape, 4, 1.0)
    tissue[face] = MUSCLE
    tissue[face & (face_noise > 0.8)] = FAT
    tissue[face & (face_noise < -0.9)] = AIR
    for side in (-1, 1):
        orbit = ((x - side * 32) / 16) ** 2 + ((y + ay * 0.72) / 18) ** 2 + ((z + 10) / 15) ** 2 < 1
        tissue[orbit & face] = FAT
    # Skull base: bone and CSF between the brain and the face, as the real base of the skull.
    csf_shell = ndimage.binary_dilation(brain, iterations=2)
    bone_shell = ndimage.binary_dilation(csf_shell, iterations=int(rng.integers(4, 8)))
    tissue[bone_shell & (tissue != AIR) & ~csf_shell] = BONE
    tissue[csf_shell & (tissue != AIR)] = CSF
    tissue[brain] = WM
    # Cortex: a grey ribbon at the surface and around sulci (iso-lines of a smooth field).
    gm_t = rng.uniform(2.5, 4.0)
    sulcal = _smooth_noise(rng, shape, 3, 1.2)
    near_surface = brain & (brain_depth < 16)
    tissue[brain & (brain_depth < gm_t)] = GM
    tissue[near_surface & (np.abs(sulcal) < 0.35)] = GM
    tissue[near_surface & (np.abs(sulcal) < 0.09)] = CSF
    # Interhemispheric fissure with the falx (dura) in it, above the ventricles.
    midline = rng.normal(0, 1.5)
    fissure = brain & (np.abs(x - midline) < 2.0) & (z > 8 + 0.1 * y)
    tissue[fissure] = CSF
    tissue[fissure & (np.abs(x - midline) < 0.6)] = DURA
    sinus = ((x - midline) / 4) ** 2 + ((depth - bone_start - skull_t - 2) / 3) ** 2 < 1
    tissue[sinus & (z > 10) & (depth > bone_start)] = SINUS_BLOOD
    # Deep grey matter and ventricles.
    for side in (-1, 1):
        tissue[brain & (((x - midline - side * 22) / 7) ** 2 + ((y + 4) / 14) ** 2 + ((z - 6) / 10) ** 2 < 1)] = DEEP_GM
        tissue[brain & (((x - midline - side * 9) / 8) ** 2 + ((y - 12) / 11) ** 2 + ((z - 8) / 9) ** 2 < 1)] = DEEP_GM
    vent_w = rng.uniform(3, 7)
    for side in (-1, 1):
        curve = 12 + 10 * np.clip(y / 40, -1, 1) ** 2
        vent = (((x - midline - side * (vent_w + 3)) / vent_w) ** 2 + (y / 34) ** 2 + ((z - curve - 6) / 7) ** 2) < 1
        tissue[brain & vent] = CSF
        plexus = ((x - midline - side * (vent_w + 3)) / 3) ** 2 + ((y - 22) / 6) ** 2 + ((z - curve - 4) / 3) ** 2 < 1
        tissue[brain & vent & plexus] = PLEXUS
    third = (np.abs(x - midline) < 2.0) & (np.abs(y - 5) < 14) & (np.abs(z - 6) < 9)
    tissue[brain & third] = CSF
    # Cortical vessels: short tubes along sulci (thin iso-lines of a second field).
    vessel_field = _smooth_noise(rng, shape, 6, 1.0)
    vessels = near_surface & (np.abs(vessel_field) < 0.04) & (np.abs(sulcal) < 0.15)
    tissue[vessels] = VESSEL

    labels = np.zeros(shape, np.uint8)
    if kind != "none":
        _add_tumour(rng, kind, tissue, labels, brain, brain_depth, (z, y, x), centred=z_range is not None)

    jitter = rng.uniform(0.88, 1.12, size=(len(SIGNAL), 4))
    images = {}
    lut = np.zeros((256, 4), np.float32)
    for row, (cls, values) in enumerate(SIGNAL.items()):
        lut[cls] = np.asarray(values) * jitter[row]
    # Real enhancement is often weak (brain2: the lesion's median T1c signal is near the
    # brain's, only its rim bright): scale the enhancing tumour's T1c excess over white matter
    # by 0.35-1.  A separate generator, so anatomy and tumour shape of a seed stay as they were.
    contrast = np.random.default_rng(seed + 7_000_000)
    white = lut[WM, 1]
    lut[TUMOUR_ENHANCING, 1] = white + (lut[TUMOUR_ENHANCING, 1] - white) * contrast.uniform(0.35, 1.0)
    # Tumour signal varies inside the lesion too (heterogeneous enhancement, cysts).
    texture = 1.0 + 0.12 * _smooth_noise(rng, shape, 2, 1.0)
    tumour_tissue = np.where(labels == 3, TUMOUR_ENHANCING, np.where(labels == 2, TUMOUR_OEDEMA, np.where(
        labels == 1, TUMOUR_NONENH if kind == "lgg" else TUMOUR_NECROSIS, 0)))
    tissue = np.where(labels > 0, tumour_tissue, tissue).astype(np.uint8)
    for channel, role in enumerate(ROLES):
        image = lut[tissue, channel]
        image = np.where(labels > 0, image * texture, image)
        images[role] = ndimage.gaussian_filter(image, 0.6).astype(np.float32)
    return SyntheticBrain(images, labels, kind, seed, z0)


def _add_tumour(
    rng: np.random.Generator, kind: str, tissue: np.ndarray, labels: np.ndarray, brain: np.ndarray,
    brain_depth: np.ndarray, coords: tuple[np.ndarray, np.ndarray, np.ndarray], centred: bool = False,
) -> None:
    """Draw one tumour into ``labels`` (1 core, 2 oedema, 3 enhancing)."""
    z, y, x = coords
    if kind == "solid":
        radius = rng.uniform(3, 10)
        min_depth, max_depth = radius * 0.5, radius + 12
    elif kind == "lgg":
        radius = rng.uniform(8, 28)
        min_depth, max_depth = radius * 0.6, 200.0
    else:
        radius = rng.uniform(7, 28)
        min_depth, max_depth = radius * 0.7, 200.0
    candidates = np.argwhere(brain[::4, ::4, ::4] & (brain_depth[::4, ::4, ::4] > min_depth)
                             & (brain_depth[::4, ::4, ::4] < max_depth)) * 4
    if centred and len(candidates):
        n = labels.shape[0]
        middle = candidates[(candidates[:, 0] >= n * 0.3) & (candidates[:, 0] <= n * 0.7)]
        candidates = middle if len(middle) else candidates
    if not len(candidates):
        candidates = np.argwhere(brain[::4, ::4, ::4]) * 4
    k, j, i = candidates[rng.integers(len(candidates))]
    cz, cy, cx = float(z[k, 0, 0]), float(y[0, j, 0]), float(x[0, 0, i])
    stretch = rng.uniform(0.75, 1.3, size=3)
    # Work in a box around the tumour: oedema reaches at most ~radius + 30 mm.
    reach = int(radius + 32)
    box = tuple(slice(max(0, c - reach), c + reach + 1) for c in (k, j, i))
    zb, yb, xb = z[box[0]], y[:, box[1]], x[:, :, box[2]]
    dist = np.sqrt(((zb - cz) / stretch[0]) ** 2 + ((yb - cy) / stretch[1]) ** 2 + ((xb - cx) / stretch[2]) ** 2)
    shape = tuple(min(s.stop, n) - s.start for s, n in zip(box, labels.shape, strict=True))
    lumps = _smooth_noise(rng, shape, 4, 1.0)
    rel = dist / radius + 0.18 * lumps  # < 1: tumour core
    sub = labels[box]
    inside_brain = brain[box]
    wm = np.isin(tissue[box], (WM, DEEP_GM))
    if kind == "lgg":
        margin = rng.uniform(0.0, 4.0)
        oedema = (rel < 1 + margin / radius) & inside_brain
        sub[oedema] = 2
        sub[(rel < 1) & inside_brain] = 1
        return
    oedema_mm = rng.uniform(1, 6) if kind == "solid" else rng.uniform(3, 25)
    finger = _smooth_noise(rng, shape, 3, 1.0)
    oedema = (rel < 1 + (oedema_mm / radius) * (1 + 0.5 * finger)) & inside_brain & (wm | (rel < 1.15))
    sub[oedema] = 2
    core = (rel < 1) & inside_brain
    sub[core] = 3
    rim = rng.uniform(2, 6)
    if kind == "hgg" and radius > 9 and rng.random() < 0.85:
        sub[(rel < 1 - rim / radius) & inside_brain] = 1


def acquire(
    brain: SyntheticBrain, role: str, *, slice_thickness: float, pixel_spacing: float, seed: int,
    series_uid: str, noise: float = 0.03, bias: float = 0.2, shift_mm: tuple[float, float, float] = (0, 0, 0),
    rotation_deg: float = 0.0, description: str | None = None, contrast_agent: str | None = None,
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.9000.1",
) -> SeriesVolume:
    """One sequence as the scanner would write it: axial slices of ``slice_thickness`` (box
    profile), ``pixel_spacing`` in-plane, 220 mm field of view, bias field and Rician noise.

    ``shift_mm``/``rotation_deg`` (about z) move the head before this acquisition, to test
    registration.
    """
    rng = np.random.default_rng(seed)
    truth = sitk.GetImageFromArray(brain.images[role])
    truth.SetOrigin(brain.origin)
    fov = 220.0
    n_rows = int(round(fov / pixel_spacing))
    head_z = (-80.0, 86.0)
    n_slices = int(np.floor((head_z[1] - head_z[0]) / slice_thickness))
    # Box slice profile: average the truth over the slice thickness before sampling.
    if slice_thickness > 1.5:
        blurred = ndimage.uniform_filter1d(brain.images[role], size=int(round(slice_thickness)), axis=0)
        truth = sitk.GetImageFromArray(blurred.astype(np.float32))
        truth.SetOrigin(brain.origin)
    grid = sitk.Image([n_rows, n_rows, n_slices], sitk.sitkFloat32)
    grid.SetSpacing((pixel_spacing, pixel_spacing, slice_thickness))
    grid.SetOrigin((-fov / 2 + pixel_spacing / 2, -fov / 2 + pixel_spacing / 2, head_z[0] + slice_thickness / 2))
    transform = sitk.Euler3DTransform()
    transform.SetRotation(0.0, 0.0, float(np.radians(rotation_deg)))
    transform.SetTranslation(tuple(float(s) for s in shift_mm))
    values = sitk.GetArrayFromImage(sitk.Resample(truth, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    values = values * bias_field(values.shape, rng, bias)
    values = rician(values, noise, rng)
    scaled = np.clip(values * 1000.0, 0, 4095).astype(np.int16)
    origins = np.asarray(grid.GetOrigin())[None, :] + np.arange(n_slices)[:, None] * np.array([0, 0, slice_thickness])
    tr, te, ti = TIMING[role]
    description = description or str(rng.choice(DESCRIPTIONS[role]))
    facts = AcquisitionFacts(
        modality="MR", series_description=description, repetition_time_ms=tr, echo_time_ms=te,
        inversion_time_ms=ti, contrast_agent=contrast_agent if contrast_agent is not None else ("GADOBUTROL" if role == "T1c" else None),
        image_type=("ORIGINAL", "PRIMARY", "M", "ND"),
    )
    from ai_engines.volume import VolumeGeometry

    geometry = VolumeGeometry(origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (pixel_spacing, pixel_spacing), slice_thickness)
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.4", f"{series_uid}.{k + 1}") for k in range(n_slices))
    return SeriesVolume(series_uid, frame_of_reference_uid, scaled, geometry, slices, facts)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field, 1 +- ``strength`` across the head."""
    coords = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    a = rng.normal(0, 1, size=3)
    b = rng.normal(0, 1, size=3)
    field = sum(a[d] * coords[d] + b[d] * coords[d] ** 2 for d in range(3))
    field = field / (np.abs(field).max() + 1e-6)
    return (1.0 + strength * field).astype(np.float32)


def rician(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal with complex Gaussian noise of SD ``sigma``."""
    real = values + rng.normal(0, sigma, values.shape).astype(np.float32)
    imag = rng.normal(0, sigma, values.shape).astype(np.float32)
    return np.sqrt(real**2 + imag**2)


def labels_on(brain: SyntheticBrain, volume: SeriesVolume) -> np.ndarray:
    """The truth labels resampled (nearest) onto a series' grid."""
    from ai_engines.mr_glioma.preprocess import series_to_image

    truth = sitk.GetImageFromArray(brain.labels)
    truth.SetOrigin(brain.origin)
    grid = series_to_image(volume)
    return sitk.GetArrayFromImage(sitk.Resample(truth, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
