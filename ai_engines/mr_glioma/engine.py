"""MR glioma engine: BraTS-style sub-regions, VASARI-like features and a grade on brain MR.

Selection by role from the headers (:mod:`ai_engines.mr_glioma.sequences`), pre-processing
(:mod:`ai_engines.mr_glioma.preprocess`: rigid registration to the reference, N4, 1 mm grid,
brain mask, z-score), a 2.5-D U-Net over the axial slices of the working grid, lesion checks
(components inside the brain, with a tumour core, large and confident enough), labels
resampled back to the reference series, measurements and a grade probability.

With T1c alone and a T1c-only network present the engine runs a cascade (:func:`find_lesions`):
the all-sequence network detects (specific: no false lesion on the real tumour-free heads),
the T1c-only network delineates, bounded to the neighbourhood of each detected lesion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from scipy import ndimage

from ai_engines import codes
from ai_engines.codes import Code
from ai_engines.ct_lung.unet import UNet2D
from ai_engines.engine import Engine
from ai_engines.findings import (
    Classification,
    Decline,
    EngineIdentity,
    Findings,
    Measurement,
    Segment,
)
from ai_engines.models import (
    ModelError,
    ModelFiles,
    ModelNotFound,
    load_weights,
    locate_model,
    resolve_device,
)
from ai_engines.mr_glioma import GRADE_MODEL_NAME, MODEL_NAME, T1C_MODEL_NAME
from ai_engines.mr_glioma.preprocess import (
    GRID_MM,
    PREPROCESSING_VERSION,
    Prepared,
    prepare,
    series_to_image,
)
from ai_engines.mr_glioma.sequences import SequenceSelection, select_sequences
from ai_engines.mr_glioma.spec import ACCEPTANCE, ENGINE_VERSION, MR_GEOMETRY, ROLES
from ai_engines.mr_glioma.unet import GradeHead, predict_probabilities, tumour_features
from ai_engines.quality import check_series
from ai_engines.volume import SeriesVolume, StudyInput

MR_NO_USABLE_SEQUENCE = "MR_NO_USABLE_SEQUENCE"
MR_NOT_BRAIN = "MR_NOT_BRAIN"
MR_REGISTRATION_FAILED = "MR_REGISTRATION_FAILED"
DECLINE_CODES = (MR_NO_USABLE_SEQUENCE, MR_NOT_BRAIN, MR_REGISTRATION_FAILED)

# A brain mask outside this range is not a (whole or most of a) brain: a spine, a knee, a slab.
MIN_BRAIN_ML, MAX_BRAIN_ML = 400.0, 2500.0
# Lesion checks on the 1 mm working grid.  Size and depth re-checked by ai_engines.mr_glioma.calibrate
# (synthetic validation, brain2 as the check): with these weights every looser pair leaves a false
# lesion on brain2, and the small cortical lesions are missed by the network, not by the checks.
MIN_LESION_ML = 1.0  # smaller whole-tumour components: noise or vessels (brain2: a 0.7 ml bright vessel); under the 2 mm network grid's reach anyway
MIN_CORE_ML = 0.1  # a lesion needs a tumour core (enhancing, necrotic or non-enhancing)
MIN_MEAN_PROBABILITY = 0.6  # mean tumour probability over the component
MIN_RELATIVE_SIZE = 0.1  # further lesions: at least this share of the largest
MIN_MEAN_DEPTH_MM = 6.0  # mean depth of a lesion below the brain-mask surface (1 mm voxels)
MIDLINE_MARGIN_MM = 5.0  # crossing: tumour this far on both sides of the mid-sagittal plane
LOBE_MIN_FRACTION = 0.1  # a lobe is "involved" with at least this share of the whole tumour
GRADE_THRESHOLD = 0.5
# T1c-only cascade: the extent network's lesion is kept within this distance of the detector's.
# On T1c the detector often finds only a fragment of the tumour (held-out seed 100004: WT 0.03
# alone); a large glioma with its oedema (~100 ml) reaches about 30 mm from its centre.  Chosen on
# validation seeds 200010-200013 (disjoint from training and test): 15 / 20 / 30 mm / unbounded
# gave WT 0.47 / 0.60 / 0.71 / 0.75 and 0.65 / 0.68 / 0.69 / 0.69 where the detector found the
# tumour.  A bound at all: the extent network's false tumour on real brain2 was one cortex-wide
# component (86 ml), kept whole, unbounded, as soon as any of it touched a detection
# (fifth session, docs/mr-glioma-engine.md).
EXTENT_MARGIN_MM = 30.0

# Private codes (coding scheme designator "99" + project) for what has no standard code.
_SCHEME = "99DCMNODE"
ENHANCING_PROPORTION = Code("MRG001", _SCHEME, "Enhancing proportion of whole tumour")
NECROSIS_PROPORTION = Code("MRG002", _SCHEME, "Necrotic proportion of whole tumour")
OEDEMA_PROPORTION = Code("MRG003", _SCHEME, "Oedema proportion of whole tumour")
MIDLINE_CROSSING = Code("MRG004", _SCHEME, "Tumour crosses the midline")
HIGH_GRADE_GLIOMA = Code("MRG005", _SCHEME, "High-grade glioma (DEMO: enhancing glioma)")
WHOLE_TUMOUR = Code("MRG006", _SCHEME, "Whole tumour")
LOBES = {
    "frontal": Code("83251001", "SCT", "Frontal lobe"),
    "parietal": Code("16630005", "SCT", "Parietal lobe"),
    "temporal": Code("78277001", "SCT", "Temporal lobe"),
    "occipital": Code("31065004", "SCT", "Occipital lobe"),
    "infratentorial": Code("113305005", "SCT", "Cerebellum"),
}
COLOURS = {"Enhancing": (255, 40, 40), "Necrosis": (255, 220, 0), "NonEnhancing": (255, 160, 0),
           "Edema": (60, 200, 80), "GTV": (230, 0, 230)}


@dataclass(frozen=True)
class _Network:
    """A loaded segmentation network and its input layout (from its card)."""

    files: ModelFiles
    model: UNet2D
    context: int
    step: int
    pool: int
    depth: int
    sequences: tuple[str, ...]  # empty: any subset (missing sequences zero-filled)


@dataclass(frozen=True)
class Inference:
    """Class probabilities (4, z, y, x) of one study on the working grid.

    ``probabilities`` are the detector's (the all-sequence network); ``extent_probabilities``
    the T1c-only network's where the study has T1c alone and that network is present.
    """

    detector: _Network
    probabilities: np.ndarray
    extent: _Network | None = None
    extent_probabilities: np.ndarray | None = None

    def networks(self) -> tuple[_Network, ...]:
        """The networks that ran: the detector, then the extent network if any."""
        return (self.detector,) if self.extent is None else (self.detector, self.extent)


class MrGliomaEngine(Engine):
    """Glioma sub-regions on brain MR (any subset of T1, T1c, T2, FLAIR with T1c or FLAIR).

    Parameters
    ----------
    model_dir
        Site folder whose ``mr_glioma_unet``/``mr_glioma_grade`` files replace the packaged ones.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads
        CPU threads for inference (None: leave torch's setting).
    """

    name = "mr_glioma"
    version = ENGINE_VERSION
    acceptance = ACCEPTANCE

    def __init__(self, model_dir: Path | None = None, device: str = "auto", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        self.files = locate_model("mr_glioma", MODEL_NAME, model_dir)
        self.network = self._load_network(self.files)
        # Helpers of the segmentation network come from its own folder: the grade head reads its
        # encoder, and a site's network is not paired with the packaged demo T1c-only network.
        same_folder = model_dir if self.files.source == "site" else None
        try:
            self.grade_files: ModelFiles | None = locate_model(
                "mr_glioma", GRADE_MODEL_NAME, same_folder, packaged=self.files.source == "package",
            )
        except ModelNotFound:
            self.grade_files = None
        self.grade_head = None
        if self.grade_files is not None:
            head = GradeHead(int(self.grade_files.card.architecture["in_features"]))
            self.grade_head = load_weights(self.grade_files, head, self.device)
        # A network trained on T1c alone serves studies whose only usable sequence is T1c: one
        # network with the other inputs zero-filled segmented the oedema poorly there.
        try:
            t1c_files = locate_model("mr_glioma", T1C_MODEL_NAME, same_folder, packaged=self.files.source == "package")
        except ModelNotFound:
            t1c_files = None
        self.single_sequence: dict[frozenset[str], _Network] = {}
        if t1c_files is not None:
            network = self._load_network(t1c_files)
            self.single_sequence[frozenset(network.sequences)] = network
        if threads is not None:
            torch.set_num_threads(threads)

    def _load_network(self, files: ModelFiles) -> _Network:
        card = files.card
        card.require_preprocessing(PREPROCESSING_VERSION)
        arch = dict(card.architecture)
        context = int(arch.pop("context"))
        step = max(1, int(round(float(arch.pop("context_mm")))))
        pool = int(arch.pop("pool", 1))
        sequences = tuple(str(r) for r in arch.pop("sequences", ()))
        if card.name == T1C_MODEL_NAME and sequences != ("T1c",):
            raise ModelError(f"{card.name} {card.version}: its card must say sequences ['T1c'], not {list(sequences)}")
        model = load_weights(files, UNet2D(**arch), self.device)
        return _Network(files, model, context, step, pool, int(arch.get("depth", 4)), sequences)

    def network_for(self, roles: set[str] | frozenset[str]) -> _Network:
        """The network whose labels are reported for a study with sequences ``roles`` (with T1c
        alone and a T1c-only network: that one, bounded by the all-sequence detector)."""
        return self.single_sequence.get(frozenset(roles), self.network)

    def infer(self, prepared: Prepared) -> Inference:
        """The detector's probabilities, and the extent network's where a cascade applies."""
        extent = self.single_sequence.get(frozenset(prepared.channels))
        probabilities = self._probabilities(prepared, self.network)
        if extent is None:
            return Inference(self.network, probabilities)
        return Inference(self.network, probabilities, extent, self._probabilities(prepared, extent))

    def identity(self, network: _Network | None = None) -> EngineIdentity:
        """The engine's identity; with ``network``: naming the segmentation network that ran."""
        card = (network or self.network).files.card
        # Short names: the version fits the SR's algorithm version (LO, 64 characters).
        version = f"{self.version}+{self.files.card.name.removeprefix('mr_glioma_')}-{self.files.card.version}"
        for extra in self.single_sequence.values():
            version += f"+{extra.files.card.name.removeprefix('mr_glioma_unet_')}-{extra.files.card.version}"
        if self.grade_files:
            version += f"+grade-{self.grade_files.card.version}"
        return EngineIdentity(
            name="mr-glioma", version=version, model_name=card.name, model_sha256=card.sha256,
            research_use_only=card.research_use_only or bool(self.grade_files and self.grade_files.card.research_use_only),
            intended_use=card.intended_use,
        )

    # ------------------------------------------------------------ selection
    def select_sequences(self, study: StudyInput) -> tuple[dict[str, SeriesVolume], list[str]] | Decline:
        """The best series per role that passes the quality checks, and notes on every series."""
        selection: SequenceSelection = select_sequences(study.series)
        notes = selection.notes()
        chosen: dict[str, SeriesVolume] = {}
        for role, volume in selection.chosen.items():
            failures = check_series(volume, MR_GEOMETRY)
            if failures:
                notes.append(f"{role} not used: {failures[0].code}: {failures[0].reason}")
            else:
                chosen[role] = volume
        if "T1c" not in chosen and "FLAIR" not in chosen:
            found = ", ".join(sorted(chosen)) or "none"
            detail = "; ".join(notes) or "the study holds no series"
            return Decline(MR_NO_USABLE_SEQUENCE, f"needs a usable T1c or FLAIR series (usable: {found}); {detail}"[:1000])
        return chosen, notes

    # ------------------------------------------------------------------ run
    def run(self, study: StudyInput) -> Findings:
        """Segment, measure and grade the glioma of a brain MR study, or decline."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        mr = study.by_modality("MR")
        fallback_uid = mr[0].series_uid if mr else (study.series[0].series_uid if study.series else "")
        selected = self.select_sequences(study)
        if isinstance(selected, Decline):
            return self.declined(fallback_uid, selected)
        chosen, notes = selected
        reference_role = next(r for r in ROLES if r in chosen)
        reference = chosen[reference_role]
        timings["select"] = time.perf_counter() - t0

        t = time.perf_counter()
        prepared = prepare(chosen, reference_role)
        timings["preprocess"] = time.perf_counter() - t
        notes += [r.note() for r in prepared.registrations]
        failed = [r for r in prepared.registrations if not r.ok]
        if failed:
            return self.declined(reference.series_uid, Decline(MR_REGISTRATION_FAILED, "; ".join(r.note() for r in failed)))
        if prepared.prior is not None:
            notes.append(prepared.prior.note())
            if not prepared.prior.ok:
                return self.declined(reference.series_uid, Decline(MR_NOT_BRAIN, prepared.prior.note()))
        brain_ml = float(prepared.brain.sum()) / 1000.0  # 1 mm voxels
        if not MIN_BRAIN_ML <= brain_ml <= MAX_BRAIN_ML:
            return self.declined(reference.series_uid, Decline(
                MR_NOT_BRAIN, f"brain mask of {brain_ml:.0f} ml on the {reference_role} series; a brain MR has "
                f"{MIN_BRAIN_ML:.0f}-{MAX_BRAIN_ML:.0f} ml"))
        notes.append(
            f"pre-processing {PREPROCESSING_VERSION}: reference {reference_role}, rigid Mattes-MI registration, N4, "
            f"1 mm grid {tuple(prepared.grid.GetSize())}, brain mask {brain_ml:.0f} ml, z-score in the brain"
        )

        t = time.perf_counter()
        inference = self.infer(prepared)
        timings["inference"] = time.perf_counter() - t

        t = time.perf_counter()
        labels, lesion_count = find_lesions(inference.probabilities, prepared.brain, inference.extent_probabilities)
        timings["postprocess"] = time.perf_counter() - t

        segments: list[Segment] = []
        classifications: list[Classification] = []
        measurements: list[Measurement] = []
        if lesion_count:
            t = time.perf_counter()
            source_labels = labels_to_series(labels, prepared.grid, reference)
            timings["resample"] = time.perf_counter() - t
            segments, measurements, feature_notes = describe(labels, source_labels, prepared, reference)
            notes += feature_notes
            if self.grade_head is not None and segments:
                t = time.perf_counter()
                probability = self._grade(prepared, labels > 0)
                classifications.append(Classification(
                    finding=HIGH_GRADE_GLIOMA, probability=round(probability, 3), threshold=GRADE_THRESHOLD,
                    positive=probability >= GRADE_THRESHOLD, finding_site=codes.BRAIN, tracking_id="GTV",
                    source_series_uid=reference.series_uid,
                ))
                timings["grade"] = time.perf_counter() - t
        notes.insert(0, f"{lesion_count} lesion(s) found" if lesion_count else "no tumour found")
        networks = inference.networks()
        roles = ("detector", "extent") if len(networks) > 1 else ("segmentation",)
        for role, network in zip(roles, networks, strict=True):
            used = network.files.card
            notes.append(f"model {used.name} {used.version}" + (f" [{used.label}]" if used.label else "")
                         + f" ({role}), sha256 {used.sha256}")
        if inference.extent is not None:
            notes.append(f"T1c alone: lesions detected by {inference.detector.files.card.name}, extent from "
                         f"{inference.extent.files.card.name} within {EXTENT_MARGIN_MM:g} mm of each detected lesion")
        timings["total"] = time.perf_counter() - t0
        return Findings(
            engine=self.identity(networks[-1]), source_series_uid=reference.series_uid, segments=tuple(segments),
            classifications=tuple(classifications), study_measurements=tuple(measurements), notes=tuple(notes),
            timings_s=timings,
        )

    def _probabilities(self, prepared: Prepared, network: _Network) -> np.ndarray:
        """Class probabilities (4, z, y, x) float16 on the working grid from ``network``, zero
        outside the brain box."""
        brain = prepared.brain
        shape = brain.shape
        unit = network.pool * 2**network.depth
        zs = np.nonzero(brain.any(axis=(1, 2)))[0]
        rows, cols = (int(np.ceil(n / unit) * unit) for n in shape[1:])
        padded = (rows, cols)
        channels = {role: _pad(values, padded) for role, values in prepared.channels.items()}
        box = []
        for axis, n in ((1, padded[0]), (2, padded[1])):
            idx = np.nonzero(brain.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))[0]
            lo, hi = int(idx[0]) - 8, int(idx[-1]) + 9
            size = min(n, int(np.ceil((hi - lo) / unit) * unit))
            lo = int(np.clip(lo, 0, n - size))
            box.append(slice(lo, lo + size))
        prob_box = predict_probabilities(
            network.model, channels, zs, (box[0], box[1]), network.context, network.step, network.pool,
            device=self.device,
        )
        out = np.zeros((4, shape[0], *padded), np.float16)
        out[0] = 1.0
        out[:, zs, box[0], box[1]] = prob_box
        return out[:, :, : shape[1], : shape[2]]

    def _grade(self, prepared: Prepared, tumour: np.ndarray) -> float:
        network = self.network  # the grade head reads the all-sequence network's encoder
        features, weight = tumour_features(network.model, prepared.channels, tumour, network.context, network.step,
                                           network.pool)
        if self.grade_head is None:
            raise RuntimeError("no grade model loaded")
        with torch.inference_mode():
            logit = self.grade_head(features.to(self.device), weight.to(self.device))
        return float(torch.sigmoid(logit))


def _pad(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.pad(values, ((0, 0), (0, size[0] - values.shape[1]), (0, size[1] - values.shape[2])))


def keep_lesions(probabilities: np.ndarray, brain: np.ndarray, *, min_lesion_ml: float | None = None,
                 min_mean_depth_mm: float | None = None) -> tuple[np.ndarray, int]:
    """Labels (0-3, uint8) of the lesions that pass the checks, and how many there are.

    A whole-tumour component (26-connected) is kept when it lies in the brain mask, holds at
    least :data:`MIN_LESION_ML`, has a tumour core (enhancing or necrotic/non-enhancing) of
    :data:`MIN_CORE_ML`, a mean tumour probability of :data:`MIN_MEAN_PROBABILITY`, and is at
    least :data:`MIN_RELATIVE_SIZE` of the largest kept one, and lies on average at least
    :data:`MIN_MEAN_DEPTH_MM` below the brain-mask surface (on real brain2 the false lesions
    were scalp fat at the vertex and orbit/skull-base fat the mask had let in, 4 mm deep on
    average).
    Oedema-like signal without a core (vessels, choroid plexus, artefacts) is dropped.
    ``min_lesion_ml`` / ``min_mean_depth_mm`` override the two size and depth checks (for
    their calibration, :mod:`ai_engines.mr_glioma.calibrate`).
    """
    min_lesion_ml = MIN_LESION_ML if min_lesion_ml is None else min_lesion_ml
    min_mean_depth_mm = MIN_MEAN_DEPTH_MM if min_mean_depth_mm is None else min_mean_depth_mm
    labels = np.argmax(probabilities, axis=0).astype(np.uint8)
    labels[~brain] = 0
    whole = labels > 0
    components, n = ndimage.label(whole, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return labels, 0
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(whole, components, index) / 1000.0
    core = ndimage.sum_labels((labels == 1) | (labels == 3), components, index) / 1000.0
    tumour_probability = 1.0 - probabilities[0].astype(np.float32)
    mean_probability = ndimage.mean(tumour_probability, components, index)
    # Scalp fat at the vertex and orbit/skull-base fat that the brain mask let in lie in its
    # outer shell: a tumour reaches deeper into the brain on average.
    depth = ndimage.distance_transform_edt(brain)
    mean_depth = ndimage.mean(depth, components, index)
    candidates = [i for i in range(n) if sizes[i] >= min_lesion_ml and core[i] >= MIN_CORE_ML
                  and mean_probability[i] >= MIN_MEAN_PROBABILITY and mean_depth[i] >= min_mean_depth_mm]
    if candidates:
        largest = max(sizes[i] for i in candidates)
        candidates = [i for i in candidates if sizes[i] >= MIN_RELATIVE_SIZE * largest]
    keep = np.isin(components, np.asarray(candidates, int) + 1)
    labels[~keep] = 0
    return labels, len(candidates)


def find_lesions(probabilities: np.ndarray, brain: np.ndarray, extent_probabilities: np.ndarray | None = None, *,
                 min_lesion_ml: float | None = None, min_mean_depth_mm: float | None = None) -> tuple[np.ndarray, int]:
    """Labels (0-3, uint8) of the lesions found, and how many.

    :func:`keep_lesions` on the detector's ``probabilities``; in a cascade (``extent_probabilities``
    given), then on the extent network's, bounded by :func:`bound_extent` to what the detector
    found: no detection, no lesion. ``min_lesion_ml`` / ``min_mean_depth_mm``: as
    :func:`keep_lesions`, at both stages.
    """
    labels, count = keep_lesions(probabilities, brain, min_lesion_ml=min_lesion_ml,
                                 min_mean_depth_mm=min_mean_depth_mm)
    if extent_probabilities is None or count == 0:
        return labels, count
    bounded = bound_extent(extent_probabilities, labels > 0, brain)
    return keep_lesions(bounded, brain, min_lesion_ml=min_lesion_ml, min_mean_depth_mm=min_mean_depth_mm)


def bound_extent(probabilities: np.ndarray, detected: np.ndarray, brain: np.ndarray,
                 margin_mm: float = EXTENT_MARGIN_MM) -> np.ndarray:
    """The extent network's probabilities with all but its lesions at a detected one set to background.

    A whole-tumour component (26-connected, inside ``brain``) of the extent network is kept when
    it overlaps ``detected``, and only within ``margin_mm`` of it (1 mm working grid).
    """
    extent = (np.argmax(probabilities, axis=0) > 0) & brain
    components, _ = ndimage.label(extent, structure=np.ones((3, 3, 3), bool))
    touching = np.unique(components[detected & extent])
    allowed = np.isin(components, touching[touching > 0]) & within(detected, margin_mm)
    bounded = probabilities.copy()
    bounded[:, ~allowed] = 0.0
    bounded[0, ~allowed] = 1.0
    return bounded


def within(mask: np.ndarray, margin_mm: float, spacing_mm: float = GRID_MM) -> np.ndarray:
    """Voxels at most ``margin_mm`` from ``mask`` (Euclidean; computed in its bounding box only)."""
    near = np.zeros(mask.shape, bool)
    if not mask.any():
        return near
    reach = int(np.ceil(margin_mm / spacing_mm)) + 1
    box = tuple(slice(max(0, int(idx.min()) - reach), int(idx.max()) + reach + 1) for idx in np.nonzero(mask))
    near[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_mm) <= margin_mm
    return near


def labels_to_series(labels: np.ndarray, grid: sitk.Image, volume: SeriesVolume) -> np.ndarray:
    """Labels on the working grid resampled onto ``volume``'s voxels.

    Each class is averaged over the source slice thickness (a box along the working grid's
    slice axis, which is the reference's) and resampled linearly; the most likely class wins.
    """
    target = series_to_image(volume)
    thickness = max(1, int(round(target.GetSpacing()[2] / grid.GetSpacing()[2])))
    scores = []
    for cls in (1, 2, 3):
        one_hot = (labels == cls).astype(np.float32)
        if thickness > 1:
            one_hot = ndimage.uniform_filter1d(one_hot, size=thickness, axis=0)
        image = sitk.GetImageFromArray(one_hot)
        image.CopyInformation(grid)
        scores.append(sitk.GetArrayFromImage(sitk.Resample(image, target, sitk.Transform(), sitk.sitkLinear, 0.0)))
    stacked = np.stack([1.0 - np.sum(scores, axis=0), *scores])
    return np.argmax(stacked, axis=0).astype(np.uint8)


def _physical(grid: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """LPS coordinates (n, 3) of the voxels of ``mask`` on ``grid``."""
    idx = np.argwhere(mask)[:, ::-1].astype(float)  # (x, y, z) index order for ITK
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    return np.asarray(grid.GetOrigin()) + (idx * np.asarray(grid.GetSpacing())) @ direction.T


def describe(
    labels: np.ndarray, source_labels: np.ndarray, prepared: Prepared, reference: SeriesVolume,
) -> tuple[list[Segment], list[Measurement], list[str]]:
    """Segments on the reference grid, study measurements and notes (VASARI-like features)."""
    voxel_ml = float(np.prod(series_to_image(reference).GetSpacing())) / 1000.0
    enhancing, core1, oedema = source_labels == 3, source_labels == 1, source_labels == 2
    gtv = enhancing | core1
    whole = gtv | oedema
    has_enhancement = bool(enhancing.any())
    segments: list[Segment] = []

    def add(label: str, description: str, prop: Code, rt_type: str, mask: np.ndarray) -> None:
        if not mask.any():
            return
        volume = round(float(mask.sum()) * voxel_ml, 2)
        key = int(np.argmax(mask.sum(axis=(1, 2))))  # the slice with the largest area
        segments.append(Segment(
            label=label, description=description, category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property_type=prop, anatomic_region=codes.BRAIN, rt_interpreted_type=rt_type,
            color_rgb=COLOURS[label], mask=mask, tracking_id=label, key_slice=key,
            source_series_uid=reference.series_uid,
            measurements=(Measurement(codes.VOLUME, volume, codes.UNIT_ML, description=f"{description} volume"),),
        ))

    add("Enhancing", "enhancing tumour", codes.ENHANCING_LESION, "GTV", enhancing)
    if has_enhancement:
        add("Necrosis", "necrotic tumour core", codes.NECROSIS, "GTV", core1)
    else:
        add("NonEnhancing", "non-enhancing tumour core", codes.NON_ENHANCING_LESION, "GTV", core1)
    add("Edema", "peritumoural oedema (CTV-like region, not a treatment volume)", codes.EDEMA, "CTV", oedema)
    add("GTV", "glioma GTV: enhancing tumour and necrotic/non-enhancing core", codes.NEOPLASM, "GTV", gtv)

    whole_ml = float(whole.sum()) * voxel_ml
    fractions = {name: float(m.sum()) / max(1, int(whole.sum())) for name, m in (("enh", enhancing), ("nec", core1), ("oed", oedema))}
    measurements = [
        Measurement(codes.VOLUME, round(whole_ml, 2), codes.UNIT_ML, modifier=WHOLE_TUMOUR, description="whole-tumour volume"),
        Measurement(ENHANCING_PROPORTION, round(fractions["enh"], 3), codes.UNIT_NONE, description="enhancing / whole tumour"),
        Measurement(NECROSIS_PROPORTION, round(fractions["nec"], 3), codes.UNIT_NONE,
                    description="necrotic (non-enhancing) core / whole tumour"),
        Measurement(OEDEMA_PROPORTION, round(fractions["oed"], 3), codes.UNIT_NONE, description="oedema / whole tumour"),
    ]
    # Laterality, midline and lobes on the working grid (1 mm voxels, LPS: +x is patient left).
    brain_xyz = _physical(prepared.grid, prepared.brain)
    tumour_xyz = _physical(prepared.grid, labels > 0)
    midline_x = float(np.median(brain_xyz[:, 0]))
    left_ml = float((tumour_xyz[:, 0] > midline_x).sum()) / 1000.0
    right_ml = float((tumour_xyz[:, 0] <= midline_x).sum()) / 1000.0
    crosses = bool(tumour_xyz[:, 0].min() < midline_x - MIDLINE_MARGIN_MM and tumour_xyz[:, 0].max() > midline_x + MIDLINE_MARGIN_MM)
    total = left_ml + right_ml
    side = "left" if left_ml >= 0.9 * total else "right" if right_ml >= 0.9 * total else "bilateral"
    measurements += [
        Measurement(codes.VOLUME, round(left_ml, 2), codes.UNIT_ML, modifier=codes.LEFT, description="whole tumour left of the mid-sagittal plane"),
        Measurement(codes.VOLUME, round(right_ml, 2), codes.UNIT_ML, modifier=codes.RIGHT, description="whole tumour right of the mid-sagittal plane"),
        Measurement(MIDLINE_CROSSING, float(crosses), codes.UNIT_NONE, description="1: crosses the mid-sagittal plane by 5 mm either side"),
    ]
    lobe_ml = lobes(tumour_xyz, brain_xyz)
    involved = [name for name, ml in lobe_ml.items() if ml >= LOBE_MIN_FRACTION * total]
    for name, ml in lobe_ml.items():
        if ml > 0:
            measurements.append(Measurement(codes.VOLUME, round(ml, 2), codes.UNIT_ML, modifier=LOBES[name],
                                            description=f"whole tumour in the {name} region (approximate, from the brain bounding box)"))
    notes = [
        f"whole tumour {whole_ml:.1f} ml: enhancing {fractions['enh']:.0%}, necrotic/non-enhancing core {fractions['nec']:.0%}, oedema {fractions['oed']:.0%}",
        f"laterality {side} (left {left_ml:.1f} ml, right {right_ml:.1f} ml); midline crossing {'yes' if crosses else 'no'}",
        f"lobes (approximate, brain bounding box): {', '.join(involved) or 'none'}",
    ]
    return segments, measurements, notes


def lobes(tumour_xyz: np.ndarray, brain_xyz: np.ndarray) -> dict[str, float]:
    """Tumour volume (ml, 1 mm voxels) per approximate lobe.

    An approximation from the position inside the brain mask's bounding box, not an atlas:
    ``a`` runs 0 (anterior) to 1 (posterior), ``s`` 0 (inferior) to 1 (superior).
    Infratentorial: s < 0.25 and a > 0.55; occipital: a >= 0.75; temporal: s < 0.45 and
    0.15 <= a < 0.75; frontal: a < 0.45; parietal: the rest (a 0.45-0.75, s >= 0.45).
    """
    low, high = brain_xyz.min(axis=0), brain_xyz.max(axis=0)
    span = np.maximum(high - low, 1.0)
    a = (tumour_xyz[:, 1] - low[1]) / span[1]
    s = (tumour_xyz[:, 2] - low[2]) / span[2]
    region = np.full(len(a), "parietal", dtype=object)
    region[a < 0.45] = "frontal"
    region[(s < 0.45) & (a >= 0.15) & (a < 0.75)] = "temporal"
    region[a >= 0.75] = "occipital"
    region[(s < 0.25) & (a > 0.55)] = "infratentorial"
    return {name: float((region == name).sum()) / 1000.0 for name in LOBES}
