"""The MR glioma engine through the node's one training and evaluation CLI: synthetic slabs,
and a site's own MR series with SEG ground truth."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pytest

from ai_engines.mr_glioma.synthetic import acquire, labels_on, synthetic_brain
from ai_engines.mr_glioma.training import label_class
from dicom_node.cli import main
from dicom_node.sample_data import PatientIdentity
from tests.ai_engines.mr_glioma.series_builders import mr_datasets

HELD_OUT_SEED = 100_005


def _site_folder(tmp_path):
    """One T1c series as a scanner writes it (6.5 mm slices) and its tumour as a SEG."""
    folder = tmp_path / "site"
    folder.mkdir()
    brain = synthetic_brain(HELD_OUT_SEED, kind="hgg")
    volume = acquire(brain, "T1c", slice_thickness=6.5, pixel_spacing=1.0, seed=HELD_OUT_SEED,
                     series_uid="2.25.77", description="AX T1 POST GD")
    datasets = mr_datasets(volume, "T1c", PatientIdentity(patient_id="SITE-MR-1"), 3, "AX T1 POST GD")
    for k, ds in enumerate(datasets):
        ds.save_as(folder / f"mr{k:03d}.dcm", enforce_file_format=True)
    truth = labels_on(brain, volume) > 0
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Whole tumour",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=truth.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=90, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="Site", manufacturer_model_name="Manual", software_versions="1", device_serial_number="1",
        omit_empty_frames=True)
    seg.save_as(folder / "seg.dcm")
    return folder, int(truth.sum())


def test_roi_names_decide_the_class():
    assert label_class(("Enhancing tumour",), "T1c") == 3
    assert label_class(("Edema",), "FLAIR") == 2
    assert label_class(("necrotic core",), "T1c") == 1
    assert label_class(("GTV",), "T1c") == 3 and label_class(("Tumour",), "FLAIR") == 1


def test_options_are_the_engines(capsys):
    with pytest.raises(SystemExit):
        main(["train-model", "mr_glioma", "--help"])
    out = capsys.readouterr().out
    assert "usage: dicom-node train-model mr_glioma" in out
    assert "--grade-minutes" in out and "--data-dir" in out and "mr_glioma_grade" in out


@pytest.mark.slow
def test_train_model_writes_weights_the_engine_loads(tmp_path, capsys):
    from ai_engines.registry import get_engine

    out = tmp_path / "site-model"
    assert main(["train-model", "mr_glioma", "--synthetic", "1", "--first-seed", "7", "--out", str(out),
                 "--max-steps", "2", "--grade-minutes", "0.05", "--threads", "1", "--label", "DEMO"]) == 0
    for name in ("mr_glioma_unet", "mr_glioma_grade"):
        assert (out / f"{name}.pt").is_file() and (out / f"{name}.json").is_file()
    card = json.loads((out / "mr_glioma_unet.json").read_text())
    assert "1 slabs of 40 mm, seeds 7-7" in card["training_data"]
    assert "dicom-node train-model mr_glioma" in card["notes"] or "train-model" in card["notes"]
    grade = json.loads((out / "mr_glioma_grade.json").read_text())
    assert grade["architecture"]["encoder"] == "mr_glioma_unet"
    engine = get_engine("mr_glioma", model_dir=out, device="cpu")
    assert engine.identity().model_sha256 == card["sha256"]


@pytest.mark.slow
def test_evaluate_model_on_a_sites_series_with_seg(tmp_path, capsys):
    folder, truth_voxels = _site_folder(tmp_path)
    assert truth_voxels > 0
    report = tmp_path / "site.json"
    assert main(["evaluate-model", "mr_glioma", "--data-dir", str(folder), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "WT Dice" in printed
    result = json.loads(report.read_text())
    (case,) = result["cases"]
    assert case["role"] == "T1c" and case["declined"] is None
    assert case["WT"] is not None and 0.0 <= case["WT"] <= 1.0
    assert result["summary"]["cases"] == 1.0


@pytest.mark.slow
def test_evaluate_model_on_held_out_synthetic_studies(tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert main(["evaluate-model", "mr_glioma", "--synthetic", "1", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "whole tumour Dice" in printed
    result = json.loads(report.read_text())
    assert {c["mode"] for c in result["cases"]} == {"all", "T1c", "FLAIR"}
    assert result["summary"]["all"]["n"] == 1


@pytest.mark.slow
def test_t1c_only_network_is_trained_and_serves_t1c_only_studies(tmp_path):
    from ai_engines.models import ModelError
    from ai_engines.mr_glioma.engine import MrGliomaEngine

    out = tmp_path / "site-model"
    common = ["--synthetic", "1", "--first-seed", "7", "--out", str(out), "--max-steps", "2", "--threads", "1"]
    assert main(["train-model", "mr_glioma", *common, "--grade-minutes", "0.05"]) == 0
    assert main(["train-model", "mr_glioma", "--model", "mr_glioma_unet_t1c", *common]) == 0
    card = json.loads((out / "mr_glioma_unet_t1c.json").read_text())
    assert card["architecture"]["sequences"] == ["T1c"]
    assert card["name"] == "mr_glioma_unet_t1c" and "T1c only in every crop" in card["training_data"]
    engine = MrGliomaEngine(model_dir=out, device="cpu")
    general = json.loads((out / "mr_glioma_unet.json").read_text())
    assert engine.network_for({"T1c"}).files.card.sha256 == card["sha256"]
    for roles in ({"T1c", "FLAIR"}, {"FLAIR"}, {"T1", "T1c", "T2", "FLAIR"}):
        assert engine.network_for(roles).files.card.sha256 == general["sha256"]
    assert engine.identity(engine.network_for({"T1c"})).model_sha256 == card["sha256"]
    assert "+t1c-" in engine.identity().version
    # A T1c-only network whose card claims another input set is refused, not used for T1c.
    card["architecture"]["sequences"] = ["FLAIR"]
    (out / "mr_glioma_unet_t1c.json").write_text(json.dumps(card))
    with pytest.raises(ModelError):
        MrGliomaEngine(model_dir=out, device="cpu")


def test_real_negative_slabs_are_tumour_free_t1c_on_an_axial_lps_grid(tmp_path):
    import SimpleITK as sitk  # noqa: N813

    from ai_engines.mr_glioma.train import SLAB, real_negative_cases

    # A "head" in RAS order at 0.5 mm, as a NIfTI template is stored: an ellipsoid of tissue
    # brighter towards the top, so a wrong re-orientation or scaling shows.
    z, y, x = np.mgrid[:200, :160, :140]
    head = ((z - 100) / 90.0) ** 2 + ((y - 80) / 70.0) ** 2 + ((x - 70) / 60.0) ** 2 < 1
    volume = np.where(head, 50 + z // 4, 0).astype(np.uint8)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.5, 0.5, 0.5))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS
    path = tmp_path / "head.nrrd"
    sitk.WriteImage(image, str(path))
    cases = real_negative_cases(path, 2, seed=1)
    assert len(cases) == 2
    for case in cases:
        assert set(case.channels) == {"T1c"} and not case.labels.any() and not case.high_grade
        assert case.labels.shape == case.channels["T1c"].shape == (SLAB, 80, 70)  # 1 mm from 0.5 mm


def test_negative_volumes_are_refused_for_the_all_sequence_network(tmp_path):
    (tmp_path / "head.nrrd").write_bytes(b"NRRD0004")
    with pytest.raises(SystemExit, match="no such file"):
        main(["train-model", "mr_glioma", "--model", "mr_glioma_unet_t1c", "--synthetic", "1", "--out",
              str(tmp_path / "m"), "--max-steps", "1", "--negative-volume", str(tmp_path / "absent.nrrd")])
    with pytest.raises(SystemExit, match="--negative-volume is for --model mr_glioma_unet_t1c"):
        main(["train-model", "mr_glioma", "--synthetic", "1", "--out", str(tmp_path / "m"), "--max-steps", "1",
              "--negative-volume", str(tmp_path / "head.nrrd")])
