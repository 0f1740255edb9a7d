"""Labelled bone scans for training and evaluation: synthetic ones, or a site's own DICOM NM
scans with a CSV of labels.  Training/evaluation only; the engine never imports this module.

A site's folder::

    scans/                      any layout; every DICOM file below is read
    labels.csv                  one row per study: study_uid,label   (label 1 = metastatic)
                                or:                 path,label       (a sub-folder or file
                                                                      of the scans folder)

Files are grouped by study and series; each series becomes a planar :class:`SeriesVolume` with
the view, detector and energy window of every frame read from the NM multi-frame module
(:func:`planar_volume`), or from ``build_volume`` when the caller passes the node's own reader
(``dicom_node.volumes.build_volume``).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai_engines.volume import (
    AcquisitionFacts,
    SeriesVolume,
    SliceReference,
    StudyInput,
    VolumeGeometry,
)

_LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91",
                   "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.203"}


class DatasetError(ValueError):
    """A labels file or scans folder that cannot be read as described."""


@dataclass(frozen=True)
class LabelledScan:
    """One study and its label (1: metastatic bone disease), with optional subgroup flags."""

    study: StudyInput
    label: int
    name: str
    confounders: dict[str, bool] = field(default_factory=dict)


def synthetic_scans(count: int, first_seed: int = 0, **options) -> Iterator[LabelledScan]:
    """Synthetic labelled scans, seeds ``first_seed ...``; ``options`` go to ``synthetic_scan``."""
    from ai_engines.bone_scan.synthetic import synthetic_scan

    for seed in range(first_seed, first_seed + count):
        scan = synthetic_scan(seed, **options)
        yield LabelledScan(scan.study, scan.label, f"synthetic-{seed}", dict(scan.confounders))


def _view_of(item) -> str | None:
    """``"ANTERIOR"``/``"POSTERIOR"`` from a View Code Sequence item's meaning, else None."""
    codes = item.get("ViewCodeSequence") if item is not None else None
    if not codes:
        return None
    meaning = str(codes[0].get("CodeMeaning", "")).strip().lower()
    if meaning.startswith("anterior"):
        return "ANTERIOR"
    if meaning.startswith("posterior"):
        return "POSTERIOR"
    return meaning.upper().replace(" ", "_") or None


def _vector(ds, keyword: str) -> list[int]:
    """A US 1-n vector as a list (pydicom gives a single value as a plain int)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) or hasattr(value, "__iter__") else [int(value)]


def planar_volume(datasets: Sequence) -> SeriesVolume:
    """A planar NM series (one multi-frame instance, or single-frame instances) as a volume.

    The view of frame ``k`` comes from the Detector Information Sequence item its Detector
    Vector names (or the instance's own View Code Sequence); its energy window from the Energy
    Window Vector.  Geometry: Image Orientation (Patient) of that detector item when present,
    else the default orientation (the engine then falls back to the aspect ratio).
    """
    refs: list[SliceReference] = []
    images: list[np.ndarray] = []
    first = datasets[0]
    orientation = None
    for ds in datasets:
        pixels = np.asarray(ds.pixel_array, dtype=np.float32)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        n = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = pixels.reshape(n, *pixels.shape[-2:]) * slope + intercept
        detectors = _vector(ds, "DetectorVector") or [1] * n
        windows = _vector(ds, "EnergyWindowVector") or [1] * n
        info = list(ds.get("DetectorInformationSequence", []))
        for k in range(n):
            detector = int(detectors[k]) if k < len(detectors) else 1
            item = info[detector - 1] if 0 < detector <= len(info) else None
            view = _view_of(item) or _view_of(ds)
            if orientation is None and item is not None and "ImageOrientationPatient" in item:
                orientation = [float(v) for v in item.ImageOrientationPatient]
            refs.append(SliceReference(
                str(ds.SOPClassUID), str(ds.SOPInstanceUID), k + 1 if n > 1 else None, view=view,
                detector=detector, energy_window=int(windows[k]) if k < len(windows) else 1,
            ))
            images.append(pixels[k])
    if orientation is None and "ImageOrientationPatient" in first:
        orientation = [float(v) for v in first.ImageOrientationPatient]
    orientation = orientation or [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    spacing = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
    syntax = str(getattr(first.file_meta, "TransferSyntaxUID", "")) if hasattr(first, "file_meta") else ""
    lossy = str(first.get("LossyImageCompression", "00")) == "01" or syntax in _LOSSY_SYNTAXES
    facts = AcquisitionFacts(
        modality=str(first.get("Modality", "")), manufacturer=str(first.get("Manufacturer", "")) or None,
        lossy_compressed=lossy, series_description=str(first.get("SeriesDescription", "")) or None,
        image_type=tuple(str(v) for v in first.get("ImageType", [])),
    )
    geometry = VolumeGeometry(
        slice_origins=np.zeros((len(images), 3)), row_direction=tuple(orientation[:3]),  # type: ignore[arg-type]
        column_direction=tuple(orientation[3:]),  # type: ignore[arg-type]
        pixel_spacing=(spacing[0], spacing[1]),
    )
    return SeriesVolume(
        series_uid=str(first.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")) or None,
        voxels=np.stack(images), geometry=geometry, slices=tuple(refs), facts=facts,
    )


def _read_labels(labels_csv: Path) -> tuple[str, dict[str, int], dict[str, int]]:
    """(key column, label per key, CSV line per key); messages name lines, never UIDs."""
    with Path(labels_csv).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower() for c in (reader.fieldnames or [])}
        key = "study_uid" if "study_uid" in columns else "path" if "path" in columns else None
        if key is None or "label" not in columns:
            raise DatasetError(f"{labels_csv}: needs columns study_uid,label or path,label")
        labels: dict[str, int] = {}
        lines: dict[str, int] = {}
        for number, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if row["label"] not in ("0", "1"):
                raise DatasetError(f"{labels_csv} line {number}: label must be 0 or 1")
            labels[row[key]] = int(row["label"])
            lines[row[key]] = number
    return key, labels, lines


def read_labelled_scans(
    scans_dir: Path, labels_csv: Path,
    build_volume: Callable[[Sequence], SeriesVolume] = planar_volume,
) -> Iterator[LabelledScan]:
    """A site's labelled bone scans, one :class:`LabelledScan` per labelled study.

    Parameters
    ----------
    scans_dir
        Folder of DICOM files (any layout, read recursively; unreadable files are skipped).
    labels_csv
        ``study_uid,label`` or ``path,label`` (``path`` relative to ``scans_dir``, never outside).
    build_volume
        Turns one series' datasets into a :class:`SeriesVolume`.

    Raises
    ------
    DatasetError
        Bad labels file, a path outside the folder, or a labelled study with no images.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(scans_dir).resolve()
    key, labels, lines = _read_labels(labels_csv)
    if key == "path":
        for name in labels:
            if not (root / name).resolve().is_relative_to(root):
                raise DatasetError(f"{labels_csv} line {lines[name]}: the path lies outside the scans folder")
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError):
            continue
        if "PixelData" not in ds:
            continue
        if key == "study_uid":
            group = str(ds.get("StudyInstanceUID", ""))
        else:
            relative = path.relative_to(root)
            group = next((k for k in labels if Path(k) == relative or Path(k) in relative.parents), "")
        if group in labels:
            groups[group][str(ds.get("SeriesInstanceUID", ""))].append(ds)
    for name, label in labels.items():
        series = groups.get(name)
        if not series:
            raise DatasetError(f"{labels_csv} line {lines[name]}: no readable images of that study under the scans folder")
        volumes = tuple(build_volume(datasets) for datasets in series.values())
        yield LabelledScan(StudyInput(study_uid=f"labelled-{lines[name]}", series=volumes), label, f"line-{lines[name]}")
