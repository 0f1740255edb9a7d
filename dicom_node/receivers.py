"""Several receiver processes on the node's DICOM port(s) (``node.receiver_processes``).

One Python process receives associations under one GIL, so concurrent associations do not
scale with threads.  With ``receiver_processes = N > 1`` the main process (``dicom-node
serve``) keeps its own receiver and starts N - 1 receiver processes, handing them its listening
sockets: every process accepts on the same sockets (made non-blocking), so a new connection
goes to whichever process calls ``accept()`` first, an idle one rather than one whose
associations keep its GIL busy.  (``SO_REUSEPORT`` sockets, one per process, were tried
first: the kernel spreads connections over them by a hash of their addresses, not by load,
and four associations often landed 3-1 or 4-0.)  A receiver process holds the receiver stage only (its own
database engine, data folder, pseudonymizer, vault and audit trail); completion, jobs, the
sender, retention and the HTTP endpoint stay in the main process.

Each receiver process has one duplex pipe to the main process.  Up it go:

* ``("listening", pid)`` once it accepts associations;
* ``("log", record)``: its log records (the rotating log file is written by the main process
  only; rotation from several processes would corrupt it);
* ``("count", counter, label)``: its metric increments (:meth:`NodeMetrics.count`);
* ``("delivered", association, study_uid)`` / ``("closed", association)``: which studies its
  open associations deliver to, so completion holds them back as it does the main's own.

Down it goes ``("stop",)``.  The pipe is also how a receiver process notices that the main
process has gone (end of file): it then stops, so no receiver process outlives the node.  The
audit trail is appended to by every process itself: :class:`~dicom_node.audit.AuditTrail`
opens the file ``O_APPEND`` and writes each message with one ``os.write``, which the kernel
does not interleave with another process's.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.events import Event

from dicom_node.config import NodeConfig
from dicom_node.logredaction import install_redaction
from dicom_node.metrics import NodeMetrics
from dicom_node.scp import Receiver

log = logging.getLogger("dicom_node.receivers")

# A receiver process that dies is started again after this long, doubled (up to the maximum)
# while it keeps dying within STABLE_AFTER_S of its start.
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 60.0
STABLE_AFTER_S = 30.0
# How long a stopping receiver process lets its open associations finish.
DRAIN_S = 10.0
# How often a waiting main thread looks whether a signal asked it to stop.
SIGNAL_CHECK_S = 0.2


def wait_for_stop(stopped: threading.Event, signalled: list[int]) -> None:
    """Wait until ``stopped`` is set or a signal handler appended to ``signalled``.

    The handlers (here and in ``Node.serve``) only append: a handler runs in the main
    thread between two bytecodes, maybe while that thread holds the very lock (an Event's, a
    log handler's) it would take, so it takes none, and this wait looks every
    ``SIGNAL_CHECK_S``.
    """
    while not signalled and not stopped.wait(SIGNAL_CHECK_S):
        pass
# How often a receiver process looks for associations it told of that no longer run.
FOLLOW_CHECK_S = 5.0


class ParentLink:
    """A receiver process's end of its pipe to the main process.

    Parameters
    ----------
    connection
        The duplex pipe end; sends are serialised (associations run in their own threads).
    index
        Which receiver process this is (1 .. ``receiver_processes`` - 1).
    """

    def __init__(self, connection: Connection, index: int) -> None:
        self.connection = connection
        self.index = index
        self.listeners: dict[int, socket.socket] = {}  # port -> the main's listening socket
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # one message at a time on the pipe
        # Studies told to the main process per open association; taken while a delivery or
        # close is told, so that the main process hears them in the order they happened.
        self._following = threading.Lock()
        self._forwarded: dict[int, set[str]] = {}

    def send(self, message: tuple) -> None:
        """Send one message up; a main process that is gone stops this one."""
        with self._lock:
            try:
                self.connection.send(message)
            except (OSError, ValueError):
                self.stopped.set()

    def put_nowait(self, record: logging.LogRecord) -> None:
        """:class:`~logging.handlers.QueueHandler`'s queue interface: forward a record."""
        self.send(("log", record))

    def count(self, counter: str, label: str | None = None) -> None:
        """Forward one metric increment (see :meth:`NodeMetrics.count`)."""
        self.send(("count", counter, label))

    def follow(self, receiver: Receiver) -> None:
        """Tell the main process which studies ``receiver``'s open associations deliver to.

        Told as each C-STORE response is sent, before it goes to the peer: the study was just
        indexed, and stays quiet (so not completed) for far longer than a message up the pipe
        takes.  Every close event tells "closed" (pynetdicom signals the end of a connection
        from its network thread, and the end of the association from the association's own,
        after its last response); every ``FOLLOW_CHECK_S`` an association that no longer runs
        is told closed too, so a study is never held back by an association that is gone.
        """
        def response_sent(event: Event) -> None:
            if not isinstance(event.message, C_STORE_RSP):
                return
            association = id(event.assoc)
            with self._following:
                known = self._forwarded.setdefault(association, set())
                for study_uid in receiver.studies_of(association) - known:
                    known.add(study_uid)
                    self.send(("delivered", association, study_uid))

        def closed(event: Event) -> None:
            with self._following:
                self._forwarded.pop(id(event.assoc), None)
                self.send(("closed", id(event.assoc)))

        def check() -> None:
            while not self.stopped.wait(FOLLOW_CHECK_S):
                with self._following:
                    gone = set(self._forwarded) - receiver.open_associations()
                    for association in gone:
                        del self._forwarded[association]
                        self.send(("closed", association))

        receiver.bind(evt.EVT_DIMSE_SENT, response_sent)
        for event_type in (evt.EVT_RELEASED, evt.EVT_ABORTED, evt.EVT_CONN_CLOSE):
            receiver.bind(event_type, closed)
        threading.Thread(target=check, name="follow-associations", daemon=True).start()

    def watch(self) -> None:
        """Wait (in a thread) for ``("stop",)`` or for the main process to go away."""
        def run() -> None:
            try:
                while not self.stopped.is_set():
                    if self.connection.poll(0.5) and self.connection.recv() == ("stop",):
                        break
            except (EOFError, OSError):
                pass  # the main process is gone
            self.stopped.set()

        threading.Thread(target=run, name="parent-link", daemon=True).start()


def run_receiver_process(config: NodeConfig, index: int, connection: Connection,
                         listeners: dict[int, socket.socket]) -> None:
    """Entry point of a receiver process (started by :class:`ReceiverProcesses`).

    Parameters
    ----------
    config
        The main process's configuration (pickled across; it is read once, by the main).
    index
        Which receiver process this is; names its log records and its incoming folder.
    connection
        Its end of the pipe to the main process.
    listeners
        Port -> the main process's listening socket, which this process accepts on too.
    """
    from dicom_node.node import Node  # node.py imports this module

    link = ParentLink(connection, index)
    link.listeners = listeners
    # Ctrl-C in a terminal reaches the whole process group: the main process decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated: list[int] = []  # a signal handler takes no lock: see wait_for_stop
    signal.signal(signal.SIGTERM, lambda signum, _frame: terminated.append(signum))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    # Redacted here too: QueueHandler formats the record (traceback included) before sending.
    root.addHandler(install_redaction(QueueHandler(link)))  # type: ignore[arg-type]
    root.setLevel(config.node.log_level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    link.watch()
    try:
        node = Node(config, receive=True, complete=False, workers=0, send=False, parent=link)
        node.start()
    except Exception:
        log.exception("receiver process %d could not start", index)
        raise SystemExit(1) from None
    link.send(("listening", os.getpid()))
    wait_for_stop(link.stopped, terminated)
    node.stop()


@dataclass
class _Slot:
    """One configured receiver process, as the main process sees it."""

    index: int
    process: BaseProcess | None = None
    connection: Connection | None = None
    started_at: float = 0.0
    listening: bool = False
    restart_at: float | None = None
    delay_s: float = RESTART_DELAY_S
    busy: dict[int, set[str]] = field(default_factory=dict)


class ReceiverProcesses:
    """The main process's side: starts, follows, restarts and stops the receiver processes.

    Parameters
    ----------
    config
        The node configuration; ``node.receiver_processes - 1`` processes are started.
    metrics
        The main process's counters, which the receiver processes' increments go to.
    on_exit
        Called with the process id of a receiver process that exited while the node runs
        (it crashed or was killed), from the thread that follows them: it must return at
        once.  The node sweeps that process's half-written files.
    """

    def __init__(self, config: NodeConfig, metrics: NodeMetrics,
                 on_exit: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.on_exit = on_exit
        self._context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._slots = [_Slot(i) for i in range(1, config.node.receiver_processes)]
        self._lock = threading.Lock()
        # A plain flag, not an Event: the main process's signal handler sets it, and a handler
        # must take no lock (the thread it interrupted may hold it).
        self._stopping = False
        # One thread at a time asks the kernel whether a process exited: a second waitpid()
        # on a child another thread already reaped reads ECHILD, which multiprocessing
        # takes for "still running" (a stopped process then looked alive and was "killed").
        self._reaping = threading.Lock()
        self._done = threading.Event()
        self._records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener: QueueListener | None = None
        self._thread: threading.Thread | None = None
        self._sockets: dict[int, socket.socket] = {}

    # -- life cycle -------------------------------------------------------------------------
    def start(self, listeners: dict[int, socket.socket]) -> None:
        """Start every receiver process, accepting on ``listeners`` (port -> the main
        receiver's listening socket; it is already listening)."""
        self._sockets = dict(listeners)
        # Their records go to the main process's handlers (file, stderr; redaction included).
        self._listener = QueueListener(self._records, *logging.getLogger().handlers,
                                       respect_handler_level=True)
        self._listener.start()
        for slot in self._slots:
            self._spawn(slot)
        self._thread = threading.Thread(target=self._follow, name="receiver-processes",
                                        daemon=True)
        self._thread.start()

    def wait_listening(self, timeout_s: float) -> bool:
        """Wait until every receiver process accepts associations; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running:
                return True
            time.sleep(0.05)
        return self.running

    def stopping(self) -> None:
        """The node is about to stop: a receiver process that exits now is not restarted.

        Safe in a signal handler: it only sets a flag."""
        self._stopping = True

    def stop(self) -> None:
        """Stop every receiver process: they stop accepting, let open associations finish
        (up to ``DRAIN_S``) and exit; one that does not is killed.  No process survives."""
        with self._lock:  # no process is started after this
            self._stopping = True
            slots = [(s.process, s.connection) for s in self._slots]
        for _, connection in slots:
            if connection is not None:
                with contextlib.suppress(OSError, ValueError):  # already gone
                    connection.send(("stop",))
        # The follower thread keeps reading their records and counts while they drain.
        deadline = time.monotonic() + DRAIN_S + 10
        for process, _ in slots:
            if process is not None and \
                    not self._exited(process, max(deadline - time.monotonic(), 0.1)):
                log.warning("receiver process (pid %s) did not stop; killing it", process.pid)
                with self._reaping:
                    process.kill()
                self._exited(process, 5)
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)
        for _, connection in slots:
            if connection is not None:
                connection.close()
        if self._listener is not None:
            self._listener.stop()  # after the processes: their last records are logged

    # -- what the main process asks -------------------------------------------------------
    @property
    def running(self) -> bool:
        """Every configured receiver process is alive and accepting associations."""
        with self._lock:
            return all(s.listening and s.process is not None and not self._exited(s.process)
                       for s in self._slots)

    @property
    def pids(self) -> list[int]:
        """Process ids of the receiver processes now running."""
        with self._lock:
            return [s.process.pid for s in self._slots
                    if s.process is not None and s.process.pid is not None]

    def busy_study_uids(self) -> set[str]:
        """Studies being received on an open association of any receiver process."""
        with self._lock:
            return {uid for s in self._slots for studies in s.busy.values() for uid in studies}

    # -- inside ---------------------------------------------------------------------------
    def _exited(self, process: BaseProcess, timeout_s: float = 0.0) -> bool:
        """Whether ``process`` has exited (and is reaped), waiting up to ``timeout_s``.

        Any thread may ask; the wait itself takes no lock (it watches the process's
        sentinel, which reads end of file once the process is gone).
        """
        gone = bool(wait([process.sentinel], timeout_s))
        with self._reaping:
            # Once the sentinel closed, a blocking join returns at once (the exit is under
            # way); before, join(0) only asks, so a live process holds the lock no longer.
            process.join(0.5 if gone else 0)
            return process.exitcode is not None

    def _spawn(self, slot: _Slot) -> None:
        with self._lock:  # stop() takes the lock too: nothing starts once it began
            if self._stopping:
                return
            ours, theirs = self._context.Pipe(duplex=True)
            process = self._context.Process(target=run_receiver_process,
                                            args=(self.config, slot.index, theirs,
                                                  self._sockets),
                                            name=f"dicom-receiver-{slot.index}", daemon=False)
            process.start()
            theirs.close()  # only the child holds its end: its exit reads as end of file
            slot.process, slot.connection = process, ours
            slot.started_at, slot.listening, slot.restart_at = time.monotonic(), False, None
        log.info("receiver process %d started (pid %d)", slot.index, process.pid)

    def _follow(self) -> None:
        while not self._done.is_set():
            with self._lock:
                connections = {s.connection: s for s in self._slots if s.connection is not None}
            if not connections:
                self._done.wait(0.5)
            for connection in wait(list(connections), timeout=0.5) if connections else []:
                assert isinstance(connection, Connection)
                slot = connections[connection]
                try:
                    message = connection.recv()
                except (EOFError, OSError):
                    self._gone(slot)
                    continue
                self._handle(slot, message)
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and now >= slot.restart_at and \
                        not self._stopping:
                    self._spawn(slot)

    def _handle(self, slot: _Slot, message: object) -> None:
        if not isinstance(message, tuple) or not message:
            log.error("receiver process %d sent an unknown message", slot.index)
            return
        kind = message[0]
        if kind == "log" and isinstance(message[1], logging.LogRecord):
            record = message[1]
            # Formatted in the child (QueueHandler: message and arguments merged, redacted);
            # the main process's log says which process wrote it.
            record.msg, record.args = f"[receiver {slot.index}] {record.getMessage()}", None
            self._records.put(record)
        elif kind == "count":
            try:
                self.metrics.count(*message[1:])
            except (TypeError, ValueError):
                log.error("receiver process %d sent an unknown count", slot.index)
        elif kind == "delivered":
            with self._lock:
                slot.busy.setdefault(message[1], set()).add(str(message[2]))
        elif kind == "closed":
            with self._lock:
                slot.busy.pop(message[1], None)
        elif kind == "listening":
            with self._lock:
                slot.listening = True
            log.info("receiver process %d (pid %s) accepts associations", slot.index,
                     message[1])
        else:
            log.error("receiver process %d sent an unknown message", slot.index)

    def _gone(self, slot: _Slot) -> None:
        """The pipe closed: the process exited (or is exiting).  Forget what its associations
        held back and, unless the node is stopping, start it again after a delay."""
        process = slot.process
        exitcode = process.exitcode if process is not None and self._exited(process, 5) \
            else None
        with self._lock:
            if slot.connection is not None:
                slot.connection.close()
            slot.connection, slot.listening = None, False
            slot.busy.clear()
            if time.monotonic() - slot.started_at >= STABLE_AFTER_S:
                slot.delay_s = RESTART_DELAY_S
            delay = slot.delay_s
            slot.delay_s = min(delay * 2, RESTART_DELAY_MAX_S)  # if it dies again soon
            if not self._stopping:
                slot.restart_at = time.monotonic() + delay
        if self._stopping:
            return
        if self.on_exit is not None and process is not None and process.pid is not None:
            self.on_exit(process.pid)
        log.error("receiver process %d (pid %s) exited with code %s; starting it again in "
                  "%.0f s", slot.index, process.pid if process else None,
                  exitcode, delay)


def union(*sources: Callable[[], set[str]]) -> Callable[[], set[str]]:
    """One busy-study callable for completion from several (main and receiver processes)."""
    return lambda: set().union(*(source() for source in sources))
