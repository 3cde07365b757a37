"""How often jobs are polled, and the one background poller per kernel.

OSCAR serves a job's log only whole, so a poll costs the whole log: each job is polled on its own
delay, fast while output flows, backing off while nothing changes, and never faster than what
its log fetches cost the server and the network (`FetchCost`). One tick lists each service at
most once for all the jobs that need a listing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .client import OscarClient, OscarError

# OSCAR serves a job's whole log on every poll, so polls of a big log are spaced to download at
# most this many bytes a second per job on average (the `max_log_bytes_per_second` setting).
MAX_LOG_BYTES_PER_SECOND = 1_000_000
# A poll waits at least this many times the last log fetch took: a slow server is not hammered.
FETCH_TIME_FACTOR = 4.0
# The cost of a fetch never spaces polls further apart than this.
MAX_COST_DELAY = 30.0
# A polling loop lists a started job once its log has been quiet this long, and then at most
# once per this: the listing is how a job that died silently or was deleted is noticed.
QUIET_LISTING_SECONDS = 2.0


class Pollable(Protocol):
    """What the poller polls: a job handle (`jobs.Job`), named here without importing it."""

    client: OscarClient
    service: str
    node: str | None
    list_requests: int

    def is_done(self) -> bool: ...

    def status(self) -> str: ...

    def refresh(
        self, listing: Any = None, *, lister: Any = None, quiet_for: float = 0.0
    ) -> list[Any]: ...

    def record_outage(self, err: OscarError) -> None: ...

    def next_delay(self, interval: PollInterval, changed: bool) -> float: ...


@dataclass(frozen=True)
class FetchCost:
    """What one log fetch of a job costs, and the shortest poll delay that justifies."""

    fetch_seconds: float  # the last fetch's response time
    log_size: int  # characters of the last log fetched
    max_log_bytes_per_second: float

    @property
    def by_time(self) -> float:
        return FETCH_TIME_FACTOR * self.fetch_seconds

    @property
    def by_size(self) -> float:
        return self.log_size / max(1.0, float(self.max_log_bytes_per_second))

    def delay(self) -> float:
        return min(MAX_COST_DELAY, max(self.by_time, self.by_size))

    def lag_note(self, poll_interval: float) -> str:
        """Why output shows up only every `poll_interval` seconds; "" when nothing costs."""
        if poll_interval < 1.0:
            return ""
        every = f"output every {poll_interval:.1f} s"
        if self.by_size >= poll_interval * 0.99 and self.by_size >= self.by_time:
            return (
                f"{every}: OSCAR sends the whole {_megabytes(self.log_size)} log on every "
                f"poll (limit {_megabytes(self.max_log_bytes_per_second)}/s per job)"
            )
        if self.by_time >= poll_interval * 0.99:
            return f"{every}: the cluster takes {self.fetch_seconds:.1f} s to serve the log"
        return ""


def _megabytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


class PollInterval:
    """Adaptive poll delay: fast while output flows and for a few quiet polls after (a job about
    to start, a pause between prints), then backing off while nothing changes, up to `maximum`.

    `floor` (a job's `cost_delay()`: what its log fetches cost the server and the network)
    lifts the delay, even above `maximum`: the byte budget holds however big the log grows."""

    def __init__(
        self, minimum: float = 0.1, maximum: float = 5.0, factor: float = 1.5, patience: int = 8
    ) -> None:
        self.minimum, self.maximum, self.factor, self.patience = minimum, maximum, factor, patience
        self.current = minimum
        self._quiet = 0

    def next(self, changed: bool, floor: float = 0.0) -> float:
        self._quiet = 0 if changed else self._quiet + 1
        if self._quiet <= self.patience:
            self.current = max(self.minimum, floor)
        else:
            self.current = max(floor, min(self.maximum, self.current * self.factor))
        return self.current


def poll_jobs(jobs: Iterable[Pollable]) -> bool:
    """One tick for many jobs: each job's log, and at most one listing per service for the jobs
    that need one (see `Job.refresh`). True on change."""
    return any(poll_each(jobs).values())


def poll_each(jobs: Iterable[Pollable]) -> dict[Pollable, bool]:
    """`poll_jobs`, telling for each job whether it changed."""
    listings: dict[tuple[int, str], dict[str, dict[str, Any]] | OscarError] = {}

    def lister_for(job: Pollable) -> Callable[[], dict[str, dict[str, Any]]]:
        key = (id(job.client), job.service)

        def lister() -> dict[str, dict[str, Any]]:
            if key not in listings:
                try:
                    listings[key] = job.client.list_jobs(job.service)
                except OscarError as err:
                    listings[key] = err
            else:
                job.list_requests -= 1  # shared with another job of the service this tick
            answer = listings[key]
            if isinstance(answer, OscarError):
                raise answer
            return answer

        return lister

    changed: dict[Pollable, bool] = {}
    for job in jobs:
        if job.is_done():
            continue
        before = (job.status(), job.node)
        try:
            new = job.refresh(lister=lister_for(job), quiet_for=QUIET_LISTING_SECONDS)
        except OscarError as err:
            job.record_outage(err)
            changed[job] = True
            continue
        changed[job] = bool(new) or before != (job.status(), job.node)
    return changed


class Poller:
    """The kernel's one background poller: watched jobs are refreshed until they end, each on
    its own schedule (its `PollInterval` and what its log fetches cost)."""

    def __init__(self, interval: PollInterval | None = None) -> None:
        self._template = interval or PollInterval()
        self._jobs: list[Pollable] = []
        self._intervals: dict[Pollable, PollInterval] = {}
        self._due: dict[Pollable, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, job: Pollable) -> None:
        with self._lock:
            if job not in self._jobs:
                self._jobs.append(job)
                template = self._template
                self._intervals[job] = PollInterval(
                    template.minimum, template.maximum, template.factor, template.patience
                )
            self._due[job] = 0.0  # poll it now
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="oscar-poller", daemon=True)
                self._thread.start()
        self._wake.set()

    def watched(self) -> list[Pollable]:
        with self._lock:
            return list(self._jobs)

    def poll_once(self, *, all_jobs: bool = True) -> bool:
        """Poll the watched jobs (`all_jobs`, else those due); True when one changed."""
        now = time.monotonic()
        with self._lock:
            self._jobs = [job for job in self._jobs if not job.is_done()]
            for gone in set(self._intervals) - set(self._jobs):
                self._intervals.pop(gone, None)
                self._due.pop(gone, None)
            jobs = [job for job in self._jobs if all_jobs or self._due.get(job, 0.0) <= now]
        changed = poll_each(jobs)
        now = time.monotonic()
        with self._lock:
            for job in jobs:
                interval = self._intervals.get(job)
                if interval is not None:
                    self._due[job] = now + job.next_delay(interval, changed.get(job, False))
        return any(changed.values())

    def _run(self) -> None:
        while True:
            self.poll_once(all_jobs=False)
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
                delay = max(0.0, min(self._due.values(), default=0.0) - time.monotonic())
            self._wake.wait(delay)
            self._wake.clear()
