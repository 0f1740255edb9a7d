"""Defect 3b: attributes the PS3.15 table does not list kept their text (Birth Date in
Alternative Calendar, Overlay Description). Now whatever the table does not list is removed
unless the documented safe list keeps it; the safe list keeps what engines and writers need."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    MRImageStorage,
    NuclearMedicineImageStorage,
)

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.deid.profile import Profile, options_from_settings
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu

SECRET = b"security-test-site-secret-012345"
PSEUDONYMIZER = Pseudonymizer(DeidSettings(), SECRET)
PROFILE = Profile(options_from_settings(DeidSettings()))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _minimal() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.8.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.8.2"
    ds.PatientID = "PID-UNL-1"
    return ds


@pytest.mark.parametrize(("tag", "vr", "value"), [
    (0x00100033, "LO", "1382-07-21 Hijri"),  # Patient's Birth Date in Alternative Calendar
    (0x00100034, "LO", "1442-01-02 Hijri"),  # Patient's Death Date in Alternative Calendar
    (0x60000022, "LO", "Mrs Quorvex, bed 7"),  # Overlay Description
    (0x60001500, "LO", "Quorvex overlay"),  # Overlay Label
    (0x00181FF0, "LO", "Quorvex vendor text"),  # an even tag no dictionary knows
    (0x7FF00010, "OB", b"Quorvex raw"),  # Variable Pixel Data: bulk not on the safe list
])
def test_unlisted_attribute_removed(tag: int, vr: str, value) -> None:  # noqa: ANN001
    assert PROFILE.rule_for(tag) is None  # the table does not list it
    ds = _minimal()
    ds.add_new(tag, vr, value)
    nested = Dataset()
    nested.add_new(tag, vr, value)
    ds.ReferencedSeriesSequence = Sequence([nested])
    out = PSEUDONYMIZER.pseudonymize(ds).dataset
    assert tag not in out
    assert tag not in out.ReferencedSeriesSequence[0]


def test_numbers_that_are_not_numbers_removed() -> None:
    ds = _minimal()
    ds.add_new(0x00201041, "DS", "12.5")  # Slice Location: a number, kept
    ds.add_new(0x00200012, "IS", "3")  # Acquisition Number
    raw = copy.deepcopy(ds)
    out = PSEUDONYMIZER.pseudonymize(raw).dataset
    assert out.SliceLocation == 12.5 and out.AcquisitionNumber == 3
    bad = _minimal()
    bad[0x00201041] = RawDataElement(Tag(0x00201041), "DS", 9, b"QUORVEX  ", 0, False, True)
    bad[0x00101010] = RawDataElement(Tag(0x00101010), "AS", 8, b"QUORVEX ", 0, False, True)
    out = PSEUDONYMIZER.pseudonymize(bad).dataset
    assert 0x00201041 not in out and 0x00101010 not in out


def _engine_view(ds: Dataset) -> dict:
    """What engines and result writers read, by keyword path (UIDs only for presence)."""
    view = {}
    for elem in ds.iterall():
        if elem.VR in ("SQ",):
            continue
        key = elem.keyword or f"{int(elem.tag):08X}"
        value = elem.value
        if elem.VR == "UI":
            value = bool(value)
        elif isinstance(value, bytes):
            value = len(value)
        elif elem.VR in ("DA", "DT"):
            value = bool(value)
        view.setdefault(key, []).append(str(value))
    return view


def _mr_slice() -> Dataset:
    ds = _minimal()
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.SeriesDescription = "AX T2 FLAIR"
    ds.ProtocolName = "t1_se_tra_KM"
    ds.SequenceName = "*tse2d1_15"
    ds.ScanningSequence = ["SE", "IR"]
    ds.SequenceVariant = ["SK", "SP", "MP"]
    ds.ScanOptions = ["FS", "PFP"]
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime, ds.EchoTime, ds.InversionTime = 9000.0, 81.0, 2500.0
    ds.FlipAngle, ds.EchoTrainLength, ds.MagneticFieldStrength = 150.0, 15, 3.0
    ds.ImagingFrequency, ds.ImagedNucleus, ds.PixelBandwidth = 123.2, "1H", 287.0
    ds.ReceiveCoilName, ds.TransmitCoilName = "HeadNeck_20", "Body"
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.add_new(0x00189087, "FD", 1000.0)  # Diffusion b-value
    ds.BodyPartExamined = "BRAIN"
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.999.8.5"
    ds.ImagePositionPatient = [-120.0, -110.5, 33.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [0.9, 0.9], 5.0, 6.0
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 300, 600
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    ds.Manufacturer, ds.ManufacturerModelName = "SIEMENS", "Prisma"
    return ds


def _nm_multiframe() -> Dataset:
    ds = _minimal()
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.Modality = "NM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.NumberOfFrames = 2
    ds.FrameIncrementPointer = [0x00540010, 0x00540020]
    ds.EnergyWindowVector, ds.DetectorVector = [1, 1], [1, 2]
    ds.NumberOfEnergyWindows, ds.NumberOfDetectors = 1, 2
    window = Dataset()
    window.EnergyWindowName = "Tc99m"
    rng = Dataset()
    rng.EnergyWindowLowerLimit, rng.EnergyWindowUpperLimit = 126.0, 154.0
    window.EnergyWindowRangeSequence = Sequence([rng])
    ds.EnergyWindowInformationSequence = Sequence([window])
    detectors = []
    for view, meaning in (("R-10242", "anterior"), ("R-10224", "posterior")):
        det = Dataset()
        det.ImagePositionPatient = [0.0, 0.0, 0.0]
        det.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        det.CollimatorGridName = "LEHR"
        det.CollimatorType = "PARA"
        det.ZoomFactor = [1.0, 1.0]
        det.ViewCodeSequence = Sequence([_code(view, "SRT", meaning)])
        detectors.append(det)
    ds.DetectorInformationSequence = Sequence(detectors)
    ds.ViewCodeSequence = Sequence([_code("R-10242", "SRT", "anterior")])
    radio = Dataset()
    radio.Radiopharmaceutical = "Tc-99m MDP"
    radio.RadionuclideTotalDose = 700.0
    radio.RadionuclideCodeSequence = Sequence([_code("C-163A8", "SRT", "^99m^Technetium")])
    ds.RadiopharmaceuticalInformationSequence = Sequence([radio])
    ds.ActualFrameDuration, ds.ScanVelocity, ds.WholeBodyTechnique = 600000, 12.0, ["1PS"]
    ds.PixelSpacing = [2.4, 2.4]
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(32, dtype=np.uint16).tobytes()
    return ds


def _enhanced_mr() -> Dataset:
    ds = _minimal()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.Modality = "MR"
    ds.NumberOfFrames = 2
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.999.8.6"
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 1.0
    shared.PixelMeasuresSequence = Sequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = Sequence([orient])
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = 0, 1, "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    timing = Dataset()
    timing.RepetitionTime, timing.FlipAngle = 2300.0, 8.0
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i in range(2):
        frame = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, float(i)]
        frame.PlanePositionSequence = Sequence([pos])
        content = Dataset()
        content.DimensionIndexValues = [1, i + 1]
        content.StackID, content.InStackPositionNumber = "1", i + 1
        frame.FrameContentSequence = Sequence([content])
        echo = Dataset()
        echo.EffectiveEchoTime = 2.98
        frame.MREchoSequence = Sequence([echo])
        diffusion = Dataset()
        diffusion.DiffusionBValue = 1000.0
        diffusion.DiffusionDirectionality = "ISOTROPIC"
        frame.MRDiffusionSequence = Sequence([diffusion])
        kind = Dataset()
        kind.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        frame.MRImageFrameTypeSequence = Sequence([kind])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    dim = Dataset()
    dim.DimensionIndexPointer = 0x00209057
    dim.FunctionalGroupPointer = 0x00209111
    ds.DimensionIndexSequence = Sequence([dim])
    ds.MRAcquisitionType = "3D"
    ds.PulseSequenceName = "tfl3d1_16ns"
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(8, dtype=np.uint16).tobytes()
    return ds


def _rtstruct_refs() -> Dataset:
    ds = _minimal()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.Modality = "RTSTRUCT"
    ds.StructureSetLabel = "Lung contours"
    ref_image = Dataset()
    ref_image.ReferencedSOPClassUID = CTImageStorage
    ref_image.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.8.9"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.8.10"
    series.ContourImageSequence = Sequence([ref_image])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.8.11"
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.999.8.6"
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "GTV lung left"
    roi.ReferencedFrameOfReferenceUID = "1.2.826.0.1.3680043.10.999.8.6"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", 3
    contour.ContourData = [0.0, 0.0, 1.0, 10.0, 0.0, 1.0, 0.0, 10.0, 1.0]
    contour.ContourImageSequence = Sequence([copy.deepcopy(ref_image)])
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber, roi_contour.ROIDisplayColor = 1, [255, 0, 0]
    roi_contour.ContourSequence = Sequence([contour])
    ds.ROIContourSequence = Sequence([roi_contour])
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = 1, 1, "GTV"
    ds.RTROIObservationsSequence = Sequence([obs])
    return ds


@pytest.mark.parametrize("build", [_mr_slice, _nm_multiframe, _enhanced_mr, _rtstruct_refs,
                                   lambda: ct_series_datasets(phantom_chest_hu((2, 8, 8)),
                                                              identity=PatientIdentity())[0]])
def test_safe_list_keeps_what_engines_need(build) -> None:  # noqa: ANN001
    ds = build()
    before = _engine_view(ds)
    out = PSEUDONYMIZER.pseudonymize(copy.deepcopy(ds)).dataset
    del out.DeidentificationMethodCodeSequence  # the node's own codes, added on top
    after = _engine_view(out)
    identifying = {"PatientID", "PatientName", "PatientBirthDate", "AccessionNumber",
                   "ReferringPhysicianName", "InstitutionName", "StudyID", "OperatorsName",
                   "StationName", "DeviceSerialNumber", "InstitutionAddress",
                   "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
                   "InstanceCreationTime", "PatientBirthTime", "IssuerOfPatientID",
                   "OtherPatientIDs", "PatientAddress"}
    lost = {k: v for k, v in before.items()
            if k not in identifying and after.get(k) != v}
    assert not lost, lost
