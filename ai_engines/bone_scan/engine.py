"""Bone-scan engine: probability of metastatic bone disease on a whole-body planar bone scan,
with a Grad-CAM heat map on both views and, when positive, the hot spots under the heat map.

After Primakov (thesis ch. 7): anterior and posterior whole-body views read together by a
VGG-style CNN (there VGG16 at 512x512, external AUC 0.897, sensitivity 82.2 %, specificity
80.5 %, about 2 s a scan), Grad-CAM shown on positive predictions.  Here a compact VGG-style
network reads the two views as the channels of one 128x32 canvas (see :mod:`.network`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ai_engines import codes
from ai_engines.bone_scan import ENGINE_NAME, MODEL_NAME
from ai_engines.bone_scan.network import BoneScanCNN, predict_with_gradcam
from ai_engines.bone_scan.preprocess import (
    CANVAS_SHAPE,
    NORMALISATION_PERCENTILE,
    PREPROCESSING_VERSION,
    CanvasMapping,
    canvas_to_view,
    study_canvas,
)
from ai_engines.bone_scan.spec import ACCEPTANCE, ENGINE_VERSION, GEOMETRY
from ai_engines.bone_scan.views import ViewFrame, find_views
from ai_engines.codes import Code
from ai_engines.engine import Engine
from ai_engines.findings import (
    Classification,
    Decline,
    EngineIdentity,
    Findings,
    Segment,
    VoxelMap,
)
from ai_engines.models import ModelError, load_weights, locate_model, resolve_device
from ai_engines.volume import SeriesVolume, StudyInput

# No standard code names a class-activation map; a private scheme says what it is.
GRADCAM = Code("GRADCAM", "99DICOMAI", "Grad-CAM class activation (metastatic bone disease)")
CAM_LEVEL = 0.5  # hot-spot segment: heat map at least this share of its peak ...
HOT_LEVEL = 1.0  # ... and counts at least the normalisation level (the view's bone level)
MIN_HOT_SPOT_PIXELS = 4  # smaller connected pieces are noise
SMOOTHING_PIXELS = 1.0  # Gaussian sigma on the counts before the hot-spot threshold
HOT_SPOT_COLOUR = (255, 64, 0)


class BoneScanEngine(Engine):
    """Metastatic bone disease on whole-body planar bone scans (anterior + posterior).

    Parameters
    ----------
    model_dir
        Site folder whose ``bone_scan_cnn.pt``/``.json`` replace the packaged demo weights.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads
        CPU threads for inference (None: leave torch's setting).
    """

    name = ENGINE_NAME
    version = ENGINE_VERSION
    acceptance = ACCEPTANCE

    def __init__(self, model_dir: Path | None = None, device: str = "auto", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        self.files = locate_model(ENGINE_NAME, MODEL_NAME, model_dir)
        card = self.files.card
        card.require_preprocessing(PREPROCESSING_VERSION)
        arch = dict(card.architecture)
        canvas_shape = tuple(arch.pop("canvas_shape", CANVAS_SHAPE))
        if canvas_shape != CANVAS_SHAPE:
            raise ModelError(f"{card.name} reads a {canvas_shape} canvas; this engine makes {CANVAS_SHAPE}")
        self.threshold = float(arch.pop("operating_threshold", 0.5))
        self.model = load_weights(self.files, BoneScanCNN(**arch), self.device)
        if threads is not None:
            torch.set_num_threads(threads)

    def identity(self) -> EngineIdentity:
        card = self.files.card
        return EngineIdentity(
            name="bone-scan-metastases",
            version=f"{self.version}+{card.name}-{card.version}",
            model_name=card.name,
            model_sha256=card.sha256,
            research_use_only=card.research_use_only,
            intended_use=card.intended_use,
        )

    def run(self, study: StudyInput) -> Findings:
        """Classify the study's whole-body scan and explain it, or decline with a coded reason."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        pair = find_views(study, GEOMETRY)
        if isinstance(pair, Decline):
            nm = study.by_modality("NM")
            uid = nm[0].series_uid if nm else (study.series[0].series_uid if study.series else "")
            return self.declined(uid, pair)
        canvas, (map_a, map_p) = study_canvas(pair)
        timings["views"] = time.perf_counter() - t

        t = time.perf_counter()
        x = torch.from_numpy(canvas[None]).to(self.device)
        probability_t, cam_t = predict_with_gradcam(self.model, x)
        probability = float(probability_t[0])
        cam = cam_t[0].cpu().numpy()
        timings["inference"] = time.perf_counter() - t

        t = time.perf_counter()
        positive = probability >= self.threshold
        cams = {
            "ANTERIOR": (pair.anterior, canvas_to_view(cam, map_a), map_a),
            "POSTERIOR": (pair.posterior, canvas_to_view(cam, map_p), map_p),
        }
        maps = self._maps(cams)
        segments = self._hot_spots(cams) if positive else ()
        timings["heat_map"] = time.perf_counter() - t

        anterior_ref = pair.anterior.reference
        classification = Classification(
            finding=codes.BONY_METASTASIS,
            probability=probability,
            threshold=self.threshold,
            positive=positive,
            finding_site=codes.BONE,
            tracking_id="bone-scan-1",
            source=anterior_ref,
            source_series_uid=pair.anterior.series.series_uid,
        )
        notes = [
            f"views: anterior frame {pair.anterior.index + 1} and posterior frame {pair.posterior.index + 1}"
            + (" of one series" if pair.anterior.series is pair.posterior.series else " of two series"),
            f"energy window: {pair.energy_window if pair.energy_window is not None else 'not given (one window)'}",
            *pair.notes,
            f"counts normalised to the {NORMALISATION_PERCENTILE:g}th percentile of each view "
            f"(anterior {map_a.scale:.1f}, posterior {map_p.scale:.1f} counts per canvas pixel mean)",
            f"probability of metastatic bone disease {probability:.3f}, operating threshold {self.threshold:.3f}: "
            f"{'positive' if positive else 'negative'}",
        ]
        if positive:
            notes.append(
                f"hot spots: heat map >= {CAM_LEVEL:g} of its peak and counts >= {HOT_LEVEL:g} x the normalisation "
                f"level; {'none found' if not segments else sum(int(s.mask.sum()) for s in segments)} pixels"
            )
        return Findings(
            engine=self.identity(),
            source_series_uid=pair.anterior.series.series_uid,
            segments=segments,
            classifications=(classification,),
            maps=maps,
            notes=tuple(notes),
            timings_s=timings,
        )

    @staticmethod
    def _by_series(cams: dict[str, tuple[ViewFrame, np.ndarray, CanvasMapping]]) -> dict[int, tuple[SeriesVolume, list[str]]]:
        grouped: dict[int, tuple[SeriesVolume, list[str]]] = {}
        for view, (frame, _, _) in cams.items():
            grouped.setdefault(id(frame.series), (frame.series, []))[1].append(view)
        return grouped

    def _maps(self, cams: dict[str, tuple[ViewFrame, np.ndarray, CanvasMapping]]) -> tuple[VoxelMap, ...]:
        """One heat map per source series, on its grid (zero on frames not read)."""
        maps = []
        for series, views in self._by_series(cams).values():
            values = np.zeros(series.shape, dtype=np.float32)
            for view in views:
                frame, cam_view, _ = cams[view]
                values[frame.index] = frame.to_source(cam_view)
            maps.append(VoxelMap(
                label="GradCAM",
                description=f"Grad-CAM heat map for metastatic bone disease, {' and '.join(v.lower() for v in views)} view"
                            f"{'s' if len(views) > 1 else ''} (0-1, share of its peak)",
                quantity=GRADCAM, unit=codes.UNIT_NONE, values=values, source_series_uid=series.series_uid,
            ))
        return tuple(maps)

    def _hot_spots(self, cams: dict[str, tuple[ViewFrame, np.ndarray, CanvasMapping]]) -> tuple[Segment, ...]:
        """Hot spots under the heat map, one segment per source series (empty ones dropped)."""
        segments: list[Segment] = []
        for series, views in self._by_series(cams).values():
            mask = np.zeros(series.shape, dtype=bool)
            for view in views:
                frame, cam_view, mapping = cams[view]
                counts = ndimage.gaussian_filter(frame.canonical(), SMOOTHING_PIXELS)
                hot = (cam_view >= CAM_LEVEL) & (counts >= HOT_LEVEL * mapping.scale)
                labels, n = ndimage.label(hot)
                if n:
                    sizes = ndimage.sum_labels(hot, labels, index=np.arange(1, n + 1))
                    hot = np.isin(labels, 1 + np.nonzero(sizes >= MIN_HOT_SPOT_PIXELS)[0])
                mask[frame.index] = frame.to_source(hot)
            if not mask.any():
                continue
            key = cams[views[0]][0].index
            segments.append(Segment(
                label="Hotspots",
                description=f"Hot spots under the Grad-CAM heat map ({' and '.join(v.lower() for v in views)})",
                category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                property_type=codes.BONY_METASTASIS,
                rt_interpreted_type="LESION",
                color_rgb=HOT_SPOT_COLOUR,
                mask=mask,
                anatomic_region=codes.BONE,
                tracking_id=f"bone-scan-hot-spots-{len(segments) + 1}",
                key_slice=key,
                source_series_uid=series.series_uid,
            ))
        return tuple(segments)
