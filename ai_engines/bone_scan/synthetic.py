"""Synthetic whole-body bone scans (Tc-99m diphosphonate, anterior + posterior), for training
and evaluating the bone-scan engine without patient data.  Training-only: the engine never
imports this module.

Each scan is drawn in millimetres on the camera's matrix: a skeleton of geometric primitives
(skull, spine, ribs, sternum, clavicles, scapulae, pelvis, long bones, hands, feet) with the
relative uptake each view sees (the spine, scapulae and sacrum brighter posteriorly, sternum and
clavicles anteriorly), soft tissue, kidneys and bladder, then normal variants and confounders
(injection-site extravasation, degenerative joint uptake, a rib fracture line, a photopenic hip
prosthesis), blurred by the camera resolution and sampled with Poisson noise at 0.8-3 M counts
per view.  Positive scans carry 1-20 metastases, mostly in the axial skeleton.

The views are stored as a gamma camera stores them: the posterior as acquired (seen from
behind, so mirrored relative to the anterior) unless ``posterior_mirrored`` asks for a camera
that already flipped it; as one multi-frame series (a frame per view and energy window) or as
two single-frame series; 1024x256 or 512x128, optionally transposed (256x1024).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ai_engines.engine import NM_IMAGE_STORAGE
from ai_engines.volume import (
    AcquisitionFacts,
    SeriesVolume,
    SliceReference,
    StudyInput,
    VolumeGeometry,
)

MATRICES = ((1024, 256), (512, 128))
FIELD_LENGTH_MM = 2314.0  # 1024 x 2.26 mm, a usual whole-body field
CONFOUNDERS = ("bladder", "injection", "degenerative", "kidneys", "fracture", "prosthesis")
_UID_ROOT = "2.25."


@dataclass(frozen=True)
class Lesion:
    """A planted hot spot: centre (row, col) in canonical anterior pixels, FWHM mm, amplitude."""

    row: float
    col: float
    fwhm_mm: float
    amplitude: float
    site: str


@dataclass
class SyntheticScan:
    """One synthetic study and its truth.

    ``anterior``/``posterior`` are the noisy photopeak counts in the canonical orientation
    (head up, patient's right on the viewer's left: the anterior convention, posterior
    mirrored to match); ``study`` holds them as a camera would store them.
    """

    seed: int
    study: StudyInput
    anterior: np.ndarray
    posterior: np.ndarray
    metastases: tuple[Lesion, ...]
    confounders: dict[str, bool]
    matrix: tuple[int, int]
    layout: str
    transposed: bool
    posterior_mirrored: bool
    energy_windows: int
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> int:
        """1 when any metastasis was planted."""
        return int(bool(self.metastases))


class _Canvas:
    """Two activity images (anterior, posterior), canonical orientation, drawn in mm."""

    def __init__(self, rows: int, cols: int, spacing: float) -> None:
        self.rows, self.cols, self.spacing = rows, cols, spacing
        self.ant = np.zeros((rows, cols), np.float32)
        self.post = np.zeros((rows, cols), np.float32)

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], radius: float,
                ant: float, post: float) -> None:
        """A thick segment between (x, y) points in mm (x: column, y: row), uniform uptake."""
        s = self.spacing
        (x0, y0), (x1, y1) = p0, p1
        r = radius / s
        x0, y0, x1, y1 = x0 / s, y0 / s, x1 / s, y1 / s
        c0, c1 = int(max(min(x0, x1) - r - 1, 0)), int(min(max(x0, x1) + r + 2, self.cols))
        r0, r1 = int(max(min(y0, y1) - r - 1, 0)), int(min(max(y0, y1) + r + 2, self.rows))
        if c0 >= c1 or r0 >= r1:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / length2, 0, 1) if length2 > 0 else 0.0
        inside = (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= r * r
        self.ant[r0:r1, c0:c1] += inside * ant
        self.post[r0:r1, c0:c1] += inside * post

    def polyline(self, points: list[tuple[float, float]], radius: float, ant: float, post: float) -> None:
        for a, b in zip(points[:-1], points[1:], strict=True):
            self.capsule(a, b, radius, ant, post)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float], ant: float, post: float,
                ring: float = 0.0) -> None:
        """A filled ellipse (or a ring of ``ring`` mm thickness) centred at (x, y) mm."""
        s = self.spacing
        cx, cy = centre[0] / s, centre[1] / s
        ax, ay = axes[0] / s, axes[1] / s
        c0, c1 = int(max(cx - ax - 1, 0)), int(min(cx + ax + 2, self.cols))
        r0, r1 = int(max(cy - ay - 1, 0)), int(min(cy + ay + 2, self.rows))
        if c0 >= c1 or r0 >= r1:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        d = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
        inside = d <= 1.0
        if ring > 0:
            inner = (((xx - cx) / max(ax - ring / s, 0.5)) ** 2 + ((yy - cy) / max(ay - ring / s, 0.5)) ** 2) <= 1.0
            inside &= ~inner
        self.ant[r0:r1, c0:c1] += inside * ant
        self.post[r0:r1, c0:c1] += inside * post

    def spot(self, centre: tuple[float, float], fwhm: float, ant: float, post: float) -> None:
        """A Gaussian hot spot (peak values ``ant``/``post``) at (x, y) mm."""
        s = self.spacing
        sigma = fwhm / 2.3548 / s
        cx, cy = centre[0] / s, centre[1] / s
        reach = 3 * sigma + 1
        c0, c1 = int(max(cx - reach, 0)), int(min(cx + reach + 1, self.cols))
        r0, r1 = int(max(cy - reach, 0)), int(min(cy + reach + 1, self.rows))
        if c0 >= c1 or r0 >= r1:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
        self.ant[r0:r1, c0:c1] += g * ant
        self.post[r0:r1, c0:c1] += g * post


@dataclass
class _Body:
    """Landmarks of one body, in mm on the canonical field (x: column, y: row)."""

    height: float
    top: float
    centre_x: float
    width: float  # lateral scale factor (1 = 1750 mm adult)

    def y(self, fraction: float) -> float:
        return self.top + fraction * self.height

    def x(self, offset_mm: float) -> float:
        """``offset_mm`` lateral of the midline at unit scale; + is the viewer's right."""
        return self.centre_x + offset_mm * self.width


def _skeleton(c: _Canvas, b: _Body, rng: np.random.Generator) -> dict[str, list[tuple[float, float]]]:
    """Draw the normal skeleton and soft tissue; return candidate metastasis sites per region."""
    sites: dict[str, list[tuple[float, float]]] = {k: [] for k in ("spine", "ribs", "pelvis", "skull", "sternum", "proximal")}
    bone = rng.uniform(0.85, 1.15)  # patient-to-patient bone avidity
    # Soft tissue (about 5 % of bone): head, neck, trunk, arms, legs.
    tissue = rng.uniform(0.04, 0.08)
    c.ellipse((b.x(0), b.y(0.065)), (85 * b.width, 0.065 * b.height), tissue, tissue)
    c.capsule((b.x(0), b.y(0.12)), (b.x(0), b.y(0.17)), 55 * b.width, tissue, tissue)
    c.ellipse((b.x(0), b.y(0.36)), (175 * b.width, 0.2 * b.height), tissue, tissue)
    for side in (-1, 1):
        c.capsule((b.x(side * 200), b.y(0.19)), (b.x(side * 235), b.y(0.55)), 45 * b.width, tissue, tissue)
        c.capsule((b.x(side * 95), b.y(0.5)), (b.x(side * 80), b.y(0.97)), 75 * b.width, tissue, tissue)
    # Skull: calvarium ring, face and mandible.
    skull_c = (b.x(0), b.y(0.065))
    skull_axes = (72 * b.width, 0.062 * b.height)
    c.ellipse(skull_c, skull_axes, 0.9 * bone, 0.9 * bone, ring=12)
    c.ellipse(skull_c, skull_axes, 0.25 * bone, 0.25 * bone)
    c.ellipse((b.x(0), b.y(0.105)), (40 * b.width, 0.02 * b.height), 0.5 * bone, 0.2 * bone)
    c.polyline([(b.x(-45), b.y(0.11)), (b.x(0), b.y(0.13)), (b.x(45), b.y(0.11))], 7, 0.7 * bone, 0.3 * bone)
    for _ in range(6):
        angle = rng.uniform(0, 2 * np.pi)
        sites["skull"].append((skull_c[0] + 0.85 * skull_axes[0] * np.cos(angle), skull_c[1] + 0.85 * skull_axes[1] * np.sin(angle)))
    # Spine: cervical to lumbar, wider going down; vertebrae as short capsules.
    levels = np.linspace(0.125, 0.46, 24)
    for k, (a, z) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
        radius = (11 + 12 * k / 23) * b.width
        c.capsule((b.x(0), b.y(a) + 2), (b.x(0), b.y(z) - 2), radius, 0.55 * bone, 1.35 * bone)
        if k >= 7:
            sites["spine"].append((b.x(rng.uniform(-8, 8)), b.y((a + z) / 2)))
    # Sacrum and pelvis.
    c.polyline([(b.x(0), b.y(0.46)), (b.x(0), b.y(0.53))], 28 * b.width, 0.5 * bone, 1.25 * bone)
    sites["pelvis"].append((b.x(0), b.y(0.49)))
    for side in (-1, 1):
        wing = (b.x(side * 95), b.y(0.47))
        c.ellipse(wing, (60 * b.width, 0.032 * b.height), 0.45 * bone, 0.55 * bone)
        c.ellipse(wing, (60 * b.width, 0.032 * b.height), 0.35 * bone, 0.45 * bone, ring=10)
        c.spot((b.x(side * 40), b.y(0.475)), 22, 0.5 * bone, 1.0 * bone)  # sacro-iliac joint
        c.polyline([(b.x(side * 60), b.y(0.495)), (b.x(side * 95), b.y(0.52)), (b.x(side * 70), b.y(0.545)),
                    (b.x(side * 15), b.y(0.535))], 10, 0.8 * bone, 0.45 * bone)
        for _ in range(3):
            sites["pelvis"].append((b.x(side * rng.uniform(50, 130)), b.y(rng.uniform(0.45, 0.53))))
    # Ribs: 12 pairs; the posterior arcs are brighter posteriorly, the anterior arcs anteriorly.
    for i in range(12):
        y0 = b.y(0.19 + i * 0.0135)
        reach = min(1.0, 0.55 + 0.09 * i) * b.width
        drop = 0.009 * b.height
        back = [(b.x(0) + side * 18 * b.width, y0) for side in (-1, 1)]
        for side, start in zip((-1, 1), back, strict=True):
            lateral = (b.x(side * 150 * reach), y0 + 1.8 * drop)
            mid = (b.x(side * 90 * reach), y0 - 0.3 * drop)
            front = (b.x(side * 55 * reach), y0 + 5.5 * drop)
            near = (b.x(side * 125 * reach), y0 + 4.5 * drop)
            c.polyline([start, mid, lateral], 5.5, 0.3 * bone, 0.7 * bone)
            c.polyline([lateral, near, front], 5.5, 0.45 * bone, 0.25 * bone)
            sites["ribs"] += [mid, lateral, near]
    # Sternum and clavicles (anterior), scapulae (posterior).
    c.capsule((b.x(0), b.y(0.2)), (b.x(0), b.y(0.3)), 13 * b.width, 0.9 * bone, 0.2 * bone)
    sites["sternum"] += [(b.x(0), b.y(0.22)), (b.x(0), b.y(0.27))]
    for side in (-1, 1):
        c.capsule((b.x(side * 20), b.y(0.185)), (b.x(side * 165), b.y(0.172)), 8, 0.75 * bone, 0.3 * bone)
        tri = [(b.x(side * 75), b.y(0.19)), (b.x(side * 160), b.y(0.185)), (b.x(side * 105), b.y(0.285)), (b.x(side * 75), b.y(0.19))]
        c.polyline(tri, 7, 0.25 * bone, 0.75 * bone)
        c.ellipse((b.x(side * 115), b.y(0.22)), (35 * b.width, 0.03 * b.height), 0.1 * bone, 0.3 * bone)
        # Arms: humerus, forearm (radius + ulna), hand.
        shoulder, elbow = (b.x(side * 185), b.y(0.18)), (b.x(side * 215), b.y(0.36))
        wrist, hand = (b.x(side * 235), b.y(0.48)), (b.x(side * 240), b.y(0.53))
        c.capsule(shoulder, elbow, 11 * b.width, 0.5 * bone, 0.5 * bone)
        c.spot(shoulder, 30, 0.5 * bone, 0.5 * bone)
        c.capsule((elbow[0] - 5, elbow[1]), (wrist[0] - 6, wrist[1]), 6, 0.4 * bone, 0.4 * bone)
        c.capsule((elbow[0] + 5, elbow[1]), (wrist[0] + 6, wrist[1]), 6, 0.4 * bone, 0.4 * bone)
        c.ellipse(hand, (22, 40), 0.35 * bone, 0.35 * bone)
        sites["proximal"] += [(shoulder[0] + side * 5, shoulder[1] + 40), (shoulder[0] + side * 12, shoulder[1] + 110)]
        # Legs: femur, knee, tibia + fibula, foot.
        hip, knee = (b.x(side * 95), b.y(0.505)), (b.x(side * 82), b.y(0.715))
        ankle, toe = (b.x(side * 75), b.y(0.955)), (b.x(side * 80), b.y(0.995))
        c.capsule(hip, knee, 14 * b.width, 0.55 * bone, 0.55 * bone)
        c.spot((b.x(side * 120), b.y(0.515)), 30, 0.5 * bone, 0.6 * bone)  # greater trochanter
        c.spot(knee, 45, 0.6 * bone, 0.5 * bone)
        c.capsule((knee[0], knee[1] + 20), ankle, 12 * b.width, 0.5 * bone, 0.5 * bone)
        c.capsule((knee[0] + side * 22, knee[1] + 30), (ankle[0] + side * 20, ankle[1]), 5, 0.25 * bone, 0.25 * bone)
        c.capsule(ankle, toe, 18, 0.6 * bone, 0.6 * bone)
        sites["proximal"] += [(hip[0], hip[1] + 50), (hip[0] + side * 5, hip[1] + 130)]
    return sites


def synthetic_scan(
    seed: int,
    metastatic: bool | None = None,
    matrix: tuple[int, int] | None = None,
    layout: str | None = None,
    transposed: bool = False,
    posterior_mirrored: bool | None = None,
    energy_windows: int | None = None,
    confounders: dict[str, bool] | None = None,
    n_metastases: int | None = None,
    geometry_known: bool = True,
) -> SyntheticScan:
    """One synthetic whole-body bone scan; every choice not given is drawn from ``seed``.

    Parameters
    ----------
    seed
        Seeds everything (anatomy, variants, lesions, noise, UIDs).
    metastatic
        Plant metastases (None: with probability 1/2).
    matrix
        (rows, columns) along the body, e.g. (1024, 256) or (512, 128).
    layout
        ``"multiframe"`` (one series, a frame per view and energy window) or ``"two_series"``
        (one single-frame series per view, photopeak only).
    transposed
        Store the views with the body along the columns (256x1024), head at column 0.
    posterior_mirrored
        The camera already mirrored the posterior to match the anterior.
    energy_windows
        1-3 windows; window 1 is the photopeak, the others scatter windows with fewer counts.
    confounders
        Force confounders on/off by name (see :data:`CONFOUNDERS`); others are drawn.
    n_metastases
        Exact number of metastases for a metastatic scan (None: drawn 1-20, small numbers commoner).
    geometry_known
        Give the views a patient orientation (column direction towards the feet); False leaves
        the default axial orientation a camera without Image Orientation (Patient) gets.
    """
    rng = np.random.default_rng(seed)
    if metastatic is None:
        metastatic = bool(rng.random() < 0.5)
    if matrix is None:
        matrix = MATRICES[int(rng.integers(len(MATRICES)))]
    if layout is None:
        layout = "multiframe" if rng.random() < 0.7 else "two_series"
    if posterior_mirrored is None:
        posterior_mirrored = bool(rng.random() < 0.3)
    if energy_windows is None:
        energy_windows = int(rng.choice([1, 1, 2, 3]))
    if layout == "two_series":
        energy_windows = 1
    rows, cols = matrix
    spacing = FIELD_LENGTH_MM / rows
    canvas = _Canvas(rows, cols, spacing)
    field_width = cols * spacing
    height = rng.uniform(1500, 1900)
    body = _Body(
        height=height, top=rng.uniform(30, max(40, FIELD_LENGTH_MM - height - 40)),
        centre_x=field_width / 2 + rng.normal(0, 18), width=height / 1750 * rng.uniform(0.9, 1.08),
    )
    sites = _skeleton(canvas, body, rng)

    flags = {name: bool(rng.random() < 0.35) for name in CONFOUNDERS}
    flags.update(confounders or {})
    extras: dict[str, float] = {}
    # Kidneys always take up some tracer; prominent ones are the confounder.
    kidney = rng.uniform(1.0, 2.2) if flags["kidneys"] else rng.uniform(0.15, 0.6)
    side: float  # -1 or 1: which side of the midline
    for side in (-1, 1):
        c = (body.x(side * 55), body.y(0.385 + rng.normal(0, 0.005)))
        canvas.ellipse(c, (27 * body.width, 0.033 * body.height), 0.35 * kidney, 0.9 * kidney)
    # Bladder: a little always; a full bladder is the confounder.
    bladder = rng.uniform(2.0, 7.0) if flags["bladder"] else rng.uniform(0.1, 0.8)
    bladder_c = (body.x(rng.normal(0, 8)), body.y(0.505))
    canvas.ellipse(bladder_c, (rng.uniform(30, 50), rng.uniform(25, 40)), bladder, 0.6 * bladder)
    extras["bladder_level"] = float(bladder)
    if flags["injection"]:
        side = float(rng.choice([-1, 1]))
        where = body.y(0.36) if rng.random() < 0.6 else body.y(0.5)
        centre = (body.x(side * 222), where + rng.normal(0, 10))
        level = rng.uniform(3, 15)
        canvas.spot(centre, rng.uniform(12, 25), level, 0.8 * level)
        if rng.random() < 0.4:  # lymphatic track up the arm
            canvas.capsule(centre, (body.x(side * 200), body.y(0.25)), 4, 0.3 * level / 3, 0.3 * level / 3)
    if flags["degenerative"]:
        for _ in range(int(rng.integers(1, 5))):
            kind = rng.choice(["knee", "shoulder", "facet", "hand"])
            side = float(rng.choice([-1, 1]))
            level = rng.uniform(0.8, 2.2)
            if kind == "knee":
                canvas.spot((body.x(side * 82), body.y(0.715)), rng.uniform(30, 50), level, 0.8 * level)
            elif kind == "shoulder":
                canvas.spot((body.x(side * 180), body.y(0.18)), rng.uniform(25, 40), level, 0.8 * level)
            elif kind == "facet":
                canvas.spot((body.x(side * 25), body.y(rng.uniform(0.42, 0.455))), rng.uniform(15, 25), 0.5 * level, level)
            else:
                canvas.spot((body.x(side * 240), body.y(0.525)), rng.uniform(12, 20), level, level)
    if flags["fracture"]:
        side = float(rng.choice([-1, 1]))
        first = int(rng.integers(3, 8))
        lateral = rng.uniform(120, 145)
        for i in range(first, first + int(rng.integers(2, 5))):
            y = body.y(0.19 + i * 0.0135) + 1.5 * 0.009 * body.height
            level = rng.uniform(1.5, 3.5)
            canvas.spot((body.x(side * lateral * min(1.0, 0.55 + 0.09 * i)), y), rng.uniform(10, 16), level, 0.7 * level)
    if flags["prosthesis"]:
        side = float(rng.choice([-1, 1]))
        hip = (body.x(side * 95), body.y(0.505))
        cold = np.zeros((rows, cols), np.float32)
        radius = rng.uniform(30, 42)
        stem_length = rng.uniform(120, 180)
        r0 = int(max((hip[1] - radius) / spacing - 2, 0))
        r1 = int(min((hip[1] + stem_length) / spacing + 2, rows))
        c0 = int(max((hip[0] - radius) / spacing - 2, 0))
        c1 = int(min((hip[0] + radius) / spacing + 2, cols))
        yy, xx = np.mgrid[r0:r1, c0:c1] * spacing
        box = ((xx - hip[0]) ** 2 + (yy - hip[1]) ** 2) <= radius**2
        box |= (np.abs(xx - (hip[0] - side * 8)) < 10) & (yy > hip[1]) & (yy < hip[1] + stem_length)
        cold[r0:r1, c0:c1] = box
        keep = 1 - 0.93 * cold
        canvas.ant *= keep
        canvas.post *= keep
        rim = ndimage.binary_dilation(cold > 0, iterations=2) & (cold == 0)
        canvas.ant += rim * 0.4
        canvas.post += rim * 0.4

    lesions: list[Lesion] = []
    if metastatic:
        if n_metastases is None:
            n_metastases = int(min(20, 1 + rng.geometric(0.25) - 1 + (rng.integers(0, 12) if rng.random() < 0.25 else 0)))
        regions = ("spine", "ribs", "pelvis", "skull", "sternum", "proximal")
        weights = np.array([0.38, 0.2, 0.2, 0.07, 0.05, 0.1])
        for _ in range(n_metastases):
            region = regions[int(rng.choice(len(regions), p=weights))]
            candidates = sites[region]
            x, y = candidates[int(rng.integers(len(candidates)))]
            x, y = x + rng.normal(0, 4), y + rng.normal(0, 4)
            fwhm = rng.uniform(14, 35)
            amplitude = rng.uniform(1.2, 4.5)
            # Spine and pelvis lie nearer the back: their lesions are brighter posteriorly.
            back = region in ("spine", "pelvis")
            canvas.spot((x, y), fwhm, amplitude * (0.6 if back else 1.0), amplitude * (1.0 if back else 0.75))
            lesions.append(Lesion(y / spacing, x / spacing, fwhm, amplitude, region))

    # Camera resolution (whole-body, about 10-14 mm FWHM), then counts and Poisson noise.
    sigma = rng.uniform(10, 14) / 2.3548 / spacing
    ant = ndimage.gaussian_filter(canvas.ant, sigma)
    post = ndimage.gaussian_filter(canvas.post, sigma)
    ant = np.clip(ant, 0, None) + 1e-4
    post = np.clip(post, 0, None) + 1e-4
    total = rng.uniform(0.8e6, 3.0e6)
    ant_counts = rng.poisson(ant * (total / ant.sum())).astype(np.float32)
    post_counts = rng.poisson(post * (total * rng.uniform(0.9, 1.1) / post.sum())).astype(np.float32)
    extras["total_counts"] = float(total)

    study = _store(seed, rng, ant_counts, post_counts, ant, post, spacing, layout, transposed,
                   posterior_mirrored, energy_windows, geometry_known)
    return SyntheticScan(
        seed=seed, study=study, anterior=ant_counts, posterior=post_counts, metastases=tuple(lesions),
        confounders=flags, matrix=matrix, layout=layout, transposed=transposed,
        posterior_mirrored=posterior_mirrored, energy_windows=energy_windows, extras=extras,
    )


def _uid(rng: np.random.Generator) -> str:
    return _UID_ROOT + str(int(rng.integers(1, 2**62)))


def _store(seed: int, rng: np.random.Generator, ant: np.ndarray, post: np.ndarray, ant_expected: np.ndarray,
           post_expected: np.ndarray, spacing: float, layout: str, transposed: bool, posterior_mirrored: bool,
           energy_windows: int, geometry_known: bool) -> StudyInput:
    """The two views as the camera stores them (see the module docstring)."""
    stored_post = post if posterior_mirrored else post[:, ::-1]
    frames: list[tuple[np.ndarray, str, int]] = [(ant, "ANTERIOR", 1), (stored_post, "POSTERIOR", 1)]
    for window in range(2, energy_windows + 1):
        # Scatter windows: broader, a fraction of the photopeak counts.
        fraction = rng.uniform(0.15, 0.4)
        for expected, view in ((ant_expected, "ANTERIOR"), (post_expected, "POSTERIOR")):
            blurred = ndimage.gaussian_filter(expected, 3.0)
            counts = rng.poisson(blurred * fraction * (ant.sum() / expected.sum())).astype(np.float32)
            frames.append((counts if view == "ANTERIOR" or posterior_mirrored else counts[:, ::-1], view, window))
    # 16-bit counts, as cameras store them.
    frames = [(np.clip(img, 0, 65535).astype(np.uint16).astype(np.float32), v, w) for img, v, w in frames]
    if transposed:
        # Body along the columns, head at column 0; rows run to the patient's left.
        frames = [(img.T.copy(), v, w) for img, v, w in frames]
        row_dir, col_dir = (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)
    else:
        row_dir, col_dir = (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)
    if not geometry_known:
        row_dir, col_dir = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    facts = AcquisitionFacts(modality="NM", manufacturer="SYNTHETIC", body_part="WHOLEBODY",
                             series_description="WB Bone", image_type=("ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"))
    frame_of_reference = _uid(rng)

    def volume(items: list[tuple[np.ndarray, str, int]], series_uid: str, detectors: dict[str, int]) -> SeriesVolume:
        sop = _uid(rng)
        multi = len(items) > 1
        refs = tuple(
            SliceReference(NM_IMAGE_STORAGE, sop, k + 1 if multi else None, view=v, detector=detectors[v], energy_window=w)
            for k, (_, v, w) in enumerate(items)
        )
        geometry = VolumeGeometry(
            slice_origins=np.zeros((len(items), 3)), row_direction=row_dir, column_direction=col_dir,
            pixel_spacing=(spacing, spacing),
        )
        return SeriesVolume(series_uid, frame_of_reference, np.stack([img for img, _, _ in items]), geometry, refs, facts)

    detectors = {"ANTERIOR": 1, "POSTERIOR": 2}
    if layout == "multiframe":
        series: tuple[SeriesVolume, ...] = (volume(frames, _uid(rng), detectors),)
    elif layout == "two_series":
        series = (volume([frames[0]], _uid(rng), {"ANTERIOR": 1}), volume([frames[1]], _uid(rng), {"POSTERIOR": 1}))
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return StudyInput(study_uid=_UID_ROOT + str(seed + 1), series=series)
