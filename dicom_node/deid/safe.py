"""The safe lists: what the node keeps of the attributes that Table E.1-1 does not list.

"Remove unchecked elements" (the rule RSNA's CTP anonymizer uses): a public attribute that the
table does not list is removed unless it is kept here, so an attribute added by a newer edition
of the standard, or a vendor's public extension, cannot carry identity through.

Kept **by VR** (these values cannot hold a name or free text, or are rewritten):

* ``SQ``: kept as a container; every item is de-identified with the same rules;
* ``UI``: remapped to a keyed pseudonym (registered DICOM UIDs and class UIDs stay);
* ``DA``/``DT``: shifted with the patient's offset (removed when dates are not shifted);
  a value that is not a plain date is emptied;
* ``TM``, ``AS``, ``DS``, ``IS``: kept when the value has the VR's form (digits, signs, dots),
  removed otherwise;
* binary numbers (``US``, ``SS``, ``UL``, ``SL``, ``UV``, ``SV``, ``FL``, ``FD``, ``AT``);
* ``CS``: coded strings, scrubbed as coded (:mod:`dicom_node.deid.scrub`).

Kept **by name** (text and bulk data): :data:`SAFE_TEXT` (scrubbed token by token),
:data:`CODED_TEXT` (scrubbed as coded), :data:`SAFE_BULK` (pixels and lookup tables) and
:data:`SPECIFIC_CHARACTER_SET`. Everything else is removed: person names, addresses, other text,
other binary data, and any tag the data dictionary does not know.

Descriptors the table marks ``C`` (Clean Descriptors) are kept, scrubbed, only when listed in
:data:`SCRUBBED_DESCRIPTORS`; the other ``C`` text attributes get the Basic Profile action.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

# Table E.1-1 "C" descriptors that engines, readers or result writers need; kept, scrubbed.
SCRUBBED_DESCRIPTOR_KEYWORDS = (
    "StudyDescription",  # hanging protocols, engine routing
    "SeriesDescription",  # series selection (MR sequence, CT kernel / phase)
    "ProtocolName",  # MR/CT protocol: the MR engine chooses inputs by it
    "ContrastBolusAgent",  # contrast phase
    "ROIName",  # received RTSTRUCT regions are measured by name
    "StructureSetLabel",  # Type 1 in the RT Structure Set module
    "ROIObservationLabel",
    "AcquisitionFieldOfViewLabel",
)

# Text attributes outside the table, kept and scrubbed token by token.
SAFE_TEXT_KEYWORDS = (
    # General series / equipment / image
    "BodyPartExamined", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "PositionReferenceIndicator", "RescaleType", "WindowCenterWidthExplanation",
    "LossyImageCompressionMethod", "PixelSpacingCalibrationDescription", "FrameLabel",
    "ContentDescription", "CodeMeaning", "CodingSchemeName", "ContextGroupExtensionFlag",
    "AnatomicStructure", "DimensionDescriptionLabel", "ViewName", "ImageLaterality", "StackID",
    # CT
    "ConvolutionKernel", "FilterType", "ScanOptions", "ExposureModulationType",
    # MR sequence parameters: the MR engine needs them
    "SequenceName", "PulseSequenceName", "ReceiveCoilName", "TransmitCoilName",
    "ImagedNucleus", "ScanningSequence", "SequenceVariant", "MRAcquisitionType",
    "ResonantNucleus", "ApplicableSafetyStandardDescription",
    # NM / PET
    "Radiopharmaceutical", "EnergyWindowName", "CollimatorGridName", "TriggerSourceOrType",
    "ReconstructionMethod", "AttenuationCorrectionMethod", "ScatterCorrectionMethod",
    "DecayCorrection", "ConvolutionKernelGroup", "DetectorDescription", "ImageID",
    "ContrastBolusRoute", "Radionuclide",
    # SEG / parametric maps / algorithms
    "SegmentLabel", "SegmentDescription", "SegmentAlgorithmName", "AlgorithmName",
    "AlgorithmVersion", "AlgorithmParameters", "TrackingID", "ContentLabel", "LUTLabel",
    "LUTExplanation",
    # RT structure sets
    "ROIGenerationAlgorithm", "RTROIInterpretedType", "ContourGeometricType",
)

# Coded strings: codes such as SNOMED "12738006" are kept (no digit rule), identifiers cut.
CODED_KEYWORDS = (
    "CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator",
    "CodingSchemeVersion", "ContextIdentifier", "MappingResource", "MappingResourceName",
    "ContextGroupVersion", "ContextGroupLocalVersion",
)

# Bulk data kept as received: pixels and what decodes them.
SAFE_BULK_KEYWORDS = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData", "LargeRedPaletteColorLookupTableData",
    "LargeGreenPaletteColorLookupTableData", "LargeBluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "SegmentedAlphaPaletteColorLookupTableData",
    "LUTData", "ICCProfile", "RealWorldValueLUTData",
)

SPECIFIC_CHARACTER_SET = 0x00080005
# The VRs kept for any known public attribute outside the table (see the module docstring).
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})
NUMBER_TEXT_VRS = frozenset({"DS", "IS"})


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"safe list keyword not in the data dictionary: {keyword}")
        tags.add(int(tag))
    return frozenset(tags)


SCRUBBED_DESCRIPTORS = _tags(SCRUBBED_DESCRIPTOR_KEYWORDS)
SAFE_TEXT = _tags(SAFE_TEXT_KEYWORDS)
CODED_TEXT = _tags(CODED_KEYWORDS)
SAFE_BULK = _tags(SAFE_BULK_KEYWORDS)
