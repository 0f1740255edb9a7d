"""The bone-scan engine's declaration (torch-free): what it reads and which model it loads."""

from __future__ import annotations

from ai_engines.bone_scan import ENGINE_NAME, MODEL_NAME
from ai_engines.engine import Acceptance, GeometryNeeds, SeriesRequirement
from ai_engines.spec import EngineSpec

ENGINE_VERSION = "1.0.0"

# Planar whole-body views: no slice stack to check; 1024x256 (about 2.3 mm) and 512x128
# (about 4.5 mm) pixels; lossless only (the model never saw compression artefacts).
GEOMETRY = GeometryNeeds(
    min_slices=1,
    pixel_spacing_mm=(1.0, 6.0),
    uniform_spacing=False,
    lossless_only=True,
    planar=True,
)

# One NM series with both views, or one per view: the engine finds the views itself
# (ai_engines.bone_scan.views), so the role names the modality only.
ACCEPTANCE = Acceptance(
    series=(SeriesRequirement(role="NM", modalities=("NM",), geometry=GEOMETRY),),
)

SPEC = EngineSpec(
    name=ENGINE_NAME,
    version=ENGINE_VERSION,
    title="Whole-body bone scan: metastatic bone disease with a Grad-CAM heat map (after Primakov, thesis ch. 7)",
    acceptance=ACCEPTANCE,
    models=(MODEL_NAME,),
    factory="ai_engines.bone_scan.engine:BoneScanEngine",
    training="ai_engines.bone_scan.training:TRAINING",
)
