"""Defect 1 of issue 10: access control failed open (no peers, or only receive-only peers,
accepted any calling AE title).  Now an association is accepted only from a configured peer
that may send, from its host (and inside node.allowed_networks); a refusal is logged with the
calling AE title and the source address."""

from __future__ import annotations

import logging
import subprocess

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu
from dicom_node.scp import printable, source_ip
from tests.net import need
from tests.security.netnode import PACS, running_node

pytestmark = pytest.mark.slow


def store(node, calling_ae: str = "PACS", bind: str | None = None) -> str:  # noqa: ANN001
    """Associate as ``calling_ae`` (from ``bind``) and C-STORE one CT slice: "stored" or
    "rejected"."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = 10
    kwargs = {"bind_address": (bind, 0)} if bind else {}
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title, **kwargs)
    if assoc.is_established:
        (ds,) = ct_series_datasets(phantom_chest_hu((1, 16, 16)))
        status = assoc.send_c_store(ds).Status
        assoc.release()
        assert status == 0x0000
        return "stored"
    assert assoc.is_rejected
    return "rejected"


def echoscu(node, calling_ae: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([need("echoscu"), "-aet", calling_ae, "-aec", node.ae_title,
                           "127.0.0.1", str(node.port)], capture_output=True, text=True,
                          timeout=60)


def test_no_peers_rejects_every_calling_ae(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "dicom_node.scp")
    with running_node(tmp_path, peers=[]) as node:
        out = echoscu(node, "ANYONE")
        assert out.returncode != 0
        assert "Calling AE Title Not Recognized" in out.stdout + out.stderr
        assert store(node, "ANYONE") == "rejected" and node.stored() == 0
    assert "association rejected: calling AE 'ANYONE' from 127.0.0.1" in caplog.text


def test_receive_only_peer_may_not_send(tmp_path):
    with running_node(tmp_path, peers=[{**PACS, "may_send": False}]) as node:
        assert store(node, "PACS") == "rejected"
        assert node.stored() == 0


def test_peer_only_from_its_host(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "dicom_node.scp")
    with running_node(tmp_path, peers=[{**PACS, "host": "127.0.0.2"}]) as node:
        assert store(node, "PACS") == "rejected"  # from 127.0.0.1
        assert node.stored() == 0
        assert store(node, "PACS", bind="127.0.0.2") == "stored"
        assert node.stored() == 1
    assert "calling AE 'PACS' from 127.0.0.1: source address is not peer 'pacs'" in caplog.text


def test_check_host_false_accepts_any_address(tmp_path):
    with running_node(tmp_path, peers=[{**PACS, "host": "127.0.0.2",
                                         "check_host": False}]) as node:
        assert store(node, "PACS") == "stored"


def test_allowed_networks(tmp_path):
    with running_node(tmp_path, node={"allowed_networks": ["10.0.0.0/8"]}) as node:
        assert store(node, "PACS") == "rejected"
    with running_node(tmp_path / "2", node={"allowed_networks": ["127.0.0.0/8"]}) as node:
        assert store(node, "PACS") == "stored"


def test_accept_unknown_calling_ae_is_loud(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "dicom_node.scp")
    with running_node(tmp_path, peers=[], node={"accept_unknown_calling_ae": True}) as node:
        assert store(node, "STRANGER") == "stored"
    assert "associations from calling AE titles that are not configured peers are ACCEPTED" \
        in caplog.text
    assert "accepting unknown calling AE 'STRANGER' from 127.0.0.1" in caplog.text


def test_echo_still_answers_when_disk_is_low_but_storage_is_refused(tmp_path):
    with running_node(tmp_path, node={"min_free_disk_mb": 10**9}) as node:
        assert echoscu(node, "PACS").returncode == 0
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.result == 0x02  # transient: try again later


def test_logged_values_are_sanitised():
    assert printable("EVIL\n2026-01-01 INFO forged") == "'EVIL?2026-01-01 INFO forged'"
    assert printable("A" * 500).count("A") == 64
    assert source_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_ip("10.0.0.1; rm -rf /") == "invalid"
