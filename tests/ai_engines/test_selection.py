"""Header-first selection: series matched to roles before any pixel is decoded."""

from __future__ import annotations

from ai_engines.acceptance import (
    CT_IMAGE_STORAGE,
    Acceptance,
    GeometryNeeds,
    RegionRequirement,
    SeriesRequirement,
)
from ai_engines.ct_lung.spec import ACCEPTANCE as CT_LUNG
from ai_engines.selection import (
    RTSTRUCT_STORAGE,
    SECONDARY_CAPTURE_PREFIX,
    SeriesHeader,
    rank_candidates,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def ct(uid: str, frames: int, **kw) -> SeriesHeader:  # noqa: ANN003
    values = dict(series_uid=uid, modality="CT", sop_class_uid=CT_IMAGE_STORAGE,
                  instances=frames, frames=frames, orientation=AXIAL,
                  image_type=("ORIGINAL", "PRIMARY", "AXIAL"), number=int(uid))
    values.update(kw)
    return SeriesHeader(**values)


def test_a_ct_study_with_scout_dose_report_and_coronal_reformat():
    headers = [
        ct("1", 2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), orientation=CORONAL),
        ct("2", 300),
        ct("3", 400, orientation=CORONAL, image_type=("DERIVED", "SECONDARY", "MPR")),
        ct("4", 1, sop_class_uid=SECONDARY_CAPTURE_PREFIX, orientation=None),
        ct("5", 1, image_type=("DERIVED", "SECONDARY", "OTHER"), orientation=None),
        ct("6", 10),
        SeriesHeader("7", "SR", "1.2.840.10008.5.1.4.1.1.88.67", 1, 1, number=7),
    ]
    plan = rank_candidates(CT_LUNG, headers)
    # The axial series first although the coronal reformat has more slices; then those whose
    # header geometry does not fit (coronal; 10 < 16 slices), most slices first.
    assert [h.series_uid for h in plan.by_role["CT"]] == ["2", "3", "6"]
    notes = " | ".join(plan.notes)
    assert "CT series 1 ignored: localizer" in notes
    assert "CT series 4 ignored: secondary capture" in notes
    assert "CT series 5 ignored: no patient geometry" in notes
    assert "SR series 7 ignored: structured report" in notes
    assert all("2.25" not in n for n in plan.notes)  # notes reach reports: no UIDs


def test_roles_by_description_and_regions():
    acceptance = Acceptance(
        series=(SeriesRequirement("T1c", ("MR",), description_pattern=r"t1.*(gd|post)"),
                SeriesRequirement("FLAIR", ("MR",), description_pattern="flair",
                                  geometry=GeometryNeeds(min_slices=20))),
        regions=RegionRequirement(),
    )
    mr = "1.2.840.10008.5.1.4.1.1.4"
    headers = [
        SeriesHeader("1", "MR", mr, 3, 3, "3-plane loc", ("ORIGINAL", "PRIMARY", "LOCALIZER"), AXIAL),
        SeriesHeader("2", "MR", mr, 160, 160, "T1 MPRAGE post Gd", orientation=AXIAL),
        SeriesHeader("3", "MR", mr, 24, 24, "AX FLAIR", orientation=AXIAL),
        SeriesHeader("4", "MR", mr, 12, 12, "FLAIR fast", orientation=AXIAL),
        SeriesHeader("5", "MR", mr, 30, 30, "DWI b1000", orientation=AXIAL, number=5),
        SeriesHeader("6", "RTSTRUCT", RTSTRUCT_STORAGE, 1, 1),
    ]
    plan = rank_candidates(acceptance, headers)
    assert [h.series_uid for h in plan.by_role["T1c"]] == ["2"]
    assert [h.series_uid for h in plan.by_role["FLAIR"]] == ["3", "4"]
    assert [h.series_uid for h in plan.region_series] == ["6"]
    assert any("MR series 5 ignored: fits no role" in n for n in plan.notes)
    # An engine that asks for no regions leaves RTSTRUCTs aside with a note.
    plain = rank_candidates(Acceptance(series=acceptance.series), headers)
    assert plain.region_series == [] and any("regions are not used" in n for n in plain.notes)
