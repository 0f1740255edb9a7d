"""Synthetic chest CTs with known lungs and tumours, deterministic by seed.

Built to resemble a clinical thorax CT closely enough that a model trained on them also
finds a solid tumour on real images: body with skin, fat and muscle; ribs, sternum and spine
(bone HU); mediastinum with heart, aorta and fat; two lungs (about -850 HU with low-frequency
texture and a gravity-dependent gradient) with fissures; branching, tapering vessels and
airways with walls; trachea and main bronchi; liver, spleen and a stomach gas bubble under the
diaphragm; the CT table; solid tumours (5-60 mm, lobulated and spiculated, 0-60 HU, placed
juxtapleural, central or peripheral, clipped by the chest wall and mediastinum as real
tumours are); correlated noise (10-25 HU) and a slight blur.  Pixel spacing 0.6-0.9 mm,
slice thickness 1-5 mm.

Coordinates are patient LPS in millimetres: +x patient left, +y posterior, +z superior, with
the carina at z = 0.  Slice 0 is the most inferior; column index grows with +x, row with +y,
as in a standard head-first supine axial series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage

from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, VolumeGeometry

ROWS = COLUMNS = 512


@dataclass(frozen=True)
class TumourSpec:
    centre_mm: tuple[float, float, float]  # LPS
    diameter_mm: float
    kind: str  # "juxtapleural", "central" or "peripheral"
    side: str  # "L" or "R" (patient side)


@dataclass(frozen=True)
class SyntheticCase:
    """One synthetic CT with its ground truth, voxels ``[slice, row, col]`` in HU."""

    seed: int
    hu: np.ndarray  # float32
    tumour: np.ndarray  # bool
    lung_left: np.ndarray  # bool, patient left (+x)
    lung_right: np.ndarray  # bool
    pixel_spacing: float
    slice_thickness: float
    origin: tuple[float, float, float]  # LPS of voxel [0, 0, 0]
    tumours: tuple[TumourSpec, ...] = field(default_factory=tuple)
    kernel: str = "B31f"  # the reconstruction kernel the acquisition imitates
    confounders: tuple[str, ...] = field(default_factory=tuple)  # clinical anatomy painted (anatomy_kind="clinical")

    def to_volume(self, series_uid: str | None = None) -> SeriesVolume:
        """The case as the node would hand it to an engine."""
        n = self.hu.shape[0]
        origins = np.array(
            [[self.origin[0], self.origin[1], self.origin[2] + k * self.slice_thickness] for k in range(n)]
        )
        uid = series_uid or f"2.25.{self.seed + 1000}"
        geometry = VolumeGeometry(
            slice_origins=origins, row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0),
            pixel_spacing=(self.pixel_spacing, self.pixel_spacing), slice_thickness=self.slice_thickness,
        )
        slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.2", f"{uid}.{k + 1}") for k in range(n))
        facts = AcquisitionFacts(modality="CT", manufacturer="Synthetic", kernel=self.kernel, kvp=120.0)
        return SeriesVolume(uid, f"{uid}.0", self.hu, geometry, slices, facts)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], coarse: int, sigma_hu: float) -> np.ndarray:
    """Low-frequency texture: coarse Gaussian noise upsampled bilinearly in-plane."""
    small = rng.normal(0, 1, (shape[0], coarse, coarse)).astype(np.float32)
    small = ndimage.gaussian_filter(small, (0.7, 1.0, 1.0))
    small *= sigma_hu / max(float(small.std()), 1e-6)
    up = F.interpolate(torch.from_numpy(small)[None], size=shape[1:], mode="bilinear", align_corners=False)
    return up[0].numpy()


def _paint_tube(
    hu: np.ndarray, coords: tuple[np.ndarray, np.ndarray, np.ndarray], p0: np.ndarray, p1: np.ndarray,
    r0: float, r1: float, value: float, wall: float = 0.0, wall_value: float = 0.0,
    within: np.ndarray | None = None, label: np.ndarray | None = None,
) -> None:
    """Paint a tapering tube (optionally with a wall) between two points, in its bounding box.

    Edges are anti-aliased over one pixel so small vessels are not staircase blobs.
    """
    z, y, x = coords
    pad = max(r0, r1) + wall + 2.0
    lo, hi = np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad
    ks = np.nonzero((z >= lo[2]) & (z <= hi[2]))[0]
    js = np.nonzero((y >= lo[1]) & (y <= hi[1]))[0]
    is_ = np.nonzero((x >= lo[0]) & (x <= hi[0]))[0]
    if not len(ks) or not len(js) or not len(is_):
        return
    sl = (slice(ks[0], ks[-1] + 1), slice(js[0], js[-1] + 1), slice(is_[0], is_[-1] + 1))
    zz, yy, xx = z[sl[0], None, None], y[None, sl[1], None], x[None, None, sl[2]]
    d = p1 - p0
    length2 = float(d @ d) or 1e-6
    t = ((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (zz - p0[2]) * d[2]) / length2
    t = np.clip(t, 0, 1)
    dist = np.sqrt((xx - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (zz - p0[2] - t * d[2]) ** 2)
    radius = r0 + (r1 - r0) * t
    pixel = float(abs(x[1] - x[0]))
    region = hu[sl]
    keep = within[sl] if within is not None else True
    if wall > 0:
        w = np.clip((radius + wall - dist) / pixel + 0.5, 0, 1) * keep
        region += w * (wall_value - region)
    core = np.clip((radius - dist) / pixel + 0.5, 0, 1) * keep
    region += core * (value - region)
    if label is not None:
        label[sl] |= core > 0.5


def _branching_tree(
    rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, radius: float,
    min_radius: float, inside: Callable[[np.ndarray], bool], max_segments: int = 160,
) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Segments (p0, p1, r0, r1) of a tree that bifurcates, tapers and stays inside the lung."""
    segments: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    stack = [(start, direction / np.linalg.norm(direction), radius)]
    while stack and len(segments) < max_segments:
        p0, u, r = stack.pop()
        length = rng.uniform(3.0, 5.0) * r + 6.0
        r_end = r * rng.uniform(0.8, 0.9)
        p1 = p0 + u * length
        # Near the hilum a branch may still run through the mediastinum; elsewhere a branch
        # that would leave the lung bends back in (a few tries), else it ends short.
        for _ in range(3):
            if inside(p1) or np.linalg.norm(p1 - start) < 45:
                break
            u = u + rng.normal(0, 0.6, 3)
            u /= np.linalg.norm(u)
            p1 = p0 + u * length
        else:
            for frac in (0.6, 0.35):
                if inside(p0 + u * length * frac):
                    segments.append((p0, p0 + u * length * frac, r, r_end))
                    break
            continue
        segments.append((p0, p1, r, r_end))
        if r_end < min_radius:
            continue
        for sign in (-1.0, 1.0):
            axis = np.cross(u, rng.normal(size=3))
            axis /= np.linalg.norm(axis) + 1e-9
            angle = np.radians(rng.uniform(20, 40)) * sign
            v = u * np.cos(angle) + np.cross(axis, u) * np.sin(angle) + axis * (axis @ u) * (1 - np.cos(angle))
            stack.append((p1, v / np.linalg.norm(v), r_end * rng.uniform(0.75, 0.9)))
    return segments


class _Anatomy:
    """The shape parameters of one synthetic patient and its region functions."""

    def __init__(self, rng: np.random.Generator, fov_half: float) -> None:
        f = rng.uniform(0.88, 1.08)
        self.a = min(165 * f * rng.uniform(0.95, 1.05), 0.95 * fov_half)  # body half-width
        self.b = min(112 * f * rng.uniform(0.92, 1.08), 0.8 * self.a)  # body half-depth
        self.cx, self.cy = rng.uniform(-8, 8), rng.uniform(-10, 6)
        self.fat = rng.uniform(6, 28)
        self.muscle = rng.uniform(8, 16)
        self.rib = 11.0
        self.wall = self.fat + self.muscle + self.rib
        self.ca, self.cb = self.a - self.wall, self.b - self.wall  # thoracic cavity semi-axes
        self.apex = rng.uniform(80, 100) * f
        self.dome_r = -rng.uniform(140, 165) * f  # right hemidiaphragm higher (liver)
        self.dome_l = self.dome_r - rng.uniform(5, 20)
        self.spine_y = self.cy + self.b - self.fat - self.muscle - 38
        self.trachea_y = self.spine_y - 48
        self.trachea_r = rng.uniform(8, 10) * f
        self.heart = np.array([self.cx + 22 * f, self.cy - 22 * f, -95 * f])
        self.heart_axes = np.array([62, 52, 58]) * f * rng.uniform(0.9, 1.1)
        self.aorta_x = self.cx + 22 * f
        self.fissure = (rng.uniform(0.5, 0.9), rng.uniform(-40, -10))
        self.real_aorta: tuple[float, float, float, float] | None = None  # x, y, radius, arch z
        self.dome_curvature = 55.0  # mm the diaphragm falls from dome to costophrenic recess

    def cavity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return ((x - self.cx) / self.ca) ** 2 + ((y - self.cy) / self.cb) ** 2 <= 1

    def mediastinum_half_width(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        # Narrow anteriorly (anterior junction) and above the heart; wide at the hilum and spine.
        above = np.clip((z + 20) / 60, 0, 1)
        width = 30 - 12 * np.clip((self.cy - y) / self.cb, 0, 1) - 6 * above
        hilum = 18 * np.exp(-(((z + 25) / 35) ** 2) - ((y - self.trachea_y) / 30) ** 2)
        return width + hilum

    def diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z of the diaphragm surface: domes, deeper laterally and posteriorly (recesses)."""
        rx = (np.abs(x - self.cx) - 0.45 * self.ca) / self.ca
        ry = (y - self.cy) / self.cb
        dome = np.where(x < self.cx, self.dome_r, self.dome_l)
        return dome - self.dome_curvature * rx**2 - 30 * np.clip(ry, 0, None) ** 2 * 1.5

    def lung_region(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Both lung cavities (parenchyma plus the vessels and tumours inside)."""
        cap = np.clip((self.apex - z) / 70, 0, 1)  # cross-section shrinks towards the apices
        scale = np.sqrt(1 - (1 - cap) ** 2)
        lx = self.cx + np.sign(x - self.cx) * 0.5 * self.ca
        inner = ((x - lx) / (0.52 * self.ca * scale + 1e-3)) ** 2 + ((y - self.cy - 10) / (self.cb * (0.35 + 0.65 * scale) + 1e-3)) ** 2 <= 1
        lungs = self.cavity(x, y) & inner & (z < self.apex) & (z > self.diaphragm(x, y))
        lungs &= np.abs(x - self.cx) > self.mediastinum_half_width(y, z)
        h = ((x - self.heart[0]) / self.heart_axes[0]) ** 2 + ((y - self.heart[1]) / self.heart_axes[1]) ** 2 + ((z - self.heart[2]) / self.heart_axes[2]) ** 2
        lungs &= h > 1
        spine = (np.abs(x - self.cx) < 34) & (y > self.spine_y - 26)
        lungs &= ~spine
        if self.real_aorta is not None:  # the descending aorta dents the left lung
            ax, ay, radius, top = self.real_aorta
            lungs &= ~((((x - ax) ** 2 + (y - ay) ** 2) <= (radius + 3) ** 2) & (z < top + radius))
        return lungs

    def add_real_aorta(self, rng: np.random.Generator) -> None:
        """The descending aorta as real chest CT shows it (lung1): in the left paravertebral
        gutter, level with the vertebral body about 34 mm left of its centre, denting the left
        lung from the diaphragm up to the arch (instead of inside the mediastinum)."""
        self.real_aorta = (self.cx + rng.uniform(30, 38), self.spine_y + rng.uniform(-6, 2),
                           rng.uniform(11, 15), rng.uniform(15, 35))


def _tumour_shape(
    rng: np.random.Generator, coords: tuple[np.ndarray, np.ndarray, np.ndarray], centre: np.ndarray,
    diameter: float,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """A lobulated (and often spiculated) solid body in a box around ``centre``."""
    z, y, x = coords
    radius = diameter / 2
    spicules = int(rng.integers(0, 9)) if diameter > 12 else 0
    reach = radius * (1.9 if spicules else 1.4) + 2
    ks = np.nonzero(np.abs(z - centre[2]) <= reach)[0]
    js = np.nonzero(np.abs(y - centre[1]) <= reach)[0]
    is_ = np.nonzero(np.abs(x - centre[0]) <= reach)[0]
    if not len(ks) or not len(js) or not len(is_):
        return None
    sl = (slice(ks[0], ks[-1] + 1), slice(js[0], js[-1] + 1), slice(is_[0], is_[-1] + 1))
    dz = z[sl[0], None, None] - centre[2]
    dy = y[None, sl[1], None] - centre[1]
    dx = x[None, None, sl[2]] - centre[0]
    dist = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    ux, uy, uz = dx / dist, dy / dist, dz / dist
    # Lobulation: a few random smooth functions of direction.
    modulation = np.zeros_like(dist)
    for _ in range(5):
        w = rng.normal(size=3) * rng.uniform(1.0, 3.0)
        modulation += rng.uniform(0.04, 0.12) * np.cos(w[0] * ux + w[1] * uy + w[2] * uz + rng.uniform(0, 6.3))
    stretch = rng.uniform(0.8, 1.2, size=3)
    dist_s = np.sqrt((dx * stretch[0]) ** 2 + (dy * stretch[1]) ** 2 + (dz * stretch[2]) ** 2)
    body = dist_s <= radius * (1 + modulation)
    for _ in range(spicules):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        length = radius * rng.uniform(1.3, 1.8)
        width = rng.uniform(0.8, 1.4)
        along = np.clip(dx * u[0] + dy * u[1] + dz * u[2], 0, length)
        off = np.sqrt((dx - along * u[0]) ** 2 + (dy - along * u[1]) ** 2 + (dz - along * u[2]) ** 2)
        body |= off <= width * (1 - along / length) + 0.3
    return sl, body


ANATOMY_KINDS = ("demo", "real", "clinical")
CONFOUNDERS = (
    "azygos", "oesophagus", "pulmonary_arteries", "pulmonary_veins", "dependent_density",
    "atelectasis", "effusion", "emphysema",
)


class _ClinicalDraw:
    """What one clinical-anatomy case shows (anatomy_kind="clinical"), from its own generator.

    Each confounder stands for a real-CT look-alike of a tumour that the demo anatomy lacked
    (issue #12: on lung1 and a second real CT the demo-trained detector took the descending
    aorta, the aortic knob and mediastinal vessels for tumour).  The hilar vessels, azygos and
    oesophagus are always there (every chest has them); the pathological ones are drawn.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.heart_scale = rng.uniform(1.05, 1.25, size=3)
        self.dome_steepness = rng.uniform(1.0, 2.2)
        self.part_solid = 0.3
        self.dependent = rng.random() < 0.6
        self.atelectasis = int(rng.integers(0, 4)) if rng.random() < 0.45 else 0
        self.effusion = str(rng.choice(["none", "L", "R", "both"], p=[0.7, 0.1, 0.1, 0.1]))
        self.emphysema = rng.random() < 0.3
        self.oesophageal_air = rng.random() < 0.4
        self.sharpen = 0.0

    def acquisition(self, thickness: float) -> tuple[float, float, float, float, str]:
        """Blur in-plane and along z, noise grain and level, kernel name: soft, standard or
        sharp kernels, standard or low-dose noise; thick slices average more along z."""
        rng = self.rng
        kernel = str(rng.choice(["soft", "standard", "sharp"], p=[0.3, 0.35, 0.35]))
        sigma_z = 0.4 + (0.35 if thickness >= 3 else 0.0)
        low_dose = rng.random() < 0.35
        if kernel == "sharp":
            self.sharpen = rng.uniform(0.4, 1.0)
            sigma, grain, noise, name = rng.uniform(0.35, 0.6), 0.35, rng.uniform(25, 45), "B70f"
        elif kernel == "soft":
            sigma, grain, noise, name = rng.uniform(0.8, 1.3), 0.9, rng.uniform(6, 15), "B20f"
        else:
            sigma, grain, noise, name = rng.uniform(0.5, 0.9), 0.7, rng.uniform(10, 25), "B31f"
        if low_dose:
            noise *= rng.uniform(1.8, 3.0)
        return float(sigma), float(sigma_z), float(grain), float(noise), name


def _posterior_band(lungs: np.ndarray, depth_px: np.ndarray) -> np.ndarray:
    """Lung voxels within ``depth_px[k]`` rows of the lung's posterior (dependent) edge on slice k:
    a voxel whose neighbour that many rows posterior is no longer lung."""
    band = np.zeros_like(lungs)
    for k, depth in enumerate(depth_px):
        d = int(depth)
        if d <= 0:
            continue
        shifted = np.zeros_like(lungs[k])
        shifted[:-d] = lungs[k, d:]
        band[k] = lungs[k] & ~shifted
    return band


def _paint_confounders(
    hu: np.ndarray, coords: tuple[np.ndarray, np.ndarray, np.ndarray], lungs: np.ndarray,
    anatomy: _Anatomy, draw: _ClinicalDraw, blood: float, hila: dict[str, np.ndarray],
) -> tuple[str, ...]:
    """Paint the real-anatomy look-alikes of tumour; soft tissue that takes lung is taken out
    of ``lungs`` (in place).  Returns the names of what was painted."""
    rng = draw.rng
    z, y, x = coords
    zz, xx = z[:, None, None], x[None, None, :]
    taken = np.zeros(hu.shape, dtype=bool)
    painted = ["azygos", "oesophagus", "pulmonary_arteries", "pulmonary_veins"]
    vein = 40 + (blood - 40) * rng.uniform(0.4, 0.9)
    cx, sy, ty = anatomy.cx, anatomy.spine_y, anatomy.trachea_y
    # Azygos vein: right of the spine, arching forward over the right main bronchus to the SVC
    # (a 5-10 mm round density in the azygo-oesophageal recess, many slices long).
    az = np.array([cx - rng.uniform(14, 22), sy - rng.uniform(2, 10), 0.0])
    az_r = rng.uniform(3.5, 6.0)
    svc = np.array([cx - rng.uniform(22, 32), ty - rng.uniform(20, 32), 0.0])
    _paint_tube(hu, coords, az + [0, 0, -400], az + [0, 0, 5], az_r, az_r, vein, label=taken)
    _paint_tube(hu, coords, az + [0, 0, 5], svc + [0, 0, 12], az_r, az_r + 1, vein, label=taken)
    _paint_tube(hu, coords, svc + [0, 0, 120], svc + [0, 0, -60], 9, 10, vein, label=taken)
    # Oesophagus: collapsed muscular tube (sometimes with air) abutting the right lung behind
    # the left atrium.
    oe = np.array([cx + rng.uniform(-8, 6), sy - rng.uniform(18, 28), 0.0])
    oe_r = rng.uniform(6, 10)
    _paint_tube(hu, coords, oe + [0, 0, -400], oe + [0, 0, 300], oe_r, oe_r, rng.uniform(30, 45), label=taken)
    if draw.oesophageal_air:
        _paint_tube(hu, coords, oe + [0, 0, -400], oe + [0, 0, 300], oe_r * 0.3, oe_r * 0.3, -900)
    # Pulmonary arteries: trunk from the heart, right and left arteries to the hila (the left one
    # over the left main bronchus): round 15-25 mm densities at the hila on axial slices.
    top = anatomy.heart + [0, -0.3 * anatomy.heart_axes[1], 0.8 * anatomy.heart_axes[2]]
    bif = np.array([cx + rng.uniform(5, 15), ty - rng.uniform(10, 20), rng.uniform(-30, -15)])
    pa_r = rng.uniform(11, 15)
    _paint_tube(hu, coords, top, bif, pa_r, pa_r, blood, label=taken)
    _paint_tube(hu, coords, bif, hila["R"] + [rng.uniform(-4, 6), -8, rng.uniform(-2, 8)], pa_r * 0.75, pa_r * 0.6, blood, label=taken)
    _paint_tube(hu, coords, bif, hila["L"] + [0, -6, 18], pa_r * 0.75, pa_r * 0.65, blood, label=taken)
    _paint_tube(hu, coords, hila["L"] + [0, -6, 18], hila["L"] + [rng.uniform(0, 8), 10, -5], pa_r * 0.65, pa_r * 0.5, blood, label=taken)
    # Pulmonary veins: from below the hila into the left atrium (posterior heart).
    atrium = anatomy.heart + [0, 0.7 * anatomy.heart_axes[1], 0.4 * anatomy.heart_axes[2]]
    for side, sign in (("R", -1.0), ("L", 1.0)):
        for dz in (rng.uniform(-30, -20), rng.uniform(-60, -45)):
            start = hila[side] + [sign * rng.uniform(0, 10), rng.uniform(8, 20), dz]
            _paint_tube(hu, coords, start, atrium + [sign * 15, 0, dz * 0.3], rng.uniform(5, 8), rng.uniform(6, 9), vein, label=taken)
    lungs &= ~taken
    base = float(max(anatomy.dome_r, anatomy.dome_l))
    # Gravity-dependent density: a band along the posterior lung, denser towards the edge.
    if draw.dependent:
        depth = np.full(len(z), rng.uniform(6, 20) / abs(float(y[1] - y[0])))
        band = _posterior_band(lungs, depth)
        hu[band] = np.maximum(hu[band], rng.uniform(-650, -450) + rng.normal(0, 30, int(band.sum())))
        painted.append("dependent_density")
    # Plate-like (subsegmental) atelectasis: thin oblique soft-tissue plates in the lower lobes.
    for _ in range(draw.atelectasis):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        c = np.array([cx + sign * rng.uniform(0.35, 0.8) * anatomy.ca, anatomy.cy + rng.uniform(0, 0.6) * anatomy.cb,
                      base + rng.uniform(15, 70)])
        n = rng.normal(size=3) * [0.3, 0.3, 1.0]
        n /= np.linalg.norm(n)
        reach = rng.uniform(12, 30)
        ks = np.nonzero(np.abs(z - c[2]) <= reach)[0]
        js = np.nonzero(np.abs(y - c[1]) <= reach)[0]
        is_ = np.nonzero(np.abs(x - c[0]) <= reach)[0]
        if not (len(ks) and len(js) and len(is_)):
            continue
        sl = (slice(ks[0], ks[-1] + 1), slice(js[0], js[-1] + 1), slice(is_[0], is_[-1] + 1))
        dz, dy, dx = z[sl[0], None, None] - c[2], y[None, sl[1], None] - c[1], x[None, None, sl[2]] - c[0]
        plate = (np.abs(dx * n[0] + dy * n[1] + dz * n[2]) < rng.uniform(1.0, 2.5)) & (dx**2 + dy**2 + dz**2 < reach**2)
        plate &= lungs[sl]
        hu[sl][plate] = rng.uniform(-150, 20)
        if plate.any() and "atelectasis" not in painted:
            painted.append("atelectasis")
    # Small effusion: dependent fluid crescent, deepest at the bases; it compresses the lung.
    if draw.effusion != "none":
        deepest = rng.uniform(8, 25) / abs(float(y[1] - y[0]))
        depth = deepest * np.clip((base + 70 - z) / 70, 0, 1)
        fluid = _posterior_band(lungs, depth)
        if draw.effusion != "both":
            fluid &= (xx > cx) if draw.effusion == "L" else (xx <= cx)
        hu[fluid] = rng.uniform(0, 20) + rng.normal(0, 4, int(fluid.sum()))
        lungs &= ~fluid
        painted.append("effusion")
    # Emphysema: centrilobular lucencies and a few bullae, upper lungs.
    if draw.emphysema:
        field_ = _smooth_field(rng, hu.shape, 128, 1.0)
        upper = np.clip((zz - base - 60) / 80, 0, 1)
        holes = lungs & (field_ * (0.5 + upper) > rng.uniform(1.0, 1.6))
        hu[holes] = rng.uniform(-990, -960)
        for _ in range(int(rng.integers(0, 4))):
            c = np.array([cx + rng.choice([-1, 1]) * rng.uniform(0.3, 0.8) * anatomy.ca, anatomy.cy + rng.uniform(-0.6, 0.4) * anatomy.cb,
                          anatomy.apex - rng.uniform(10, 60)])
            bulla = np.zeros(hu.shape, dtype=bool)
            _paint_tube(np.zeros(hu.shape, np.float32), coords, c, c + 0.1, rng.uniform(5, 18), 5, 1.0, label=bulla)
            hu[bulla & lungs] = -1000
        painted.append("emphysema")
    return tuple(painted)


def synthetic_chest_ct(
    seed: int,
    *,
    n_slices: int | None = None,
    pixel_spacing: float | None = None,
    slice_thickness: float | None = None,
    n_tumours: int | None = None,
    diameter_mm: float | None = None,
    kind: str | None = None,
    focus_tumour: bool = False,
    slab_position: float | None = None,
    rows: int = ROWS,
    anatomy_kind: str = "demo",
) -> SyntheticCase:
    """Generate one synthetic chest CT.

    Parameters
    ----------
    seed
        Everything derives from it: the same seed gives the same case.
    n_slices
        Number of slices; ``None`` covers the lungs from apex to bases with a margin.
    pixel_spacing, slice_thickness
        Defaults drawn from 0.6-0.9 mm and 1-5 mm (slices are contiguous).
    n_tumours
        ``None`` draws 0 (15 %), 1 (70 %) or 2 (15 %).
    diameter_mm
        Force the diameter of every tumour (default log-uniform 5-60 mm).
    kind
        Force where every tumour lies: ``"juxtapleural"``, ``"central"`` (against the
        mediastinum) or ``"peripheral"`` (default: drawn 35/30/35 % per tumour).
    focus_tumour
        Centre the slab of ``n_slices`` on the first tumour (for training crops).
    slab_position
        Where a slab of ``n_slices`` lies between the lung bases (0) and the apices (1);
        default: centred on the lungs.
    anatomy_kind
        ``"demo"`` (the anatomy the demo weights were trained on; held-out seeds use it),
        ``"real"`` (demo plus the descending aorta in the left paravertebral gutter, as on
        lung1) or ``"clinical"`` (``"real"`` plus the look-alikes of tumour that real chest CT
        has: azygos vein and arch, oesophagus, pulmonary arteries and veins at the hila, a heart
        abutting both lungs, steeper diaphragm domes, gravity-dependent density, plate
        atelectasis, small effusions, emphysema, part-solid tumours, soft/standard/sharp
        kernels and low-dose noise; see :data:`CONFOUNDERS`).  The extra draws come from
        generators of their own (seed + 7e6, seed + 9e6).
    """
    if kind not in (None, "juxtapleural", "central", "peripheral"):
        raise ValueError(f"unknown tumour kind {kind!r}")
    if anatomy_kind not in ANATOMY_KINDS:
        raise ValueError(f"unknown anatomy kind {anatomy_kind!r}; expected one of {ANATOMY_KINDS}")
    rng = np.random.default_rng(seed)
    spacing = float(pixel_spacing if pixel_spacing is not None else rng.uniform(0.6, 0.9))
    thickness = float(slice_thickness if slice_thickness is not None else rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0]))
    fov_half = rows * spacing / 2
    anatomy = _Anatomy(rng, fov_half)
    if anatomy_kind in ("real", "clinical"):
        # Drawn from their own generator, so the demo anatomy of every seed stays as it was.
        anatomy.add_real_aorta(np.random.default_rng(seed + 7_000_000))
    clinical = _ClinicalDraw(np.random.default_rng(seed + 9_000_000)) if anatomy_kind == "clinical" else None
    if clinical is not None:
        anatomy.heart_axes = anatomy.heart_axes * clinical.heart_scale  # the heart abuts both lungs
        anatomy.dome_curvature *= clinical.dome_steepness  # round domes, cut obliquely by thick slices
    if n_tumours is None:
        n_tumours = int(rng.choice([0, 1, 2], p=[0.15, 0.7, 0.15]))

    # Tumour placement first (continuous space), so a slab can be centred on one.
    specs: list[TumourSpec] = []
    for _ in range(200):
        if len(specs) >= n_tumours:
            break
        d = float(diameter_mm if diameter_mm is not None else np.exp(rng.uniform(np.log(5), np.log(60))))
        side = str(rng.choice(["L", "R"]))
        sign = 1.0 if side == "L" else -1.0
        drawn = str(rng.choice(["juxtapleural", "central", "peripheral"], p=[0.35, 0.3, 0.35]))
        where = kind or drawn
        zc = rng.uniform(anatomy.dome_r + 30, anatomy.apex - 25)
        yc = anatomy.cy + rng.uniform(-0.6, 0.6) * anatomy.cb
        if where == "central":
            xs = anatomy.cx + sign * np.arange(10, anatomy.ca, 1.0)
        else:
            xs = anatomy.cx + sign * np.arange(anatomy.ca, 10, -1.0)
        in_lung = anatomy.lung_region(xs, np.full_like(xs, yc), np.full_like(xs, zc))
        if not in_lung.any():
            continue
        edge = float(xs[np.argmax(in_lung)])
        if where == "juxtapleural":
            xc = edge - sign * d * 0.3
        elif where == "central":
            xc = edge + sign * d * 0.3
        else:
            inner = xs[in_lung]
            xc = float(rng.choice(inner[len(inner) // 4 : max(len(inner) // 4 + 1, 3 * len(inner) // 4)]))
            if where == "peripheral" and abs(xc - edge) < d / 2 + 3:
                continue
        centre = np.array([xc, yc, zc])
        if not anatomy.lung_region(*centre[:, None]).item():
            continue
        if any(np.linalg.norm(centre - np.array(s.centre_mm)) < (d + s.diameter_mm) / 2 + 10 for s in specs):
            continue
        specs.append(TumourSpec((float(xc), float(yc), float(zc)), d, where, side))

    z_low = float(anatomy.diaphragm(np.array(anatomy.cx + anatomy.ca), np.array(anatomy.cy + anatomy.cb))) - 15
    z_high = anatomy.apex + 20
    if n_slices is None:
        n_slices = int(np.ceil((z_high - z_low) / thickness))
        z0 = z_low
    elif focus_tumour and specs:
        z0 = specs[0].centre_mm[2] - rng.uniform(0.3, 0.7) * n_slices * thickness
    elif slab_position is not None:
        z0 = z_low + float(slab_position) * max(z_high - z_low - n_slices * thickness, 0.0)
    else:
        mid = (anatomy.apex + anatomy.dome_r) / 2
        z0 = mid - n_slices * thickness / 2
    z = (z0 + np.arange(n_slices) * thickness).astype(np.float32)
    y = ((np.arange(rows) - (rows - 1) / 2) * spacing).astype(np.float32)
    x = y.copy()
    coords = (z, y, x)
    zz, yy, xx = z[:, None, None], y[None, :, None], x[None, None, :]
    shape = (n_slices, rows, rows)

    # --- Body, wall, bones (z-invariant cross-sections broadcast over slices) ---
    rb = np.sqrt(((xx - anatomy.cx) / anatomy.a) ** 2 + ((yy - anatomy.cy) / anatomy.b) ** 2)[0]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    table = (yy[0] > anatomy.cy + anatomy.b + 12) & (yy[0] < anatomy.cy + anatomy.b + 20) & (np.abs(xx[0]) < 0.9 * fov_half)
    hu[:, table] = 120.0
    body2d = rb <= 1
    hu[:, body2d] = -95.0  # subcutaneous fat
    inner_fat = np.sqrt(((xx - anatomy.cx) / (anatomy.a - anatomy.fat)) ** 2 + ((yy - anatomy.cy) / (anatomy.b - anatomy.fat)) ** 2)[0] <= 1
    hu[:, inner_fat] = 45.0  # muscle
    rib_ring = np.sqrt(((xx - anatomy.cx) / (anatomy.ca + anatomy.rib)) ** 2 + ((yy - anatomy.cy) / (anatomy.cb + anatomy.rib)) ** 2)[0] <= 1
    cavity2d = anatomy.cavity(xx, yy)[0]
    theta = np.arctan2(yy - anatomy.cy, xx - anatomy.cx)[0]
    # Ribs run obliquely: higher posteriorly than anteriorly.
    rib_phase = np.sin(2 * np.pi * (zz[:, :, :1] - 25 * np.sin(theta)[None]) / rng.uniform(24, 30))
    ring = rib_ring & ~cavity2d
    rib = (rib_phase > 0.35) & ring[None]
    hu[:, ring] = 40.0  # intercostal muscle
    hu[rib] = 450.0
    # Mediastinal fat then organs inside the cavity (lungs painted over later).
    hu[:, cavity2d] = -80.0
    spine = np.sqrt((xx - anatomy.cx) ** 2 + (yy - anatomy.spine_y) ** 2)[0]
    hu[:, spine <= 18] = 280.0
    hu[:, (spine <= 18) & (spine > 15)] = 700.0
    canal = np.sqrt((xx - anatomy.cx) ** 2 + (yy - anatomy.spine_y - 27) ** 2)[0] <= 8
    lamina = (np.abs(xx[0] - anatomy.cx) < 22) & (yy[0] > anatomy.spine_y + 15) & (yy[0] < anatomy.spine_y + 45)
    hu[:, lamina & ~canal] = 500.0
    hu[:, canal] = 20.0
    sternum = (np.abs(xx[0] - anatomy.cx) < 14) & (np.abs(yy[0] - (anatomy.cy - anatomy.b + anatomy.fat + anatomy.muscle + 6)) < 6)
    hu[((z > -140) & (z < 70))[:, None, None] & sternum[None]] = 350.0
    contrast = rng.random() < 0.5
    blood = rng.uniform(180, 300) if contrast else rng.uniform(35, 50)
    # Heart, aorta, oesophagus.
    h = ((xx - anatomy.heart[0]) / anatomy.heart_axes[0]) ** 2 + ((yy - anatomy.heart[1]) / anatomy.heart_axes[1]) ** 2 + ((zz - anatomy.heart[2]) / anatomy.heart_axes[2]) ** 2
    hu[h <= 1] = 45.0
    hu[h <= 0.7] = blood
    aorta_r = rng.uniform(11, 15)
    desc = np.array([anatomy.aorta_x, anatomy.spine_y - 12, 0])
    _paint_tube(hu, coords, desc + [0, 0, -400], desc + [0, 0, 25], aorta_r, aorta_r, blood, 2, 45)
    asc = np.array([anatomy.cx + 5, anatomy.trachea_y - 35, 25])
    _paint_tube(hu, coords, asc + [0, 0, -85], asc, aorta_r + 2, aorta_r + 2, blood, 2, 45)
    _paint_tube(hu, coords, asc, desc + [0, 0, 25], aorta_r + 1, aorta_r, blood, 2, 45)
    if anatomy.real_aorta is not None:
        ax, ay, radius, top = anatomy.real_aorta
        real_desc = np.array([ax, ay, top])
        _paint_tube(hu, coords, real_desc + [0, 0, -400], real_desc, radius, radius, blood, 2, 45)
        _paint_tube(hu, coords, asc, real_desc, radius + 1, radius, blood, 2, 45)  # the arch and its knob
    _paint_tube(hu, coords, np.array([anatomy.cx + 6, anatomy.spine_y - 25, -300]),
                np.array([anatomy.cx + 2, anatomy.spine_y - 25, 300]), 7, 7, 40)
    # Below the diaphragm: liver on the right, spleen and stomach (with gas) on the left.
    below = zz < anatomy.diaphragm(xx, yy) - 3
    abdomen = below & anatomy.cavity(xx, yy)
    hu[abdomen] = 50.0
    liver = abdomen & (xx < anatomy.cx + 25)
    hu[liver] = 60.0 if not contrast else 110.0
    gas = ((xx - anatomy.cx - 0.45 * anatomy.ca) / 35) ** 2 + ((yy - anatomy.cy + 0.3 * anatomy.cb) / 25) ** 2 + ((zz - anatomy.dome_l + 25) / 18) ** 2 <= 1
    if rng.random() < 0.7:
        hu[gas & abdomen] = -1000.0

    # --- Lungs ---
    lungs = anatomy.lung_region(xx, yy, zz)
    left = lungs & (xx > anatomy.cx)
    right = lungs & ~left
    parenchyma = rng.uniform(-880, -830) + _smooth_field(rng, shape, 48, rng.uniform(12, 25))
    gradient = 45 * np.clip((yy - anatomy.cy + anatomy.cb) / (2 * anatomy.cb), 0, 1)  # dependent lung denser
    hu[lungs] = (parenchyma + gradient)[lungs]
    # Fissures: thin oblique planes of slightly denser tissue.
    slope, offset = anatomy.fissure
    fissure = lungs & (np.abs((zz - offset) + slope * (yy - anatomy.cy) - 0.15 * np.abs(xx - anatomy.cx)) < 0.5)
    hu[fissure] = -650.0

    # --- Airways: trachea, main bronchi, bronchial trees with walls ---
    airway_wall = 30.0
    tr = np.array([anatomy.cx, anatomy.trachea_y, 0.0])
    _paint_tube(hu, coords, tr + [0, 0, 300], tr, anatomy.trachea_r, anatomy.trachea_r, -1000, 2.0, airway_wall)
    hila = {"R": tr + [-42, 8, -22], "L": tr + [50, 12, -42]}
    _paint_tube(hu, coords, tr, hila["R"], 7.5, 6.0, -1000, 1.6, airway_wall)
    _paint_tube(hu, coords, tr, hila["L"], 6.5, 5.5, -1000, 1.6, airway_wall)

    def inside(p: np.ndarray) -> bool:
        return bool(anatomy.lung_region(*np.asarray(p, dtype=np.float64)[:, None]).item())

    for side, sign in (("R", -1.0), ("L", 1.0)):
        hilum = hila[side]
        for target in ([sign, 0.2, 1.2], [sign, 0.6, -1.0], [sign, -0.8, -0.6], [sign, 0.0, 0.2]):
            seg = _branching_tree(rng, hilum, np.array(target, float), 4.5, 1.0, inside, 40)
            for p0, p1, r0, r1 in seg:
                _paint_tube(hu, coords, p0, p1, r0 * 0.8, r1 * 0.8, -1000, 0.4 + 0.25 * r0, airway_wall, within=lungs | (np.abs(xx - anatomy.cx) < 80))
    # Pulmonary arteries (beside the bronchi) and veins (from lower hila).
    for side, sign in (("R", -1.0), ("L", 1.0)):
        for start, count in ((hila[side] + [0, -10, 4], 8), (hila[side] + [-sign * 5, 15, -25], 6)):
            for _ in range(count):
                direction = np.array([sign * rng.uniform(0.3, 1.0), rng.uniform(-1.5, 1), rng.uniform(-1.5, 1.5)])
                seg = _branching_tree(rng, start, direction, rng.uniform(4.5, 6.5), 0.7, inside, 70)
                for p0, p1, r0, r1 in seg:
                    _paint_tube(hu, coords, p0, p1, r0, r1, blood if r0 > 3 else rng.uniform(20, 60) + (blood - 40) * 0.5)

    painted: tuple[str, ...] = ()
    if clinical is not None:
        painted = _paint_confounders(hu, coords, lungs, anatomy, clinical, blood, hila)
        left = lungs & (xx > anatomy.cx)
        right = lungs & ~left

    # --- Tumours (clipped to the lung cavity: they abut wall and mediastinum) ---
    tumour = np.zeros(shape, dtype=bool)
    for spec in specs:
        shape_box = _tumour_shape(rng, coords, np.array(spec.centre_mm), spec.diameter_mm)
        if shape_box is None:
            continue
        sl, body = shape_box
        body &= lungs[sl]
        if not body.any():
            continue
        texture = rng.uniform(0, 60) + rng.normal(0, 8, body.shape).astype(np.float32)
        if spec.diameter_mm > 35 and rng.random() < 0.5:
            core = ndimage.binary_erosion(body, iterations=max(2, int(spec.diameter_mm / 8 / spacing)))
            texture = np.where(core, texture - rng.uniform(15, 35), texture)
        if clinical is not None and clinical.rng.random() < clinical.part_solid:
            # Part-solid: a solid core in a ground-glass rim (both are GTV).
            core = ndimage.binary_erosion(body, iterations=max(1, int(spec.diameter_mm * clinical.rng.uniform(0.12, 0.3) / spacing)))
            texture = np.where(core, texture, clinical.rng.uniform(-650, -350) + rng.normal(0, 25, body.shape).astype(np.float32))
        region = hu[sl]
        region[body] = texture[body]
        tumour[sl] |= body

    # --- Acquisition: blur (PSF, partial volume along z) and correlated noise ---
    sigma_xy = rng.uniform(0.5, 0.9)
    sigma_z, noise_grain, noise_hu, kernel = 0.4, 0.7, None, "B31f"
    if clinical is not None:
        sigma_xy, sigma_z, noise_grain, noise_hu, kernel = clinical.acquisition(thickness)
    hu = ndimage.gaussian_filter(hu, (sigma_z, sigma_xy, sigma_xy), mode="nearest")
    if clinical is not None and clinical.sharpen > 0:
        # Sharp (lung/bone) kernel: edge overshoot, as an unsharp mask.
        hu += clinical.sharpen * (hu - ndimage.gaussian_filter(hu, (0, 1.5, 1.5), mode="nearest"))
    noise = rng.normal(0, 1, shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, (0, noise_grain, noise_grain))
    noise *= (noise_hu if noise_hu is not None else rng.uniform(10, 25)) / max(float(noise.std()), 1e-6)
    body3d = np.broadcast_to(body2d | table, shape)
    hu += np.where(body3d, noise, noise * 0.3)
    hu = np.clip(hu, -1024, 3071)

    origin = (float(x[0]), float(y[0]), float(z[0]))
    specs_in = tuple(s for s in specs if z[0] - 5 <= s.centre_mm[2] <= z[-1] + 5)
    return SyntheticCase(
        seed=seed, hu=hu.astype(np.float32), tumour=tumour, lung_left=left, lung_right=right,
        pixel_spacing=spacing, slice_thickness=thickness, origin=origin, tumours=specs_in,
        kernel=kernel, confounders=painted,
    )
