"""Engine codes (:class:`ai_engines.codes.Code`) as highdicom / pydicom coded concepts."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from ai_engines.codes import Code


def coded_concept(code: Code) -> hd.sr.CodedConcept:
    """The highdicom concept for an engine code (value, scheme, meaning unchanged)."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme,
                              meaning=code.meaning)


def code_item(code: Code) -> Dataset:
    """A plain code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item
