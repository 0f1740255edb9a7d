"""Every implemented feature on the IBSI 1 digital phantom against the consensus values.

The phantom and its reference table are in ``/work/shared/reference-data/ibsi1`` (see its
README): no interpolation, no re-segmentation, grey levels used as they are, GLCM symmetric at
Chebyshev distance 1, NGTDM/NGLDM distance 1, NGLDM alpha 0.  A value matches when it lies
within the published tolerance, or (rows without one) when it rounds to the reference at
three significant figures.  The match table in ``docs/radiomics.md`` is generated from this
test's results; run with ``RADIOMICS_UPDATE_DOCS=1`` to rewrite it after a change.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from ai_engines.radiomics.features import FeatureSet, compute_features, features_of_processed
from ai_engines.radiomics.ibsi import AGGREGATIONS, FEATURES
from ai_engines.radiomics.preprocess import ProcessedRoi, resegment
from ai_engines.radiomics.settings import DIGITAL_PHANTOM

IBSI_DIR = Path("/work/shared/reference-data/ibsi1")
DOCS = Path(__file__).resolve().parents[3] / "docs" / "radiomics.md"
BEGIN, END = "<!-- ibsi-phantom-table:begin -->", "<!-- ibsi-phantom-table:end -->"

pytestmark = pytest.mark.skipif(not IBSI_DIR.is_dir(), reason="IBSI reference data not present")


def reference_rows() -> list[dict[str, str]]:
    with open(IBSI_DIR / "ibsi1_digital_phantom_reference_values.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def matches(value: float, reference: float, tolerance: float) -> bool:
    """Within tolerance, or equal to the reference at three significant figures."""
    if not math.isfinite(value):
        return False
    if tolerance > 0:
        return abs(value - reference) <= tolerance + 1e-12
    if reference == 0:
        return abs(value) < 5e-4
    unit = 10 ** (math.floor(math.log10(abs(reference))) - 2)
    return abs(value - reference) <= 0.5 * unit + 1e-12


@pytest.fixture(scope="module")
def phantom_features() -> FeatureSet:
    image = sitk.ReadImage(str(IBSI_DIR / "phantom.nii.gz"))
    mask = sitk.ReadImage(str(IBSI_DIR / "mask.nii.gz"))
    voxels = sitk.GetArrayFromImage(image).astype(np.float64)  # [z, y, x]
    roi = sitk.GetArrayFromImage(mask) > 0
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    intensity_mask, value_range = resegment(voxels, roi, DIGITAL_PHANTOM)
    processed = ProcessedRoi(voxels, roi, intensity_mask, spacing, value_range)  # type: ignore[arg-type]
    return features_of_processed(processed, DIGITAL_PHANTOM)


def comparison(features: FeatureSet) -> list[tuple[dict[str, str], float | None, bool]]:
    computed = features.as_dict()
    out = []
    for row in reference_rows():
        value = computed.get((row["feature_tag"], row["aggregation_code"]))
        ok = value is not None and matches(value, float(row["reference_value"]), float(row["tolerance"]))
        out.append((row, value, ok))
    return out


def match_table(features: FeatureSet) -> str:
    """Markdown: per family and aggregation, how many reference rows match, and the misses."""
    rows = comparison(features)
    lines = [
        BEGIN,
        "",
        "| family | aggregation | rows | match |",
        "| --- | --- | ---: | ---: |",
    ]
    groups: dict[tuple[str, str], list[bool]] = {}
    for row, _, ok in rows:
        groups.setdefault((row["family"], f"{row['aggregation']} ({row['aggregation_code']})"), []).append(ok)
    for (family, aggregation), oks in groups.items():
        lines.append(f"| {family} | {aggregation} | {len(oks)} | {sum(oks)} |")
    total = sum(ok for _, _, ok in rows)
    lines += ["", f"**{total} of {len(rows)} reference rows match.**", ""]
    misses = [(row, value) for row, value, ok in rows if not ok]
    if misses:
        lines += ["Rows that do not match:", "", "| feature | code | aggregation | computed | reference |",
                  "| --- | --- | --- | ---: | ---: |"]
        for row, value in misses:
            shown = "not computed" if value is None else f"{value:.4g}"
            lines.append(f"| {row['feature_tag']} | {row['feature_code']} | {row['aggregation_code']} "
                         f"| {shown} | {row['reference_value']} ± {row['tolerance']} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def test_code_table_matches_the_reference() -> None:
    for row in reference_rows():
        code, name, family = FEATURES[row["feature_tag"]]
        assert code == row["feature_code"], row["feature_tag"]
        assert family == row["family"]
    codes = {code for code, _ in AGGREGATIONS.values()}
    assert {row["aggregation_code"] for row in reference_rows()} <= codes


def test_every_computed_feature_has_a_reference_row(phantom_features: FeatureSet) -> None:
    reference = {(row["feature_tag"], row["aggregation_code"]) for row in reference_rows()}
    assert set(phantom_features.as_dict()) == reference


def test_full_pipeline_gives_the_same_values(phantom_features: FeatureSet) -> None:
    """compute_features (cropping, no-op interpolation, re-segmentation) on the phantom."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(IBSI_DIR / "phantom.nii.gz"))).astype(np.float64)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(IBSI_DIR / "mask.nii.gz"))) > 0
    computed = compute_features(image, mask, (2.0, 2.0, 2.0), DIGITAL_PHANTOM).as_dict()
    expected = phantom_features.as_dict()
    assert computed.keys() == expected.keys()
    for key, value in expected.items():
        assert computed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_sanity_values_from_the_readme(phantom_features: FeatureSet) -> None:
    f = phantom_features.as_dict()
    assert f[("morph.approx.vol", "DHQ4")] == pytest.approx(592.0)
    assert f[("stat.mean", "DHQ4")] == pytest.approx(159 / 74)
    assert f[("stat.energy", "DHQ4")] == pytest.approx(567.0)
    assert f[("ih.entropy", "DHQ4")] == pytest.approx(1.2656, abs=1e-4)
    assert f[("ivh.V10", "DHQ4")] == pytest.approx(24 / 74)
    assert f[("morph.moran.i", "DHQ4")] == pytest.approx(0.03970, abs=2e-5)


@pytest.mark.parametrize("family_prefix", ["morph", "loc", "stat", "ih", "ivh", "cm", "rlm", "szm",
                                           "dzm", "ngt", "ngl"])
def test_family_matches_reference(phantom_features: FeatureSet, family_prefix: str) -> None:
    rows = [(row, value, ok) for row, value, ok in comparison(phantom_features)
            if row["feature_tag"].split(".")[0] == family_prefix]
    assert rows
    misses = [f"{row['feature_tag']} {row['aggregation_code']}: {value} vs {row['reference_value']}"
              for row, value, ok in rows if not ok]
    assert not misses, "\n".join(misses)


def test_docs_table_is_in_sync(phantom_features: FeatureSet) -> None:
    table = match_table(phantom_features)
    text = DOCS.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    if os.environ.get("RADIOMICS_UPDATE_DOCS") == "1":
        DOCS.write_text(text[:start] + table + text[stop:], encoding="utf-8")
        text = DOCS.read_text(encoding="utf-8")
    assert text[text.index(BEGIN):text.index(END) + len(END)] == table
