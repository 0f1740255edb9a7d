"""A node installation in a temporary folder, fed in-process (no network), for the key tests.

The receiver's own ``ingest`` stores instances exactly as a C-STORE does (de-identify, fsync,
index + vault rows); a result object is built from the stored, pseudonymized series with the
project's result writers, as a worker would.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from ai_engines import codes
from ai_engines.findings import EngineIdentity, Findings, Segment
from dicom_node.config import NodeConfig, parse_config
from dicom_node.node import Node
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu

PLANTED = PatientIdentity(
    name="Brandenberger^Ottilie", patient_id="PID-BR-771203", birth_date="19390417",
    institution="Klinik Seeblick-Nord", address="Lindenallee 41, 8706 Meilen",
    accession="ACC-BR-606113", charset="ISO_IR 100")


def node_config(root: Path, *, keys_dir: Path | None = None,
                database_url: str | None = None) -> NodeConfig:
    """Data folder ``root/var`` (SQLite inside it), keys in ``root/keys`` unless given."""
    return parse_config({
        "node": {"data_dir": str(root / "var"), "min_free_disk_mb": 1},
        "database": {"url": database_url or f"sqlite:///{root / 'var' / 'node.db'}"},
        "jobs": {"workers": 0},
        "keys": {"dir": str(keys_dir or root / "keys")},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })


def source_series(identity: PatientIdentity = PLANTED, slices: int = 4) -> list[Dataset]:
    return ct_series_datasets(phantom_chest_hu((slices, 32, 32)), identity=identity)


def burned_in(identity: PatientIdentity = PLANTED) -> Dataset:
    """An instance the receiver must quarantine (its pixels may show the name)."""
    ds = ct_series_datasets(phantom_chest_hu((1, 32, 32)), identity=identity)[0]
    ds.BurnedInAnnotation = "YES"
    return ds


def receive(node: Node, datasets: list[Dataset]) -> list[Path]:
    """Store ``datasets`` through the receiver; returns the stored (pseudonymized) files."""
    for ds in datasets:
        assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == 0  # de-identified in place
    return sorted((node.files.root / "studies").rglob("*.dcm"))


def write_result(node: Node, stored: list[Path]) -> Path:
    """A DICOM-SEG result on the stored series, written under ``results/`` as a worker does."""
    clean = sorted((dcmread(p) for p in stored), key=lambda d: int(d.InstanceNumber))
    mask = np.zeros((len(clean), 32, 32), bool)
    mask[1:3, 10:20, 10:20] = True
    findings = Findings(
        engine=EngineIdentity("test", "1.0", "test-model", "0" * 64),
        source_series_uid=str(clean[0].SeriesInstanceUID),
        segments=(Segment("GTV", "GTV test", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                          codes.NEOPLASM, "GTV", (255, 0, 0), mask, tracking_id="t1"),))
    objects = build_result_objects(findings, clean, ResultOptions(
        device_observer_uid="2.25.1234", manufacturer="test", manufacturer_model_name="t",
        software_version="1", device_serial_number="1"))
    seg = next(ds for ds in objects if ds.Modality == "SEG")
    path = node.files.absolute(f"results/1/{seg.SOPInstanceUID}.dcm")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path
