"""Several receiver processes on one DICOM port (``node.receiver_processes``): they share the
work, completion waits for all of them, their counts and log lines reach the main process,
a dead one is started again, and none outlives the node."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select

from dicom_node import receivers
from dicom_node.cli import main
from dicom_node.config import ConfigError, parse_config
from dicom_node.metrics import NodeMetrics
from dicom_node.receivers import ReceiverProcesses
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from storage.database import Database
from storage.tables import Instance, Study
from tests.net import free_port, need
from tests.nodeproc import NodeProcess
from tests.security.netnode import PACS
from tests.security.test_tls import ct_file, pki, storescu, tls_settings  # noqa: F401  (fixtures)


# -- configuration -------------------------------------------------------------------------
def test_receiver_processes_default_and_bounds():
    assert parse_config({}).node.receiver_processes == 1
    assert parse_config({"node": {"receiver_processes": 4}}).node.receiver_processes == 4
    with pytest.raises(ConfigError, match="node.receiver_processes"):
        parse_config({"node": {"receiver_processes": 0}})


def test_check_config_accepts_receiver_processes(tmp_path, capsys):
    path = tmp_path / "node.toml"
    path.write_text('[node]\nreceiver_processes = 3\n[[peers]]\nname = "pacs"\n'
                    'ae_title = "PACS"\nport = 4242\nkind = "clinical"\n')
    assert main(["check-config", str(path)]) == 0
    path.write_text("[node]\nreceiver_processes = 0\n")
    assert main(["check-config", str(path)]) == 2
    assert "node.receiver_processes" in capsys.readouterr().err


def test_check_config_warns_of_more_receiver_processes_than_cpus():
    from dicom_node.config import check_config

    cpus = os.cpu_count() or 1
    fitting = check_config(parse_config({"node": {"receiver_processes": min(cpus, 64)}}), [])[1]
    assert not any("receiver_processes" in w for w in fitting)
    if cpus >= 64:
        pytest.skip("the key allows up to 64 processes: no more than this machine's CPUs")
    too_many = check_config(parse_config({"node": {"receiver_processes": cpus + 1}}), [])[1]
    assert any(w.startswith("node.receiver_processes:") for w in too_many)


def test_metrics_count_refuses_unknown_counters():
    metrics = NodeMetrics()
    metrics.count("associations", "accepted")
    metrics.count("store_failures", "0xA700")
    assert metrics.associations.labels("accepted")._value.get() == 1
    for bad in (("associations", "maybe"), ("nonsense", None), ("store_failures", "A700'")):
        with pytest.raises(ValueError):
            metrics.count(*bad)


def test_busy_studies_follow_the_messages_and_a_dead_process_drops_its_own():
    metrics = NodeMetrics()
    processes = ReceiverProcesses(parse_config({"node": {"receiver_processes": 3}}), metrics)
    one, two = processes._slots
    processes._handle(one, ("delivered", 7, "2.25.1"))
    processes._handle(two, ("delivered", 7, "2.25.2"))  # ids are per process
    processes._handle(two, ("delivered", 8, "2.25.3"))
    assert processes.busy_study_uids() == {"2.25.1", "2.25.2", "2.25.3"}
    processes._handle(two, ("closed", 7))
    assert processes.busy_study_uids() == {"2.25.1", "2.25.3"}
    processes._gone(one)  # its pipe closed: what it held back is released, a restart is due
    assert processes.busy_study_uids() == {"2.25.3"}
    assert one.restart_at is not None and not processes.running
    processes._handle(two, ("count", "instances_received", None))
    processes._handle(two, ("count", "associations", "accepted"))
    processes._handle(two, ("count", "nonsense", None))  # logged, not counted, not raised
    processes._handle(two, "not a message")
    assert metrics.instances_received._value.get() == 1
    assert metrics.associations.labels("accepted")._value.get() == 1


def test_every_thread_sees_an_exited_process_as_exited():
    """The stopping main thread, the follower and /healthz ask at once; each must see the
    exit.  (multiprocessing answers "alive" to whoever's waitpid() finds the child already
    reaped by another thread: the node then logged a stopped process as hung.)"""
    processes = ReceiverProcesses(parse_config({"node": {"receiver_processes": 2}}),
                                  NodeMetrics())
    context = multiprocessing.get_context("spawn")
    for _ in range(3):
        process = context.Process(target=time.sleep, args=(0.3,))
        process.start()
        barrier = threading.Barrier(8)
        answers: list[bool] = []

        def ask(process=process, barrier=barrier, answers=answers) -> None:  # noqa: ANN001
            barrier.wait()
            answers.append(processes._exited(process, 10))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers == [True] * 8
        assert process.exitcode == 0


class _FakeReceiver:
    """What ParentLink.follow uses of a Receiver: bind, studies_of, open_associations."""

    def __init__(self) -> None:
        self.handlers: dict[object, list] = {}
        self.studies: dict[int, frozenset[str]] = {}
        self.open: set[int] = set()

    def bind(self, event, handler) -> None:  # noqa: ANN001
        self.handlers.setdefault(event, []).append(handler)

    def fire(self, event, **attrs) -> None:  # noqa: ANN001, ANN003
        for handler in self.handlers.get(event, []):
            handler(SimpleNamespace(**attrs))

    def studies_of(self, association: int) -> frozenset[str]:
        return self.studies.get(association, frozenset())

    def open_associations(self) -> set[int]:
        return set(self.open)


def test_parent_link_tells_deliveries_closes_and_associations_that_are_gone(monkeypatch):
    monkeypatch.setattr(receivers, "FOLLOW_CHECK_S", 0.05)
    ours, theirs = multiprocessing.Pipe(duplex=True)
    link = receivers.ParentLink(theirs, 1)
    receiver = _FakeReceiver()
    link.follow(receiver)  # type: ignore[arg-type]
    first, second = object(), object()
    receiver.open = {id(first), id(second)}
    receiver.studies = {id(first): frozenset({"2.25.1"}), id(second): frozenset({"2.25.2"})}
    receiver.fire(evt.EVT_DIMSE_SENT, message=C_STORE_RSP(), assoc=first)
    receiver.fire(evt.EVT_DIMSE_SENT, message=C_STORE_RSP(), assoc=first)  # told once
    receiver.fire(evt.EVT_DIMSE_SENT, message=C_ECHO_RSP(), assoc=second)  # not a store
    assert ours.recv() == ("delivered", id(first), "2.25.1")
    receiver.fire(evt.EVT_DIMSE_SENT, message=C_STORE_RSP(), assoc=second)
    assert ours.recv() == ("delivered", id(second), "2.25.2")
    receiver.fire(evt.EVT_RELEASED, assoc=first)
    assert ours.recv() == ("closed", id(first))
    receiver.open = {id(first)}  # the second's thread ended without a close event
    assert ours.poll(5)
    assert ours.recv() == ("closed", id(second))
    link.stopped.set()
    assert not ours.poll(0.3)


# -- a running node ------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _receiver_pids(node: NodeProcess) -> set[int]:
    """The receiver processes (not multiprocessing's resource tracker) of the node."""
    assert node.proc is not None
    pids = set()
    for pid in _children(node.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.add(pid)
    return pids


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _server_process(node_port: int, client_port: int, candidates: set[int]) -> int | None:
    """Which of ``candidates`` holds the node's end of the TCP connection from
    ``client_port`` (read from /proc/net/tcp and each process's open sockets)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == node_port and \
                int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    for pid in candidates:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            return pid
    return None


def _associate(node: NodeProcess) -> Association:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    return assoc


def _association_on(node: NodeProcess, pids: set[int]) -> tuple[Association, int]:
    """An association the kernel gave to one of ``pids``; the others opened on the way are
    released at once (they count as accepted and released associations)."""
    assert node.proc is not None
    everyone = pids | {node.proc.pid}
    for opened in range(1, 41):
        assoc = _associate(node)
        port = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
        owner = _server_process(node.port, port, everyone)
        if owner in pids:
            return assoc, opened
        assoc.release()
    raise AssertionError("40 associations in a row went to the main process")


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    values = {}
    for line in text.decode().splitlines():
        m = re.match(r"(dicom_node_(?:associations|instances_received|store_failures)_total"
                     r"(?:\{[^}]*\})?) (\S+)", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def _healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status \
            == 200
    except urllib.error.HTTPError:
        return False


def _storescu(node: NodeProcess, files: list[Path], associations: int) -> None:
    senders = [subprocess.Popen([need("storescu"), "-aet", "PACS", "-aec", node.ae_title,
                                 "127.0.0.1", str(node.port), *map(str, files[i::associations])],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(associations)]
    for sender in senders:
        out, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, out


def _wait(predicate, timeout: float = 60, what: str = "") -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def _listening_inodes(port: int) -> list[str]:
    """Socket inodes of the TCP sockets listening on ``port`` (state 0A in /proc/net/tcp)."""
    inodes = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.append(fields[9])
    return inodes


def _holds(pid: int, inode: str) -> bool:
    return f"socket:[{inode}]" in [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]


def test_two_receiver_processes_share_one_port(tmp_path):
    http = free_port()
    node = NodeProcess(tmp_path / "node", quiet_seconds=2,
                       extra={"node": {"receiver_processes": 2}, "http": {"port": http}})
    node.start()
    try:
        _wait(lambda: "node started" in node.log_path.read_text(), what="node started")
        children = _receiver_pids(node)
        assert len(children) == 1
        assert _healthy(http)
        before = _metrics(http)
        # One listening socket, which every process accepts on (a connection goes to the
        # first that calls accept(), not to a process chosen by a hash of its addresses).
        (listening,) = _listening_inodes(node.port)
        assert node.proc is not None
        assert all(_holds(pid, listening) for pid in {node.proc.pid, *children})

        # A study delivered through the receiver process, on an association held open: it
        # stays "receiving" for several quiet periods, and completes once it is released.
        held_series = ct_series_datasets(phantom_chest_hu((4, 32, 32)))
        assoc, probes = _association_on(node, children)
        for ds in held_series:
            assert assoc.send_c_store(ds).Status == 0
        time.sleep(3 * 2 + 1)
        db = Database(f"sqlite:///{node.data_dir / 'node.db'}")
        with db.session() as s:
            assert s.scalars(select(Study.state)).all() == ["receiving"]
        assoc.release()
        _wait(lambda: _study_states(db) == ["complete"], what="held study completes")

        # One series over four concurrent associations: every instance indexed once.
        datasets = ct_series_datasets(phantom_chest_hu((40, 32, 32)))
        files = write_series(datasets, tmp_path / "ct")
        _storescu(node, files, 4)
        sent = {str(ds.SOPInstanceUID) for ds in datasets}
        with db.session() as s:
            indexed = s.execute(select(func.count(Instance.id))).scalar_one()
        assert indexed == len(sent) + len(held_series)
        _wait(lambda: _study_states(db) == ["complete", "complete"], what="series completes")

        # The counts of both processes are in the main process's /metrics.
        after = _metrics(http)
        opened = probes + 4

        def delta(key: str) -> float:
            return after.get(key, 0) - before.get(key, 0)

        assert delta('dicom_node_associations_total{result="accepted"}') == opened
        assert delta('dicom_node_associations_total{result="released"}') == opened
        assert delta("dicom_node_instances_received_total") == len(sent) + len(held_series)
        assert not any(k.startswith("dicom_node_store_failures") and v for k, v in after.items())

        # Log lines of the receiver process reach the main process's log.
        text = node.log_path.read_text()
        assert text.count(f"listening as AINODE on 127.0.0.1:{node.port}") == 2
        assert text.count(f"[receiver 1] listening as AINODE on 127.0.0.1:{node.port}") == 1

        # A killed receiver process is noticed (unhealthy), started again, and receives.
        (old,) = children
        # A file it was writing when it died (FileStore._temporary's name), and one of a
        # process that still runs: only the dead one's is swept.
        folder = node.data_dir / "studies" / "1.2.3"
        folder.mkdir(parents=True)
        half_written = folder / f".1.2.3.4.dcm.{old}.77.tmp"
        someone_elses = folder / f".1.2.3.5.dcm.{node.proc.pid}.77.tmp"
        half_written.write_bytes(b"x")
        someone_elses.write_bytes(b"x")
        os.kill(old, signal.SIGKILL)
        _wait(lambda: not _healthy(http), timeout=10, what="health to fail")
        _wait(lambda: f"receiver process 1 (pid {old}) exited" in node.log_path.read_text(),
              timeout=10, what="the exit logged")
        _wait(lambda: len(_receiver_pids(node) - {old}) == 1 and _healthy(http),
              what="a new receiver process")
        _wait(lambda: not half_written.exists(), timeout=10, what="its half-written file swept")
        assert someone_elses.exists()
        children = _receiver_pids(node)
        assoc, _ = _association_on(node, children)
        late = ct_series_datasets(phantom_chest_hu((3, 32, 32)))
        for ds in late:
            assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        with db.session() as s:
            indexed = s.execute(select(func.count(Instance.id))).scalar_one()
        assert indexed == len(sent) + len(held_series) + len(late)
        db.dispose()

        # Stopping the node leaves no process behind.
        everything = _children(node.proc.pid)  # type: ignore[union-attr]
        assert children <= everything
    finally:
        assert node.stop() == 0
    _wait(lambda: not _alive(everything), timeout=30, what="no process left")
    assert "node stopped" in node.log_path.read_text()


def _study_states(db: Database) -> list[str]:
    with db.session() as s:
        return sorted(s.scalars(select(Study.state)).all())


@pytest.mark.slow
def test_a_new_association_goes_to_the_less_busy_process(tmp_path):
    """Six associations opened one after another and held: three on each process.  (On the
    shared socket alone, whichever process called accept() first took each; 6-0 and 5-1
    splits were as likely as with a coin.)"""
    node = NodeProcess(tmp_path / "node", extra={"node": {"receiver_processes": 2}})
    node.start()
    held: list[Association] = []
    try:
        _wait(lambda: "node started" in node.log_path.read_text(), what="node started")
        assert node.proc is not None
        (child,) = _receiver_pids(node)
        owners = []
        for _ in range(6):
            held.append(_associate(node))
            port = held[-1].dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
            owners.append(_server_process(node.port, port, {node.proc.pid, child}))
        assert sorted(Counter(owners).items()) == sorted({node.proc.pid: 3, child: 3}.items())
    finally:
        for assoc in held:
            assoc.release()
        assert node.stop() == 0


@pytest.mark.slow
def test_receiver_processes_exit_with_a_killed_main_process(tmp_path):
    node = NodeProcess(tmp_path / "node", extra={"node": {"receiver_processes": 3}})
    node.start()
    _wait(lambda: "node started" in node.log_path.read_text(), what="node started")
    assert node.proc is not None
    everything = _children(node.proc.pid)
    assert len(_receiver_pids(node)) == 2
    node.kill()
    _wait(lambda: not _alive(everything), timeout=30, what="receiver processes to exit")


@pytest.mark.slow
def test_sigterm_to_every_process_at_once_stops_without_restarts(tmp_path):
    """As systemd stops the unit: SIGTERM to the main process and its receiver processes."""
    node = NodeProcess(tmp_path / "node", extra={"node": {"receiver_processes": 3}})
    node.start()
    _wait(lambda: "node started" in node.log_path.read_text(), what="node started")
    assert node.proc is not None
    everything = _children(node.proc.pid)
    for pid in sorted(_receiver_pids(node)) + [node.proc.pid]:
        os.kill(pid, signal.SIGTERM)
    assert node.proc.wait(timeout=60) == 0
    _wait(lambda: not _alive(everything), timeout=30, what="no process left")
    text = node.log_path.read_text()
    assert "node stopped" in text
    assert "exited with code" not in text and "started (pid" in text
    assert text.count("receiver process") == 4  # two started, two accepting; none restarted


@pytest.mark.slow
def test_receiver_processes_share_the_tls_port(tmp_path, pki, ct_file):  # noqa: F811
    tls = tls_settings(pki)
    node = NodeProcess(tmp_path / "node", extra={"node": {"receiver_processes": 2}, "tls": tls},
                       peers=[PACS])  # may also send in plain (NodeProcess echoes so)
    node.start()
    try:
        _wait(lambda: "node started" in node.log_path.read_text(), what="node started")
        children = _receiver_pids(node)
        assert node.proc is not None
        # The receiver process accepts connections on the TLS port too.
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", tls["port"])) as raw:
                client_port = raw.getsockname()[1]
                owner = None
                deadline = time.time() + 5
                while owner is None and time.time() < deadline:
                    owner = _server_process(tls["port"], client_port,
                                            children | {node.proc.pid})
                if owner in children:
                    break
        else:
            raise AssertionError("40 connections in a row went to the main process")
        for _ in range(4):
            out = storescu(tls["port"], ct_file, "+tls", str(pki / "pacs.key"),
                           str(pki / "pacs.crt"), "+cf", str(pki / "ca.crt"))
            assert out.returncode == 0, out.stdout + out.stderr
        db = Database(f"sqlite:///{node.data_dir / 'node.db'}")
        with db.session() as s:
            assert s.execute(select(func.count(Instance.id))).scalar_one() == 1
        db.dispose()
    finally:
        assert node.stop() == 0


@pytest.mark.slow
def test_receiver_processes_on_postgresql(tmp_path):
    from tests.pg import PrivatePostgres

    pg = PrivatePostgres(tmp_path / "pg").start()
    try:
        node = NodeProcess(tmp_path / "node", database_url=pg.url,
                           extra={"node": {"receiver_processes": 2}})
        node.start()
        try:
            _wait(lambda: "node started" in node.log_path.read_text(), what="node started")
            # One series, many associations: both processes create the study and series
            # at once somewhere (a unique-key conflict the receiver retries).
            datasets = ct_series_datasets(phantom_chest_hu((24, 32, 32)))
            _storescu(node, write_series(datasets, tmp_path / "ct"), 6)
            db = Database(pg.url)
            with db.session() as s:
                assert s.execute(select(func.count(Instance.id))).scalar_one() == len(datasets)
                assert s.execute(select(func.count(Study.id))).scalar_one() == 1
            db.dispose()
        finally:
            assert node.stop() == 0
    finally:
        pg.stop()
