"""systemd service notification (``Type=notify``, ``WatchdogSec=``) without a dependency.

sd_notify is a datagram to the socket named in ``$NOTIFY_SOCKET`` (a leading ``@`` names an
abstract socket); outside systemd the variable is unset and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("dicom_node.systemd")


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError as exc:
        log.warning("systemd notification failed: %s", exc.strerror)
        return False


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd asked for (``$WATCHDOG_USEC``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings ``WATCHDOG=1`` while ``healthy()`` holds; stops pinging when it does not, so
    systemd restarts a node whose receiver or database hangs rather than one that died."""

    def __init__(self, healthy: Callable[[], bool], interval_s: float) -> None:
        self.healthy = healthy
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.healthy():
                notify("WATCHDOG=1")
            else:
                log.error("not healthy: withholding the systemd watchdog ping")
