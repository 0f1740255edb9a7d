"""The audit trail: every message validates against the PS3.15 A.5.1 schema; the file is
append-only; syslog over UDP and TLS (octet counting) carries RFC 5424 frames; a real node
audits its start, an accepted and a rejected association, a configuration change and its stop."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading

import pytest
from lxml import etree

from dicom_node import audit
from dicom_node.audit import AuditTrail, SyslogTarget
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
