"""`dicom-node status`, `jobs` (list/show/retry) on a real database."""

from __future__ import annotations

import json
import time

from dicom_node.cli import main
from dicom_node.config import load_config
from dicom_node.node import Node
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu
from tests.nodeproc import write_config


def test_status_and_jobs_commands(tmp_path, capsys):
    config_path = tmp_path / "node.toml"
    write_config(config_path, {
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "completion": {"quiet_seconds": 0.01},
        "jobs": {"workers": 0},
    }, [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}])
    node = Node(load_config(config_path), workers=0, send=False)
    for ds in ct_series_datasets(phantom_chest_hu((3, 16, 16)), modality="MR"):
        assert node.receiver.ingest(ds, "PACS") == 0
    time.sleep(0.05)
    node.completion.run_once()
    node.db.dispose()

    assert main(["status", "--json", "--config", str(config_path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["instances"]["stored"] == 3
    assert status["studies"] == {"complete": 1} and status["jobs"] == {"queued": 1}
    (study,) = status["recent_studies"]
    assert study["series"][0]["modality"] == "MR" and study["series"][0]["instances"] == 3

    assert main(["jobs", "--json", "--config", str(config_path)]) == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert job["engine"] == "mr_glioma" and job["state"] == "queued"
    assert main(["jobs", "show", str(job["id"]), "--config", str(config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["deliveries"] == []
    # Only terminal jobs can be retried; the answer says so and the exit code is 1.
    assert main(["jobs", "retry", str(job["id"]), "--config", str(config_path)]) == 1
    assert "not in a terminal state" in capsys.readouterr().out
