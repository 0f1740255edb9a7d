"""Coded concepts used by engines, kept free of pydicom so engines stay pure.

The result-object writers in :mod:`dicom_node.results` turn :class:`Code` into
``highdicom.sr.CodedConcept`` / pydicom code sequences.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """A coded concept (value, coding scheme designator, meaning) as in PS3.16."""

    value: str
    scheme: str
    meaning: str


# Segmentation categories and types (PS3.16 CID 7150/7151, RT: CID 9580/9534).
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
RT_TARGET = Code("130041", "DCM", "RT Target")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
NEOPLASM_SECONDARY = Code("14799000", "SCT", "Neoplasm, Secondary")
GTV = Code("228791009", "SCT", "Gross Tumor Volume")
LUNG = Code("39607008", "SCT", "Lung")
BRAIN = Code("12738006", "SCT", "Brain")
BONE = Code("272673000", "SCT", "Bone")
RIGHT = Code("24028007", "SCT", "Right")
LEFT = Code("7771000", "SCT", "Left")
RIGHT_AND_LEFT = Code("51440002", "SCT", "Right and left")
EDEMA = Code("79654002", "SCT", "Edema")
NECROSIS = Code("6574001", "SCT", "Necrosis")
ENHANCING_LESION = Code("C113842", "NCIt", "Enhancing Lesion")
NON_ENHANCING_LESION = Code("C81175", "NCIt", "Non-Enhancing Lesion")
BONY_METASTASIS = Code("94222008", "SCT", "Bony metastasis")

# Measurement concepts (TID 1419/1411) and UCUM units.
VOLUME = Code("118565006", "SCT", "Volume")
DIAMETER = Code("81827009", "SCT", "Diameter")
LONG_AXIS = Code("103339001", "SCT", "Long Axis")
SHORT_AXIS = Code("103340004", "SCT", "Short Axis")
MEAN = Code("373098007", "SCT", "Mean")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard Deviation")
PROBABILITY_OF_CANCER = Code("111047", "DCM", "Probability of cancer")

UNIT_MM = Code("mm", "UCUM", "millimeter")
UNIT_ML = Code("ml", "UCUM", "milliliter")
UNIT_MM3 = Code("mm3", "UCUM", "cubic millimeter")
UNIT_HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
UNIT_NONE = Code("1", "UCUM", "no units")
