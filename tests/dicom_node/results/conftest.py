"""Fixtures: a synthetic CT with an awkward geometry, findings with awkward masks, validators."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from ai_engines import codes
from ai_engines.codes import Code
from ai_engines.findings import (
    Classification,
    Decline,
    EngineIdentity,
    Findings,
    Measurement,
    Segment,
)
from dicom_node.results import ResultOptions
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, write_series

# tests/peers.py is shared by several test packages; make ``import tests.peers`` work here.
_REPO_ROOT = Path(__file__).resolve().parents[3]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

SHAPE = (12, 64, 64)
ORIGIN = (-249.51171875, -187.3333333, 0.123456789)
PIXEL_SPACING = (0.9765625, 0.9765625)
SLICE_SPACING = 2.5


@pytest.fixture(autouse=True)
def _strict_writing() -> Iterator[None]:
    """Invalid VRs raise on write instead of warning (pydicom default is WARN)."""
    before = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
    yield
    pydicom.config.settings.writing_validation_mode = before


@pytest.fixture(scope="session")
def source_datasets() -> list[Dataset]:
    """12 axial 64x64 CT slices, odd origin, z = 0.123456789 + 2.5 k, UTF-8 names."""
    identity = PatientIdentity(
        name="Łukasz^Żółć=ウカシュ^ジョウチュ",
        referring_physician="Ζωή^Παπαδοπούλου",
        charset="ISO_IR 192",
    )
    rng = np.random.default_rng(7)
    voxels = rng.normal(-700, 100, SHAPE).astype(np.float32)
    datasets = ct_series_datasets(
        voxels,
        identity=identity,
        pixel_spacing=PIXEL_SPACING,
        slice_spacing=SLICE_SPACING,
        origin=ORIGIN,
    )
    # Names with '=' groups need the same charset in all components: keep ISO_IR 192 only.
    return datasets


def _disc(radius: float, centre: tuple[float, float]) -> np.ndarray:
    rows, cols = np.mgrid[: SHAPE[1], : SHAPE[2]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _masks() -> dict[str, np.ndarray]:
    disc_with_hole = np.zeros(SHAPE, dtype=bool)
    for k in range(3, 8):
        disc_with_hole[k] = _disc(12, (30, 28))
        disc_with_hole[k, 26:34, 24:32] = False
    islands = np.zeros(SHAPE, dtype=bool)
    for k in range(2, 10):
        islands[k] = _disc(5, (12, 12)) | _disc(3.5, (50, 14))
    islands[5, 45:48, 30:33] = True  # a third island on one slice
    speck = np.zeros(SHAPE, dtype=bool)
    speck[6, 40, 50] = True
    edge = np.zeros(SHAPE, dtype=bool)
    edge[:, 0:15, 50:64] = True  # touches the top and right image edges on every slice
    edge[0, 0, 0] = True  # and a corner pixel
    empty = np.zeros(SHAPE, dtype=bool)
    return {"GTV": disc_with_hole, "Lung_L": islands, "Speck": speck, "Edge": edge,
            "Empty": empty}


@pytest.fixture(scope="session")
def engine() -> EngineIdentity:
    return EngineIdentity(
        name="ct-lung-nsclc",
        version="1.0.0+demo-weights-2026.11",
        model_name="LungTumourNet",
        model_sha256="0" * 64,
    )


@pytest.fixture(scope="session")
def findings(source_datasets: list[Dataset], engine: EngineIdentity) -> Findings:
    masks = _masks()
    gtv_measurements = (
        Measurement(codes.VOLUME, 2.345, codes.UNIT_ML),
        Measurement(codes.DIAMETER, 24.4, codes.UNIT_MM, modifier=codes.LONG_AXIS),
        Measurement(codes.DIAMETER, 20.1, codes.UNIT_MM, modifier=codes.SHORT_AXIS),
        Measurement(codes.MEAN, -12.5, codes.UNIT_HU),
    )
    segments = (
        Segment(
            label="GTV", description="GTV primary lung tumour",
            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, property_type=codes.NEOPLASM,
            rt_interpreted_type="GTV", color_rgb=(255, 0, 0), mask=masks["GTV"],
            anatomic_region=codes.LUNG, tracking_id="tumour-1",
            measurements=gtv_measurements, key_slice=5,
            long_axis=((5, 18.0, 28.0), (5, 42.0, 28.0)),
            short_axis=((5, 30.0, 17.0), (5, 30.0, 39.0)),
        ),
        Segment(
            label="Lung_L", description="Left lung", category=codes.ANATOMICAL_STRUCTURE,
            property_type=codes.LUNG, property_modifier=codes.LEFT,
            rt_interpreted_type="ORGAN", color_rgb=(0, 128, 255), mask=masks["Lung_L"],
            measurements=(Measurement(codes.VOLUME, 4.1, codes.UNIT_ML),),
        ),
        Segment(
            label="Speck", description="single voxel", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property_type=codes.NEOPLASM_SECONDARY, rt_interpreted_type="GTV",
            color_rgb=(255, 255, 0), mask=masks["Speck"], tracking_id="speck-1",
        ),
        Segment(
            label="Edge", description="edge touching", category=codes.ANATOMICAL_STRUCTURE,
            property_type=codes.BONE, rt_interpreted_type="ORGAN", color_rgb=(0, 255, 0),
            mask=masks["Edge"],
        ),
        Segment(
            label="Empty", description="nothing found", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property_type=codes.NEOPLASM, rt_interpreted_type="GTV", color_rgb=(255, 0, 255),
            mask=masks["Empty"], tracking_id="empty-1",
        ),
    )
    return Findings(
        engine=engine,
        source_series_uid=source_datasets[0].SeriesInstanceUID,
        segments=segments,
        classifications=(
            Classification(codes.NEOPLASM, probability=0.87, threshold=0.5, positive=True,
                           finding_site=codes.LUNG, tracking_id="cls-1"),
        ),
    )


@pytest.fixture(scope="session")
def declined_findings(source_datasets: list[Dataset], engine: EngineIdentity) -> Findings:
    return Findings(
        engine=engine,
        source_series_uid=source_datasets[0].SeriesInstanceUID,
        decline=Decline("QC_TOO_FEW_SLICES", "The series has too few slices for the model."),
    )


@pytest.fixture(scope="session")
def options() -> ResultOptions:
    return ResultOptions(
        manufacturer="Example AI Node",
        manufacturer_model_name="dicom-ai-node",
        software_version="0.1.0",
        device_serial_number="NODE-0001",
        device_observer_uid="2.25.123456789012345678901234567890123",
        series_number_base=9000,
        institution_label="AI Node Lab",
    )


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory: pytest.TempPathFactory,
               source_datasets: list[Dataset]) -> Path:
    """The source CT written as Part 10 files (what validators and plastimatch read)."""
    directory = tmp_path_factory.mktemp("source_ct")
    write_series(source_datasets, directory)
    return directory


def save(ds: Dataset, path: Path) -> Path:
    """Write a result object as a Part 10 file (strict writing is on via the autouse fixture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dciodvfy_errors() -> Callable[[Path], list[str]]:
    """Run ``dciodvfy -new`` and return its ``Error`` lines (skip when not installed)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")

    def run(path: Path) -> list[str]:
        result = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True,
                                timeout=120)
        text = (result.stdout + result.stderr).decode("utf-8", "replace")
        return [line for line in text.splitlines() if line.startswith("Error")]

    return run


@pytest.fixture
def validate_outputs() -> Callable[[Path, Path], subprocess.CompletedProcess[str]]:
    """Run /work/shared/tools/validate_outputs.sh (skip when it or its tools are missing)."""
    script = Path("/work/shared/tools/validate_outputs.sh")
    if not script.exists():
        pytest.skip("validate_outputs.sh is not available")
    for tool in ("dciodvfy", "dcentvfy", "dcmdump", "dcmpschk", "dsrdump", "drtdump"):
        if shutil.which(tool) is None:
            pytest.skip(f"validate_outputs.sh needs {tool} (dicom3tools/dcmtk)")

    def run(source: Path, output: Path) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin:/usr/sbin", "PYTHON": sys.executable}
        return subprocess.run(["bash", str(script), str(source), str(output)],
                              capture_output=True, text=True, errors="replace", timeout=300,
                              env=env)

    return run


@pytest.fixture(scope="session")
def segmentation(findings: Findings, source_datasets: list[Dataset],
                 options: ResultOptions) -> Dataset:
    from dicom_node.results.seg import build_segmentation

    return build_segmentation(findings, source_datasets, options)


@pytest.fixture(scope="session")
def rtstruct(findings: Findings, source_datasets: list[Dataset],
             options: ResultOptions) -> Dataset:
    from dicom_node.results.rtstruct import build_rtstruct

    return build_rtstruct(findings, source_datasets, options)


def all_elements(ds: Dataset) -> Iterator[pydicom.DataElement]:
    """Every element of ``ds`` at any depth."""
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from all_elements(item)


def identifying_strings(ds: Dataset) -> list[str]:
    """Identity values of the fixture patient (the source is named, not pseudonymized)."""
    return [str(ds.PatientName), str(ds.PatientName).split("^")[0], str(ds.PatientID),
            str(ds.PatientBirthDate), str(ds.AccessionNumber), str(ds.ReferringPhysicianName)]


# --- Planar NM (whole-body anterior/posterior) and MR sources -------------------------------

AREA = Code("42798000", "SCT", "Area")
UNIT_MM2 = Code("mm2", "UCUM", "square millimeter")
GRAD_CAM = Code("GRADCAM", "99AINODE", "Grad-CAM class activation")
JOINT_ENTROPY = Code("TU0O", "IBSI", "Joint entropy")
NM_SHAPE = (2, 128, 48)  # frames (anterior, posterior), rows, columns
MR_SHAPE = (6, 48, 40)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def nm_whole_body_dataset(study_uid: str | None = None, seed: int = 3) -> Dataset:
    """A whole-body bone scan as a camera writes it: one NM multi-frame instance, frame 1
    ANTERIOR and frame 2 POSTERIOR (Detector Information Sequence with View Code Sequence,
    Frame Increment Pointer -> Energy Window Vector, Detector Vector), 16-bit counts."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, NuclearMedicineImageStorage, generate_uid

    rng = np.random.default_rng(seed)
    counts = rng.poisson(20, NM_SHAPE).astype(np.uint16)
    counts[:, 30:40, 20:28] += 200  # a hot spot on both views
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Nuclear^Nora", "NM-0001", "19500101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261129", "101500", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "A-NM-1", "Doktor^Bernd"
    ds.Modality = "NM"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.Laterality = ""
    ds.Manufacturer = "SyntheticCamera"
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.PatientOrientation = ["L", "F"]
    ds.ContentDate, ds.ContentTime = "20261129", "101500"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.PatientOrientationCodeSequence = [_code("F-10450", "SRT", "recumbent")]
    ds.PatientGantryRelationshipCodeSequence = [_code("F-10470", "SRT", "headfirst")]
    ds.CountsAccumulated = int(counts.sum())
    ds.ActualFrameDuration = 600000
    ds.ScanVelocity, ds.ScanLength = "15", "2000"
    radiopharmaceutical = Dataset()
    radiopharmaceutical.RadionuclideCodeSequence = [_code("C-163A8", "SRT", "Technetium Tc^99m^")]
    ds.RadiopharmaceuticalInformationSequence = [radiopharmaceutical]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = NM_SHAPE[1], NM_SHAPE[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = ["4.795", "4.795"]
    ds.NumberOfFrames = NM_SHAPE[0]
    ds.FrameIncrementPointer = [0x00540010, 0x00540020]
    ds.EnergyWindowVector, ds.NumberOfEnergyWindows = [1, 1], 1
    window_range = Dataset()
    window_range.EnergyWindowLowerLimit, window_range.EnergyWindowUpperLimit = "126", "154"
    window = Dataset()
    window.EnergyWindowRangeSequence = [window_range]
    window.EnergyWindowName = "TC99M"
    ds.EnergyWindowInformationSequence = [window]
    ds.DetectorVector, ds.NumberOfDetectors = [1, 2], 2
    detectors = []
    for value, meaning in (("399321004", "Anterior projection"),
                           ("399001007", "Posterior projection")):
        detector = Dataset()
        detector.ViewCodeSequence = [_code(value, "SCT", meaning)]
        detector.CollimatorType, detector.CollimatorGridName = "PARA", "LEHR"
        detectors.append(detector)
    ds.DetectorInformationSequence = detectors
    ds.PixelData = counts.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture(scope="session")
def nm_dataset() -> Dataset:
    return nm_whole_body_dataset()


def _hot_spot(centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: NM_SHAPE[1], : NM_SHAPE[2]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


@pytest.fixture(scope="session")
def nm_findings(nm_dataset: Dataset, engine: EngineIdentity) -> Findings:
    """Two numbered hot spots (one per view), a whole-scan classification made on the
    anterior frame, and a heat map on both views."""
    from ai_engines.findings import VoxelMap
    from ai_engines.volume import SliceReference

    first = np.zeros(NM_SHAPE, dtype=bool)
    first[0] = _hot_spot((35, 24), 5)
    second = np.zeros(NM_SHAPE, dtype=bool)
    second[1] = _hot_spot((90, 15), 4)
    heat = np.zeros(NM_SHAPE, dtype=np.float32)
    heat[0] = np.where(first[0], 0.9, 0.05)
    heat[1] = np.where(second[1], 0.6, 0.02)
    lesion = {"category": codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
              "property_type": codes.BONY_METASTASIS, "rt_interpreted_type": "GTV"}
    return Findings(
        engine=dataclasses.replace(engine, name="nm-bone-scan"),
        source_series_uid=str(nm_dataset.SeriesInstanceUID),
        segments=(
            Segment(label="HOT_1", description="hot spot 1", color_rgb=(255, 64, 0),
                    mask=first, tracking_id="HOT_1", probability=0.91,
                    measurements=(Measurement(AREA, 250.0, UNIT_MM2),), **lesion),
            Segment(label="HOT_2", description="hot spot 2", color_rgb=(0, 200, 255),
                    mask=second, tracking_id="HOT_2", probability=0.55, **lesion),
        ),
        classifications=(
            Classification(codes.BONY_METASTASIS, probability=0.93, threshold=0.42,
                           positive=True, tracking_id="scan",
                           source=SliceReference(str(nm_dataset.SOPClassUID),
                                                 str(nm_dataset.SOPInstanceUID),
                                                 frame_number=1, view="ANTERIOR"),
                           source_series_uid=str(nm_dataset.SeriesInstanceUID)),
        ),
        maps=(VoxelMap(label="GradCAM", description="Grad-CAM heat map",
                       quantity=GRAD_CAM, unit=codes.UNIT_NONE, values=heat),),
    )


@pytest.fixture(scope="session")
def mr_datasets() -> list[Dataset]:
    """Six axial MR slices (no Hounsfield scale): a bright blob in a grey head."""
    rng = np.random.default_rng(11)
    voxels = rng.normal(300, 20, MR_SHAPE)
    voxels[2:5, 15:30, 12:26] += 600
    return ct_series_datasets(voxels, modality="MR", pixel_spacing=(1.0, 1.0),
                              slice_spacing=3.0, origin=(-20.0, -24.0, 40.0),
                              series_description="T1 post contrast")


@pytest.fixture(scope="session")
def mr_findings(mr_datasets: list[Dataset], engine: EngineIdentity) -> Findings:
    from ai_engines.findings import VoxelMap

    mask = np.zeros(MR_SHAPE, dtype=bool)
    mask[2:5, 15:30, 12:26] = True
    values = np.zeros(MR_SHAPE, dtype=np.float64)
    values[mask] = 3.5
    return Findings(
        engine=dataclasses.replace(engine, name="mr-glioma"),
        source_series_uid=str(mr_datasets[0].SeriesInstanceUID),
        segments=(Segment(label="GTV_1", description="enhancing tumour",
                          category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                          property_type=codes.NEOPLASM, rt_interpreted_type="GTV",
                          color_rgb=(255, 0, 0), mask=mask, tracking_id="GTV_1",
                          probability=0.8,
                          measurements=(Measurement(codes.VOLUME, 2.52, codes.UNIT_ML),)),),
        maps=(VoxelMap(label="GLCM_Entropy", description="GLCM entropy 5x5",
                       quantity=JOINT_ENTROPY, unit=codes.UNIT_NONE,
                       values=values + np.linspace(0, 1, MR_SHAPE[2])[None, None, :]),),
    )
