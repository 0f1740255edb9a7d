"""The Storage SCP: C-ECHO and C-STORE, durable before success, de-identified at the door.

Behaviour is bound to pynetdicom events (``EVT_REQUESTED`` decides access, ``EVT_C_STORE``,
``EVT_C_ECHO``, association release/abort); the association state machine is never
subclassed.  Two small transport hooks sit below it: the server accepts TCP connections and
does the TLS handshake in the connection's own thread (not in the accept loop), and the socket
wrapper reads each PDU header and refuses an announced length over the limit *before* the body
is read (pynetdicom would otherwise buffer up to 4 GiB from anyone), and counts the data set
bytes of the message in flight.

A C-STORE is answered with Success only after the de-identified instance is fsync'd in the
data folder and its index and vault rows are committed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import ipaddress
import logging
import secrets
import socket
import ssl
import struct
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType, EventType
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # names made at runtime
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicom_node import incoming
from dicom_node.audit import AuditTrail
from dicom_node.config import NodeConfig, Peer
from dicom_node.deid import Pseudonymizer, QuarantineRequired
from dicom_node.part10 import write_instance
from dicom_node.tls import server_context
from storage import quarantine
from storage.clock import utcnow
from storage.database import Database
from storage.files import FileStore, UnsafePath, is_valid_uid
from storage.keys import KeyRing
from storage.studies import IndexConflict, ReceivedInstance, index_instance
from storage.vault import OriginalIdentity, Vault

log = logging.getLogger("dicom_node.scp")

# DIMSE C-STORE statuses (PS3.4 Annex B.2.3 and PS3.7 Annex C).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

# UIDs checked as UI values (PS3.5 9.1) before anything else; an invalid one is answered
# 0xC000 ("Error: cannot understand", PS3.4 B.2.3) with an Error Comment naming the attribute:
# the value breaks the VR's encoding rules, which is not an IOD mismatch (A900).
CHECKED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                "FrameOfReferenceUID")

# A-ASSOCIATE-RQ/AC/RJ PDUs: 128 presentation contexts with 20 transfer syntaxes each stay
# under 80 KiB; anything near 256 KiB is not an association request.
MAX_ASSOCIATION_PDU = 256 * 1024
# With several receiver processes on one listening socket (dicom_node.receivers), a process
# already busy with associations waits this long per association before it accepts, so a
# less busy one takes a new connection first: least connections, without the processes
# asking each other.  A connection is accepted within ACCEPT_DEFER_MAX_S even if all are busy.
ACCEPT_DEFER_PER_ASSOCIATION_S = 0.02
ACCEPT_DEFER_MAX_S = 0.1
# A connection accepted this recently counts as an association (before pynetdicom's thread
# for it starts), so a burst of connections is shared too.
ACCEPT_RECENT_S = 1.0
P_DATA_TF = 0x04
# A-ABORT PDU (PS3.8 9.3.8): source 2 (service provider), reason 0 (not specified).
A_ABORT_PROVIDER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0])
# How long the receiver trusts its memory that vault rows are written (then writes them again,
# idempotently): far below any retention period, so purged rows are never taken as present.
RECORDED_FOR_S = 600.0
# During a data set, free disk is checked again every this many bytes.
DISK_CHECK_EVERY = 64 * 1024 * 1024


def printable(value: object, limit: int = 64) -> str:
    """A received value made safe for a log line: printable ASCII only, bounded, quoted."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return repr("".join(c if " " <= c <= "~" else "?" for c in text[:limit]))


def source_ip(address: object) -> str:
    """The peer's IP address as a canonical string ("invalid" if it is not one)."""
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return str(ip)


class LimitedAssociationSocket(AssociationSocket):
    """pynetdicom's socket wrapper with limits checked before data is buffered.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved, length) then
    ``recv(length)``.  Overriding ``recv`` is the narrowest place to refuse a PDU by its
    announced length before its body is read: raising ``OSError`` there makes the DUL treat
    the transport as closed (event 17), so the association ends without reading further.

    Parameters
    ----------
    max_pdata
        Largest P-DATA-TF variable field accepted: the Maximum Length the node announces.
    max_dataset
        Largest data set one DIMSE message may carry.
    has_room
        Called every ``DISK_CHECK_EVERY`` bytes of a data set; False closes the connection.
    """

    max_pdata: int
    max_dataset: int
    has_room: Callable[[], bool]
    _body: tuple[int, int] | None
    _dataset_bytes: int

    @classmethod
    def limit(cls, sock: AssociationSocket, *, max_pdata: int, max_dataset: int,
              has_room: Callable[[], bool]) -> None:
        """Give pynetdicom's socket wrapper of a new connection these limits.

        The wrapper's class is switched rather than a second one made: constructing a wrapper
        queues the "connection open" event, and the state machine takes it only once.
        """
        sock.__class__ = cls
        sock.max_pdata = max_pdata  # type: ignore[attr-defined]
        sock.max_dataset = max_dataset  # type: ignore[attr-defined]
        sock.has_room = has_room  # type: ignore[attr-defined]
        sock._body = None  # type: ignore[attr-defined]  # (type, length) of a read header
        sock._dataset_bytes = 0  # type: ignore[attr-defined]

    def recv(self, nr_bytes: int) -> bytearray:
        if self._body is None:  # a PDU header
            data = super().recv(nr_bytes)
            if len(data) == 6:
                pdu_type, _, length = struct.unpack(">BBL", data)
                limit = self.max_pdata if pdu_type == P_DATA_TF else MAX_ASSOCIATION_PDU
                if length > limit:
                    self._refuse(f"announced PDU length {length} (type 0x{pdu_type:02X}) "
                                 f"exceeds {limit}")
                if 0x01 <= pdu_type <= 0x07:  # pynetdicom reads no body for other types
                    self._body = (pdu_type, length)
            return data
        pdu_type, _ = self._body
        self._body = None
        data = super().recv(nr_bytes)
        if pdu_type == P_DATA_TF:
            self._count_dataset(data)
        return data

    def _count_dataset(self, pdu_body: bytearray) -> None:
        offset = 0
        while offset + 6 <= len(pdu_body):
            (item_length,) = struct.unpack_from(">L", pdu_body, offset)
            header = pdu_body[offset + 5]
            if not header & 0x01:  # a data set fragment (bit 0 clear), not a command
                before = self._dataset_bytes
                self._dataset_bytes += max(item_length - 2, 0)
                if self._dataset_bytes > self.max_dataset:
                    self._refuse(f"data set exceeds node.max_dataset_bytes "
                                 f"({self.max_dataset})")
                if before // DISK_CHECK_EVERY != self._dataset_bytes // DISK_CHECK_EVERY \
                        and not self.has_room():
                    self._refuse("free disk below node.min_free_disk_mb while receiving")
                if header & 0x02:  # last fragment of this data set
                    self._dataset_bytes = 0
            offset += 4 + item_length

    def _refuse(self, reason: str) -> None:
        peer = source_ip(self._assoc.requestor.address) if self._assoc.requestor else "?"
        log.warning("closing connection from %s: %s", peer, reason)
        if self.socket is not None:
            # tell the peer why the link drops: A-ABORT, service provider, no reason
            with contextlib.suppress(OSError):
                self.socket.sendall(A_ABORT_PROVIDER)
        self.close()
        raise OSError(reason)


class GuardedRequestHandler(RequestHandler):
    """One connection: TLS handshake here (in its own thread), then pynetdicom's handling."""

    server: GuardedServer

    def handle(self) -> None:
        context = self.server.tls_context
        if context is not None:
            raw = self.request
            raw.settimeout(self.server.handshake_timeout)
            try:
                tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                log.warning("TLS handshake from %s refused: %s", source_ip(self.client_address[0]),
                            printable(reason))
                raw.close()
                return
            tls.settimeout(None)  # pynetdicom expects a blocking socket (it selects first)
            self.request = tls
        super().handle()

    def _create_association(self):  # noqa: ANN202
        assoc = super()._create_association()
        node = self.server.receiver.config.node
        if assoc.dul.socket is None:  # pynetdicom made it from this connection's socket
            raise RuntimeError("association created without its connection's socket")
        LimitedAssociationSocket.limit(assoc.dul.socket, max_pdata=node.max_pdu_bytes,
                                       max_dataset=node.max_dataset_bytes,
                                       has_room=self.server.receiver.has_room)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, accepting plain TCP; TLS is added per connection."""

    def __init__(self, ae: AE, address: tuple[str, int] | tuple[str, int, int, int],
                 ae_title: str, contexts: list[PresentationContext],
                 ssl_context: ssl.SSLContext | None = None,
                 evt_handlers: list[EventHandlerType] | None = None, *, receiver: Receiver,
                 tls_context: ssl.SSLContext | None) -> None:
        self.receiver = receiver
        self.tls_context = tls_context
        self.handshake_timeout = receiver.config.node.network_timeout_s
        super().__init__(ae, address, ae_title, contexts, ssl_context, evt_handlers,
                         request_handler=GuardedRequestHandler)

    def server_bind(self) -> None:
        inherited = self.receiver.inherited_listeners.get(self.server_address[1])
        if inherited is not None:
            # A receiver process accepts on the main process's listening socket: the
            # connection goes to whichever process calls accept() first, an idle one
            # rather than one busy with its associations.
            self.socket.close()  # type: ignore[union-attr]
            self.socket = inherited
            self.server_address = inherited.getsockname()
            return
        super().server_bind()

    def server_activate(self) -> None:
        if self.receiver.inherited_listeners.get(self.server_address[1]) is not None:
            return  # listening already (in the main process)
        super().server_activate()
        if self.receiver.config.node.receiver_processes > 1:
            # Shared with the receiver processes: every one that sees a connection waiting
            # tries accept(); those that lose the race get EAGAIN instead of blocking.
            self.socket.setblocking(False)  # type: ignore[union-attr]

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        # Without the base class's wrap_socket: a slow handshake must not block accept().
        # (An EAGAIN, another process having taken the connection, is an OSError that the
        # server's loop ignores.)
        shared = self.receiver.config.node.receiver_processes > 1  # the socket, with others
        if shared:
            load = self.receiver.load()
            if load:  # let a less busy process take it first
                time.sleep(min(load * ACCEPT_DEFER_PER_ASSOCIATION_S, ACCEPT_DEFER_MAX_S))
        connection, address = self.socket.accept()  # type: ignore[union-attr]
        if shared:
            self.receiver.accepted()
        connection.setblocking(True)  # pynetdicom expects a blocking socket
        return connection, address

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


def accepted_transfer_syntaxes() -> list[uid.UID]:
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
        Key ring that encrypts instances kept in quarantine (not the vault's).
    on_commitment_report
        Called with ``(transaction_uid, committed_uids, failed_uids)`` when a PACS sends a
        Storage Commitment N-EVENT-REPORT back to the node.
    """

    def __init__(self, config: NodeConfig, db: Database, files: FileStore,
                 pseudonymizer: Pseudonymizer, vault: Vault, quarantine_key: KeyRing,
                 on_commitment_report=None):  # noqa: ANN001
        self.config = config
        self.db = db
        self.files = files
        self.pseudonymizer = pseudonymizer
        self.vault = vault
        self.quarantine_key = quarantine_key
        self.on_commitment_report = on_commitment_report
        self._servers: list[GuardedServer] = []
        # Folder (under the data folder) of C-STOREs in flight; each receiver process of the
        # node has its own (dicom_node.receivers), so that none clears another's at start.
        self.incoming_folder = "incoming"
        # Port -> the main process's listening socket, in a receiver process
        # (dicom_node.receivers): it accepts on those instead of binding its own.
        self.inherited_listeners: dict[int, socket.socket] = {}
        # Called with (calling AE, source IP, reason) for each association the receiver
        # itself refuses at A-ASSOCIATE-RQ (pynetdicom fires no EVT_REJECTED for those).
        self.rejection_listeners: list[Callable[[str, str, str], None]] = []
        self._lock = threading.Lock()
        self._accepted_at: list[float] = []  # monotonic times of the latest accepts
        # Pseudonymous study UIDs being received on each open association.
        self._open: dict[int, set[str]] = {}
        # Pseudo UIDs whose vault rows are committed (with when): skips re-recording
        # study/series/FoR mappings for every slice.
        self._recorded: OrderedDict[str, float] = OrderedDict()
        # Keyed digests of identities committed to the vault (every slice of a study carries
        # the same one: it is sealed and written once, not per instance), with the identity
        # revision the vault gave it (revisions never change once given).  Keyed with a
        # per-process secret so that what stays in memory identifies no one.
        self._identities_recorded: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        self._identity_key = secrets.token_bytes(32)
        # SQLite has one writer at a time and makes a blocked one sleep and poll (up to tens of
        # ms a try); associations of this process queue here instead and go as soon as the
        # previous index transaction commits.  PostgreSQL needs no such queue.
        self._index_turn = threading.Lock() if db.is_sqlite else contextlib.nullcontext()
        # Audit of received instances: one message per association and study, at its end.
        self.audit: AuditTrail | None = None  # set by the node when [audit] is enabled
        self._received: dict[int, dict[str, tuple[str, Counter[str]]]] = {}

    # -- life cycle -------------------------------------------------------------------------
    def build_ae(self) -> AE:
        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_pdu_size = node.max_pdu_bytes
        ae.maximum_associations = node.max_associations
        ae.dimse_timeout = node.dimse_timeout_s
        ae.network_timeout = node.network_timeout_s
        ae.require_called_aet = True
        # Calling AE title, source address, TLS and disk are decided in handle_requested
        # (fail closed: no peer that may send means no association at all).
        syntaxes = accepted_transfer_syntaxes()
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None  # pynetdicom's contexts all name their class
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        # The PACS answers a Storage Commitment request on a new association (N-EVENT-REPORT).
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        return ae

    @property
    def listening(self) -> bool:
        """True while the receiver accepts associations (on its plain or TLS port)."""
        return bool(self._servers)

    def bind(self, event: EventType, handler: Callable[..., object]) -> None:
        """Bind one more handler to a pynetdicom notification event (e.g. metrics on
        ``EVT_ACCEPTED``) on every running listener."""
        assert self._servers, "start() the receiver first"
        for server in self._servers:
            server.bind(event, handler)

    def start(self) -> None:
        """Start listening (non-blocking)."""
        # Received data sets stay in memory up to node.dataset_memory_bytes and spill past
        # it to a private file inside the node's own data folder (it holds identities for
        # the length of one C-STORE and is deleted after the handler returns).
        incoming_folder = self.files.folder(self.incoming_folder)
        folders = [incoming_folder]
        if self.incoming_folder == "incoming":  # the main process starts before the others
            folders += [f for f in incoming_folder.parent.glob("incoming-*") if f.is_dir()]
        for folder in folders:
            for leftover in folder.glob("*"):
                leftover.unlink(missing_ok=True)
        incoming.install(incoming_folder, self.config.node.dataset_memory_bytes)
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self.handle_requested),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.handle_closed),
            (evt.EVT_ABORTED, self.handle_closed),
            (evt.EVT_CONN_CLOSE, self.handle_closed),
            (evt.EVT_N_EVENT_REPORT, self.handle_event_report),
            (evt.EVT_REJECTED, self.handle_rejected),
        ]
        node, tls = self.config.node, self.config.tls
        if node.accept_unknown_calling_ae:
            log.warning("node.accept_unknown_calling_ae is true: associations from calling AE "
                        "titles that are not configured peers are ACCEPTED")
        ae = self.build_ae()
        listeners: list[tuple[int, ssl.SSLContext | None]] = []
        if tls.plain_dicom_enabled:
            listeners.append((node.port, None))
        if tls.receive:
            listeners.append((tls.port, server_context(tls, self.config.resolve)))
        for port, context in listeners:
            server = ae.make_server((node.host, port), evt_handlers=handlers,
                                    server_class=GuardedServer, receiver=self,
                                    tls_context=context)
            assert isinstance(server, GuardedServer)  # make_server built the class it was given
            threading.Thread(target=server.serve_forever, name=f"dicom-listener-{port}",
                             daemon=True).start()
            ae._servers.append(server)  # as start_server does; shutdown() removes it there
            self._servers.append(server)
            log.info("listening as %s on %s:%d (%s)", node.ae_title, node.host, port,
                     "DICOM TLS" if context else "plain DICOM")

    def listeners(self) -> dict[int, socket.socket]:
        """Port -> listening socket of each running listener (for the receiver processes)."""
        return {server.server_address[1]: server.socket for server in self._servers
                if server.socket is not None}

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting; wait up to ``drain_s`` for open associations to end."""
        aes = {id(server.ae): server.ae for server in self._servers}
        for server in self._servers:
            server.shutdown()  # also closes the listening socket
        self._servers = []
        deadline = time.monotonic() + drain_s
        while any(ae.active_associations for ae in aes.values()) and \
                time.monotonic() < deadline:
            time.sleep(0.05)

    def accepted(self) -> None:
        """A connection was just accepted (on any of this process's listeners)."""
        with self._lock:
            self._recent_accepts().append(time.monotonic())

    def load(self) -> int:
        """How busy this process's receiver is: its open associations, or the connections
        it accepted in the last ``ACCEPT_RECENT_S`` if more (their associations may not run
        yet)."""
        with self._lock:
            recent = len(self._recent_accepts())
        return max(len(self.open_associations()), recent)

    def _recent_accepts(self) -> list[float]:
        """The accept times of the last ``ACCEPT_RECENT_S``, older ones dropped (under
        ``_lock``)."""
        now = time.monotonic()
        self._accepted_at = [t for t in self._accepted_at if now - t < ACCEPT_RECENT_S]
        return self._accepted_at

    def open_associations(self) -> set[int]:
        """Ids of the associations whose threads still run, on every listener."""
        return {id(assoc) for server in self._servers for assoc in server.active_associations}

    def studies_of(self, association: int) -> frozenset[str]:
        """Studies the open association ``association`` (its ``id``) has delivered to."""
        with self._lock:
            return frozenset(self._open.get(association, ()))

    def busy_study_uids(self) -> set[str]:
        """Studies still being received on an open association."""
        with self._lock:
            return set().union(*self._open.values()) if self._open else set()

    def has_room(self) -> bool:
        """Whether more than ``node.min_free_disk_mb`` is free under the data folder."""
        return self.files.free_bytes() >= self.config.node.min_free_disk_mb * 1024 * 1024

    # -- access ----------------------------------------------------------------------------
    def access_problem(self, calling_ae: str, ip: str, tls_peer_cert: dict | None,
                       over_tls: bool) -> str | None:
        """Why an association from ``calling_ae`` at ``ip`` must be refused, or None.

        Fail closed: only a configured peer with ``may_send`` (unless the escape hatch
        ``accept_unknown_calling_ae``), from an address its ``host`` resolves to (unless
        ``check_host = false``) and inside ``node.allowed_networks`` when set.
        """
        node = self.config.node
        if node.allowed_networks:
            address = ipaddress.ip_address(ip)
            if not any(address in ipaddress.ip_network(n) for n in node.allowed_networks):
                return "source address outside node.allowed_networks"
        peer = self.config.peer_by_ae(calling_ae)
        if peer is None or not peer.may_send:
            if node.accept_unknown_calling_ae and peer is None:
                log.warning("accepting unknown calling AE %s from %s "
                            "(node.accept_unknown_calling_ae)", printable(calling_ae), ip)
                return None
            return "calling AE title is not a peer that may send"
        if peer.check_host and ip not in peer_addresses(peer):
            return f"source address is not peer {peer.name!r}'s host"
        if peer.tls and not over_tls:
            return f"peer {peer.name!r} must use DICOM TLS"
        if peer.require_client_certificate and not tls_peer_cert:
            return f"peer {peer.name!r} must present a client certificate"
        return None

    def handle_requested(self, event: Event) -> None:
        """A-ASSOCIATE-RQ received: accept only what the configuration allows."""
        assoc = event.assoc
        request = assoc.requestor.primitive  # the A-ASSOCIATE-RQ this event is for
        calling = str(request.calling_ae_title or "").strip() if request else ""
        ip = source_ip(assoc.requestor.address)
        raw = assoc.dul.socket.socket if assoc.dul.socket else None
        over_tls = isinstance(raw, ssl.SSLSocket)
        cert = raw.getpeercert() if isinstance(raw, ssl.SSLSocket) else None
        if request is None:  # fail closed rather than let the handler's error pass it
            problem: str | None = "no A-ASSOCIATE-RQ received"
        elif ip == "invalid":
            problem = "invalid source address"
        else:
            problem = self.access_problem(calling, ip, cert, over_tls)
        if problem:
            log.warning("association rejected: calling AE %s from %s: %s",
                        printable(calling), ip, problem)
            self._rejected(calling, ip, problem)  # recorded before the peer hears of it
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, calling AE not recognised
            assoc.kill()  # as pynetdicom does after its own rejections: the RJ goes out first
            return
        storage = any(cx.abstract_syntax != Verification
                      for cx in assoc.requestor.requested_contexts)
        if storage and not self.has_room():
            log.error("association from %s at %s refused: less than %d MB free",
                      printable(calling), ip, self.config.node.min_free_disk_mb)
            self._rejected(calling, ip, "less free disk than node.min_free_disk_mb")
            assoc.acse.send_reject(0x02, 0x03, 0x02)  # transient, local limit exceeded
            assoc.kill()
            return
        log.info("association from %s at %s (%s)", printable(calling), ip,
                 "DICOM TLS" if over_tls else "plain")

    def _rejected(self, calling: str, ip: str, reason: str) -> None:
        for listener in self.rejection_listeners:
            listener(printable(calling), ip, reason)

    # -- handlers ---------------------------------------------------------------------------
    def handle_echo(self, event: Event) -> int:
        return SUCCESS

    def handle_rejected(self, event: Event) -> None:
        log.warning("association from %s at %s rejected", printable(event.assoc.requestor.ae_title),
                    source_ip(event.assoc.requestor.address))

    def handle_closed(self, event: Event) -> None:
        with self._lock:
            self._open.pop(id(event.assoc), None)
            received = self._received.pop(id(event.assoc), None)
        if received and self.audit is not None:
            self._audit_received(event.assoc, received)
        # A data set cut off mid-stream (limit, disk, peer gone) leaves pynetdicom's partial
        # temporary file behind; it holds identities, so it goes now.
        message = getattr(event.assoc.dimse, "message", None)
        partial = getattr(message, "_data_set_file", None)
        if isinstance(partial, incoming.IncomingDataSet):
            partial.discard()

    def handle_store(self, event: Event) -> int | Dataset:
        calling_ae = event.assoc.requestor.ae_title
        request = event.request
        for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
            if not is_valid_uid(str(getattr(request, keyword, "") or "")):
                return _failure(CANNOT_UNDERSTAND, f"{keyword} of the request is not a valid UID")
        try:
            return self._store(event, calling_ae, incoming.of(request))
        except UnsafePath:
            log.warning("refused an instance from %s: a path would leave the data folder",
                        printable(calling_ae))
            return _failure(CANNOT_UNDERSTAND, "value not usable as a file name")
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("disk full while storing from %s", printable(calling_ae))
                return OUT_OF_RESOURCES
            log.exception("I/O error while storing from %s", printable(calling_ae))
            return OUT_OF_RESOURCES
        except Exception:  # never a false success; the peer keeps its copy and may retry
            log.exception("could not store an instance from %s", printable(calling_ae))
            return PROCESSING_FAILURE

    def _store(self, event: Event, calling_ae: str,
               received: incoming.IncomingDataSet) -> int | Dataset:
        if not self.has_room():
            log.error("refusing store from %s: less than %d MB free", printable(calling_ae),
                      self.config.node.min_free_disk_mb)
            return OUT_OF_RESOURCES
        try:
            ds = received.dataset()
            _ = ds.SOPClassUID, ds.SOPInstanceUID
        except (InvalidDicomError, AttributeError, ValueError, EOFError, KeyError) as exc:
            log.warning("cannot understand data set from %s: %s", printable(calling_ae),
                        type(exc).__name__)
            return CANNOT_UNDERSTAND
        for keyword in CHECKED_UIDS:
            value = ds.get(keyword)
            if value is not None and not is_valid_uid(str(value)):
                log.warning("refused an instance from %s: %s is not a valid UID",
                            printable(calling_ae), keyword)
                return _failure(CANNOT_UNDERSTAND, f"{keyword} is not a valid UID (PS3.5 9.1)")
        problem = self._mismatch(event, ds)
        if problem:
            log.warning("rejected instance from %s: %s", printable(calling_ae), problem)
            return DATASET_DOES_NOT_MATCH_SOP_CLASS

        return self.ingest(ds, calling_ae, original=received.source(),
                           association=id(event.assoc))

    def ingest(self, ds: Dataset, calling_ae: str, *, original: bytes | Path | None = None,
               association: int | None = None) -> int:
        """De-identify, store durably and index one instance; returns the DIMSE status.

        ``original`` is the data set as received, its bytes or its file (kept encrypted if the
        instance is quarantined);
        ``association`` identifies the open association, which holds completion back.
        """
        try:
            result = self.pseudonymizer.pseudonymize(ds)
        except QuarantineRequired as q:
            # Encrypted as received: from memory, or a spilled file as a stream.
            source = original if original else _encode(ds)
            with self.db.session() as session:
                qid = quarantine.keep(session, self.files, self.quarantine_key, source,
                                      calling_ae=calling_ae, sop_class_uid=str(ds.SOPClassUID),
                                      reason_code=q.code, reason=q.reason)
            log.warning("quarantined instance %d from %s: %s", qid, printable(calling_ae), q.code)
            return SUCCESS  # kept (encrypted) with its reason; visible in `dicom-node status`

        clean = result.dataset
        study_uid, series_uid = str(clean.StudyInstanceUID), str(clean.SeriesInstanceUID)
        sop_uid = str(clean.SOPInstanceUID)
        relative = self.files.instance_path(study_uid, series_uid, sop_uid)
        # The file's fsync runs while the index statements below are made; the transaction
        # commits only once the file and its directory entry are on disk.
        written = self.files.start_write_stream(
            relative, lambda sink: write_instance(sink, clean),
            in_memory=not isinstance(original, Path))  # a spilled data set streams to disk
        item = ReceivedInstance(
            study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_uid,
            sop_class_uid=str(clean.SOPClassUID),
            transfer_syntax_uid=str(clean.file_meta.TransferSyntaxUID),
            modality=str(clean.get("Modality", "OT")) or "OT",
            frame_of_reference_uid=clean.get("FrameOfReferenceUID"),
            patient_pseudonym=str(clean.get("PatientID", "")),
            calling_ae=calling_ae, path=relative, size_bytes=written.size,
            sha256=written.sha256,
        )
        if association is not None:
            with self._lock:
                self._open.setdefault(association, set()).add(study_uid)
        # Remembered for RECORDED_FOR_S only: retention (here or in `dicom-node purge`) may
        # delete a long-finished study's vault rows, and a late instance must write them again.
        fresh_since = time.monotonic() - RECORDED_FOR_S
        with self._lock:
            mappings = {p: o for p, o in result.uid_mappings.items()
                        if self._recorded.get(p, 0.0) < fresh_since}
        identity, identity_digest, known_revision = result.identity, b"", None
        if identity is not None:
            identity_digest = self._identity_digest(identity)
            with self._lock:
                committed, recorded = self._identities_recorded.get(identity_digest, (0.0, 1))
                if committed >= fresh_since:
                    identity, known_revision = None, recorded  # in the vault already
        for attempt in range(3):
            try:
                with self._index_turn, self.db.session() as session:
                    # The identity revision this instance arrived with (a corrected identity
                    # becomes the study's next revision); the index records it per instance.
                    revision = self.vault.record(session, mappings, identity) or known_revision
                    outcome = index_instance(
                        session, replace(item, identity_revision=revision or 1), utcnow())
                    written.wait()  # durable file before the index row commits
                break
            except IndexConflict:
                if attempt == 2:
                    raise
        committed_at = time.monotonic()
        with self._lock:
            for pseudo in mappings:
                self._recorded[pseudo] = committed_at
                self._recorded.move_to_end(pseudo)
            while len(self._recorded) > 50_000:
                self._recorded.popitem(last=False)
            if identity is not None:
                self._identities_recorded[identity_digest] = (committed_at, revision or 1)
                self._identities_recorded.move_to_end(identity_digest)
                while len(self._identities_recorded) > 50_000:
                    self._identities_recorded.popitem(last=False)
        if outcome.late_arrival:
            log.info("study %s: instance arrived after dispatch; will re-run on full study",
                     study_uid)
        if association is not None and self.audit is not None:
            with self._lock:
                study = self._received.setdefault(association, {}).setdefault(
                    study_uid, (item.patient_pseudonym, Counter()))
                study[1][item.sop_class_uid] += 1
        return SUCCESS

    def _audit_received(self, assoc, received: dict[str, tuple[str, Counter[str]]]) -> None:  # noqa: ANN001
        """One "DICOM Instances Transferred" message per study the association delivered."""
        assert self.audit is not None
        title = str(assoc.requestor.ae_title).strip()
        if not title.isprintable() or len(title) > 16:
            title = "(invalid AE title)"
        address = source_ip(assoc.requestor.address)
        for study_uid, (pseudonym, classes) in received.items():
            self.audit.instances_received(title, address, study_uid, pseudonym, dict(classes))
    def _identity_digest(self, identity: OriginalIdentity) -> bytes:
        mac = hmac.new(self._identity_key, digestmod=hashlib.sha256)
        for part in (identity.pseudo_study_uid, identity.pseudo_patient_id,
                     str(identity.date_offset_days)):
            mac.update(part.encode() + b"\0")
        mac.update(identity.payload)
        return mac.digest()

    @staticmethod
    def _mismatch(event: Event, ds: Dataset) -> str | None:
        request = event.request
        if not isinstance(request, C_STORE):  # only called from the C-STORE handler
            return "not a C-STORE request"
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


def _failure(status: int, comment: str) -> Dataset:
    """A C-STORE response status with an Error Comment (0000,0902), at most 64 characters."""
    rsp = Dataset()
    rsp.Status = status
    rsp.ErrorComment = comment[:64]
    return rsp


def peer_addresses(peer: Peer) -> set[str]:
    """The IP addresses ``peer.host`` names (resolved now: DNS may change under the node)."""
    try:
        infos = socket.getaddrinfo(peer.host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        log.warning("peer %s: host %s does not resolve; refusing its associations", peer.name,
                    printable(peer.host))
        return set()
    return {source_ip(info[4][0]) for info in infos}
