"""Sequence identification from headers: vendor names, timing fallback, ignored series."""

from __future__ import annotations

import pytest

from ai_engines.mr_glioma.sequences import identify, safe_label, select_sequences
from tests.ai_engines.mr_glioma.series_builders import mr_series


@pytest.mark.parametrize(
    ("description", "role"),
    [
        ("AX T1 POST GD", "T1c"),
        ("t1_mprage_tra_KM", "T1c"),
        ("T1W_3D_TFE+C", "T1c"),
        ("T1 +C AX", "T1c"),
        ("Ax T1 BRAVO C+", "T1c"),
        ("t1_se_tra_post", "T1c"),
        ("AX T1 POSTCONTRAST", "T1c"),
        ("T1_MPRAGE_GD_TRA", "T1c"),
        ("sT1W_3D_TFE_CE", "T1c"),
        ("AX T1 PRE", "T1"),
        ("AX T1 PRE CONTRAST", "T1"),
        ("t1_se_tra", "T1"),
        ("T1W_SE", "T1"),
        ("t1_mprage_sag_p2_iso", "T1"),
        ("Ax T1 FLAIR", "T1"),
        ("FLAIR AX", "FLAIR"),
        ("T2W_FLAIR", "FLAIR"),
        ("t2_tirm_tra_dark-fluid", "FLAIR"),
        ("Ax T2 FLAIR", "FLAIR"),
        ("3D FLAIR CUBE", "FLAIR"),
        ("AX T2FLAIR", "FLAIR"),
        ("t2_tse_tra", "T2"),
        ("AX T2 FSE", "T2"),
        ("T2W_TSE", "T2"),
        ("T2 AX PROPELLER", "T2"),
        ("t2_blade_tra", "T2"),
    ],
)
def test_vendor_descriptions(description: str, role: str) -> None:
    assert identify(mr_series("1", description)).role == role


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("localizer", "localizer"),
        ("AAHead_Scout_32ch-head-coil", "localizer"),
        ("3-Plane Loc", "localizer"),
        ("ep2d_diff_3scan_trace_p2", "diffusion"),
        ("AX DWI b1000", "diffusion"),
        ("ep2d_diff_ADC", "diffusion"),
        ("Apparent Diffusion Coefficient (mm2/s)", "diffusion"),
        ("ep2d_perf", "perfusion"),
        ("AX DSC PERFUSION", "perfusion"),
        ("SWI_Images", "susceptibility"),
        ("AX T2* GRE", "susceptibility"),
        ("tof_3d_multi-slab", "angiography"),
        ("svs_se_30", "spectroscopy"),
        ("PD_TSE", "proton density"),
    ],
)
def test_ignored_series_give_the_reason(description: str, reason: str) -> None:
    found = identify(mr_series("1", description))
    assert found.role is None
    assert reason in found.evidence


def test_image_type_marks_derived_diffusion_maps() -> None:
    found = identify(mr_series("1", "unknown name", image_type=("DERIVED", "PRIMARY", "ADC")))
    assert found.role is None and "diffusion" in found.evidence


@pytest.mark.parametrize(
    ("tr", "te", "ti", "agent", "role"),
    [
        (9000, 90, 2500, None, "FLAIR"),
        (11000, 140, 2800, None, "FLAIR"),
        (500, 12, None, None, "T1"),
        (2000, 2.5, 900, None, "T1"),  # MPRAGE
        (2000, 2.5, 900, "GADOBUTROL", "T1c"),
        (550, 10, None, "Gd-DOTA", "T1c"),
        (4500, 95, None, None, "T2"),
        (4500, 95, None, "GADOBUTROL", "T2"),  # contrast does not make a T2 a T1c
    ],
)
def test_timing_fallback_when_the_description_says_nothing(tr: float, te: float, ti: float | None, agent: str | None, role: str) -> None:
    found = identify(mr_series("1", "Series 7", tr=tr, te=te, ti=ti, agent=agent))
    assert found.role == role
    assert "TR/TE/TI" in found.evidence


def test_protocol_and_sequence_name_are_read_too() -> None:
    assert identify(mr_series("1", None, protocol="t2_tse_tra_512")).role == "T2"
    assert identify(mr_series("1", "Series 3", sequence_name="*tir2d1_16")).role is None  # unknown: no timing either


def test_contrast_agent_attribute_makes_a_t1_post_contrast() -> None:
    assert identify(mr_series("1", "AX T1 SE", agent="GADOBUTROL")).role == "T1c"
    assert identify(mr_series("1", "AX T1 SE", agent="  ")).role == "T1"


def test_unidentifiable_series_get_a_reason() -> None:
    bare = identify(mr_series("1", None))
    assert bare.role is None and bare.evidence == "no description and no TR/TE"
    odd = identify(mr_series("2", "Series 4", tr=3000, te=40))
    assert odd.role is None and "match" in odd.evidence
    ct = identify(mr_series("3", "AX T1 POST", modality="CT"))
    assert ct.role is None and "not MR" in ct.evidence


def test_best_series_per_role_and_notes() -> None:
    thick = mr_series("a", "AX T1 POST GD", n_slices=24, spacing=6.0)
    thin = mr_series("b", "t1_mprage_tra_KM", n_slices=160, spacing=1.0)
    same_count_thicker = mr_series("c", "T1 +C AX", n_slices=160, spacing=1.5)
    flair = mr_series("d", "FLAIR AX", n_slices=30)
    dwi = mr_series("e", "AX DWI b1000", n_slices=30)
    selection = select_sequences([thick, thin, same_count_thicker, flair, dwi])
    assert selection.chosen["T1c"].series_uid == "b"
    assert selection.chosen["FLAIR"].series_uid == "d"
    assert "T1" not in selection.chosen and "T2" not in selection.chosen
    notes = "\n".join(selection.notes())
    assert "T1c: series 't1_mprage_tra_KM'" in notes
    assert "ignored series 'AX DWI b1000': diffusion" in notes
    assert notes.count("another T1c has more or thinner slices") == 2


def test_labels_in_notes_are_sanitised_and_short() -> None:
    assert safe_label("T1\x00\nPOST;DROP" + "x" * 80) == "T1??POST?DROP" + "x" * 27
    assert len(safe_label("a" * 200)) == 40
