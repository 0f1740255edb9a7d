"""The Storage SCP: C-ECHO and C-STORE, durable before success, de-identified at the door.

Behaviour is bound to pynetdicom events (``EVT_C_STORE``, ``EVT_C_ECHO``, association
release/abort); the association layer is never subclassed.  A C-STORE is answered with
Success only after the de-identified instance is fsync'd in the data folder and its index and
vault rows are committed.
"""

from __future__ import annotations

import errno
import io
import logging
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from pydicom import dcmread, uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pynetdicom import AE, _config, evt
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from dicom_node.config import NodeConfig
from dicom_node.deid import Pseudonymizer, QuarantineRequired
from storage import quarantine
from storage.clock import utcnow
from storage.database import Database
from storage.files import FileStore
from storage.studies import IndexConflict, ReceivedInstance, index_instance
from storage.vault import Vault

log = logging.getLogger("dicom_node.scp")

# DIMSE C-STORE statuses (PS3.4 Annex B.2.3 and PS3.7 Annex C).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

UNCOMPRESSED = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian,
                uid.DeflatedExplicitVRLittleEndian, uid.ExplicitVRBigEndian]
COMPRESSED = [uid.RLELossless, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless,
              uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
              uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL,
              uid.HTJ2K]


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def accepted_transfer_syntaxes() -> list[str]:
    """Uncompressed syntaxes plus every compressed one we can actually decode here."""
    decodable = [ts for ts in COMPRESSED if get_decoder(ts).is_available]
    missing = sorted(set(COMPRESSED) - set(decodable))
    if missing:
        log.warning("not accepting transfer syntaxes without a decoder: %s", missing)
    return UNCOMPRESSED + decodable


class Receiver:
    """Receives, de-identifies, stores and indexes instances.

    Parameters
    ----------
    config
        The node configuration.
    db, files
        Database and data folder.
    pseudonymizer, vault
        De-identification of every instance, and where the reverse mapping goes.
    quarantine_key
        Key that encrypts instances kept in quarantine.
    on_commitment_report
        Called with ``(transaction_uid, committed_uids, failed_uids)`` when a PACS sends a
        Storage Commitment N-EVENT-REPORT back to the node.
    """

    def __init__(self, config: NodeConfig, db: Database, files: FileStore,
                 pseudonymizer: Pseudonymizer, vault: Vault, quarantine_key: bytes,
                 on_commitment_report=None):  # noqa: ANN001
        self.config = config
        self.db = db
        self.files = files
        self.pseudonymizer = pseudonymizer
        self.vault = vault
        self.quarantine_key = quarantine_key
        self.on_commitment_report = on_commitment_report
        self._server = None
        self._lock = threading.Lock()
        # Pseudonymous study UIDs being received on each open association.
        self._open: dict[int, set[str]] = {}
        # Pseudo UIDs whose vault rows are committed: skips re-recording study/series/FoR
        # mappings for every slice.
        self._recorded: OrderedDict[str, None] = OrderedDict()

    # -- life cycle -------------------------------------------------------------------------
    def build_ae(self) -> AE:
        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_pdu_size = node.max_pdu_bytes
        ae.maximum_associations = node.max_associations
        ae.dimse_timeout = node.dimse_timeout_s
        ae.network_timeout = node.network_timeout_s
        ae.require_called_aet = True
        if not node.accept_unknown_calling_ae:
            ae.require_calling_aet = [p.ae_title for p in self.config.peers if p.may_send]
        syntaxes = accepted_transfer_syntaxes()
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        # The PACS answers a Storage Commitment request on a new association (N-EVENT-REPORT).
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        return ae

    def start(self) -> None:
        """Start listening (non-blocking)."""
        # Received data sets stream to a temporary file instead of memory; keep those files
        # inside the node's own data folder (they hold identities for the length of one
        # C-STORE and are deleted by pynetdicom after the handler returns).
        _config.STORE_RECV_CHUNKED_DATASET = True
        incoming = self.files.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        for leftover in incoming.glob("*"):
            leftover.unlink(missing_ok=True)
        tempfile.tempdir = str(incoming)
        handlers = [
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.handle_closed),
            (evt.EVT_ABORTED, self.handle_closed),
            (evt.EVT_CONN_CLOSE, self.handle_closed),
            (evt.EVT_N_EVENT_REPORT, self.handle_event_report),
            (evt.EVT_REJECTED, self.handle_rejected),
        ]
        ae = self.build_ae()
        self._server = ae.start_server((self.config.node.host, self.config.node.port),
                                       block=False, evt_handlers=handlers)
        log.info("listening as %s on %s:%d", self.config.node.ae_title, self.config.node.host,
                 self.config.node.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def busy_study_uids(self) -> set[str]:
        """Studies still being received on an open association."""
        with self._lock:
            return set().union(*self._open.values()) if self._open else set()

    # -- handlers ---------------------------------------------------------------------------
    def handle_echo(self, event: Event) -> int:
        return SUCCESS

    def handle_rejected(self, event: Event) -> None:
        log.warning("association from %s rejected", event.assoc.requestor.ae_title)

    def handle_closed(self, event: Event) -> None:
        with self._lock:
            self._open.pop(id(event.assoc), None)

    def handle_store(self, event: Event) -> int:
        calling_ae = event.assoc.requestor.ae_title
        path = Path(event.dataset_path)
        try:
            return self._store(event, calling_ae, path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("disk full while storing from %s", calling_ae)
                return OUT_OF_RESOURCES
            log.exception("I/O error while storing from %s", calling_ae)
            return OUT_OF_RESOURCES
        except Exception:  # never a false success; the peer keeps its copy and may retry
            log.exception("could not store an instance from %s", calling_ae)
            return PROCESSING_FAILURE

    def _store(self, event: Event, calling_ae: str, path: Path) -> int:
        if self.files.free_bytes() < self.config.node.min_free_disk_mb * 1024 * 1024:
            log.error("refusing store from %s: less than %d MB free", calling_ae,
                      self.config.node.min_free_disk_mb)
            return OUT_OF_RESOURCES
        try:
            # Large values (pixel data) stay in the received file until they are written out.
            ds = dcmread(path, defer_size="256 KB")
            _ = ds.SOPClassUID, ds.SOPInstanceUID
        except (InvalidDicomError, AttributeError, ValueError, EOFError, KeyError) as exc:
            log.warning("cannot understand data set from %s: %s", calling_ae,
                        type(exc).__name__)
            return CANNOT_UNDERSTAND
        problem = self._mismatch(event, ds)
        if problem:
            log.warning("rejected instance from %s: %s", calling_ae, problem)
            return DATASET_DOES_NOT_MATCH_SOP_CLASS

        return self.ingest(ds, calling_ae, original=path, association=id(event.assoc))

    def ingest(self, ds: Dataset, calling_ae: str, *, original: Path | None = None,
               association: int | None = None) -> int:
        """De-identify, store durably and index one instance; returns the DIMSE status.

        ``original`` is the file as received (kept encrypted if the instance is quarantined);
        ``association`` identifies the open association, which holds completion back.
        """
        try:
            result = self.pseudonymizer.pseudonymize(ds)
        except QuarantineRequired as q:
            original_bytes = original.read_bytes() if original else _encode(ds)
            with self.db.session() as session:
                qid = quarantine.keep(session, self.files, self.quarantine_key, original_bytes,
                                      calling_ae=calling_ae, sop_class_uid=str(ds.SOPClassUID),
                                      reason_code=q.code, reason=q.reason)
            log.warning("quarantined instance %d from %s: %s", qid, calling_ae, q.code)
            return SUCCESS  # kept (encrypted) with its reason; visible in `dicom-node status`

        clean = result.dataset
        study_uid, series_uid = str(clean.StudyInstanceUID), str(clean.SeriesInstanceUID)
        sop_uid = str(clean.SOPInstanceUID)
        relative = f"studies/{study_uid}/{series_uid}/{sop_uid}.dcm"
        sha, size = self.files.write_stream(
            relative, lambda sink: dcmwrite(sink, clean, enforce_file_format=True))
        item = ReceivedInstance(
            study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_uid,
            sop_class_uid=str(clean.SOPClassUID),
            transfer_syntax_uid=str(clean.file_meta.TransferSyntaxUID),
            modality=str(clean.get("Modality", "OT")) or "OT",
            frame_of_reference_uid=clean.get("FrameOfReferenceUID"),
            patient_pseudonym=str(clean.get("PatientID", "")),
            calling_ae=calling_ae, path=relative, size_bytes=size, sha256=sha,
        )
        if association is not None:
            with self._lock:
                self._open.setdefault(association, set()).add(study_uid)
        mappings = {p: o for p, o in result.uid_mappings.items() if p not in self._recorded}
        for attempt in range(3):
            try:
                with self.db.session() as session:
                    self.vault.record(session, mappings, result.identity)
                    outcome = index_instance(session, item, utcnow())
                break
            except IndexConflict:
                if attempt == 2:
                    raise
        with self._lock:
            for pseudo in mappings:
                self._recorded[pseudo] = None
            while len(self._recorded) > 50_000:
                self._recorded.popitem(last=False)
        if outcome.late_arrival:
            log.info("study %s: instance arrived after dispatch; will re-run on full study",
                     study_uid)
        return SUCCESS

    @staticmethod
    def _mismatch(event: Event, ds: Dataset) -> str | None:
        request = event.request
        if ds.SOPClassUID != request.AffectedSOPClassUID:
            return "SOP Class UID differs from the C-STORE request"
        if ds.SOPInstanceUID != request.AffectedSOPInstanceUID:
            return "SOP Instance UID differs from the C-STORE request"
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(keyword):
                return f"{keyword} missing"
        sop = uid.UID(ds.SOPClassUID)
        is_image = "Image Storage" in sop.name and "Encapsulated" not in sop.name
        if is_image and "PixelData" not in ds and "FloatPixelData" not in ds and \
                "DoubleFloatPixelData" not in ds:
            return "image instance without pixel data"
        return None

    def handle_event_report(self, event: Event):  # noqa: ANN201
        """Storage Commitment result from a PACS (N-EVENT-REPORT, event type 1 or 2)."""
        ds = event.event_information
        transaction = str(ds.get("TransactionUID", ""))
        committed = {str(i.ReferencedSOPInstanceUID)
                     for i in ds.get("ReferencedSOPSequence", [])}
        failed = {str(i.ReferencedSOPInstanceUID) for i in ds.get("FailedSOPSequence", [])}
        if self.on_commitment_report is not None:
            self.on_commitment_report(transaction, committed, failed)
        log.info("storage commitment report %s: %d committed, %d failed", transaction,
                 len(committed), len(failed))
        return SUCCESS, None
