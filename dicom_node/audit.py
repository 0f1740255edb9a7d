"""The audit trail: DICOM audit messages (PS3.15 A.5, IHE ATNA) for what the node does.

Each event becomes one XML ``AuditMessage`` that validates against the PS3.15 A.5.1 schema
(``audit_schema/audit-message.rng``).  Messages go to an append-only local file (one message a
line) and, when configured, to a syslog collector as RFC 5424 messages with MSGID
``IHE+RFC-3881`` over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS (RFC 5425).

The node's audit trail is pseudonymous like everything else inside it: participant objects
carry the pseudonymous patient ID and study UID, never the originals (a hospital's own ATNA
repository maps them through the node's vault when it must).  AE titles, peer names and
addresses are the node's configuration, not patient data.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import socket
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("dicom_node.audit")

SCHEMA_PATH = Path(__file__).with_name("audit_schema") / "audit-message.rng"
MSGID = "IHE+RFC-3881"
_FACILITY_AUTHPRIV = 10


@dataclass(frozen=True)
class AuditCode:
    """A coded value as the audit schema writes it (csd-code, codeSystemName, originalText)."""

    code: str
    system: str
    meaning: str


# Event IDs (CID 400), event types (CID 401, 402 etc.), roles (CID 402), object ID types.
APPLICATION_ACTIVITY = AuditCode("110100", "DCM", "Application Activity")
INSTANCES_ACCESSED = AuditCode("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = AuditCode("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED = AuditCode("110105", "DCM", "DICOM Study Deleted")
QUERY = AuditCode("110112", "DCM", "Query")
SECURITY_ALERT = AuditCode("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = AuditCode("110114", "DCM", "User Authentication")
APPLICATION_START = AuditCode("110120", "DCM", "Application Start")
APPLICATION_STOP = AuditCode("110121", "DCM", "Application Stop")
LOGIN = AuditCode("110122", "DCM", "Login")
NODE_AUTHENTICATION = AuditCode("110126", "DCM", "Node Authentication")
SOFTWARE_CONFIGURATION = AuditCode("110131", "DCM", "Software Configuration")
APPLICATION = AuditCode("110150", "DCM", "Application")
DESTINATION = AuditCode("110152", "DCM", "Destination Role ID")
SOURCE = AuditCode("110153", "DCM", "Source Role ID")
STUDY_INSTANCE_UID = AuditCode("110180", "DCM", "Study Instance UID")
PATIENT_NUMBER = AuditCode("2", "RFC-3881", "Patient Number")
NODE_ID = AuditCode("110182", "DCM", "Node ID")

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"


@dataclass(frozen=True)
class Participant:
    """An active participant: the node itself, a peer AE, an operator."""

    user_id: str
    is_requestor: bool
    role: AuditCode | None = None
    network_access_point: str | None = None  # IP address or host name
    user_name: str | None = None

    def element(self) -> ET.Element:
        attrs = {"UserID": self.user_id, "UserIsRequestor": "true" if self.is_requestor
                 else "false"}
        if self.user_name:
            attrs["UserName"] = self.user_name
        if self.network_access_point:
            attrs["NetworkAccessPointID"] = self.network_access_point
            attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(self.network_access_point) \
                else "1"
        node = ET.Element("ActiveParticipant", attrs)
        if self.role is not None:
            node.append(_coded("RoleIDCode", self.role))
        return node


@dataclass(frozen=True)
class ParticipantObject:
    """A participant object: a (pseudonymous) patient or study, or a query."""

    object_id: str
    id_type: AuditCode
    type_code: str  # 1 person, 2 system object
    role: str  # 1 patient, 3 report, 24 query, ...
    life_cycle: str | None = None  # 7 de-identification, 10 export, 2 import ...
    name: str | None = None
    query: bytes | None = None
    sop_classes: Mapping[str, int] = field(default_factory=dict)
    anonymized: bool | None = None

    def element(self) -> ET.Element:
        attrs = {"ParticipantObjectID": self.object_id, "ParticipantObjectTypeCode":
                 self.type_code, "ParticipantObjectTypeCodeRole": self.role}
        if self.life_cycle:
            attrs["ParticipantObjectDataLifeCycle"] = self.life_cycle
        node = ET.Element("ParticipantObjectIdentification", attrs)
        node.append(_coded("ParticipantObjectIDTypeCode", self.id_type))
        if self.query is not None:
            ET.SubElement(node, "ParticipantObjectQuery").text = \
                base64.b64encode(self.query).decode()
        else:
            ET.SubElement(node, "ParticipantObjectName").text = self.name or self.object_id
        if self.sop_classes or self.anonymized is not None:
            description = ET.SubElement(node, "ParticipantObjectDescription")
            for sop_class, count in sorted(self.sop_classes.items()):
                ET.SubElement(description, "SOPClass", {"UID": sop_class,
                                                        "NumberOfInstances": str(count)})
            if self.anonymized is not None:
                ET.SubElement(description, "Anonymized").text = \
                    "true" if self.anonymized else "false"
        return node


def _is_ip(value: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
        return True
    except OSError:
        return False


def _coded(tag: str, code: AuditCode) -> ET.Element:
    return ET.Element(tag, {"csd-code": code.code, "codeSystemName": code.system,
                            "originalText": code.meaning})


def audit_message(event: AuditCode, outcome: str, participants: Iterable[Participant],
                  source_id: str, *, action: str | None = None,
                  event_types: Iterable[AuditCode] = (),
                  objects: Iterable[ParticipantObject] = (),
                  outcome_description: str | None = None,
                  when: dt.datetime | None = None, site_id: str = "") -> bytes:
    """One ``AuditMessage`` as UTF-8 XML without line breaks (one message per line)."""
    root = ET.Element("AuditMessage")
    attrs = {"EventDateTime": (when or dt.datetime.now(dt.UTC)).isoformat(
        timespec="milliseconds"), "EventOutcomeIndicator": outcome}
    if action:
        attrs["EventActionCode"] = action
    identification = ET.SubElement(root, "EventIdentification", attrs)
    identification.append(_coded("EventID", event))
    for event_type in event_types:
        identification.append(_coded("EventTypeCode", event_type))
    if outcome_description:
        ET.SubElement(identification, "EventOutcomeDescription").text = \
            " ".join(outcome_description.split())
    for participant in participants:
        root.append(participant.element())
    source_attrs = {"AuditSourceID": source_id}
    if site_id:
        source_attrs["AuditEnterpriseSiteID"] = site_id
    source = ET.SubElement(root, "AuditSourceIdentification", source_attrs)
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server
    for obj in objects:
        root.append(obj.element())
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


@dataclass(frozen=True)
class SyslogTarget:
    """Where audit messages are also sent: a syslog collector (ATNA audit repository)."""

    host: str
    port: int
    protocol: str = "tls"  # tls (RFC 5425) | tcp (RFC 6587) | udp (RFC 5426)
    ca_file: Path | None = None
    timeout_s: float = 5.0


class AuditTrail:
    """Writes audit messages to the local append-only file and to syslog.

    A syslog collector that cannot be reached is logged (without the message) and retried on
    the next message; the local file is always written first, so nothing is lost.
    """

    def __init__(self, file_path: Path, source_id: str, *, site_id: str = "",
                 syslog: SyslogTarget | None = None) -> None:
        self.file_path = file_path
        self.source_id = source_id
        self.site_id = site_id
        self.syslog = syslog
        self.hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._stream: socket.socket | ssl.SSLSocket | None = None
        file_path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end, even from several processes.
        self._fd = os.open(file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @property
    def node(self) -> Participant:
        return Participant(self.source_id, False, APPLICATION, self.hostname)

    def record(self, event: AuditCode, outcome: str, participants: Iterable[Participant], *,
               action: str | None = None, event_types: Iterable[AuditCode] = (),
               objects: Iterable[ParticipantObject] = (),
               outcome_description: str | None = None) -> bytes:
        """Build, write and send one message; returns it."""
        message = audit_message(event, outcome, participants, self.source_id, action=action,
                                event_types=event_types, objects=objects,
                                outcome_description=outcome_description, site_id=self.site_id)
        with self._lock:
            os.write(self._fd, message + b"\n")
            if self.syslog is not None:
                self._send(message, outcome)
        return message

    def syslog_frame(self, message: bytes, outcome: str) -> bytes:
        """The RFC 5424 message: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG``."""
        severity = 5 if outcome == SUCCESS else 4  # notice, warning
        header = (f"<{_FACILITY_AUTHPRIV * 8 + severity}>1 "
                  f"{dt.datetime.now(dt.UTC).isoformat(timespec='milliseconds')} "
                  f"{self.hostname} dicom-node {os.getpid()} {MSGID} - ")
        return header.encode("ascii") + b"\xef\xbb\xbf" + message  # BOM: UTF-8 MSG

    def _send(self, message: bytes, outcome: str) -> None:
        assert self.syslog is not None
        frame = self.syslog_frame(message, outcome)
        target = self.syslog
        try:
            if target.protocol == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.sendto(frame, (target.host, target.port))
                return
            if self._stream is None:
                self._stream = self._connect(target)
            # Octet counting (RFC 5425 / 6587): "LENGTH SP MESSAGE".
            self._stream.sendall(str(len(frame)).encode("ascii") + b" " + frame)
        except OSError as exc:
            log.warning("audit message not delivered to syslog %s:%d (%s); kept in %s",
                        target.host, target.port, type(exc).__name__, self.file_path)
            self._close_stream()

    @staticmethod
    def _connect(target: SyslogTarget) -> socket.socket | ssl.SSLSocket:
        raw = socket.create_connection((target.host, target.port), timeout=target.timeout_s)
        if target.protocol != "tls":
            return raw
        context = ssl.create_default_context(
            cafile=str(target.ca_file) if target.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context.wrap_socket(raw, server_hostname=target.host)

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            finally:
                self._stream = None

    def close(self) -> None:
        with self._lock:
            self._close_stream()
            os.close(self._fd)

    # -- the node's events ------------------------------------------------------------------
    def application(self, started: bool) -> None:
        self.record(APPLICATION_ACTIVITY, SUCCESS, [self.node],
                    event_types=[APPLICATION_START if started else APPLICATION_STOP])

    def association(self, accepted: bool, calling_ae: str, address: str | None,
                    reason: str = "") -> None:
        """An association accepted (Begin of a transfer) or rejected (a security alert)."""
        peer = Participant(calling_ae, True, SOURCE, address)
        if accepted:
            self.record(APPLICATION_ACTIVITY, SUCCESS, [peer, self.node],
                        event_types=[NODE_AUTHENTICATION])
        else:
            self.record(SECURITY_ALERT, MINOR_FAILURE, [peer, self.node],
                        event_types=[NODE_AUTHENTICATION],
                        outcome_description=reason or "association rejected")

    def instances_received(self, calling_ae: str, address: str | None, study_uid: str,
                           patient_pseudonym: str, sop_classes: Mapping[str, int],
                           outcome: str = SUCCESS, description: str = "") -> None:
        """Instances stored from a peer (de-identified at the door): one message per study
        and association, the study and patient by their pseudonyms."""
        self.record(INSTANCES_TRANSFERRED, outcome,
                    [Participant(calling_ae, True, SOURCE, address),
                     Participant(self.source_id, False, DESTINATION, self.hostname)],
                    action="C", outcome_description=description or None,
                    objects=_study_and_patient(study_uid, patient_pseudonym, sop_classes,
                                               life_cycle="7"))

    def results_sent(self, peer_ae: str, address: str, study_uid: str, patient_pseudonym: str,
                     sop_classes: Mapping[str, int], reidentified: bool,
                     outcome: str = SUCCESS, description: str = "") -> None:
        """Result objects sent to a peer, re-identified (clinical) or pseudonymous (research)."""
        self.record(INSTANCES_TRANSFERRED, outcome,
                    [Participant(self.source_id, True, SOURCE, self.hostname),
                     Participant(peer_ae, False, DESTINATION, address)],
                    action="R", outcome_description=description or None,
                    objects=_study_and_patient(study_uid, patient_pseudonym, sop_classes,
                                               life_cycle="10", anonymized=not reidentified))

    def reidentified(self, study_uid: str, patient_pseudonym: str,
                     sop_classes: Mapping[str, int], peer: str) -> None:
        """Result objects of a study re-identified through the vault for a clinical peer (the
        original identity is read; the message carries the pseudonyms only)."""
        self.record(INSTANCES_ACCESSED, SUCCESS, [self.node], action="R",
                    outcome_description=f"re-identified through the vault for {peer}",
                    objects=_study_and_patient(study_uid, patient_pseudonym, sop_classes,
                                               life_cycle="6"))

    def operator_action(self, operator: str, action: str, study_uid: str | None,
                        description: str, *, patient_pseudonym: str | None = None,
                        sop_classes: Mapping[str, int] | None = None,
                        outcome: str = SUCCESS) -> None:
        """An operator's decision on the node's data (``quarantine release``, ``study complete
        --force``, ``study rerun``): who (requestor), what and why, on which study."""
        objects = [] if study_uid is None else [ParticipantObject(
            study_uid, STUDY_INSTANCE_UID, "2", "3", sop_classes=sop_classes or {})]
        if patient_pseudonym:
            objects.append(ParticipantObject(patient_pseudonym, PATIENT_NUMBER, "1", "1"))
        self.record(INSTANCES_ACCESSED, outcome, [Participant(operator, True), self.node],
                    action="U" if action == "quarantine release" else "E",
                    outcome_description=f"{action}: {_printable(description, 512)}",
                    objects=objects)

    def lookup(self, operator: str, query_kind: str, found_study_uids: Iterable[str]) -> None:
        """An operator resolved an identifier through the vault (``find``): the query's kind
        (never its value) and the pseudonymous studies it found."""
        found = list(found_study_uids)
        objects = [ParticipantObject(f"find {query_kind}", QUERY, "2", "24",
                                     query=f"find by {query_kind}".encode())]
        objects += [ParticipantObject(uid, STUDY_INSTANCE_UID, "2", "3") for uid in found]
        self.record(QUERY, SUCCESS, [Participant(operator, True), self.node], action="E",
                    objects=objects, outcome_description=f"{len(found)} studies found")

    def configuration_changed(self, previous_digest: str, digest: str) -> None:
        self.record(SECURITY_ALERT, SUCCESS, [self.node], event_types=[SOFTWARE_CONFIGURATION],
                    outcome_description=f"configuration changed: sha256 {previous_digest[:16]} "
                    f"-> {digest[:16]}")

    def login(self, user: str, address: str | None, success: bool) -> None:
        self.record(USER_AUTHENTICATION, SUCCESS if success else MINOR_FAILURE,
                    [Participant(user, True, None, address), self.node], action="E",
                    event_types=[LOGIN])


def _printable(text: str, limit: int) -> str:
    """An operator's free text made safe for one audit line: printable, bounded."""
    return "".join(c if c.isprintable() else " " for c in text[:limit])


def _study_and_patient(study_uid: str, patient_pseudonym: str, sop_classes: Mapping[str, int],
                       *, life_cycle: str, anonymized: bool = True) -> list[ParticipantObject]:
    return [
        ParticipantObject(study_uid, STUDY_INSTANCE_UID, "2", "3", life_cycle=life_cycle,
                          sop_classes=sop_classes, anonymized=anonymized),
        ParticipantObject(patient_pseudonym, PATIENT_NUMBER, "1", "1"),
    ]
