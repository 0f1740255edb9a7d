"""Defect 6 of issue 10: pynetdicom buffered a PDU of any announced length (up to 4 GiB) before
the association was checked, data sets had no size cap, and the disk was checked only after
the data had arrived.  Now the announced length in each PDU header is checked before the body
is read, a data set over node.max_dataset_bytes is cut off while it streams in, and storage
associations are refused while the disk is low."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.sop_class import CTImageStorage

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu
from tests.security.netnode import running_node

pytestmark = pytest.mark.slow


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the node closes ``sock`` within ``seconds`` (while we send nothing more)."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def echo_ok(node) -> bool:  # noqa: ANN001
    ae = AE(ae_title="PACS")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    ok = assoc.is_established and assoc.send_c_echo().Status == 0
    if assoc.is_established:
        assoc.release()
    return bool(ok)


@pytest.mark.parametrize("pdu_type", [0x01, 0x04])
def test_huge_announced_length_closes_before_the_body(tmp_path, pdu_type):
    with running_node(tmp_path, node={"network_timeout_s": 60}) as node:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
            t0 = time.monotonic()
            sock.sendall(struct.pack(">BBL", pdu_type, 0, 0xFFFFFFF0) + b"\x00" * 1024)
            assert closed_within(sock, 5)  # not left waiting for 4 GiB
            assert time.monotonic() - t0 < 5
        assert echo_ok(node)  # and the node keeps serving


def test_pdata_longer_than_announced_maximum_closes(tmp_path, monkeypatch):
    with running_node(tmp_path, node={"max_pdu_bytes": 16384}) as node:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established and assoc.acceptor.maximum_length == 16384
        # a peer that ignores the node's maximum and sends 256 KiB PDUs
        monkeypatch.setattr(DIMSEServiceProvider, "maximum_pdu_size", 262144)
        (ds,) = ct_series_datasets(phantom_chest_hu((1, 256, 256)))
        rsp = assoc.send_c_store(ds)
        assert "Status" not in rsp  # no answer: the connection was closed
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not assoc.is_established
        assert node.stored() == 0
        assert echo_ok(node)


@pytest.mark.parametrize("in_memory", [64 * 1024, 16 * 1024 * 1024])
def test_data_set_over_the_maximum_is_cut_off(tmp_path, in_memory):
    # 64 KiB: the partial data set has spilled to a file, which must go; 16 MiB: in memory.
    with running_node(tmp_path, node={"max_dataset_bytes": 1024 * 1024,
                                      "dataset_memory_bytes": in_memory}) as node:
        (small,) = ct_series_datasets(phantom_chest_hu((1, 64, 64)))
        (big,) = ct_series_datasets(phantom_chest_hu((1, 64, 64)))
        big.Rows = big.Columns = 1024  # 2 MiB of pixel data
        big.PixelData = np.zeros((1024, 1024), np.int16).tobytes()
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.send_c_store(small).Status == 0x0000
        rsp = assoc.send_c_store(big)
        assert "Status" not in rsp or rsp.Status != 0x0000
        deadline = time.monotonic() + 10
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert assoc.is_aborted  # the node said so with an A-ABORT before closing
        assert node.stored() == 1
        # The partial data set is gone: the association's thread removes it as it unwinds,
        # which may be just after the peer has seen the abort.
        incoming = node.data_dir / "incoming"
        deadline = time.monotonic() + 10
        while any(incoming.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(incoming.iterdir())
        assert echo_ok(node)


def test_free_disk_is_checked_before_a_data_set_arrives(tmp_path):
    with running_node(tmp_path, node={"min_free_disk_mb": 10**9}) as node:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_rejected  # before any pixel was sent
        assert assoc.acceptor.primitive.result == 0x02  # transient
        assert assoc.acceptor.primitive.diagnostic == 0x02  # local limit exceeded
        assert echo_ok(node)
