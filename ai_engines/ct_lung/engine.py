"""CT lung engine: primary lung tumour (GTV) and both lungs on an axial chest CT.

After Primakov et al., "Automated detection and segmentation of non-small cell lung cancer
computed tomography images", Nat Commun 13, 3423 (2022): rule-based lung isolation, 2-D U-Net
tumour segmentation on the published pre-processing, lesions that pass a false-positive filter
and the anatomical checks a lung tumour must pass (``lesions``, ``lesion_checks``), numbered
GTV_1, GTV_2... largest first; a second network of the same shape delineates the extent of
each lesion the first one found, within the lesion's surroundings.  Per lesion: volume,
RECIST 1.1 axes (``recist``), mean and SD of HU, a calibrated probability (``confidence``).
This module holds the stages; the lesion post-processing lives in those modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ai_engines import codes
from ai_engines.ct_lung import ARCHITECTURE, ENGINE_VERSION, EXTENT_MODEL_NAME, MODEL_NAME
from ai_engines.ct_lung.confidence import PlattCalibration, lesion_probability
from ai_engines.ct_lung.lesions import (
    MIN_LESION_MM3,
    Lesion,
    LesionSearch,
    lesion_masks,
    refine_extent,
)
from ai_engines.ct_lung.lungs import isolate_lungs
from ai_engines.ct_lung.preprocess import (
    CANVAS_SIZE,
    PREPROCESSING_VERSION,
    CanvasMapping,
    canvas_to_source,
    preprocess,
)
from ai_engines.ct_lung.recist import recist_axes
from ai_engines.ct_lung.spec import ACCEPTANCE
from ai_engines.ct_lung.unet import UNet2D, context_step, predict_foreground
from ai_engines.engine import (
    Engine,
)
from ai_engines.findings import Decline, EngineIdentity, Findings, Measurement, Segment
from ai_engines.models import (
    ModelFiles,
    ModelNotFound,
    load_weights,
    locate_model,
    resolve_device,
)
from ai_engines.volume import SeriesVolume, StudyInput

QC_NO_LUNG_FIELD = "QC_NO_LUNG_FIELD"
MIN_LUNG_ML = 100.0  # less than this in both lungs: not a chest CT (or not this region)
EXTENT_MARGIN_MM = 20.0  # the extent model looks this far above and below each detected lesion
GTV_COLOUR = (255, 0, 0)
CHECK_NAMES = {  # lesion_checks.CHECKS as the notes say them
    "lung_side": "outside the lung",
    "tube": "tube through many slices (vessel or oesophagus)",
    "flat": "flat sheet (dome or pleura cut tangentially)",
    "density": "not soft tissue",
}
# The smallest lesions the engine was validated to detect (docs, "Small nodules": synthetic
# validation seeds 300000-300029: 18 of 20 tumours of 0.5 ml or more found, none of 7 smaller).
SMALLEST_VALIDATED_NOTE = (
    "validated on synthetic CT to detect solid lesions of 0.5 ml (about 10 mm) and larger; "
    "smaller nodules may be missed; not validated on real CT, where a 1.4 ml nodule was missed"
)
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
    acceptance = ACCEPTANCE  # declared once, in the torch-free spec

    def __init__(self, model_dir: Path | None = None, device: str = "auto", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        self.files = locate_model("ct_lung", MODEL_NAME, model_dir)
        self.detector = self._load(self.files)
        # Per-lesion probability: the Platt calibration fitted for these weights (their card).
        self._calibration = PlattCalibration.from_card(self.files.card.measured_accuracy)
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
        card.require_preprocessing(PREPROCESSING_VERSION)
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
        search = lesion_masks(probability, lungs.both, geometry.spacing_zyx, hu=hu)
        del probability
        detected = search.lesions
        lesions = search.masks
        timings["tumour"] = time.perf_counter() - t

        extent_note = ""
        if self.extent is not None and self.extent_files is not None and lesions:
            t = time.perf_counter()
            margin = int(np.ceil(EXTENT_MARGIN_MM / geometry.slice_spacing))
            lesion_z = np.nonzero(np.any([m.any(axis=(1, 2)) for m in lesions], axis=0))[0]
            z0, z1 = int(lesion_z[0]) - margin, int(lesion_z[-1]) + margin
            near = lung_slices[(lung_slices >= z0) & (lung_slices <= z1)]
            z0, z1 = int(near[0]), int(near[-1])
            extent = self._probabilities(self.extent, canvas, near, first, box, mapping,
                                         (z1 - z0 + 1, *hu.shape[1:]), geometry.slice_spacing, offset=z0)
            detected_count, detected_voxels = len(lesions), sum(int(m.sum()) for m in lesions)
            lesions = refine_extent(lesions, extent, z0, lungs.both, geometry.spacing_zyx)
            timings["extent"] = time.perf_counter() - t
            # Say what the extent model changed, so a reader can check it against the images.
            added_ml = (sum(int(m.sum()) for m in lesions) - detected_voxels) * voxel_mm3 / 1000
            joined = f"; {detected_count} detected lesions joined into {len(lesions)}" if len(lesions) < detected_count else ""
            extent_note = f"extent model {self.extent_files.card.version} added {added_ml:.1f} ml to the detected lesion(s){joined}"

        t = time.perf_counter()
        segments = [self._lung_segment("Lung_L", lungs.left, codes.LEFT, LUNG_L_COLOUR, voxel_mm3),
                    self._lung_segment("Lung_R", lungs.right, codes.RIGHT, LUNG_R_COLOUR, voxel_mm3)]
        for number, lesion in enumerate(lesions, start=1):
            # A lesion's confidence is that of the most confident detected lesion it holds.
            members = [d for d in detected if (d.mask & lesion).any()]
            confidences = [c for d in members if (c := self._lesion_probability(d, voxel_mm3 / 1000)) is not None]
            confidence = max(confidences, default=None)
            segments.insert(number - 1, self._gtv_segment(number, lesion, hu, volume, confidence))
        timings["measure"] = time.perf_counter() - t
        notes = [f"{len(lesions)} lesion(s) above {MIN_LESION_MM3:g} mm3"]
        notes += _search_notes(search, self._calibration is not None and bool(lesions))
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

    def _lesion_probability(self, lesion: Lesion, voxel_ml: float) -> float | None:
        """Calibrated probability that a detected lesion is a tumour (None: no calibration)."""
        if self._calibration is None:
            return None
        return lesion_probability(lesion.mean_probability, float(lesion.mask.sum()) * voxel_ml, self._calibration)

    def _gtv_segment(self, number: int, mask: np.ndarray, hu: np.ndarray, volume: SeriesVolume, probability: float | None) -> Segment:
        geometry = volume.geometry
        voxel_mm3 = float(np.prod(geometry.spacing_zyx))
        values = hu[mask]
        long_axis, short_axis, key_slice, long_mm, short_mm = recist_axes(mask, geometry.pixel_spacing)
        # GTV_1, GTV_2... largest first; the same name is the SR's tracking identifier, so a
        # physician who rejects "GTV_2" in the picture finds it in the RTSTRUCT and the SR.
        label = f"GTV_{number}"
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
            probability=None if probability is None else round(probability, 3),
        )


def _search_notes(search: LesionSearch, calibrated: bool) -> list[str]:
    """What the lesion search rejected and what a lesion's probability means (SR comments)."""
    notes = []
    if search.rejected:
        reasons: dict[str, int] = {}
        for failed, _ml in search.rejected:
            for check in failed:
                reasons[check] = reasons.get(check, 0) + 1
        described = ", ".join(f"{CHECK_NAMES[c]} {n}" for c, n in sorted(reasons.items()))
        notes.append(f"{len(search.rejected)} candidate(s) rejected as not lung tumours ({described})")
    if calibrated:
        notes.append("lesion probability: Platt-calibrated on synthetic validation cases; on real CT it is an upper bound")
    notes.append(SMALLEST_VALIDATED_NOTE)
    return notes
