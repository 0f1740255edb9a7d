"""What a stranger's oversized PDU costs the node: announce a 4 GiB A-ASSOCIATE-RQ (or P-DATA)
and stream zeros at the real node (``dicom-node serve``) until it closes the connection.

    python benchmarks/bench_pdu_limit.py [--stream-mib 256]

Prints, per PDU type, the bytes the node took before closing, the seconds until it closed, and
the node's resident memory before and after (from /proc).  Without the header check pynetdicom
reads the whole announced body into memory first.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.nodeproc import NodeProcess  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(port: int, pdu_type: int, stream_bytes: int) -> tuple[int, float | None]:
    """Bytes accepted before the node closed the connection, and seconds until it did (None:
    still open 10 s after the last byte)."""
    chunk = b"\x00" * (1 << 20)
    sent = 0
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(struct.pack(">BBL", pdu_type, 0, 0xFFFFFFF0))
        try:
            while sent < stream_bytes:
                sent += sock.send(chunk)
            sock.settimeout(10)
            while sock.recv(65536):
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        except TimeoutError:
            return sent, None
    return sent, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream-mib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, NodeProcess(Path(tmp)) as node:
        pid = node.proc.pid  # type: ignore[union-attr]
        for pdu_type, name in ((0x01, "A-ASSOCIATE-RQ"), (0x04, "P-DATA-TF")):
            before = rss_mib(pid)
            sent, seconds = flood(node.port, pdu_type, args.stream_mib << 20)
            time.sleep(0.5)
            closed = "still open" if seconds is None else f"closed after {seconds:5.2f} s"
            print(f"{name:15s} announced 4 GiB: node took {sent / 2**20:7.1f} MiB of "
                  f"{args.stream_mib} MiB offered, {closed}; "
                  f"RSS {before:.0f} -> {rss_mib(pid):.0f} MiB")
        print("node still answers C-ECHO:", node.echo())


if __name__ == "__main__":
    main()
