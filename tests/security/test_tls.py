"""Defect 5 of issue 10: no transport security.  DICOM TLS (PS3.15 Annex B, BCP 195) in both
directions against dcmtk, with certificates made here by the openssl command line: dcmtk
storescu -> node over TLS; node sender -> dcmtk storescp over TLS; a peer whose certificate
comes from another CA is refused both ways; plain DICOM is refused when switched off."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.config import parse_config
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from dicom_node.sender import Sender
from storage.tables import OutboxItem
from tests.dicom_node.test_sender import owed  # noqa: F401  (fixture: results owed to "pacs")
from tests.net import free_port, need
from tests.security.netnode import PACS, running_node

pytestmark = pytest.mark.slow


def openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run([need("openssl"), *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN={name}", cwd=folder)


def make_cert(folder: Path, name: str, ca: str) -> None:
    """A certificate for 127.0.0.1/localhost signed by ``ca`` (serves as server and client)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=folder)
    (folder / f"{name}.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "extendedKeyUsage = serverAuth, clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_ca(folder, "other-ca")
    make_cert(folder, "node", "ca")
    make_cert(folder, "pacs", "ca")
    make_cert(folder, "intruder", "other-ca")
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return folder


def tls_settings(pki: Path, **extra) -> dict:  # noqa: ANN003
    return {"receive": True, "port": free_port(), "certificate_file": str(pki / "node.crt"),
            "private_key_file": str(pki / "node.key"), "ca_file": str(pki / "ca.crt"), **extra}


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    (path,) = write_series(ct_series_datasets(phantom_chest_hu((1, 32, 32))),
                           tmp_path_factory.mktemp("ct"))
    return path


def storescu(port: int, file: Path, *tls: str, aet: str = "PACS") -> subprocess.CompletedProcess:
    return subprocess.run([need("storescu"), "-aet", aet, "-aec", "AINODE", *tls, "127.0.0.1",
                           str(port), str(file)], capture_output=True, text=True, timeout=60)


def test_storescu_over_tls_is_stored_and_plain_is_refused_when_off(tmp_path, pki, ct_file):
    tls = tls_settings(pki, plain_dicom_enabled=False)
    with running_node(tmp_path, peers=[{**PACS, "tls": True}], tls=tls) as node:
        ok = storescu(tls["port"], ct_file, "+tls", str(pki / "pacs.key"),
                      str(pki / "pacs.crt"), "+cf", str(pki / "ca.crt"))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert node.stored() == 1
        plain = storescu(node.port, ct_file)  # nothing listens for plain DICOM
        assert plain.returncode != 0
        plain_on_tls_port = storescu(tls["port"], ct_file)
        assert plain_on_tls_port.returncode != 0
        assert node.stored() == 1


def test_client_certificate_from_another_ca_is_refused(tmp_path, pki, ct_file, caplog):
    with running_node(tmp_path, peers=[{**PACS, "tls": True}], tls=tls_settings(pki)) as node:
        bad = storescu(node.config.tls.port, ct_file, "+tls", str(pki / "intruder.key"),
                       str(pki / "intruder.crt"), "+cf", str(pki / "ca.crt"))
        assert bad.returncode != 0
        none = storescu(node.config.tls.port, ct_file, "+tla", "-ic")  # no certificate at all
        assert none.returncode != 0
        assert node.stored() == 0
    assert "TLS handshake from 127.0.0.1 refused" in caplog.text


def test_tls_peer_may_not_use_plain_dicom(tmp_path, pki, ct_file):
    with running_node(tmp_path, peers=[{**PACS, "tls": True}], tls=tls_settings(pki)) as node:
        out = storescu(node.port, ct_file)
        assert out.returncode != 0 and "Calling AE Title Not Recognized" in out.stdout + out.stderr
        assert node.stored() == 0


def start_tls_storescp(port: int, out_dir: Path, pki: Path, cert: str) -> subprocess.Popen:
    out_dir.mkdir(exist_ok=True)
    proc = subprocess.Popen([need("storescp"), "-aet", "PACS", "+uf", "-od", str(out_dir),
                             "+tls", str(pki / f"{cert}.key"), str(pki / f"{cert}.crt"),
                             "+cf", str(pki / "ca.crt"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def tls_sender(owed_fixture, pki: Path):  # noqa: ANN001, ANN201
    config, db, files, vault, identity, objects, port = owed_fixture
    data = config.model_dump(mode="json")
    data["tls"] = {**tls_settings(pki), "receive": False}
    data["peers"] = [{**data["peers"][0], "tls": True, "may_send": False}]
    return Sender(parse_config(data), db, files, vault), objects, port, identity


def test_sender_delivers_over_tls_to_storescp(owed, tmp_path, pki):  # noqa: F811
    sender, objects, port, identity = tls_sender(owed, pki)
    pacs = start_tls_storescp(port, tmp_path / "rx", pki, "pacs")
    try:
        assert sender.send_once() == len(objects)
    finally:
        pacs.terminate()
        pacs.wait()
    assert sender.outbox.counts() == {"sent": len(objects)}
    received = [dcmread(p) for p in (tmp_path / "rx").iterdir()]
    assert len(received) == len(objects)
    assert all(str(ds.PatientName) == identity.name for ds in received)


def test_sender_refuses_a_destination_with_a_foreign_certificate(owed, tmp_path, pki):  # noqa: F811
    sender, objects, port, _ = tls_sender(owed, pki)
    pacs = start_tls_storescp(port, tmp_path / "rx", pki, "intruder")
    try:
        sender.send_once()
    finally:
        pacs.terminate()
        pacs.wait()
    assert not list((tmp_path / "rx").iterdir())
    with sender.outbox.db.session() as s:
        items = s.query(OutboxItem).all()
    assert {i.state for i in items} == {"pending"}
    assert all("(TLS) failed" in i.reason for i in items)


def test_tls_settings_are_checked():
    with pytest.raises(Exception, match="needs certificate_file"):
        parse_config({"tls": {"receive": True}})
    with pytest.raises(Exception, match="tls = true needs"):
        parse_config({"peers": [{**PACS, "tls": True, "may_send": False}]})
    with pytest.raises(Exception, match="listen nowhere"):
        parse_config({"tls": {"plain_dicom_enabled": False}})


def handshake(port: int, pki: Path, *, ciphers: str | None = None,
              version: ssl.TLSVersion | None = None) -> str:
    """Connect with a client certificate; the negotiated protocol, or the error's name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "ca.crt")
    ctx.load_cert_chain(pki / "pacs.crt", pki / "pacs.key")
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return str(tls.version())
    except (ssl.SSLError, OSError) as exc:
        return type(exc).__name__


def test_only_bcp195_protocols_and_ciphers(tmp_path, pki):
    with running_node(tmp_path, peers=[{**PACS, "tls": True}], tls=tls_settings(pki)) as node:
        port = node.config.tls.port
        assert handshake(port, pki) == "TLSv1.3"
        assert handshake(port, pki, version=ssl.TLSVersion.TLSv1_2,
                         ciphers="ECDHE-ECDSA-AES128-GCM-SHA256") == "TLSv1.2"
        # TLS 1.2 without forward secrecy or with CBC: refused
        assert handshake(port, pki, version=ssl.TLSVersion.TLSv1_2,
                         ciphers="ECDHE-ECDSA-AES128-SHA256") != "TLSv1.2"
        assert handshake(port, pki, version=ssl.TLSVersion.TLSv1_2,
                         ciphers="AES128-GCM-SHA256") != "TLSv1.2"


def test_client_certificate_required_per_peer(tmp_path, pki, ct_file):
    tls = tls_settings(pki, require_client_certificate=False)
    peers = [{**PACS, "require_client_certificate": True},
             {**PACS, "name": "viewer", "ae_title": "VIEWER"}]
    with running_node(tmp_path, peers=peers, tls=tls) as node:
        anonymous = ("+tla", "+cf", str(pki / "ca.crt"))  # TLS without a client certificate
        assert storescu(tls["port"], ct_file, *anonymous, aet="PACS").returncode != 0
        assert node.stored() == 0
        ok = storescu(tls["port"], ct_file, *anonymous, aet="VIEWER")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        with_cert = storescu(tls["port"], ct_file, "+tls", str(pki / "pacs.key"),
                             str(pki / "pacs.crt"), "+cf", str(pki / "ca.crt"), aet="PACS")
        assert with_cert.returncode == 0, with_cert.stdout + with_cert.stderr
        assert node.stored() == 1  # the same instance twice: stored once
