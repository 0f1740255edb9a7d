#!/usr/bin/env python3
"""Generate ``dicom_node/deid/ps315_e1_1.json`` from the vendored PS3.15 Table E.1-1 sources.

Sources and their provenance are in ``dicom_node/deid/source/PROVENANCE.md``:

* the innolitics ``confidentiality_profile_attributes.json`` (Basic Profile and all option
  columns) is the primary source;
* rows it misses are taken, Basic Profile column only, from dicom-anonymizer's
  ``dicomfields_2026c`` list (parsed with :mod:`ast`, never imported).

Usage::

    python scripts/generate_deid_table.py            # write the JSON
    python scripts/generate_deid_table.py --check    # exit 1 if the committed JSON is stale
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from pathlib import Path

from pydicom.datadict import dictionary_description, dictionary_VR

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "dicom_node" / "deid" / "source"
INNOLITICS = SOURCE / "innolitics_confidentiality_profile_attributes.json"
SUPPLEMENT = SOURCE / "dicom_anonymizer_dicomfields_2026c.py.txt"
OUTPUT = ROOT / "dicom_node" / "deid" / "ps315_e1_1.json"

INNOLITICS_COMMIT = "0d01bf11dfc1d0b73b6df85bbf6e1764d3c558a3"
EDITION = "PS3.15 current edition between 2021b and 2024a (innolitics 0d01bf11)"

# innolitics column -> (our option key, CID 7050 code, code meaning)
OPTIONS = {
    "rtnSafePrivOpt": ("retain_safe_private", "113111", "Retain Safe Private Option"),
    "rtnUIDsOpt": ("retain_uids", "113110", "Retain UIDs Option"),
    "rtnDevIdOpt": ("retain_device_identity", "113109", "Retain Device Identity Option"),
    "rtnInstIdOpt": ("retain_institution_identity", "113112", "Retain Institution Identity Option"),
    "rtnPatCharsOpt": ("retain_patient_characteristics", "113108",
                       "Retain Patient Characteristics Option"),
    "rtnLongFullDatesOpt": ("retain_longitudinal_full_dates", "113106",
                            "Retain Longitudinal Temporal Information Full Dates Option"),
    "rtnLongModifDatesOpt": ("retain_longitudinal_modified_dates", "113107",
                             "Retain Longitudinal Temporal Information Modified Dates Option"),
    "cleanDescOpt": ("clean_descriptors", "113105", "Clean Descriptors Option"),
    "cleanStructContOpt": ("clean_structured_content", "113104",
                           "Clean Structured Content Option"),
    "cleanGraphOpt": ("clean_graphics", "113103", "Clean Graphics Option"),
}
ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
# dicom-anonymizer list name -> Basic Profile action
SUPPLEMENT_LISTS = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}


def _pattern(tag: str) -> str:
    """``(50XX,XXXX)`` -> ``50xxxxxx``; the private-attribute row -> ``private``."""
    if "ODD" in tag.upper():
        return "private"
    m = re.fullmatch(r"\(([0-9A-Fa-fXx]{4}),([0-9A-Fa-fXx]{4})\)", tag.strip())
    if not m:
        raise ValueError(f"unexpected tag notation {tag!r}")
    return (m.group(1) + m.group(2)).lower()


def _vr(pattern: str) -> str | None:
    if "x" in pattern or pattern == "private":
        return None
    try:
        return dictionary_VR(int(pattern, 16))
    except KeyError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _supplement_rows() -> dict[str, str]:
    tree = ast.parse(SUPPLEMENT.read_text(encoding="utf-8"))
    rows: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in SUPPLEMENT_LISTS):
            continue
        action = SUPPLEMENT_LISTS[node.targets[0].id]
        for elt in ast.literal_eval(node.value):
            if len(elt) == 4:  # (group, element, group mask, element mask): already in primary
                continue
            group, element = elt
            rows[f"{group:04x}{element:04x}"] = action
    return rows


def build() -> dict:
    """The table as written to ``ps315_e1_1.json``."""
    source = json.loads(INNOLITICS.read_text(encoding="utf-8"))
    rows = []
    seen = set()
    for entry in source:
        pattern = _pattern(entry["tag"])
        basic = entry["basicProfile"].strip()
        if basic not in ACTIONS:
            raise ValueError(f"{entry['tag']}: unknown Basic Profile action {basic!r}")
        options = {}
        for column, (key, _code, _meaning) in OPTIONS.items():
            if column in entry:
                options[key] = entry[column].strip()
        rows.append({
            "tag": pattern, "name": " ".join(entry["name"].split()), "vr": _vr(pattern),
            "basic": basic, "options": options, "source": "innolitics",
        })
        seen.add(pattern)
    for pattern, basic in sorted(_supplement_rows().items()):
        if pattern in seen:
            continue
        vr = _vr(pattern)
        options, inferred = {}, []
        if vr in ("DA", "DT", "TM"):
            options = {"retain_longitudinal_full_dates": "K",
                       "retain_longitudinal_modified_dates": "C"}
            inferred = sorted(options)
        try:
            name = dictionary_description(int(pattern, 16))
        except KeyError:
            name = f"({pattern[:4]},{pattern[4:]})"
        rows.append({
            "tag": pattern, "name": name, "vr": vr, "basic": basic, "options": options,
            "source": "supplement-2026c", **({"inferred": inferred} if inferred else {}),
        })
        seen.add(pattern)
    rows.sort(key=lambda r: r["tag"])
    return {
        "table": "DICOM PS3.15 Annex E Table E.1-1 Application Level Confidentiality Profile "
                 "Attributes",
        "edition": EDITION,
        "generated_by": "scripts/generate_deid_table.py",
        "sources": [
            {"role": "primary", "repository": "innolitics/dicom-standard",
             "path": "standard/confidentiality_profile_attributes.json",
             "commit": INNOLITICS_COMMIT,
             "file": str(INNOLITICS.relative_to(ROOT)), "sha256": _sha256(INNOLITICS)},
            {"role": "supplement (Basic Profile column only, rows missing from primary)",
             "package": "dicom-anonymizer==2.1.0 (PyPI)",
             "path": "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py",
             "edition": "PS3.15 2026c",
             "file": str(SUPPLEMENT.relative_to(ROOT)), "sha256": _sha256(SUPPLEMENT)},
        ],
        "tag_notation": "8 lowercase hex digits; 'x' is a wildcard digit; 'private' = odd group",
        "options": {key: {"code": code, "scheme": "DCM", "meaning": meaning, "column": column}
                    for column, (key, code, meaning) in OPTIONS.items()},
        "attributes": rows,
    }


def render(table: dict) -> str:
    return json.dumps(table, indent=1, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare with the committed JSON")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale; re-run {Path(__file__).name}")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
