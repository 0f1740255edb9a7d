"""The audit trail: every message validates against the PS3.15 A.5.1 schema; the file is
append-only; syslog over UDP and TLS (octet counting) carries RFC 5424 frames; a real node
audits its start, an accepted and a rejected association, a configuration change and its stop,
the instances it receives (per association and study) and, after a real send, each delivery and
the re-identification before it."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time

import pytest
from lxml import etree

from dicom_node import audit
from dicom_node.audit import AuditTrail, SyslogTarget
from tests.dicom_node.test_sender import owed, start_storescp  # noqa: F401 (a fixture)
from tests.net import free_port, need
from tests.nodeproc import NodeProcess

SCHEMA = etree.RelaxNG(etree.parse(str(audit.SCHEMA_PATH)))
FRAME = re.compile(rb"^<(\d+)>1 (\S+) (\S+) dicom-node (\d+) IHE\+RFC-3881 - \xef\xbb\xbf(<.*)$",
                   re.S)


def valid(message: bytes) -> bool:
    return SCHEMA.validate(etree.fromstring(message))


def every_event(trail: AuditTrail) -> list[bytes]:
    return [_last(trail, call) for call in (
        lambda: trail.application(started=True),
        lambda: trail.application(started=False),
        lambda: trail.association(True, "PACS", "10.0.0.7"),
        lambda: trail.association(False, "STRANGER", "10.0.0.99", "calling AE not recognised"),
        lambda: trail.instances_received("PACS", "10.0.0.7", "2.25.1", "ANON123",
                                         {"1.2.840.10008.5.1.4.1.1.2": 300}),
        lambda: trail.results_sent("PACS", "pacs.example", "2.25.1", "ANON123",
                                   {"1.2.840.10008.5.1.4.1.1.66.4": 1,
                                    "1.2.840.10008.5.1.4.1.1.88.34": 1}, reidentified=True),
        lambda: trail.lookup("admin", "accession", ["2.25.1", "2.25.2"]),
        lambda: trail.configuration_changed("a" * 64, "b" * 64),
        lambda: trail.login("admin", "127.0.0.1", success=False),
    )]


def _last(trail: AuditTrail, call) -> bytes:  # noqa: ANN001
    call()
    return trail.file_path.read_bytes().splitlines()[-1]


def test_every_event_validates_against_the_schema(tmp_path):
    trail = AuditTrail(tmp_path / "audit" / "audit.log", "AINODE", site_id="HOSP")
    messages = every_event(trail)
    trail.close()
    assert len(messages) == 9
    for message in messages:
        assert valid(message), (SCHEMA.error_log, message)
    assert b'csd-code="110113"' in messages[3] and b'EventOutcomeIndicator="4"' in messages[3]
    assert b'EventActionCode="C"' in messages[4] and b"<Anonymized>true" in messages[4]
    assert b"<Anonymized>false" in messages[5]  # re-identified for the clinical peer


def test_the_schema_is_not_vacuous(tmp_path):
    trail = AuditTrail(tmp_path / "audit.log", "AINODE")
    good = etree.fromstring(trail.record(audit.APPLICATION_ACTIVITY, audit.SUCCESS, [trail.node]))
    trail.close()
    assert SCHEMA.validate(good)
    no_participant = etree.fromstring(etree.tostring(good))
    no_participant.remove(no_participant.find("ActiveParticipant"))
    assert not SCHEMA.validate(no_participant)
    bad_outcome = etree.fromstring(etree.tostring(good))
    bad_outcome.find("EventIdentification").set("EventOutcomeIndicator", "2")
    assert not SCHEMA.validate(bad_outcome)


def test_file_is_append_only_one_message_a_line(tmp_path):
    path = tmp_path / "audit.log"
    for _ in range(2):
        trail = AuditTrail(path, "AINODE")
        trail.application(started=True)
        trail.lookup("ops", "patient-id", [])  # a query kind, never its value
        trail.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and all(valid(line) for line in lines)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_syslog_udp_frame(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        trail = AuditTrail(tmp_path / "audit.log", "AINODE",
                           syslog=SyslogTarget("127.0.0.1", server.getsockname()[1], "udp"))
        trail.association(False, "STRANGER", "10.1.1.1")
        frame, _ = server.recvfrom(65536)
        trail.close()
    match = FRAME.match(frame)
    assert match, frame[:120]
    assert int(match.group(1)) == 10 * 8 + 4  # authpriv, warning for a failure
    assert valid(match.group(5))


def _certificates(tmp_path):
    """A CA and a server certificate for 127.0.0.1, made with the openssl command line."""
    openssl = need("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test audit CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"


def test_syslog_over_tls_with_octet_counting(tmp_path):
    ca, cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            data = b""
            while len(received) < 2:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
                while b" " in data:
                    length, rest = data.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    received.append(rest[:int(length)])
                    data = rest[int(length):]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    trail = AuditTrail(tmp_path / "audit.log", "AINODE",
                       syslog=SyslogTarget("127.0.0.1", port, "tls", ca))
    trail.application(started=True)
    trail.instances_received("PACS", "127.0.0.1", "2.25.9", "ANON9", {"1.2.3": 2})
    thread.join(10)
    trail.close()
    listener.close()
    assert len(received) == 2
    for frame in received:
        match = FRAME.match(frame)
        assert match and valid(match.group(5))


def test_unreachable_syslog_keeps_the_local_file(tmp_path, caplog):
    trail = AuditTrail(tmp_path / "audit.log", "AINODE",
                       syslog=SyslogTarget("127.0.0.1", free_port(), "tcp", timeout_s=1))
    trail.application(started=True)
    trail.close()
    assert "not delivered to syslog" in caplog.text
    assert len((tmp_path / "audit.log").read_bytes().splitlines()) == 1


@pytest.mark.slow
def test_real_node_audits_start_associations_configuration_and_stop(tmp_path):
    root = tmp_path / "node"
    node = NodeProcess(root)
    with node:
        for calling in ("PACS", "STRANGER"):
            subprocess.run([need("echoscu"), "-aet", calling, "-aec", node.ae_title,
                            "127.0.0.1", str(node.port)], capture_output=True, timeout=30)
    node.peers.append({"name": "tps", "ae_title": "TPS", "host": "127.0.0.1", "port": 2,
                       "kind": "clinical"})
    NodeProcess(root, peers=node.peers, port=node.port).start().stop()
    lines = (root / "var" / "audit" / "audit.log").read_bytes().splitlines()
    assert all(valid(line) for line in lines)
    events = [(re.search(rb'EventID csd-code="(\d+)"', line).group(1),
               re.search(rb'EventOutcomeIndicator="(\d+)"', line).group(1)) for line in lines]
    assert events[0] == (b"110100", b"0")  # application start
    assert (b"110113", b"4") in events  # STRANGER rejected: security alert
    assert any(b"STRANGER" in line and b"110113" in line for line in lines)
    assert any(b"110131" in line for line in lines)  # configuration changed before 2nd start
    assert lines[-1].count(b"110121") == 1  # application stop last


def _events(path) -> list[bytes]:  # noqa: ANN001
    lines = path.read_bytes().splitlines() if path.exists() else []
    assert all(valid(line) for line in lines), SCHEMA.error_log
    return lines


def _instances(line: bytes) -> dict[str, int]:
    return {m.group(1).decode(): int(m.group(2)) for m in re.finditer(
        rb'<SOPClass UID="([\d.]+)" NumberOfInstances="(\d+)"', line)}


@pytest.mark.slow
def test_instances_received_one_message_per_association_and_study(tmp_path):
    from dicom_node.sample_data import (
        PatientIdentity,
        ct_series_datasets,
        phantom_chest_hu,
        write_series,
    )

    first, second = PatientIdentity(), PatientIdentity(patient_id="P-2", accession="ACC-2",
                                                       name="Zweite^Zora")
    files = {identity.accession: write_series(
        ct_series_datasets(phantom_chest_hu((3, 16, 16)), identity=identity),
        tmp_path / identity.accession) for identity in (first, second)}
    root = tmp_path / "node"
    with NodeProcess(root, quiet_seconds=30) as node:
        def storescu(*paths) -> None:  # noqa: ANN002
            done = subprocess.run([need("storescu"), "-aet", "PACS", "-aec", node.ae_title,
                                   "127.0.0.1", str(node.port), *map(str, paths)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr

        storescu(*files[first.accession], *files[second.accession])  # 2 studies, 1 association
        storescu(files[first.accession][0])  # the first study again, on a second association
        audit_log = root / "var" / "audit" / "audit.log"
        node.wait_for(lambda _status: sum(b'csd-code="110104"' in x
                                          for x in _events(audit_log)) == 3, timeout=30)
        studies = {s["study"] for s in node.status()["recent_studies"]}
    received = [x for x in _events(audit_log) if b'csd-code="110104"' in x]
    assert len(received) == 3  # per association and study, not per instance
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert sorted(_instances(x)[ct] for x in received) == [1, 3, 3]
    for line in received:
        assert b'EventActionCode="C"' in line and b'UserID="PACS"' in line
        assert b'NetworkAccessPointID="127.0.0.1"' in line
        assert b'ParticipantObjectDataLifeCycle="7"' in line and b"<Anonymized>true" in line
        uid = re.search(rb'ParticipantObjectID="([\d.]+)"', line).group(1).decode()
        assert uid in studies  # the pseudonymous study UID
    text = audit_log.read_bytes()
    for identity in (first, second):  # nothing identifying in the trail
        for value in (identity.name.split("^")[0], identity.patient_id, identity.accession,
                      identity.study_uid):
            assert value.encode() not in text


@pytest.mark.slow
def test_results_sent_and_reidentified_per_delivery(owed, tmp_path):  # noqa: F811
    """A real send to dcmtk's storescp: first down (a failure message per study), then up."""
    from dicom_node.sender import Sender

    config, db, files, vault, identity, objects, port = owed
    trail = AuditTrail(tmp_path / "audit.log", "AINODE")
    sender = Sender(config, db, files, vault)
    sender.audit = trail
    assert sender.send_once() == len(objects)  # nobody listening yet
    pacs = start_storescp(port, tmp_path / "rx")
    try:
        deadline = time.time() + 30
        while time.time() < deadline and set(sender.outbox.counts()) != {"sent"}:
            time.sleep(0.3)
            sender.send_once()
    finally:
        pacs.terminate()
        pacs.wait()
    trail.close()
    assert sender.outbox.counts() == {"sent": len(objects)}
    lines = _events(tmp_path / "audit.log")
    sent = [x for x in lines if b'csd-code="110104"' in x]
    reidentified = [x for x in lines if b'csd-code="110103"' in x]
    assert b'EventOutcomeIndicator="4"' in sent[0] and b"to be retried" in sent[0]
    assert b'EventOutcomeIndicator="0"' in sent[-1]
    assert sum(_instances(sent[-1]).values()) == len(objects)
    for line in sent:
        assert b'EventActionCode="R"' in line and b'UserID="PACS"' in line
        assert b"<Anonymized>false" in line  # a clinical peer gets them re-identified
    # The vault was read for each attempt that prepared the objects (the first, down, too).
    assert len(reidentified) >= 2 and all(b"re-identified through the vault for pacs" in x
                                          for x in reidentified)
    text = (tmp_path / "audit.log").read_bytes()
    assert identity.name.encode() not in text and identity.study_uid.encode() not in text
    assert identity.patient_id.encode() not in text
