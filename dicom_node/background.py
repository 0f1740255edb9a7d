"""A background thread that repeats one step of a stage until asked to stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class RepeatingStep:
    """Run ``step`` again at once while it reports work done, else after ``poll_seconds``
    or as soon as :meth:`wake` is called (an earlier stage handed it work).

    An exception in a step is logged and the loop goes on after the poll interval: a stage
    never dies silently on one bad item.
    """

    def __init__(self, name: str, step: Callable[[], object], poll_seconds: float,
                 log: logging.Logger, on_thread_start: Callable[[], None] | None = None):
        self.name = name
        self.on_thread_start = on_thread_start  # run first in the loop's own thread
        self.step = step
        self.poll_seconds = poll_seconds
        self.log = log
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop after the current step."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Run the step now instead of at the end of the poll interval."""
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        if self.on_thread_start is not None:
            self.on_thread_start()
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:
                self.log.exception("%s: step failed; continuing", self.name)
                worked = False
            if not worked:
                self._wake.wait(self.poll_seconds)
            self._wake.clear()
