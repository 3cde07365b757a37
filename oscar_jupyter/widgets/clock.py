"""One clock thread that redraws the elapsed time of running jobs' views.

The poller only notifies a job's listeners when something changes (status, node, new lines), so a
quiet job's elapsed time would stand still. The clock does no network calls: it only asks views to
redraw from the state the poller already fetched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

TICK_SECONDS = 1.0


class Clock:
    """Calls every registered callback each `interval` seconds until it returns False."""

    def __init__(self, interval: float = TICK_SECONDS) -> None:
        self.interval = interval
        self._callbacks: list[Callable[[], bool]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, callback: Callable[[], bool]) -> None:
        with self._lock:
            if callback not in self._callbacks:
                self._callbacks.append(callback)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="oscar-widget-clock", daemon=True
                )
                self._thread.start()

    def remove(self, callback: Callable[[], bool]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def tick(self) -> None:
        """Call every callback once; drop those that return False or raise."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                keep = callback()
            except Exception:  # a broken view must not stop the others
                keep = False
            if not keep:
                self.remove(callback)

    def _run(self) -> None:
        stop = threading.Event()
        while True:
            stop.wait(self.interval)
            self.tick()
            with self._lock:
                if not self._callbacks:
                    self._thread = None
                    return


CLOCK = Clock()
