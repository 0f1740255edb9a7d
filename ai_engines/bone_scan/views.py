"""Find the anterior and posterior whole-body views of a bone scan and bring them into one
orientation (torch-free).

What the headers tell, and what is assumed
------------------------------------------
* **View**: each frame's :attr:`SliceReference.view` (filled by the node from the View Code
  Sequence / Detector Information of the NM multi-frame module, or the single-frame instance's
  view code).  Frames without a view code are never guessed at: two or more uncoded whole-body
  frames are declined (:data:`NM_VIEW_MISSING`), one uncoded frame is a single view.
* **Single view**: a study with only one of the two views is declined (:data:`NM_SINGLE_VIEW`):
  the model reads both views together, as published, and was never validated on one.
* **Energy window**: when the frames come in several energy windows, the photopeak is taken to
  be the window with the most counts over its frames (for Tc-99m the 140 keV photopeak holds
  several times the counts of any scatter window); only windows holding both views compete.
* **Head-feet axis**: the body runs along the longer image axis.  When the geometry names a
  patient direction (the row or column direction within 45 degrees of the patient's z axis) it
  decides which axis and which end is the head; otherwise the longer axis is taken and the
  head is assumed at row 0 (or column 0 for a transposed, 256x1024 image).
* **Posterior orientation**: the view code says the frame was seen from behind, not whether the
  camera already mirrored it for display.  The default follows the acquisition: a posterior
  frame is mirrored left-right so the patient's right lies on the same side as in the anterior.
  The image then decides: when the unmirrored posterior matches the anterior better (normalised
  cross-correlation higher by :data:`MIRROR_MARGIN`), the camera had already mirrored it and it
  is kept as it is.  The evidence is the body's asymmetry (its offset on the table, an injection
  site, lesions); a body so symmetric that the images cannot tell gives nearly the same image
  either way, and then the view code's default stands.
* **Whole body**: the field must be at least :data:`MIN_FIELD_MM` long and
  :data:`MIN_ASPECT` times longer than wide; spot views are declined (:data:`NM_NOT_WHOLE_BODY`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ai_engines.engine import INPUT_MISSING_SERIES, GeometryNeeds
from ai_engines.findings import Decline
from ai_engines.quality import QC_WRONG_MODALITY, check_series
from ai_engines.volume import SeriesVolume, SliceReference, StudyInput

NM_VIEW_MISSING = "NM_VIEW_MISSING"
NM_SINGLE_VIEW = "NM_SINGLE_VIEW"
NM_NOT_WHOLE_BODY = "NM_NOT_WHOLE_BODY"
NM_NO_COUNTS = "NM_NO_COUNTS"
DECLINE_CODES = (NM_VIEW_MISSING, NM_SINGLE_VIEW, NM_NOT_WHOLE_BODY, NM_NO_COUNTS)

MIN_ASPECT = 2.5  # whole-body fields are about 4:1 (1024x256, 512x128)
MIN_FIELD_MM = 1200.0  # shorter than this is a spot or partial view
MIRROR_MARGIN = 0.002  # correlation lead the unmirrored posterior needs to override the default
_Z_ALIGNED = 0.7  # |cos| above this: a direction runs along the patient's head-feet axis

_ANTERIOR = {"ANTERIOR", "ANT", "A", "ANTERIOR_PROJECTION", "ANTERO-POSTERIOR", "AP"}
_POSTERIOR = {"POSTERIOR", "POST", "P", "POSTERIOR_PROJECTION", "POSTERO-ANTERIOR", "PA"}


def normalise_view(view: str | None) -> str | None:
    """``"ANTERIOR"``, ``"POSTERIOR"`` or None (lateral, oblique, unknown) from a view name."""
    if not view:
        return None
    name = view.strip().upper().replace(" ", "_")
    if name in _ANTERIOR:
        return "ANTERIOR"
    if name in _POSTERIOR:
        return "POSTERIOR"
    return None


@dataclass(frozen=True)
class ViewFrame:
    """One frame of a series and how to bring it into the canonical orientation.

    Canonical: head at row 0, body along the rows, patient's right on the viewer's left (the
    anterior convention).  ``canonical = flip_cols(flip_rows(transpose(frame)))``.
    """

    series: SeriesVolume
    index: int
    view: str
    transpose: bool
    flip_rows: bool
    flip_cols: bool

    @property
    def reference(self) -> SliceReference:
        return self.series.slices[self.index]

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """(row, column) spacing of the canonical image."""
        row, col = self.series.geometry.pixel_spacing
        return (col, row) if self.transpose else (row, col)

    def canonical(self) -> np.ndarray:
        """The frame's counts, float32, in the canonical orientation."""
        image = np.asarray(self.series.voxels[self.index], dtype=np.float32)
        if self.transpose:
            image = image.T
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)

    def to_source(self, image: np.ndarray) -> np.ndarray:
        """A canonical-orientation image back on the frame's own grid (the inverse transform)."""
        if self.flip_cols:
            image = image[:, ::-1]
        if self.flip_rows:
            image = image[::-1]
        if self.transpose:
            image = image.T
        return np.ascontiguousarray(image)


@dataclass(frozen=True)
class ViewPair:
    """The anterior and posterior photopeak frames of one whole-body scan."""

    anterior: ViewFrame
    posterior: ViewFrame
    energy_window: int | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Frame:
    series: SeriesVolume
    index: int
    view: str | None
    window: int | None
    counts: float


def _axis_layout(series: SeriesVolume) -> tuple[bool, bool, str]:
    """(transpose, flip_rows, how it was decided) from geometry, else from the aspect ratio."""
    row_dir = np.asarray(series.geometry.row_direction, dtype=float)
    col_dir = np.asarray(series.geometry.column_direction, dtype=float)
    if abs(col_dir[2]) >= _Z_ALIGNED:
        return False, bool(col_dir[2] > 0), "geometry"
    if abs(row_dir[2]) >= _Z_ALIGNED:
        return True, bool(row_dir[2] > 0), "geometry"
    rows, cols = series.shape[1:]
    return cols > rows, False, "aspect ratio (no patient orientation; head assumed at the first row/column)"


def _whole_body(series: SeriesVolume) -> tuple[bool, str]:
    rows, cols = series.shape[1:]
    row_mm, col_mm = series.geometry.pixel_spacing
    long_mm, short_mm = sorted((rows * row_mm, cols * col_mm), reverse=True)
    aspect = long_mm / max(short_mm, 1e-6)
    ok = aspect >= MIN_ASPECT and long_mm >= MIN_FIELD_MM
    return ok, f"{rows}x{cols} matrix, field {long_mm:.0f} x {short_mm:.0f} mm (aspect {aspect:.1f})"


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _coarse(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means (smooths the Poisson noise before comparing views)."""
    rows, cols = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    trimmed = image[:rows, :cols]
    return trimmed.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))


def posterior_is_mirrored(anterior: np.ndarray, posterior: np.ndarray) -> tuple[bool, float, float]:
    """Whether a canonical-axis posterior still needs mirroring to match the anterior.

    Returns
    -------
    (needs_mirror, correlation mirrored, correlation as stored)
    """
    factor = max(1, min(anterior.shape) // 32)
    a = np.sqrt(_coarse(anterior, factor))
    p = np.sqrt(_coarse(posterior, factor))
    mirrored, stored = _ncc(a, p[:, ::-1]), _ncc(a, p)
    return not stored > mirrored + MIRROR_MARGIN, mirrored, stored


def find_views(study: StudyInput, needs: GeometryNeeds) -> ViewPair | Decline:
    """The anterior and posterior photopeak frames of the study's whole-body NM scan.

    Parameters
    ----------
    study
        Any study; its NM series are searched (one multi-frame series, or one series per view).
    needs
        The engine's geometry needs; the quality checks of :mod:`ai_engines.quality` run on the
        series the two frames come from.

    Returns
    -------
    ViewPair or Decline
        Decline codes: ``QC_WRONG_MODALITY``/``INPUT_MISSING_SERIES`` (no NM series),
        :data:`NM_NOT_WHOLE_BODY`, :data:`NM_SINGLE_VIEW`, :data:`NM_VIEW_MISSING`,
        :data:`NM_NO_COUNTS`, and any quality-check code (e.g. ``QC_LOSSY_COMPRESSION``).
    """
    nm = study.by_modality("NM")
    if not nm:
        present = sorted({s.modality for s in study.series})
        code = QC_WRONG_MODALITY if present else INPUT_MISSING_SERIES
        return Decline(code, f"bone_scan needs an NM whole-body series; the study holds {', '.join(present) or 'none'}")
    frames: list[_Frame] = []
    rejected: list[str] = []
    for series in nm:
        whole, description = _whole_body(series)
        if not whole:
            rejected.append(description)
            continue
        for k, ref in enumerate(series.slices):
            counts = float(np.asarray(series.voxels[k], dtype=np.float64).sum())
            frames.append(_Frame(series, k, normalise_view(ref.view), ref.energy_window, counts))
    if not frames:
        return Decline(
            NM_NOT_WHOLE_BODY,
            f"no whole-body NM image ({'; '.join(rejected)}); needs a field of at least "
            f"{MIN_FIELD_MM:.0f} mm, {MIN_ASPECT:g} times longer than wide",
        )
    coded = [f for f in frames if f.view is not None]
    views = {f.view for f in coded}
    if views != {"ANTERIOR", "POSTERIOR"}:
        if not coded and len(frames) >= 2:
            return Decline(
                NM_VIEW_MISSING,
                f"{len(frames)} whole-body frames carry no anterior/posterior view code; "
                "the views are never guessed",
            )
        have = ", ".join(sorted(v for v in views if v)) or "one uncoded view"
        return Decline(
            NM_SINGLE_VIEW,
            f"only {have} present; the model reads the anterior and posterior views together "
            "and is not validated on a single view",
        )
    # Photopeak: the energy window with the most counts among those holding both views.
    windows: dict[int | None, list[_Frame]] = {}
    for f in coded:
        windows.setdefault(f.window, []).append(f)
    complete = {w: fs for w, fs in windows.items() if {f.view for f in fs} == {"ANTERIOR", "POSTERIOR"}}
    if not complete:
        return Decline(NM_VIEW_MISSING, "no energy window holds both an anterior and a posterior frame")
    window = max(complete, key=lambda w: sum(f.counts for f in complete[w]))
    notes: list[str] = []
    if len(windows) > 1:
        summary = ", ".join(f"{w}: {sum(f.counts for f in fs):.3g}" for w, fs in sorted(windows.items(), key=lambda i: str(i[0])))
        notes.append(f"energy window {window} taken as the photopeak (most counts; counts per window {summary})")
    chosen: dict[str, _Frame] = {}
    for view in ("ANTERIOR", "POSTERIOR"):
        candidates = [f for f in complete[window] if f.view == view]
        chosen[view] = max(candidates, key=lambda f: f.counts)
        if len(candidates) > 1:
            notes.append(f"{len(candidates)} {view.lower()} frames in window {window}; the one with most counts used")
        if chosen[view].counts <= 0:
            return Decline(NM_NO_COUNTS, f"the {view.lower()} frame holds no counts")
    for series in {id(f.series): f.series for f in chosen.values()}.values():
        failures = check_series(series, needs)
        if failures:
            return failures[0]
    ant, post = chosen["ANTERIOR"], chosen["POSTERIOR"]
    transpose, flip_rows, how = _axis_layout(ant.series)
    notes.append(f"head-feet axis from the {how}")
    # The patient's left runs to the right of the canonical anterior when the geometry says so;
    # an anterior frame stored with the patient's left on the viewer's left is mirrored.
    row_dir = np.asarray(ant.series.geometry.column_direction if transpose else ant.series.geometry.row_direction)
    flip_cols = bool(row_dir[0] <= -_Z_ALIGNED)
    anterior = ViewFrame(ant.series, ant.index, "ANTERIOR", transpose, flip_rows, flip_cols)
    p_transpose, p_flip_rows, _ = _axis_layout(post.series)
    stored = ViewFrame(post.series, post.index, "POSTERIOR", p_transpose, p_flip_rows, flip_cols)
    needs_mirror, corr_mirrored, corr_stored = posterior_is_mirrored(anterior.canonical(), stored.canonical())
    posterior = ViewFrame(post.series, post.index, "POSTERIOR", p_transpose, p_flip_rows, flip_cols ^ needs_mirror)
    if needs_mirror:
        notes.append(
            f"posterior mirrored left-right to match the anterior (view code; correlation mirrored "
            f"{corr_mirrored:.3f}, as stored {corr_stored:.3f})"
        )
    else:
        notes.append(
            f"posterior kept as stored: already mirrored by the camera (correlation as stored "
            f"{corr_stored:.3f} > mirrored {corr_mirrored:.3f} + {MIRROR_MARGIN})"
        )
    return ViewPair(anterior, posterior, window, tuple(notes))
