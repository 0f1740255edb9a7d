"""Delivery of result objects: outbox -> re-identify (clinical) -> leak check -> C-STORE.

Each destination gets one association per batch, proposing only the SOP classes in the batch
(well under the 128 presentation-context limit).  Failures are retried with exponential
backoff until the sender's attempt budget is spent; then the item is ``failed`` with the last
reason.  Nothing leaves that fails the leak check: such an item is ``refused``, with why.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # names made at runtime
    StorageCommitmentPushModel,
    Verification,
)

from dicom_node.audit import MINOR_FAILURE, SERIOUS_FAILURE, AuditTrail
from dicom_node.background import RepeatingStep
from dicom_node.config import DestinationKind, NodeConfig, Peer
from dicom_node.deid import ReidentificationError, Reidentifier, check_clinical, check_research
from dicom_node.tls import TlsConfigError, client_context
from storage.database import Database
from storage.files import FileStore
from storage.monitoring import DeliveryOutcome, delivery_outcomes
from storage.outbox import ClaimedItem, Outbox
from storage.vault import Vault, VaultError

log = logging.getLogger("dicom_node.sender")

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def is_success(status: int) -> bool:
    """Success, or a warning (0xB000 coercion, 0xB006, 0xB007): the object was stored."""
    return status == 0x0000 or 0xB000 <= status <= 0xBFFF or status == 0x0107


class Sender:
    """Drains the outbox."""

    def __init__(self, config: NodeConfig, db: Database, files: FileStore, vault: Vault):
        self.config = config
        self.outbox = Outbox(db)
        self.files = files
        self.vault = vault
        self.reidentifier = Reidentifier(vault)
        self.audit: AuditTrail | None = None  # set by the node when [audit] is enabled
        self._tls_context: ssl.SSLContext | None = None
        self.loop = RepeatingStep("sender", self.send_once, config.sender.poll_seconds, log)

    def prepare(self, item: ClaimedItem, peer: Peer) -> Dataset | str:
        """The dataset as it may leave for ``peer``, or why it must not (leak check).

        Raises ``ReidentificationError``/``VaultError`` when the object cannot be prepared now
        (study not in the vault, wrong vault key): retried, then ``failed``.
        """
        ds: Dataset = dcmread(self.files.absolute(item.path))
        if peer.kind == DestinationKind.CLINICAL:
            # The identity of the revision the results were computed on, not the latest one.
            ds = self.reidentifier.reidentify(ds, revision=item.identity_revision)
            problems = check_clinical(ds, self.vault)
        else:
            problems = check_research(ds, self.vault)
        return "; ".join(problems) if problems else ds

    def send_once(self) -> int:
        """Deliver one batch (one destination); returns how many items were settled."""
        items = self.outbox.claim_batch("sender", lease_seconds=self.config.sender.lease_seconds)
        if not items:
            return 0
        prepared: set[int] = set()
        try:
            return self._deliver(items, prepared)
        finally:
            if self.audit is not None:
                self._audit_batch(items, prepared)

    def _audit_batch(self, items: list[ClaimedItem], prepared_ids: set[int]) -> None:
        """Audit a send attempt: per study, the re-identification (clinical peers: the items
        prepared in this attempt) and the objects sent, and those not sent (retried, failed or
        refused), by their states."""
        assert self.audit is not None
        peer = self.config.peer_by_name(items[0].destination)
        clinical = peer is not None and peer.kind == DestinationKind.CLINICAL
        outcomes = delivery_outcomes(self.outbox.db, [i.id for i in items])
        for study_uid in dict.fromkeys(o.study_uid for o in outcomes):
            mine = [o for o in outcomes if o.study_uid == study_uid]
            pseudonym = mine[0].patient_pseudonym
            prepared = [o for o in mine if o.id in prepared_ids]
            if clinical and prepared and peer is not None:
                self.audit.reidentified(study_uid, pseudonym, _classes(prepared), peer.name)
            sent = [o for o in mine if o.state == "sent"]
            unsent = [o for o in mine if o.state != "sent"]
            ae, host = (peer.ae_title, peer.host) if peer else (items[0].destination, "")
            if sent:
                self.audit.results_sent(ae, host, study_uid, pseudonym, _classes(sent),
                                        reidentified=clinical,
                                        description=f"{len(sent)} objects sent")
            if unsent:
                states = Counter(o.state for o in unsent)
                final = states.keys() & {"failed", "refused"}
                self.audit.results_sent(
                    ae, host, study_uid, pseudonym, _classes(unsent), reidentified=clinical,
                    outcome=SERIOUS_FAILURE if final else MINOR_FAILURE,
                    description=f"{len(unsent)} objects not sent: " + ", ".join(
                        f"{n} {'to be retried' if s == 'pending' else s}"
                        for s, n in sorted(states.items())))

    def _deliver(self, items: list[ClaimedItem], prepared_ids: set[int]) -> int:
        """Send one batch; the ids of items prepared (re-identified) go into
        ``prepared_ids``, for the audit."""
        peer = self.config.peer_by_name(items[0].destination)
        if peer is None:
            for item in items:
                self.outbox.mark_refused(item.id, "destination is no longer configured")
            return len(items)
        ready: list[tuple[ClaimedItem, Dataset]] = []
        for item in items:
            try:
                prepared = self.prepare(item, peer)
            except (ReidentificationError, VaultError) as exc:
                self._retry(item, f"cannot prepare for {peer.kind}: {type(exc).__name__}", None)
                continue
            prepared_ids.add(item.id)
            if isinstance(prepared, str):
                self.outbox.mark_refused(item.id, f"leak check: {prepared}")
                log.error("outbox item %d refused for %s: %s", item.id, peer.name, prepared)
            else:
                ready.append((item, prepared))
        if not ready:
            return len(items)

        ae = AE(ae_title=self.config.node.ae_title)
        ae.maximum_pdu_size = self.config.node.max_pdu_bytes
        ae.dimse_timeout = self.config.node.dimse_timeout_s
        ae.network_timeout = self.config.node.network_timeout_s
        ae.acse_timeout = 30
        for sop_class in sorted({item.sop_class_uid for item, _ in ready}):
            # One context per transfer syntax, so each object goes out as it was written
            # (a structure set with very long contours needs Implicit VR; see rtstruct).
            ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
            ae.add_requested_context(sop_class, ImplicitVRLittleEndian)
        if peer.storage_commitment:
            ae.add_requested_context(StorageCommitmentPushModel)
        tls_args = None
        if peer.tls:
            try:
                tls_args = (self.tls_context(), peer.tls_server_name or peer.host)
            except TlsConfigError as exc:
                for item, _ in ready:
                    self._retry(item, f"TLS to {peer.name}: {exc}", None)
                return len(items)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            for item, _ in ready:
                self._retry(item, f"association with {peer.ae_title}@{peer.host}:{peer.port}"
                            f"{' (TLS)' if tls_args else ''} failed", None)
            return len(items)
        committed: list[tuple[ClaimedItem, Dataset]] = []
        try:
            for item, ds in ready:
                try:
                    status = assoc.send_c_store(ds)
                except Exception as exc:  # association dropped mid-batch
                    self._retry(item, f"C-STORE error: {type(exc).__name__}", None)
                    continue
                code = int(status.Status) if "Status" in status else None
                if code is not None and is_success(code):
                    committed.append((item, ds))
                    if not peer.storage_commitment:
                        self.outbox.mark_sent([item.id], code)
                else:
                    reason = ("no response (timeout or abort)" if code is None
                              else f"C-STORE status 0x{code:04X}")
                    self._retry(item, reason, code)
            if peer.storage_commitment and committed:
                self._request_commitment(assoc, committed)
        finally:
            if assoc.is_established:
                assoc.release()
        log.info("delivered %d/%d objects to %s", len(committed), len(items), peer.name)
        return len(items)

    def tls_context(self) -> ssl.SSLContext:
        """The client TLS context (node certificate, trusted CA), loaded once."""
        if self._tls_context is None:
            self._tls_context = client_context(self.config.tls, self.config.resolve)
        return self._tls_context

    def _request_commitment(self, assoc, sent: list[tuple[ClaimedItem, Dataset]]) -> None:  # noqa: ANN001
        transaction = generate_uid(prefix=None)
        request = Dataset()
        request.TransactionUID = transaction
        request.ReferencedSOPSequence = []
        for _, ds in sent:
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            request.ReferencedSOPSequence.append(ref)
        # Stored either way. The transaction is recorded before it is requested: the peer
        # reports on its own association and may do so before its N-ACTION response is read.
        ids = [item.id for item, _ in sent]
        self.outbox.mark_sent(ids, 0, commitment_uid=transaction)
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel,
                                        STORAGE_COMMITMENT_INSTANCE)
        code = int(status.Status) if status is not None and "Status" in status else None
        if code != 0:
            self.outbox.mark_sent(ids, 0, commitment_uid=None)
            log.warning("storage commitment request refused (status %s)", code)

    def _retry(self, item: ClaimedItem, reason: str, status: int | None) -> None:
        cfg = self.config.sender
        state = self.outbox.mark_retry(item.id, reason, status, cfg.max_attempts,
                                       cfg.backoff_seconds, cfg.backoff_max_seconds,
                                       dt.timedelta(hours=cfg.retry_window_hours))
        log.warning("outbox item %d to %s: %s (now %s, attempt %d)", item.id, item.destination,
                    reason, state, item.attempts)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        self.loop.join(timeout=30)


def _classes(outcomes: list[DeliveryOutcome]) -> dict[str, int]:
    return dict(Counter(o.sop_class_uid for o in outcomes))


@dataclass(frozen=True)
class EchoResult:
    """What ``dicom-node echo PEER`` reports: the C-ECHO status, or why there was none."""

    peer: str
    status: int | None
    seconds: float
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0


def echo(config: NodeConfig, peer: Peer) -> EchoResult:
    """C-ECHO a configured peer with the node's own AE title and timeouts (the "test" button
    of Orthanc and mercure): proves address, port, AE titles and the peer's acceptance."""
    ae = AE(ae_title=config.node.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = min(30.0,
                                                                config.node.network_timeout_s)
    ae.add_requested_context(Verification)
    start = time.monotonic()
    tls_args = None
    if peer.tls:  # the same TLS the deliveries use: a wrong certificate fails here too
        try:
            tls_args = (client_context(config.tls, config.resolve),
                        peer.tls_server_name or peer.host)
        except TlsConfigError as exc:
            return EchoResult(peer.name, None, 0.0, f"TLS: {exc}")
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        why = ("association rejected (check the AE titles on both sides)" if assoc.is_rejected
               else "no association (peer down, wrong host or port, or aborted)")
        return EchoResult(peer.name, None, time.monotonic() - start,
                          f"{why} by {peer.ae_title}@{peer.host}:{peer.port}")
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    code = int(status.Status) if "Status" in status else None
    return EchoResult(peer.name, code, time.monotonic() - start,
                      "" if code is not None else "no C-ECHO response (timeout or abort)")
