"""The conformance statement in docs/ is what the code generates: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from dicom_node.config import NodeConfig
from dicom_node.conformance import accepted_contexts, created_objects, statement

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance-statement.md"


def test_statement_in_docs_matches_the_code():
    assert DOC.read_text(encoding="utf-8") == statement(), (
        "docs/conformance-statement.md is out of date: "
        "dicom-node conformance > docs/conformance-statement.md")


def test_statement_lists_what_the_receiver_and_writers_really_do():
    contexts = accepted_contexts(NodeConfig())
    text = statement()
    ct = next(c for c in contexts if c[0] == "1.2.840.10008.5.1.4.1.1.2")
    assert "1.2.840.10008.5.1.4.1.1.2 |" in text and ct[2] == "SCP"
    for transfer_syntax in ct[1]:
        assert f"| {transfer_syntax} |" in text
    for sop_class, modality, _ in created_objects():
        assert f"| {sop_class} | {modality} |" in text
