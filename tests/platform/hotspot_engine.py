"""A worked example engine: counts hot spots (docs/writing-an-engine.md walks through it).

A hot spot is a connected group of at least ``MIN_VOXELS`` voxels brighter than the image's
mean plus ``SIGMA`` standard deviations: bone and calcifications on a CT, tracer uptake on a
planar NM scan.  The engine returns one segment holding every hot spot, the count and
the volume as measurements, and a voxel map of how many SDs each voxel lies above the mean.
It uses only the public engine API: ``ai_engines.acceptance``, ``.engine``, ``.spec``,
``.findings``, ``.volume`` and ``.codes``.  Installed through the entry point::

    [project.entry-points."dicom_node.engines"]
    hotspot = "tests.platform.hotspot_engine:SPEC"
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ai_engines import codes
from ai_engines.acceptance import Acceptance, GeometryNeeds, SeriesRequirement
from ai_engines.engine import Engine
from ai_engines.findings import Decline, EngineIdentity, Findings, Measurement, Segment, VoxelMap
from ai_engines.spec import EngineSpec
from ai_engines.volume import StudyInput

SIGMA = 3.0
MIN_VOXELS = 4
HOT_SPOT_COUNT = codes.Code("HOTSPOTS", "99DICOMAINODE", "Hot spot count")
STANDARD_SCORE = codes.Code("HOTSPOTZ", "99DICOMAINODE", "Standard score")
UNIT_SD = codes.Code("{SD}", "UCUM", "standard deviation")

ACCEPTANCE = Acceptance(series=(
    SeriesRequirement(
        role="image", modalities=("CT", "NM"),
        # Planar NM frames are views, CT slices a stack; the engine reads either, so only
        # what every input needs is checked: lossless pixels and some voxels to count.
        geometry=GeometryNeeds(min_slices=1, uniform_spacing=False, lossless_only=True),
    ),
))

SPEC = EngineSpec(
    name="hotspot", version="0.1.0", title="Hot-spot counter (worked example engine)",
    acceptance=ACCEPTANCE, models=(), factory="tests.platform.hotspot_engine:HotSpotEngine",
)


class HotSpotEngine(Engine):
    """Counts voxels clusters more than ``SIGMA`` SDs above the image mean."""

    name, version, acceptance = SPEC.name, SPEC.version, SPEC.acceptance

    def __init__(self, model_dir: Path | None = None, device: str = "auto",
                 threads: int | None = None) -> None:
        pass  # no model to load: a rule, not a network

    def identity(self) -> EngineIdentity:
        return EngineIdentity(
            name=self.name, version=self.version, model_name="threshold-rule",
            model_sha256="0" * 64, research_use_only=True,
            intended_use="Example engine for developers; not for any clinical use.")

    def run(self, study: StudyInput) -> Findings:
        selected = self.select_inputs(study)
        if isinstance(selected, Decline):
            return self.declined(None, selected)  # no series of ours: no source to name
        image = selected["image"]
        values = image.voxels.astype(np.float64)
        spread = float(values.std())
        if spread == 0.0:
            return self.declined(image.series_uid, Decline("QC_FLAT_IMAGE", "all voxels are equal"))
        score = (values - values.mean()) / spread
        labels, count = ndimage.label(score > SIGMA)
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, count + 1))
        kept = np.flatnonzero(sizes >= MIN_VOXELS) + 1
        voxel_ml = float(np.prod(image.geometry.spacing_zyx)) / 1000.0
        segments = []
        for n, label in enumerate(kept, start=1):
            mask = labels == label
            segments.append(Segment(
                label=f"HotSpot_{n}", description=f"hot spot {n}: voxels above mean + 3 SD",
                category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, property_type=codes.NEOPLASM,
                rt_interpreted_type="CONTROL", color_rgb=(255, 160, 0), mask=mask,
                tracking_id=f"hot spot {n}",
                measurements=(Measurement(codes.VOLUME, float(mask.sum()) * voxel_ml,
                                          codes.UNIT_ML),),
                key_slice=int(np.argmax(mask.sum(axis=(1, 2)))),
            ))
        count_row = Measurement(HOT_SPOT_COUNT, float(len(kept)), codes.UNIT_NONE)
        heat = VoxelMap(label="HotSpotZ", description="standard score of each voxel",
                        quantity=STANDARD_SCORE, unit=UNIT_SD,
                        values=score.astype(np.float32))
        return Findings(engine=self.identity(), source_series_uid=image.series_uid,
                        segments=tuple(segments), study_measurements=(count_row,), maps=(heat,),
                        notes=(f"{len(kept)} hot spot(s) of at least {MIN_VOXELS} voxels",))
