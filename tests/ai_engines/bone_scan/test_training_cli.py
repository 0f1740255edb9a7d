"""The bone-scan engine through the node's one training and evaluation CLI: synthetic scans,
and a site's own scans with a labels CSV (a classifier's ground truth is a label per study)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ai_engines.bone_scan.synthetic import synthetic_scan
from dicom_node.cli import main
from dicom_node.sample_data import PatientIdentity, nm_whole_body_dataset


def _site_folder(tmp_path):
    """Four whole-body scans as a camera writes them, two with metastases, and their labels."""
    folder = tmp_path / "scans"
    folder.mkdir()
    rows = ["path,label"]
    for i, metastatic in enumerate((True, False, True, False)):
        scan = synthetic_scan(150_000 + i, metastatic=metastatic, matrix=(1024, 256))
        frames = np.stack([scan.anterior, np.fliplr(scan.posterior)]).clip(0, 65535)
        ds = nm_whole_body_dataset(frames.astype(np.uint16), pixel_spacing_mm=2314 / 1024,
                                   identity=PatientIdentity(patient_id=f"SITE-{i}"))
        ds.save_as(folder / f"scan{i}.dcm", enforce_file_format=True)
        rows.append(f"scan{i}.dcm,{int(metastatic)}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder, labels


def test_evaluate_model_on_synthetic_scans_reports_cis(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate-model", "bone_scan", "--synthetic", "6", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AUC" in printed and "95 % CI" in printed
    summary = json.loads(out.read_text())["summary"]["overall"]
    assert summary["answered"] + summary["declined"] == 6
    assert len(summary["auc_ci95"]) == 2 and len(summary["sensitivity_ci95"]) == 2


def test_evaluate_model_on_a_sites_labelled_scans(tmp_path, capsys):
    folder, labels = _site_folder(tmp_path)
    assert main(["evaluate-model", "bone_scan", "--data-dir", str(folder),
                 "--labels", str(labels), "--json", str(tmp_path / "site.json")]) == 0
    summary = json.loads((tmp_path / "site.json").read_text())["summary"]["overall"]
    assert summary["scans"] == 4 and summary["metastatic"] + summary["non_metastatic"] == \
        summary["answered"]
    with pytest.raises(SystemExit, match="--labels"):
        main(["evaluate-model", "bone_scan", "--data-dir", str(folder)])


def test_train_model_writes_weights_the_engine_loads(tmp_path, capsys):
    from ai_engines.registry import get_engine

    out = tmp_path / "site-model"
    assert main(["train-model", "bone_scan", "--synthetic", "6", "--out", str(out),
                 "--max-steps", "2", "--threads", "1"]) == 0
    assert (out / "bone_scan_cnn.pt").is_file() and (out / "bone_scan_cnn.json").is_file()
    card = json.loads((out / "bone_scan_cnn.json").read_text())
    assert "6 synthetic cases of bone_scan" in card["training_data"]
    engine = get_engine("bone_scan", model_dir=out, device="cpu")
    assert engine.identity().model_sha256 == card["sha256"]
