"""The MR glioma engine's declaration: importing it loads neither numpy work nor torch."""

from __future__ import annotations

from ai_engines.engine import (
    ENHANCED_MR_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    Acceptance,
    GeometryNeeds,
    SeriesRequirement,
)
from ai_engines.mr_glioma import GRADE_MODEL_NAME, MODEL_NAME, T1C_MODEL_NAME
from ai_engines.spec import EngineSpec

ENGINE_VERSION = "0.2.0"  # 0.2.0: the T1c-only cascade (detector + packaged T1c-only extent network)
ROLES = ("T1c", "FLAIR", "T2", "T1")  # in order of preference as the registration reference

# What one sequence must look like: brain MR, any orientation (each series is registered and
# resampled), thick slices accepted up to 7 mm (brain2: 6.5 mm), evenly spaced, lossless.
MR_GEOMETRY = GeometryNeeds(
    min_slices=10,
    slice_thickness_mm=(0.4, 7.0),
    pixel_spacing_mm=(0.2, 1.5),
    axial_only=False,
    uniform_spacing=True,
    lossless_only=True,
)

# Header-first routing: each role is optional (any subset with T1c or FLAIR works); the
# patterns are the coarse description filter the node can apply before loading voxels.  The
# engine's own identification (ai_engines.mr_glioma.sequences) also reads TR/TE/TI, the
# contrast agent and the sequence name, and lists every series it did not use with the reason.
ACCEPTANCE = Acceptance(
    series=tuple(
        SeriesRequirement(
            role=role,
            modalities=("MR",),
            sop_classes=(MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE),
            geometry=MR_GEOMETRY,
            description_pattern=pattern,
            optional=True,
        )
        for role, pattern in (
            ("T1c", r"t1|mprage|spgr|tfe|bravo"),
            ("FLAIR", r"flair|dark.?fluid|\bir\b"),
            ("T2", r"t2"),
            ("T1", r"t1|mprage|spgr|tfe|bravo"),
        )
    ),
    co_registered=False,  # the engine registers the sequences itself
)

SPEC = EngineSpec(
    name="mr_glioma",
    version=ENGINE_VERSION,
    title="Brain MR glioma: enhancing, necrotic/non-enhancing and oedema sub-regions; VASARI-like features; grade",
    acceptance=ACCEPTANCE,
    models=(MODEL_NAME, GRADE_MODEL_NAME, T1C_MODEL_NAME),
    factory="ai_engines.mr_glioma.engine:MrGliomaEngine",
    training="ai_engines.mr_glioma.training:TRAINING",
)
