"""Packaging checked with what runs here: the systemd units verified by systemd-analyze with
the install prefix pointed at this checkout's venv, the sysusers file by systemd-sysusers, the
compose file's services and configuration, and the container's entry point command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_node.cli import build_parser
from dicom_node.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CONTAINER = DEPLOY / "container"
UNITS = ["dicom-node.service", "dicom-node-worker.service"]


def _entry_point() -> str:
    found = Path(sys.executable).with_name("dicom-node")
    if not found.exists():
        pytest.skip("dicom-node is not installed in this Python's environment")
    return str(found)


def _verify(unit_text: str, name: str, tmp_path: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / name
    unit.write_text(unit_text.replace("/opt/dicom-node/bin/dicom-node", _entry_point()))
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", UNITS)
def test_units_verify(name, tmp_path):
    out = _verify((DEPLOY / name).read_text(), name, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Unknown key" not in out.stderr and "Unknown section" not in out.stderr


def test_verify_catches_a_broken_unit(tmp_path):
    broken = (DEPLOY / UNITS[0]).read_text().replace("Type=notify", "Type=notiffy")
    out = _verify(broken, UNITS[0], tmp_path)
    assert out.returncode != 0 or "notiffy" in out.stderr


@pytest.mark.parametrize("name", UNITS)
def test_units_start_on_a_fresh_host(name):
    """What the earlier unit lacked: folders systemd creates, a notify service with a
    watchdog, and the config found through the environment."""
    text = (DEPLOY / name).read_text()
    for line in ("StateDirectory=dicom-node", "ConfigurationDirectory=dicom-node",
                 "Type=notify", "Environment=DICOM_NODE_CONFIG=/etc/dicom-node/node.toml",
                 "NoNewPrivileges=true", "ProtectSystem=strict", "User=dicom-node"):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+$", text, re.M)
    if name == "dicom-node.service":
        assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text  # port 104 without root


def test_sysusers_file(tmp_path):
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    out = subprocess.run([sysusers, "--dry-run", "--root", str(tmp_path),
                          str(DEPLOY / "dicom-node.sysusers")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dicom-node" in out.stdout + out.stderr


def test_compose_services_and_configuration():
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "node", "worker", "orthanc"}
    assert services["worker"]["deploy"]["replicas"] == 2
    commands = {name: services[name]["command"] for name in ("node", "worker")}
    subcommands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for command in commands.values():
        assert command[0] in subcommands
    config = load_config(CONTAINER / "node.toml")
    assert config.database.url.startswith("postgresql+psycopg://")
    assert config.jobs.workers == 0
    orthanc = config.peer_by_name("orthanc")
    assert orthanc is not None and orthanc.host == "orthanc"
    assert f'"{config.node.ae_title}", "node", {config.node.port}' in \
        services["orthanc"]["environment"]["ORTHANC__DICOM_MODALITIES"]
    for service in ("node", "worker"):
        assert "node-data:/var/lib/dicom-node" in services[service]["volumes"]


def test_container_entry_point_runs_in_a_venv():
    dockerfile = (CONTAINER / "Dockerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]$', dockerfile, re.M).group(1)
    assert entry == "dicom-node"
    assert re.search(r'^CMD \["serve"\]$', dockerfile, re.M)
    assert "torch==2.13.0 --index-url" in dockerfile  # pip never picks a torch build itself
    out = subprocess.run([_entry_point(), "check-config", str(CONTAINER / "node.toml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([_entry_point(), "serve", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--config" in out.stdout
