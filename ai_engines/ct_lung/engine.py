"""CT lung engine: primary lung tumour (GTV) and both lungs on an axial chest CT.

After Primakov et al., "Automated detection and segmentation of non-small cell lung cancer
computed tomography images", Nat Commun 13, 3423 (2022): rule-based lung isolation, 2-D U-Net
tumour segmentation on the published pre-processing, largest component as the primary GTV,
further components above a size threshold as additional lesions; a second network of the same
shape delineates the extent of each lesion the first one found.  Measurements per lesion:
volume, RECIST 1.1 longest axial diameter and its perpendicular, mean and SD of HU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ai_engines import codes
from ai_engines.ct_lung import ARCHITECTURE, EXTENT_MODEL_NAME, MODEL_NAME
from ai_engines.ct_lung.lungs import isolate_lungs
from ai_engines.ct_lung.preprocess import (
    CANVAS_SIZE,
    PREPROCESSING_VERSION,
    CanvasMapping,
    canvas_to_source,
    preprocess,
)
from ai_engines.ct_lung.unet import UNet2D, context_step, predict_foreground
from ai_engines.engine import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    Acceptance,
    Engine,
    GeometryNeeds,
    SeriesRequirement,
)
from ai_engines.findings import Decline, EngineIdentity, Findings, Measurement, Segment
from ai_engines.models import (
    ModelError,
    ModelFiles,
    ModelNotFound,
    load_weights,
    locate_model,
    resolve_device,
)
from ai_engines.volume import SeriesVolume, StudyInput

ENGINE_VERSION = "1.3.0"  # 1.1.0: false-positive filter; 1.1.1: same results, box-restricted lesion search; 1.2.0: airway grown from the lumen (was often skipped); 1.3.0: extent model
QC_NO_LUNG_FIELD = "QC_NO_LUNG_FIELD"
MIN_LUNG_ML = 100.0  # less than this in both lungs: not a chest CT (or not this region)
TUMOUR_THRESHOLD = 0.5
MIN_LESION_MM3 = 65.0  # about a 5 mm sphere; smaller components are noise
MIN_PEAK_PROBABILITY = 0.5  # a lesion's most confident voxel must reach this
LUNG_MARGIN_MM = 8.0  # a lesion must touch the lungs dilated by this margin
# False-positive filter (keep_components), tuned on validation seeds 300000-300029 (disjoint
# from training seeds < 100 000 and the held-out seeds 100000-100019).
MIN_MEAN_PROBABILITY = 0.85  # hilar vessels and diaphragm domes come out lukewarm
MIN_Z_EXTENT_MM = 6.0  # spurious findings are often one or two thin slices thick
MIN_END_SLICES_MM = 15.0  # extra-pulmonary blobs on the first/last lung slice thinner than this are dropped
MIN_RELATIVE_WEIGHT = 0.1  # probability-weighted volume relative to the largest candidate
EXTENT_MARGIN_MM = 20.0  # the extent model looks this far above and below each detected lesion
GTV_COLOUR = (255, 0, 0)
LUNG_L_COLOUR = (0, 160, 255)
LUNG_R_COLOUR = (0, 200, 120)


@dataclass(frozen=True)
class _Network:
    """A loaded tumour network and the 2.5-D context its card asks for."""

    model: torch.nn.Module
    context: int
    context_mm: float
    depth: int


class CtLungEngine(Engine):
    """Lung tumour (GTV) and lungs on axial chest CT.

    Parameters
    ----------
    model_dir
        Site folder whose ``ct_lung_unet.pt``/``.json`` replace the packaged demo weights.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads
        CPU threads for inference (None: leave torch's setting).
    """

    name = "ct_lung"
    version = ENGINE_VERSION
    acceptance = Acceptance(
        series=(
            SeriesRequirement(
                role="CT",
                modalities=("CT",),
                sop_classes=(CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE),
                geometry=GeometryNeeds(
                    min_slices=16,
                    slice_thickness_mm=(0.5, 5.0),
                    pixel_spacing_mm=(0.5, 1.0),
                    axial_only=True,
                    max_obliquity_deg=1.0,
                    uniform_spacing=True,
                    lossless_only=True,
                ),
            ),
        ),
    )

    def __init__(self, model_dir: Path | None = None, device: str = "auto", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        self.files = locate_model("ct_lung", MODEL_NAME, model_dir)
        self.detector = self._load(self.files)
        # The extent model comes from the detector's own folder: a site's detector is never
        # paired with the packaged demo one.  Without it, lesions keep the detector's extent.
        try:
            self.extent_files: ModelFiles | None = locate_model(
                "ct_lung", EXTENT_MODEL_NAME, model_dir if self.files.source == "site" else None,
                packaged=self.files.source == "package",
            )
        except ModelNotFound:
            self.extent_files = None
        self.extent = self._load(self.extent_files) if self.extent_files else None
        if threads is not None:
            torch.set_num_threads(threads)

    def _load(self, files: ModelFiles) -> _Network:
        card = files.card
        if card.preprocessing_version != PREPROCESSING_VERSION:
            raise ModelError(
                f"{card.name} {card.version} was trained with pre-processing "
                f"{card.preprocessing_version}; this engine implements {PREPROCESSING_VERSION}"
            )
        arch = dict(card.architecture or ARCHITECTURE)
        context = int(arch.pop("context", 1))
        context_mm = float(arch.pop("context_mm", 0.0))
        model = load_weights(files, UNet2D(**arch), self.device)
        model = model.to(memory_format=torch.channels_last)  # faster CPU convolutions
        return _Network(model, context, context_mm, int(arch.get("depth", 4)))

    def identity(self) -> EngineIdentity:
        card = self.files.card
        version = f"{self.version}+{card.name}-{card.version}"
        if self.extent_files:
            version += f"+extent-{self.extent_files.card.version}"
        return EngineIdentity(
            name="ct-lung-nsclc",
            version=version,
            model_name=card.name,
            model_sha256=card.sha256,
            # Research use if either model is: both shape every GTV.
            research_use_only=card.research_use_only or bool(self.extent_files and self.extent_files.card.research_use_only),
            intended_use=card.intended_use,
        )

    # ------------------------------------------------------------------ run
    def run(self, study: StudyInput) -> Findings:
        """Segment lungs and tumour of the study's best axial CT, or decline."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        selected = self.select_inputs(study)
        if isinstance(selected, Decline):
            ct = study.by_modality("CT")
            uid = ct[0].series_uid if ct else (study.series[0].series_uid if study.series else "")
            return self.declined(uid, selected)
        volume = selected["CT"]
        hu = np.asarray(volume.voxels, dtype=np.float32)
        geometry = volume.geometry
        timings["load"] = time.perf_counter() - t0

        t = time.perf_counter()
        lungs = isolate_lungs(
            hu, geometry.pixel_spacing, geometry.slice_spacing,
            column_is_patient_left=geometry.row_direction[0] >= 0,
        )
        voxel_mm3 = float(np.prod(geometry.spacing_zyx))
        lung_ml = (lungs.left.sum() + lungs.right.sum()) * voxel_mm3 / 1000
        timings["lungs"] = time.perf_counter() - t
        if lung_ml < MIN_LUNG_ML:
            return self.declined(
                volume.series_uid,
                Decline(QC_NO_LUNG_FIELD, f"only {lung_ml:.0f} ml of lung found; not a chest CT covering the lungs"),
            )

        t = time.perf_counter()
        lung_slices = np.nonzero(lungs.both.any(axis=(1, 2)))[0]
        networks = [n for n in (self.detector, self.extent) if n is not None]
        reach = max(n.context * context_step(geometry.slice_spacing, n.context_mm) for n in networks)
        first = max(int(lung_slices[0]) - reach, 0)
        last = min(int(lung_slices[-1]) + reach, hu.shape[0] - 1)
        canvas, mapping = preprocess(hu[first : last + 1], geometry.pixel_spacing)
        box = self._canvas_box(lungs.both, mapping, max(n.depth for n in networks))
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        probability = self._probabilities(self.detector, canvas, lung_slices, first, box, mapping, hu.shape, geometry.slice_spacing)
        lesions = lesion_masks(probability, lungs.both, geometry.spacing_zyx)
        del probability
        timings["tumour"] = time.perf_counter() - t

        extent_note = ""
        if self.extent is not None and lesions:
            t = time.perf_counter()
            margin = int(np.ceil(EXTENT_MARGIN_MM / geometry.slice_spacing))
            lesion_z = np.nonzero(np.any([m.any(axis=(1, 2)) for m in lesions], axis=0))[0]
            z0, z1 = int(lesion_z[0]) - margin, int(lesion_z[-1]) + margin
            near = lung_slices[(lung_slices >= z0) & (lung_slices <= z1)]
            z0, z1 = int(near[0]), int(near[-1])
            extent = self._probabilities(self.extent, canvas, near, first, box, mapping,
                                         (z1 - z0 + 1, *hu.shape[1:]), geometry.slice_spacing, offset=z0)
            detected_count, detected_voxels = len(lesions), sum(int(m.sum()) for m in lesions)
            lesions = refine_extent(lesions, extent, z0)
            timings["extent"] = time.perf_counter() - t
            # Say what the extent model changed, so a reader can check it against the images.
            added_ml = (sum(int(m.sum()) for m in lesions) - detected_voxels) * voxel_mm3 / 1000
            joined = f"; {detected_count} detected lesions joined into {len(lesions)}" if len(lesions) < detected_count else ""
            extent_note = f"extent model {self.extent_files.card.version} added {added_ml:.1f} ml to the detected lesion(s){joined}"

        t = time.perf_counter()
        segments = [self._lung_segment("Lung_L", lungs.left, codes.LEFT, LUNG_L_COLOUR, voxel_mm3),
                    self._lung_segment("Lung_R", lungs.right, codes.RIGHT, LUNG_R_COLOUR, voxel_mm3)]
        for number, lesion in enumerate(lesions, start=1):
            segments.insert(number - 1, self._gtv_segment(number, lesion, hu, volume))
        timings["measure"] = time.perf_counter() - t
        notes = [f"{len(lesions)} lesion(s) above {MIN_LESION_MM3:g} mm3"]
        if self.files.card.label:
            notes.append(f"model {self.files.card.name} {self.files.card.version} [{self.files.card.label}]")
        if extent_note:
            notes.append(extent_note)
        if lungs.airway == "not in view":
            notes.append("trachea not in the field of view; airway removal skipped")
        elif lungs.airway == "leaked":
            notes.append("airway growing ran into the lungs; airway removal skipped")
        return Findings(
            engine=self.identity(), source_series_uid=volume.series_uid, segments=tuple(segments),
            notes=tuple(notes), timings_s=timings,
        )

    # ------------------------------------------------------------ stages
    def _canvas_box(self, lungs: np.ndarray, mapping: CanvasMapping, depth: int) -> tuple[int, int, int, int]:
        """Canvas box around the lungs (plus a margin), sides multiples of 2**depth."""
        rows = np.nonzero(lungs.any(axis=(0, 2)))[0]
        cols = np.nonzero(lungs.any(axis=(0, 1)))[0]
        (r0, r1), (c0, c1) = mapping.source_to_canvas(
            np.array([rows[0], rows[-1]], float), np.array([cols[0], cols[-1]], float)
        )
        unit, margin = 2**depth, 24
        box = []
        for lo, hi in ((r0, r1), (c0, c1)):
            lo, hi = max(0, int(lo) - margin), min(CANVAS_SIZE, int(np.ceil(hi)) + margin)
            size = min(CANVAS_SIZE, int(np.ceil((hi - lo) / unit) * unit))
            lo = min(lo, CANVAS_SIZE - size)
            box += [lo, lo + size]
        return tuple(box)  # type: ignore[return-value]

    def _probabilities(
        self, network: _Network, canvas: np.ndarray, slices: np.ndarray, first: int,
        box: tuple[int, int, int, int], mapping: CanvasMapping, shape: tuple[int, ...],
        slice_spacing: float, offset: int = 0,
    ) -> np.ndarray:
        """Tumour probability of source ``slices`` (canvas starts at slice ``first``) on a
        source-grid array of ``shape`` whose slice 0 is source slice ``offset``."""
        step = context_step(slice_spacing, network.context_mm)
        prob_box = predict_foreground(network.model, canvas, slices - first, box, network.context, step, device=self.device)
        probability = np.zeros(shape, dtype=np.float16)
        hot = np.nonzero((prob_box > 0.1).any(axis=(1, 2)))[0]  # only where needed: bilinear inverse mapping
        if not len(hot):
            return probability
        r0, r1, c0, c1 = box
        on_canvas = np.zeros((len(hot), CANVAS_SIZE, CANVAS_SIZE), dtype=np.float32)
        on_canvas[:, r0:r1, c0:c1] = prob_box[hot]
        probability[slices[hot] - offset] = canvas_to_source(on_canvas, mapping)
        return probability

    def _lung_segment(self, label: str, mask: np.ndarray, side: codes.Code, colour: tuple[int, int, int], voxel_mm3: float) -> Segment:
        volume_ml = float(mask.sum()) * voxel_mm3 / 1000
        return Segment(
            label=label,
            description=f"{'Left' if side == codes.LEFT else 'Right'} lung",
            category=codes.ANATOMICAL_STRUCTURE,
            property_type=codes.LUNG,
            property_modifier=side,
            anatomic_region=codes.LUNG,
            rt_interpreted_type="ORGAN",
            color_rgb=colour,
            mask=mask,
            tracking_id=label,
            measurements=(Measurement(codes.VOLUME, round(volume_ml, 1), codes.UNIT_ML, description="lung volume"),),
        )

    def _gtv_segment(self, number: int, mask: np.ndarray, hu: np.ndarray, volume: SeriesVolume) -> Segment:
        geometry = volume.geometry
        voxel_mm3 = float(np.prod(geometry.spacing_zyx))
        values = hu[mask]
        long_axis, short_axis, key_slice, long_mm, short_mm = recist_axes(mask, geometry.pixel_spacing)
        label = "GTV" if number == 1 else f"GTV_{number}"
        measurements = (
            Measurement(codes.VOLUME, round(float(mask.sum()) * voxel_mm3 / 1000, 2), codes.UNIT_ML, description="tumour volume"),
            Measurement(codes.DIAMETER, round(long_mm, 1), codes.UNIT_MM, modifier=codes.LONG_AXIS, description="RECIST 1.1 longest axial diameter"),
            Measurement(codes.DIAMETER, round(short_mm, 1), codes.UNIT_MM, modifier=codes.SHORT_AXIS, description="longest diameter perpendicular to the long axis"),
            Measurement(codes.MEAN, round(float(values.mean()), 1), codes.UNIT_HU, modifier=codes.MEAN, description="mean attenuation"),
            Measurement(codes.STANDARD_DEVIATION, round(float(values.std()), 1), codes.UNIT_HU, modifier=codes.STANDARD_DEVIATION, description="attenuation SD"),
        )
        return Segment(
            label=label,
            description="GTV primary lung tumour" if number == 1 else f"GTV additional lung lesion {number}",
            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property_type=codes.NEOPLASM,
            anatomic_region=codes.LUNG,
            rt_interpreted_type="GTV",
            color_rgb=GTV_COLOUR,
            mask=mask,
            tracking_id=label,
            measurements=measurements,
            key_slice=key_slice,
            long_axis=long_axis,
            short_axis=short_axis,
        )


def lesion_masks(probability: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Components that pass the false-positive filter (``keep_components``), largest first.

    Works inside the box around the candidate voxels (plus the lung margin), so that a
    600-slice series does not need volume-sized label and distance arrays.
    """
    tumour = probability >= TUMOUR_THRESHOLD
    if not tumour.any():
        return []
    margin = max(1, int(round(LUNG_MARGIN_MM / min(spacing[1:]))))
    box = _box_around(tumour, in_plane_margin=margin + 2)
    lung_z = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if not len(lung_z):
        return []  # no lungs: nothing can touch them
    lung_z_range = (int(lung_z[0]) - box[0].start, int(lung_z[-1]) - box[0].start)
    tumour_box, lungs_box = tumour[box], lungs[box]
    labels, count = ndimage.label(tumour_box, structure=np.ones((3, 3, 3), bool))
    # Dilation at half resolution (on the even rows and columns of the whole grid, as the
    # box starts on even indices), then back to full resolution.
    near_lung = ndimage.binary_dilation(
        lungs_box[:, ::2, ::2], structure=_in_plane_disk(max(1, margin // 2))
    )
    near_lung = np.repeat(np.repeat(near_lung, 2, axis=1), 2, axis=2)[:, : lungs_box.shape[1], : lungs_box.shape[2]]
    keep = keep_components(labels, count, probability[box], lungs_box, near_lung, spacing,
                           lung_z_range=lung_z_range)
    masks = []
    for i in keep:
        mask = np.zeros(tumour.shape, dtype=bool)
        mask[box] = labels == i
        masks.append(mask)
    return masks


def keep_components(
    labels: np.ndarray, count: int, probability: np.ndarray, lungs: np.ndarray, near_lung: np.ndarray,
    spacing: tuple[float, float, float], lung_z_range: tuple[int, int] | None = None,
) -> list[int]:
    """False-positive filter on the tumour components; returns the labels kept, largest first.

    A component is kept when it
      * touches the lungs (``near_lung``: the lungs dilated by ``LUNG_MARGIN_MM``),
      * holds at least ``MIN_LESION_MM3`` and reaches ``MIN_PEAK_PROBABILITY``,
      * has a mean probability of at least ``MIN_MEAN_PROBABILITY`` (vessel cross-sections at
        the hila come out as small, lukewarm blobs),
      * spans at least ``MIN_Z_EXTENT_MM`` along z (the network's spurious findings are often
        one slice thick),
      * is not a mostly extra-pulmonary blob on the first or last lung slice (diaphragm domes
        at the lung bases) thinner than ``MIN_END_SLICES_MM`` along z,
      * and has a probability-weighted volume of at least ``MIN_RELATIVE_WEIGHT`` times the
        largest candidate's.
    ``lung_z_range`` gives the first and last lung slice (in ``labels``' z indices) when the
    arrays are a box cut from the series; by default it is found from ``lungs``.
    Thresholds were tuned on validation seeds disjoint from training and held-out seeds.
    """
    if count == 0:
        return []
    voxel_mm3 = float(np.prod(spacing))
    tumour = labels > 0
    lab = labels[tumour]
    sizes = np.bincount(lab, minlength=count + 1)[1:] * voxel_mm3
    weight = np.bincount(lab, weights=probability[tumour].astype(np.float32), minlength=count + 1)[1:] * voxel_mm3
    mean_prob = weight / np.maximum(sizes, 1e-9)
    peaks = ndimage.maximum(probability.astype(np.float32), labels, index=np.arange(1, count + 1))
    in_lung = np.bincount(lab, weights=lungs[tumour], minlength=count + 1)[1:] * voxel_mm3 / np.maximum(sizes, 1e-9)
    touching = np.zeros(count + 1, dtype=bool)
    touching[np.unique(labels[near_lung & tumour])] = True
    if lung_z_range is None:
        lung_z = np.nonzero(lungs.any(axis=(1, 2)))[0]
        lung_z_range = (int(lung_z[0]), int(lung_z[-1])) if len(lung_z) else (0, labels.shape[0] - 1)
    z_first, z_last = lung_z_range
    candidates = []
    for i, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        n_slices = box[0].stop - box[0].start
        at_end = box[0].start <= z_first or box[0].stop - 1 >= z_last
        if (
            sizes[i] >= MIN_LESION_MM3
            and touching[i + 1]
            and peaks[i] >= MIN_PEAK_PROBABILITY
            and mean_prob[i] >= MIN_MEAN_PROBABILITY
            and n_slices * spacing[0] >= MIN_Z_EXTENT_MM
            and not (at_end and in_lung[i] < 0.5 and n_slices * spacing[0] < MIN_END_SLICES_MM)
        ):
            candidates.append(i)
    if candidates:
        largest = max(weight[i] for i in candidates)
        candidates = [i for i in candidates if weight[i] >= MIN_RELATIVE_WEIGHT * largest]
    return [i + 1 for i in sorted(candidates, key=lambda i: -sizes[i])]


def refine_extent(lesions: list[np.ndarray], extent_probability: np.ndarray, z0: int) -> list[np.ndarray]:
    """Each detected lesion joined with the extent model's components that overlap it, largest first.

    The detector (with ``keep_components``) decides *whether* there is a lesion; the extent
    model, trained on large and central tumours, decides *how far* it reaches: where a tumour
    fills the lung from the mediastinum to the chest wall, the detector sees no lung around
    it and stops short.  Extent components that touch no detected lesion are ignored, so the
    extent model never adds a lesion; lesions joined by one extent component become one.

    Parameters
    ----------
    lesions
        Detected lesion masks on the source grid.
    extent_probability
        The extent model's probability on source slices ``z0`` onwards (same rows and columns).
    z0
        Source slice of ``extent_probability[0]``.
    """
    extent = extent_probability >= TUMOUR_THRESHOLD
    if not lesions or not extent.any():
        return lesions
    box = _box_around(extent, in_plane_margin=0)
    labels, _ = ndimage.label(extent[box], structure=np.ones((3, 3, 3), bool))
    on_source = (slice(z0 + box[0].start, z0 + box[0].stop), box[1], box[2])
    groups: list[tuple[set[int], list[int]]] = []  # (extent components, lesions) joined
    for i, lesion in enumerate(lesions):
        ids = set(np.unique(labels[lesion[on_source]]).tolist()) - {0}
        joined = [g for g in groups if g[0] & ids]
        for g in joined:
            groups.remove(g)
        groups.append((ids.union(*(g[0] for g in joined)), [i, *(j for g in joined for j in g[1])]))
    refined = []
    for ids, members in groups:
        mask = lesions[members[0]].copy()
        for i in members[1:]:
            mask |= lesions[i]
        if ids:
            mask[on_source] |= np.isin(labels, sorted(ids))
        refined.append(mask)
    return sorted(refined, key=lambda m: -int(m.sum()))


def _box_around(mask: np.ndarray, in_plane_margin: int) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` widened in-plane by ``in_plane_margin``; rows and columns
    start on even indices (half-resolution steps stay aligned with the whole grid)."""
    zs, rows, cols = (np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    r0 = max(0, int(rows[0]) - in_plane_margin) // 2 * 2
    c0 = max(0, int(cols[0]) - in_plane_margin) // 2 * 2
    return (slice(int(zs[0]), int(zs[-1]) + 1),
            slice(r0, min(mask.shape[1], int(rows[-1]) + in_plane_margin + 1)),
            slice(c0, min(mask.shape[2], int(cols[-1]) + in_plane_margin + 1)))


def _in_plane_disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    structure = np.zeros((3, 2 * radius + 1, 2 * radius + 1), dtype=bool)
    structure[1] = r[:, None] ** 2 + r[None, :] ** 2 <= radius**2
    return structure


Axis = tuple[tuple[float, float, float], tuple[float, float, float]]


def recist_axes(mask: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[Axis, Axis, int, float, float]:
    """RECIST 1.1 longest axial diameter and its longest perpendicular, in mm.

    The long axis is the largest in-plane distance between two lesion pixels over all slices
    (found on the convex hull of each slice); the short axis is the longest chord perpendicular
    to it on the same slice.

    Returns
    -------
    long_axis, short_axis
        Endpoints ``((slice, row, col), (slice, row, col))`` as voxel indices.
    key_slice
        The slice holding the long axis.
    long_mm, short_mm
        Their lengths.
    """
    from scipy.spatial import ConvexHull, QhullError

    sr, sc = pixel_spacing
    best = (-1.0, 0, None, None)
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        pts = np.argwhere(mask[k]).astype(float)
        if len(pts) >= 4:
            try:
                pts_hull = pts[ConvexHull(pts * [sr, sc]).vertices]
            except QhullError:
                pts_hull = pts
        else:
            pts_hull = pts
        mm = pts_hull * [sr, sc]
        d2 = ((mm[:, None, :] - mm[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
        if d2[i, j] > best[0]:
            best = (float(d2[i, j]), int(k), pts_hull[i], pts_hull[j])
    d2, key, p, q = best
    long_mm = float(np.sqrt(d2))
    pts = np.argwhere(mask[key]).astype(float)
    mm = pts * [sr, sc]
    u = (q - p) * [sr, sc] / long_mm if long_mm > 0 else np.array([1.0, 0.0])
    v = np.array([-u[1], u[0]])
    along, across = mm @ u, mm @ v
    bins = np.rint(along / min(sr, sc)).astype(int)
    short_mm, s0, s1 = 0.0, pts[0], pts[0]
    order = np.argsort(bins, kind="stable")
    bins_sorted = bins[order]
    edges = np.r_[0, np.nonzero(np.diff(bins_sorted))[0] + 1, len(order)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        members = order[a:b]
        lo, hi = members[np.argmin(across[members])], members[np.argmax(across[members])]
        length = float(across[hi] - across[lo])
        if length > short_mm:
            short_mm, s0, s1 = length, pts[lo], pts[hi]
    # A single pixel row still has the width of one pixel.
    long_mm = max(long_mm, min(sr, sc))
    short_mm = max(short_mm, min(sr, sc))
    long_axis = ((float(key), float(p[0]), float(p[1])), (float(key), float(q[0]), float(q[1])))
    short_axis = ((float(key), float(s0[0]), float(s0[1])), (float(key), float(s1[0]), float(s1[1])))
    return long_axis, short_axis, key, long_mm, short_mm
