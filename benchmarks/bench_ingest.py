"""Ingest benchmark: the same 300-slice CT sent with dcmtk `storescu` to dcmtk `storescp`
(plain files) and to the node (de-identified, fsync'd, indexed), in one run.

    python benchmarks/bench_ingest.py [--slices 300] [--size 512] [--repeat 2] [--under-load]
                                      [--nice 10 [0]] [--associations 4]
                                      [--receiver-processes 2]
                                      [--baseline-tree DIR] [--node-folder DIR]
    python benchmarks/bench_ingest.py --index-only 200
    python benchmarks/bench_ingest.py --stages-only 300

Prints seconds per run, images/s and the node/storescp time ratio, and the node's ratio to the
floor of any pynetdicom-based receiver: a pynetdicom C-STORE SCP whose handler answers Success
at once, without reading, writing or indexing anything (what the node is built on; target
node/floor <= 2), also with pynetdicom streaming each data set to a temporary file (as the node
does past ``node.dataset_memory_bytes``).  At the end it times the disk's flushes (fsync of a
new file, of its folder, an SQLite commit): the node makes those three per instance before it
answers, and the floor none, so it also prints node/floor with their time taken out.  ``--under-load`` also sends the series while the node runs a CT lung job on
another study and prints that time against the idle one (target <= 1.5), with the job threads
at ``--nice`` (the node's ``jobs.nice``).  ``--associations K`` also sends the series split over
K associations at once, to the node and to the floor, and prints the speed-up over one; with
``--receiver-processes N`` the node of that run has ``node.receiver_processes = N``.
``--node-folder /dev/shm`` puts the nodes' data folders and databases on tmpfs, where a flush
costs nothing: the node's own work alone against the floor (what a disk that flushes at once,
NVMe with power-loss protection, would approach).  The
machine's load average is printed at the start and the end: on a shared machine the figures
are only comparable within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series  # noqa: E402
from tests.net import free_port, need  # noqa: E402
from tests.nodeproc import NodeProcess  # noqa: E402
from tests.peers import orthanc_server  # noqa: E402


def send(port: int, aec: str, files: list[Path], env: dict, associations: int = 1) -> float:
    """Seconds to send ``files`` with storescu, split over ``associations`` sent at once."""
    t0 = time.perf_counter()
    parts = [files[i::associations] for i in range(associations)]
    procs = [subprocess.Popen([need("storescu"), "-aet", "PACS", "-aec", aec, "127.0.0.1",
                               str(port), *map(str, part)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env) for part in parts]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - t0
    for proc, err in zip(procs, errors, strict=True):
        if proc.returncode != 0:
            raise SystemExit(f"storescu failed: {err[-2000:]}")
    return elapsed


def node_ingest(root: Path, files: list[Path], env: dict, associations: int = 1,
                source_tree: Path | None = None, receiver_processes: int = 1) -> float:
    """Seconds for a fresh node (from ``source_tree`` when given) to take in ``files``."""
    node = NodeProcess(root, quiet_seconds=60, extra={"node": {
        "receiver_processes": receiver_processes}} if receiver_processes > 1 else None)
    here = Path.cwd()
    if source_tree is not None:
        os.chdir(source_tree)  # `python -m dicom_node.cli` imports from the working directory
    try:
        node.start()
    finally:
        os.chdir(here)
    deadline = time.monotonic() + 120
    while "node started" not in node.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # every receiver process listens once this is logged
    try:
        assert node.proc is not None
        cpu = node_cpu_seconds(node.proc.pid)
        elapsed = send(node.port, node.ae_title, files, env, associations)
        cpu = node_cpu_seconds(node.proc.pid) - cpu
        stored = node.status()["instances"]["stored"]
        assert stored == len(files), f"node indexed {stored}/{len(files)}"
    finally:
        node.stop()
    if associations > 1:
        print(f"  node processes' CPU while receiving: {cpu:.2f} s over {elapsed:.2f} s "
              f"({cpu / elapsed:.2f} cores of {os.cpu_count()})")
    return elapsed


def node_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its children (receiver processes),
    from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # itself or a child
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_until_quiet(pid: int, timeout: float = 120.0) -> None:
    """Until process ``pid`` (and its children) used under 5 % of a CPU for a second."""
    deadline = time.monotonic() + timeout
    before = node_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = node_cpu_seconds(pid)
        if now - before < 0.05:
            return
        before = now


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def pynetdicom_floor(files: list[Path], env: dict, associations: int = 1,
                     streamed_to: Path | None = None) -> float:
    """storescu -> a pynetdicom SCP that answers Success at once (data set kept in memory, or
    with ``streamed_to`` written by pynetdicom to a temporary file there, as the node has it
    do to bound its memory, and deleted unread)."""
    import tempfile as temporary

    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

    ae = AE(ae_title="FLOOR")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    was, folder = _config.STORE_RECV_CHUNKED_DATASET, temporary.tempdir
    _config.STORE_RECV_CHUNKED_DATASET = streamed_to is not None
    if streamed_to is not None:
        streamed_to.mkdir(parents=True, exist_ok=True)
        temporary.tempdir = str(streamed_to)
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    try:
        return send(port, "FLOOR", files, env, associations)
    finally:
        server.shutdown()
        _config.STORE_RECV_CHUNKED_DATASET, temporary.tempdir = was, folder


def disk_flushes(work: Path, count: int = 50, size: int = 525_000) -> float:
    """What the disk under ``work`` takes for the three flushes the node makes per instance:
    fsync of a new file of ``size`` bytes, fsync of its folder after the rename, and an SQLite
    commit in WAL mode with synchronous=FULL (one row)."""
    import sqlite3

    folder = work / "flushes"
    folder.mkdir()
    data = os.urandom(size)
    spent = [0.0, 0.0, 0.0]
    connection = sqlite3.connect(folder / "flush.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (n INTEGER)")
    for n in range(count):
        tmp, final = folder / f".{n}.tmp", folder / f"{n}.dcm"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        t0 = time.perf_counter()
        os.fsync(fd)
        os.close(fd)
        t1 = time.perf_counter()
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        t2 = time.perf_counter()
        connection.execute("BEGIN")
        connection.execute("INSERT INTO t VALUES (?)", (n,))
        connection.execute("COMMIT")
        t3 = time.perf_counter()
        for i, seconds in enumerate((t1 - t0, t2 - t1, t3 - t2)):
            spent[i] += seconds
    connection.close()
    file_ms, folder_ms, commit_ms = (s / count * 1000 for s in spent)
    total_ms = file_ms + folder_ms + commit_ms
    print(f"disk flushes ({count} x {size // 1000} kB): fsync of the new file {file_ms:.1f} ms, "
          f"of its folder {folder_ms:.1f} ms, SQLite WAL commit {commit_ms:.1f} ms: "
          f"{total_ms:.1f} ms per instance that no receiver keeping the "
          "node's durability avoids (the node overlaps its index statements with the first two)")
    return total_ms / 1000


def under_load(files_load: list[Path], files: list[Path], files_again: list[Path], work: Path,
               env: dict, nice: int) -> None:
    """A series sent while a CT lung job runs on another study, against one sent to the same
    node idle (``files_again``: the same images under new UIDs, so nothing is a repeat)."""
    node = NodeProcess(work / f"node-load-{nice}", workers=1, quiet_seconds=1.0,
                       extra={"jobs": {"nice": nice}})
    node.start()
    try:
        assert node.proc is not None
        wait_until_quiet(node.proc.pid)  # the job worker loads its engines at start
        idle = send(node.port, node.ae_title, files, env)
        send(node.port, node.ae_title, files_load, env)
        node.wait_for(lambda status: status["jobs"].get("running", 0) >= 1, timeout=120,
                      interval=0.2)
        loaded = send(node.port, node.ae_title, files_again, env)
        still_running = node.status()["jobs"].get("running", 0) >= 1
    finally:
        node.stop()
    print(f"under load (jobs.nice = {nice}): idle {idle:.2f} s, while a CT job runs "
          f"{loaded:.2f} s: "
          f"ratio {loaded / idle:.2f} (target <= 1.5)"
          + ("" if still_running else "  [the job finished before the send did]"))


def in_process_stages(files: list[Path], work: Path) -> None:
    """Where an instance's time goes without the network: the receiver's own steps, timed."""
    from dicom_node.config import parse_config
    from dicom_node.incoming import IncomingDataSet
    from dicom_node.node import Node

    config = parse_config({
        "node": {"data_dir": str(work / "var"), "min_free_disk_mb": 1},
        "database": {"url": f"sqlite:///{work / 'var' / 'node.db'}"},
        "jobs": {"workers": 0}, "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    node = Node(config, workers=0, complete=False, send=False)
    # Wall and CPU seconds (CPU: this thread's, so other processes' load does not count).
    spent = {name: [0.0, 0.0] for name in ("read", "de-identify", "encode + write")}

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def timed(name: str, function):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN202
            wall, cpu = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name][0] += time.perf_counter() - wall
                spent[name][1] += time.thread_time() - cpu
        return wrapper

    receiver = node.receiver
    receiver.pseudonymizer.pseudonymize = timed("de-identify", receiver.pseudonymizer.pseudonymize)
    # The file's fsync runs in a sync thread while the index statements are made: it is in
    # the last figure (the transaction waits for it before it commits).
    receiver.files.start_write_stream = timed("encode + write",
                                              receiver.files.start_write_stream)
    total = [0.0, 0.0]
    for path in files:
        data = path.read_bytes()
        wall, cpu = clock()
        # as the receiver has it from pynetdicom: the bytes as received, then read
        received = IncomingDataSet(work, config.node.dataset_memory_bytes)
        received.write(data)
        ds = received.dataset()
        spent["read"][0] += time.perf_counter() - wall
        spent["read"][1] += time.thread_time() - cpu
        wall, cpu = clock()
        assert receiver.ingest(ds, "PACS", original=received.source()) == 0
        total[0] += time.perf_counter() - wall
        total[1] += time.thread_time() - cpu
    spent["fsync + index + vault transaction"] = [
        total[i] - spent["de-identify"][i] - spent["encode + write"][i] for i in (0, 1)]
    node.db.dispose()
    n = len(files)
    print("in process, per instance (no network), wall / CPU: " + ", ".join(
        f"{name} {wall / n * 1000:.1f} / {cpu / n * 1000:.1f} ms"
        for name, (wall, cpu) in spent.items())
        + f"; total {(total[0] + spent['read'][0]) / n * 1000:.1f} / "
          f"{(total[1] + spent['read'][1]) / n * 1000:.1f} ms")


def index_transactions(count: int, work: Path) -> None:
    """The index transaction alone (``storage.studies.index_instance``), one commit per
    instance as the receiver does, on a fresh SQLite database: wall and CPU per instance."""
    from dicom_node.config import parse_config
    from dicom_node.node import open_database
    from storage.clock import utcnow
    from storage.studies import ReceivedInstance, index_instance

    config = parse_config({"database": {"url": f"sqlite:///{work / 'index.db'}"}})
    db = open_database(config)

    def item(n: int) -> ReceivedInstance:
        return ReceivedInstance(
            study_uid="2.25.1", series_uid="2.25.2", sop_instance_uid=f"2.25.3.{n}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="CT", frame_of_reference_uid="2.25.4", patient_pseudonym="ANON-1",
            calling_ae="PACS", path=f"studies/x/{n}.dcm", size_bytes=1, sha256="0" * 64)

    with db.session() as session:
        index_instance(session, item(0), utcnow())
    wall, cpu = time.perf_counter(), time.thread_time()
    for n in range(1, count + 1):
        with db.session() as session:
            index_instance(session, item(n), utcnow())
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    db.dispose()
    print(f"index transaction alone ({count} instances): wall {wall / count * 1000:.2f} ms, "
          f"CPU {cpu / count * 1000:.2f} ms per instance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--orthanc", action="store_true",
                        help="also time Debian's Orthanc (indexed receiver) for context")
    parser.add_argument("--under-load", action="store_true",
                        help="also send while the node runs a CT lung job on another study")
    parser.add_argument("--nice", type=int, nargs="+", default=[10],
                        help="jobs.nice of the node under load (0: jobs at the receiver's "
                             "priority); several values: one under-load run each")
    parser.add_argument("--associations", type=int, default=1,
                        help="also send the series split over this many associations at once")
    parser.add_argument("--receiver-processes", type=int, default=1,
                        help="node.receiver_processes of the node in the --associations run")
    parser.add_argument("--baseline-tree", type=Path,
                        help="also time, in each repeat, a node run from this source tree (e.g. "
                             "`git archive` of an earlier commit unpacked), for a before/after "
                             "under the same load")
    parser.add_argument("--node-folder", type=Path,
                        help="make the nodes' data folders here (e.g. /dev/shm: tmpfs, where "
                             "flushes cost nothing) instead of the temporary work folder")
    parser.add_argument("--index-only", type=int, metavar="N",
                        help="only time N index transactions (no network, no files) and stop")
    parser.add_argument("--stages-only", type=int, metavar="N",
                        help="only time the in-process stages on N slices (no network) and stop")
    parser.add_argument("--nagle", action="store_true",
                        help="leave dcmtk's Nagle algorithm on (its default build setting); by "
                             "default both dcmtk peers run with TCP_NODELAY=1, the fast baseline")
    args = parser.parse_args()
    # dcmtk reads TCP_NODELAY from the environment; with Nagle on, storescu/storescp stall
    # ~40 ms per image on delayed ACKs, which would flatter the node.
    env = dict(os.environ, TCP_NODELAY="0" if args.nagle else "1")

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    print(f"start: {load_average()} on {os.cpu_count()} CPUs")
    if args.index_only:
        index_transactions(args.index_only, work)
        shutil.rmtree(work, ignore_errors=True)
        return
    if args.stages_only:
        try:
            hu = phantom_chest_hu((args.stages_only, args.size, args.size))
            in_process_stages(
                write_series(ct_series_datasets(hu, pixel_spacing=(0.7, 0.7)), work / "ct"),
                work / "stages")
            print(f"end: {load_average()}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    nodes = Path(tempfile.mkdtemp(prefix="bench-ingest-nodes-", dir=args.node_folder)) \
        if args.node_folder else work
    if args.node_folder:
        print(f"node data folders and databases in {args.node_folder}")
    try:
        hu = phantom_chest_hu((args.slices, args.size, args.size))
        files = write_series(ct_series_datasets(hu, pixel_spacing=(0.7, 0.7)), work / "ct")
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"series: {len(files)} instances, {size_mb:.0f} MB")

        scp_times, node_times, orthanc_times, floor_times = [], [], [], []
        streamed_times: list[float] = []
        baseline_times: list[float] = []
        for run in range(args.repeat):
            port = free_port()
            out_dir = work / f"storescp-{run}"
            out_dir.mkdir()
            scp = subprocess.Popen([need("storescp"), "-aet", "STORESCP", "-od", str(out_dir),
                                    str(port)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            try:
                scp_times.append(send(port, "STORESCP", files, env))
                assert len(list(out_dir.iterdir())) == len(files), "storescp lost files"
            finally:
                scp.terminate()
                scp.wait()

            node_times.append(node_ingest(nodes / f"node-{run}", files, env))
            floor_times.append(pynetdicom_floor(files, env))
            streamed_times.append(pynetdicom_floor(files, env,
                                                   streamed_to=work / f"streamed-{run}"))
            if args.baseline_tree:
                baseline_times.append(node_ingest(nodes / f"baseline-{run}", files, env,
                                                  source_tree=args.baseline_tree))

            if args.orthanc:
                with orthanc_server(work / f"orthanc-{run}") as pacs:
                    orthanc_times.append(send(pacs.dicom_port, pacs.aet, files, env))

        best_scp, best_node = min(scp_times), min(node_times)
        print(f"storescp (plain files):          {best_scp:6.2f} s  "
              f"{len(files) / best_scp:6.0f} img/s  runs {[round(t, 2) for t in scp_times]}")
        print(f"node (de-identified, fsync, db):  {best_node:6.2f} s  "
              f"{len(files) / best_node:6.0f} img/s  runs {[round(t, 2) for t in node_times]}")
        if orthanc_times:
            best_orthanc = min(orthanc_times)
            print(f"Orthanc (indexed, its defaults):  {best_orthanc:6.2f} s  "
                  f"{len(files) / best_orthanc:6.0f} img/s  runs "
                  f"{[round(t, 2) for t in orthanc_times]}")
            print(f"ratio Orthanc/storescp: {best_orthanc / best_scp:.2f}")
        best_floor = min(floor_times)
        print(f"pynetdicom, answers at once:      {best_floor:6.2f} s  "
              f"{len(files) / best_floor:6.0f} img/s  runs {[round(t, 2) for t in floor_times]}")
        best_streamed = min(streamed_times)
        print(f"the same, data set streamed to a temporary file (as the node did before it kept data sets in memory): "
              f"{best_streamed:6.2f} s  runs {[round(t, 2) for t in streamed_times]}; "
              f"node/that floor {best_node / best_streamed:.2f}")
        print(f"ratio node/storescp: {best_node / best_scp:.2f}; floor of a pynetdicom "
              f"receiver: {best_floor / best_scp:.2f}; node/floor: {best_node / best_floor:.2f} "
              "(target <= 2)")
        if baseline_times:
            best_baseline = min(baseline_times)
            print(f"node from {args.baseline_tree}: {best_baseline:6.2f} s  runs "
                  f"{[round(t, 2) for t in baseline_times]}; its node/floor "
                  f"{best_baseline / best_floor:.2f}; this node / that one "
                  f"{best_node / best_baseline:.2f}")
        if args.associations > 1:
            k = args.associations
            n = args.receiver_processes
            node_k = node_ingest(nodes / "node-concurrent", files, env, k, receiver_processes=n)
            floor_k = pynetdicom_floor(files, env, k)
            print(f"{k} associations at once, {n} receiver process{'es' * (n > 1)}: "
                  f"node {node_k:.2f} s ({best_node / node_k:.2f}x "
                  f"one association), floor {floor_k:.2f} s ({best_floor / floor_k:.2f}x); "
                  f"node/floor {node_k / floor_k:.2f}")
        if args.under_load:
            load, again = (write_series(ct_series_datasets(hu, pixel_spacing=(0.7, 0.7)),
                                        work / name) for name in ("ct-load", "ct-again"))
            for nice in args.nice:
                under_load(load, files, again, work, env, nice)
        in_process_stages(files, nodes / "stages")
        flushes = disk_flushes(nodes) * len(files)  # where the nodes wrote
        print(f"node/floor with the disk's flushes taken out (what a disk that flushes at once "
              f"would give, at best): {(best_node - flushes) / best_floor:.2f}")
        print(f"end: {load_average()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(nodes, ignore_errors=True)


if __name__ == "__main__":
    main()
