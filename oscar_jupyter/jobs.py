"""Job handles for offloaded cells, and the one poller per kernel that keeps them current.

A `Job` learns its state from two OSCAR calls: the job listing of its service (status, times)
and the whole log of the job (the cell's tagged output, parsed by `LogParser`). OSCAR reports
`Succeeded` even
when the cell failed, so the runner's exit sentinel decides the final status.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import OscarClient, OscarError, is_no_pod_answer
from .diagnostics import (
    mentions_slurm_end,
    never_started_reason,
    out_of_memory_reason,
    safe_tail,
    sbatch_refusal,
    slurm_end,
)
from .files import default_log_dir
from .job_records import BY_KERNEL, BY_OTHER_VIEW
from .job_status import (
    TERMINAL,
    WAITING,
    JobFacts,
    JobState,
    cancelled_by,
    cancelled_phrase,
    status_of,
)
from .logs import LogParser, OutputLine
from .polling import (
    FETCH_TIME_FACTOR,
    MAX_LOG_BYTES_PER_SECOND,
    QUIET_LISTING_SECONDS,
    FetchCost,
    Poller,
    PollInterval,
    poll_each,
    poll_jobs,
)
from .runner import old_python_in, old_python_message
from .spec import OffloadSpec, format_time
from .timefmt import parse_iso
from .transfers import JobTransfers, ProgressFactory
from .usage import Request, Usage
from .values import ResultError, decode_result
from .waiting import EXPLAIN_WAIT_SECONDS, waiting_reason

if TYPE_CHECKING:
    from .follow import Follower

__all__ = [
    "EXPLAIN_WAIT_SECONDS",
    "FETCH_TIME_FACTOR",
    "TERMINAL",
    "WAITING",
    "CancelRefused",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobTimeout",
    "PollInterval",
    "Poller",
    "add_cancel_listener",
    "cancel_on_cluster",
    "poll_each",
    "poll_jobs",
]
# The exit code of a cell killed by SIGKILL (128 + 9): the kernel's OOM killer among others.
KILLED = 137
# After OSCAR reports a terminal phase, the log may still lack the exit sentinel for a moment.
SENTINEL_GRACE_SECONDS = 10.0
# How long a waiting cell keeps polling through a dropped connection before it gives up.
MAX_OUTAGE_SECONDS = 600.0


def _private_dir(path: Path) -> Path:
    """Create `path` readable by its owner only: job logs hold the cells' output."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _runner_start(started: dict[str, Any], submitted_at: datetime) -> datetime:
    """When the runner started, by the cluster's clock (its start line), else now. A clock that
    disagrees with ours by more than a few seconds before the submission is not trusted."""
    now = datetime.now(timezone.utc)
    try:
        stamp = datetime.fromtimestamp(int(started.get("time") or ""), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return now
    return stamp if submitted_at - timedelta(seconds=5) <= stamp <= now else now


def is_marker(line: OutputLine) -> bool:
    """The line the job's program prints before the cell's traceback; never shown as output."""
    return line.marker


def is_transient(err: OscarError) -> bool:
    """Worth retrying a read: no answer at all, or a server/gateway that is briefly unwell."""
    return err.status_code is None or err.status_code in (500, 502, 503, 504)


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda moved: None


class JobFailed(RuntimeError):
    """The offloaded code failed on the cluster; renders as the remote traceback in a notebook."""

    def __init__(
        self, job: Job, message: str, remote_traceback: str = "", title: str = "Remote traceback:"
    ) -> None:
        super().__init__(message)
        self.job = job
        self.remote_traceback = remote_traceback
        self.title = title

    def _render_traceback_(self) -> list[str]:
        head = f"JobFailed: {self.args[0]}"
        if not self.remote_traceback:
            return [head]
        return [head, self.title, *self.remote_traceback.rstrip("\n").splitlines()]


class JobCancelled(JobFailed):
    """The job was cancelled (here, from another view, or by Slurm) before the cell ended."""


class JobTimeout(TimeoutError):
    """`wait(timeout=...)` ran out before the job ended."""

    def _render_traceback_(self) -> list[str]:
        return [f"JobTimeout: {self}"]


class CancelRefused(RuntimeError):
    """The cluster did not cancel a job: not listed for the user (`status` 404), not the user's
    to cancel (403), or still there afterwards (409). Nothing was recorded as cancelled."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    def _render_traceback_(self) -> list[str]:
        return [f"CancelRefused: {self}"]


# Seconds a cancel waits for the job to leave the listing before it says the cancel failed.
CANCEL_CONFIRM_SECONDS = 10.0
_CANCEL_LISTENERS: list[Callable[[Job, str], None]] = []


def add_cancel_listener(callback: Callable[[Job, str], None]) -> None:
    """Call `callback(job, who)` after each confirmed cancel of a `Job` (the session records
    it for the job views)."""
    if callback not in _CANCEL_LISTENERS:
        _CANCEL_LISTENERS.append(callback)


_CANCEL_LOOKUP: list[Callable[[Job], str | None]] = []


def set_cancel_lookup(lookup: Callable[[Job], str | None]) -> None:
    """Where a job deleted from another view finds who cancelled it (the session reads this
    machine's job records: "the sidebar", another kernel)."""
    _CANCEL_LOOKUP[:] = [lookup]


def _recorded_canceller(job: Job) -> str | None:
    for lookup in _CANCEL_LOOKUP:
        try:
            return lookup(job)
        except Exception:  # a record is a convenience, never a requirement
            return None
    return None


def cancel_on_cluster(
    client: OscarClient, service: str, name: str, *, confirm_seconds: float | None = None
) -> None:
    """Delete job `name` of `service` on OSCAR and make sure it is gone.

    OSCAR v4.1.2 lists no job of a service the caller may not use (200, empty body) and
    answers 403 to its delete; but it deletes another user's job of a service both may use
    (public or restricted) with 204 (pkg/handlers/logs.go). So the job must be listed for the
    caller before (the listing filters by owner) and be gone (or ended) after. Raises
    `CancelRefused` otherwise."""
    try:
        before = client.list_jobs(service)
    except OscarError as err:
        if err.status_code == 404:
            return  # the service is gone, and its jobs with it
        if err.status_code == 401:
            raise _refused(name, service, err) from None
        raise
    if name not in before:
        raise CancelRefused(
            f"job {name} is not among the jobs OSCAR lists for you in service {service}: it "
            "belongs to another user, or has been deleted already; nothing was cancelled "
            "(your jobs: %oscar_jobs --mine)",
            404,
        )
    try:
        client.delete_job(service, name)
    except OscarError as err:
        if err.status_code == 404:
            return
        if err.status_code in (401, 403):
            raise _refused(name, service, err) from None
        raise
    wait = CANCEL_CONFIRM_SECONDS if confirm_seconds is None else confirm_seconds
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            entry = client.list_jobs(service).get(name)
        except OscarError as err:
            if err.status_code == 404:
                return
            raise
        if entry is None or entry.get("status") in ("Succeeded", "Failed"):
            return
        if time.monotonic() >= deadline:
            raise CancelRefused(
                f"OSCAR accepted the cancel of job {name} but still lists it as "
                f"{entry.get('status') or 'not ended'} after {wait:g} s; try again, or "
                "ask the cluster's admins",
                409,
            )
        time.sleep(delay)
        delay = min(1.0, delay * 2)


def _refused(name: str, service: str, err: OscarError) -> CancelRefused:
    return CancelRefused(
        f"OSCAR refused to cancel job {name} (HTTP {err.status_code}: {err.message or 'denied'}):"
        f" service {service} is not yours to change; nothing was cancelled",
        403,
    )


class Job:
    """A cell running (or run) as a job of a runner service.

    Thread safety: `refresh` may run in the poller thread while the main thread reads; every state
    change happens under `_lock`, and listeners are called outside it.
    """

    def __init__(
        self,
        client: OscarClient,
        service: str,
        name: str,
        spec: OffloadSpec,
        *,
        log_dir: Path | None = None,
        submitted_at: datetime | None = None,
    ) -> None:
        self.client = client
        self.service = service
        self.name = name
        self.spec = spec
        self.submitted_at = submitted_at or datetime.now(timezone.utc)
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.node: str | None = None
        self.oscar_status = "Suspended"
        self.error: str | None = None
        self.raw_log = ""  # the last whole log OSCAR served (Slurm preamble and all)
        self.slurm_end: str | None = None  # "cancelled" or "walltime" when Slurm ended the job
        self._parser = LogParser(all_ranks=spec.shows_all_ranks())
        self.outputs: list[str] = []  # the --out names the cell sends back (see `values`)
        # its objects in the user's bucket (transfers.py), when it has any
        self.transfers: JobTransfers | None = None
        self.transfer_notes: list[str] = []
        self._result_blobs: dict[int, bytes] = {}  # --out values fetched from it, by rank
        self._cancelled = False
        self._cancelling = False  # this kernel's cancel is deleting it: its absence is ours
        self._listed = False
        self.vanished = False  # listed once, then deleted on the cluster
        self.sent_here = False  # this process submitted it (so it existed on the cluster)
        self.service_gone = False  # its runner service was deleted (and with it the job)
        self.lost = False  # the cluster stopped answering for longer than MAX_OUTAGE_SECONDS
        self.log_missing_since: float | None = None  # the log route answered 404 since then
        self._outage_since: float | None = None
        self._terminal_seen_at: float | None = None
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Job], None]] = []
        self.log_path = _private_dir(log_dir or default_log_dir()) / f"{name}.log"
        self._log_started = False
        # What a log fetch costs, which spaces the polls (see `cost_delay`).
        self.max_log_bytes_per_second = MAX_LOG_BYTES_PER_SECOND
        # The fastest this job is polled whatever happens (the session sets a floor where each
        # request costs the cluster an identity-provider call: OIDC, OSCAR.md 13 B12).
        self.min_poll_interval = 0.0
        self.fetch_seconds = 0.0  # the last log fetch's response time
        self.log_size = 0  # characters of the last log fetched
        self.poll_interval = 0.0  # the delay before the next poll, as the last poll chose it
        self.log_requests = 0  # log fetches so far, and the characters they brought
        self.log_chars_fetched = 0
        self.list_requests = 0  # listings made by this job's polls (a shared one counts once)
        self._follower: Follower | None = None
        self._fed_by: object = None  # who fed the parser last: None (polls) or the follower
        self._grew_at = time.monotonic()  # when the log last brought something new
        self._quiet_listed_at = 0.0  # when a quiet log last got the job listed

    def __repr__(self) -> str:
        return f"<Job {self.name} on {self.spec.node or 'any node'}: {self.status()}>"

    # -- state ---------------------------------------------------------------------------------

    @property
    def exit_code(self) -> int | None:
        return self._parser.exit_code

    @property
    def usage(self) -> Usage | None:
        """What the job used, as the runner measured it on the cluster (once it has ended)."""
        return Usage.from_record(self._parser.usage)

    @property
    def request(self) -> Request:
        return Request.of(self.spec)

    @property
    def time_limit(self) -> int | None:
        return self.spec.time_limit_seconds()

    def facts(self) -> JobFacts:
        """What is known of the job now (its status follows from it: `job_status.status_of`)."""
        with self._lock:
            return JobFacts(
                cancelled_here=self._cancelled,
                slurm_end=self.slurm_end,
                exit_code=self.exit_code,
                runner_started=bool(self._parser.started),
                oscar_status=self.oscar_status,
                vanished=self.vanished,
                recorded_by=_recorded_canceller(self) if self.vanished else None,
                service_gone=self.service_gone,
                lost=self.lost,
                sentinel_overdue=self._sentinel_overdue(),
            )

    def status(self) -> str:
        """Suspended, Pending, Running, Succeeded, Failed or Cancelled, as the user sees it."""
        return status_of(self.facts())

    def state(self) -> JobState:
        """The job as every view shows it."""
        facts = self.facts()
        status = status_of(facts)
        return JobState(
            status,
            self.exit_code,
            self.node,
            self.started_at,
            self.finished_at,
            cancelled_by(facts) if status == "Cancelled" else None,
            self.usage,
        )

    def is_done(self) -> bool:
        return self.status() in TERMINAL

    def waiting_reason(self) -> str:
        """Why a job still waits, once it has waited long enough to matter; "" otherwise."""
        auth = getattr(getattr(self.client, "profile", None), "auth_kind", "")
        return waiting_reason(
            self.status(),
            self.waited(),
            self.spec,
            log_route_failing=self._log_route_failing(),
            basic_auth=auth == "basic",
        )

    def _log_route_failing(self) -> bool:
        return (
            self.log_missing_since is not None
            and self.oscar_status == "Running"
            and not self._parser.started
        )

    def _sentinel_overdue(self) -> bool:
        return (
            self._terminal_seen_at is not None
            and time.monotonic() - self._terminal_seen_at > SENTINEL_GRACE_SECONDS
        )

    def waited(self) -> float:
        """Seconds since the submission."""
        return max(0.0, (datetime.now(timezone.utc) - self.submitted_at).total_seconds())

    def queued(self) -> float | None:
        """Seconds between the submission and the runner's start (None before it starts)."""
        if self.started_at is None:
            return None
        return max(0.0, (self.started_at - self.submitted_at).total_seconds())

    def elapsed(self) -> float:
        """Seconds the cell has run, from the runner's start line (0 before it starts); once it
        has ended, the wall time the runner measured, when it said (the same in every view)."""
        usage = self.usage
        if usage is not None and self.is_done():
            return usage.wall_seconds
        if self.started_at is None:
            return 0.0
        end = self.finished_at or datetime.now(timezone.utc)
        return max(0.0, (end - self.started_at).total_seconds())

    def lines(self) -> list[OutputLine]:
        with self._lock:
            return list(self._parser.lines)

    def lines_since(self, count: int) -> list[OutputLine]:
        """The lines after the first `count`: what a poller that has read `count` takes, at a
        cost that follows the new lines (not the whole output, as `lines()` does)."""
        with self._lock:
            return self._parser.lines[count:]

    def tail(self, n: int) -> list[OutputLine]:
        """The last `n` lines the cell printed (the runner's traceback marker left out)."""
        with self._lock:
            shown = [line for line in self._parser.lines[-(n + 1) :] if not is_marker(line)]
        return shown[-n:] if n > 0 else []

    def logs(self) -> str:
        """The whole output of the cell so far (stdout and stderr in arrival order)."""
        if self.log_path.exists():
            return self.log_path.read_text(encoding="utf-8")
        return "".join(line.text + "\n" for line in self.lines() if not is_marker(line))

    def rank_lines(self, rank: int) -> list[OutputLine]:
        """Every line of one rank of a job of several (`%oscar_logs JOB --rank N`)."""
        with self._lock:
            return self._parser.rank_output(rank)

    @property
    def ranks(self) -> int:
        """How many ranks the job's runner started (its start line says; 1 until then)."""
        return self._parser.ranks

    def ranks_summary(self) -> str:
        """How the ranks of a job of several ended ('rank 1 of 2 failed (exit 1); rank 0
        ended'); "" for one rank."""
        with self._lock:
            return self._parser.ranks_summary()

    def remote_traceback(self) -> str:
        return self._parser.traceback()

    # -- listeners -----------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[Job], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[Job], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback(self)
            except Exception:  # a broken view must not stop the poller
                pass

    # -- polling -------------------------------------------------------------------------------

    def refresh(
        self,
        listing: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        lister: Callable[[], dict[str, dict[str, Any]]] | None = None,
        quiet_for: float = 0.0,
    ) -> list[OutputLine]:
        """One poll; the new lines. A job whose runner has started reads its state from its own
        log: the listing (`listing`, else `lister()`, else the client's) is asked for only while
        the runner has not started, or once the log has brought nothing new for `quiet_for`
        seconds (then at most once per `quiet_for`): the job may have been deleted, or have died
        without its exit line."""
        if self.is_done():
            return []
        lister = lister or (lambda: self.client.list_jobs(self.service))
        if listing is None and not self._parser.started:
            listing = self._list(lister)
            if listing is None:
                return []
        before = self._seen()
        with self._lock:
            self.error = None
            self._outage_since = None
            if listing is not None:
                self._apply_listing(listing.get(self.name))
            following = self.following
            size = self.log_size
            text = "" if following else self._fetch_log()
            new = self._absorb(text) if text else []
            grew = bool(text) and (len(text) != size or bool(new))
            now = time.monotonic()
            if following and self._follower is not None:  # the stream carries the log
                self._grew_at = max(self._grew_at, self._follower.fed_at)
            elif grew:
                self._grew_at = now
            quiet = (
                not grew
                and now - self._grew_at >= quiet_for
                and now - self._quiet_listed_at >= quiet_for
            )
        if listing is None and quiet:
            self._quiet_listed_at = now
            listing = self._list(lister)
            if listing is None:
                return new
            with self._lock:
                self._apply_listing(listing.get(self.name))
        self._settle()
        if self.is_done():  # the poll that saw the end: a --no-wait job is polled no more
            count = len(self.lines())
            if self.reread_after_follow():
                new = new + self.lines_since(count)
        if new or before != self._seen():
            self._notify()
        return new

    def _seen(self) -> tuple[Any, ...]:
        """What a view shows besides complete lines: a change of it notifies the listeners
        (a progress bar's partial line redraws the live views too)."""
        with self._lock:
            return (self.status(), self.node, self.error, tuple(self._parser.partial.items()))

    def _list(
        self, lister: Callable[[], dict[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]] | None:
        """The service's listing; None when the service is gone (the job is marked)."""
        self.list_requests += 1
        try:
            return lister()
        except OscarError as err:
            if err.status_code != 404:
                raise
            self._mark_service_gone()
            return None

    def _absorb(self, text: str, *, more: bool = False) -> list[OutputLine]:
        """Take a log text in: the whole log (or, `more`, what follows the text so far)."""
        with self._lock:
            if not more:
                self._fed_by = None
            if more:
                self.raw_log += text
                new = self._parser.feed_more(text)
                self.log_size += len(text)
            else:
                grown = len(text) - self.log_size if text.startswith(self.raw_log[:64]) else 0
                self.raw_log = text
                new = self._parser.feed(text)
                self.log_size = len(text)
                # what this poll brought (the whole log when it did not just grow)
                text = text[-grown:] if 0 < grown < len(text) else text
            # Slurm's banner is at the end; only the new text is looked at: logs can be
            # megabytes, and a long job's (a session's) is fetched again on every poll.
            tail = self.raw_log[-len(text) - 200 :]
            if self.slurm_end is None and mentions_slurm_end(tail):
                self.slurm_end = slurm_end(self.raw_log)
            if new:
                self._append_to_file(new)
            return new

    def _settle(self) -> None:
        """Derived state after new log text or a listing."""
        with self._lock:
            self._check_log_route()
            if self._parser.started and not self.node:
                self.node = self._parser.started.get("node") or None
            if self._parser.started and self.started_at is None:
                self.started_at = _runner_start(self._parser.started, self.submitted_at)
            if self.is_done() and self.finished_at is None:
                self.finished_at = datetime.now(timezone.utc)

    # -- what polling costs --------------------------------------------------------------------

    def fetch_cost(self) -> FetchCost:
        return FetchCost(self.fetch_seconds, self.log_size, self.max_log_bytes_per_second)

    def cost_delay(self) -> float:
        """The shortest poll delay this job's log fetches justify: a few times the server's
        response time, and the log's size over the byte budget."""
        return self.fetch_cost().delay()

    def next_delay(self, interval: PollInterval, changed: bool) -> float:
        """The delay before this job's next poll under `interval`, recorded in `poll_interval`."""
        floor = max(self.cost_delay(), self.min_poll_interval)
        self.poll_interval = interval.next(changed, floor=floor)
        return self.poll_interval

    @property
    def lag_note(self) -> str:
        """Why output shows up only every few seconds, when it does; "" otherwise."""
        if self.following or self.is_done():
            return ""
        return self.fetch_cost().lag_note(self.poll_interval)

    # -- following the log through the Kubernetes API ------------------------------------------

    @property
    def following(self) -> bool:
        """A live stream of the pod's log feeds this job (polls then skip the log)."""
        follower = self._follower
        return follower is not None and follower.streaming

    def follow_with_kubernetes(self, kubeconfig: str | None = None) -> bool:
        """Stream the job pod's log through the cluster's Kubernetes API (`kubeconfig`, else
        the profile's) instead of polling OSCAR for it; polling takes over on any error.

        Returns False when no Kubernetes client or kubeconfig is at hand."""
        from .follow import start_follower

        with self._lock:
            if self._follower is not None and self._follower.alive:
                return True
            self._follower = start_follower(self, kubeconfig)
            return self._follower is not None

    def feed_stream(self, text: str, follower: Follower) -> None:
        """New text of `follower`'s stream (called by its thread). The parser continues from the
        stream's previous text, or, when a poll fed it last, takes the stream's whole text."""
        before = self._seen()
        with self._lock:
            if self._fed_by is follower:
                new = self._absorb(text, more=True)
            else:
                new = self._absorb(follower.text())
                self._fed_by = follower
        self._settle()
        if new or before != self._seen():
            self._notify()

    def record_outage(self, err: OscarError) -> None:
        """A poll failed for a reason that may pass; past MAX_OUTAGE_SECONDS the job is lost."""
        with self._lock:
            self.error = str(err)
            now = time.monotonic()
            self._outage_since = self._outage_since or now
            if now - self._outage_since > MAX_OUTAGE_SECONDS:
                self.lost = True
                self.finished_at = self.finished_at or datetime.now(timezone.utc)
        self._notify()

    def _mark_service_gone(self) -> None:
        with self._lock:
            if self.exit_code is None:
                self.service_gone = True
                self.finished_at = self.finished_at or datetime.now(timezone.utc)
        self._notify()

    def _apply_listing(self, entry: Mapping[str, Any] | None) -> None:
        if entry is None:
            if self._listed and self.exit_code is None and not self._cancelling:
                # Listed before, gone now: deleted on the cluster (by a user or the job TTL).
                self.vanished = True
            return  # else not listed yet: OSCAR may still be creating it
        self._listed = True
        self.oscar_status = entry.get("status") or self.oscar_status
        # Not OSCAR's start_time/creation_time: the virtual kubelet sets them when it accepts the
        # pod, so they include Slurm's queue time. The clock starts at the runner's start line.
        finished = parse_iso(entry.get("finish_time"))
        if finished:
            self.finished_at = finished
        if self.oscar_status in ("Succeeded", "Failed") and self._terminal_seen_at is None:
            self._terminal_seen_at = time.monotonic()

    def _fetch_log(self) -> str:
        if self.oscar_status == "Suspended":
            return ""
        started = time.monotonic()
        try:
            text = self.client.job_logs(self.service, self.name)
        except OscarError as err:
            # 404: pod not there yet, or container still initialising; an empty 500: no pod
            # (yet, or any more: B7), which the listing then says
            if err.status_code == 404 or is_no_pod_answer(err):
                self.log_missing_since = self.log_missing_since or time.monotonic()
                return ""
            raise
        finally:
            self.fetch_seconds = time.monotonic() - started
            self.log_requests += 1
        self.log_missing_since = None
        self.log_chars_fetched += len(text)
        return text

    def _check_log_route(self) -> None:
        """A job OSCAR calls Running whose log stays 404 is lost after MAX_OUTAGE_SECONDS, not
        waited for forever."""
        if (
            self._log_route_failing()
            and time.monotonic() - (self.log_missing_since or 0) > MAX_OUTAGE_SECONDS
        ):
            self.lost = True
            self.error = (
                f"OSCAR lists it as Running, but its log route has answered 404 for "
                f"{MAX_OUTAGE_SECONDS / 60:g} min"
            )
            self.finished_at = self.finished_at or datetime.now(timezone.utc)

    def _append_to_file(self, lines: Iterable[OutputLine]) -> None:
        # The first write starts the file afresh: a job attached to again (another kernel, a
        # restart) re-reads its whole output and must not double a file left from before.
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self._log_started else os.O_TRUNC)
        self._log_started = True
        descriptor = os.open(self.log_path, flags, 0o600)
        with open(descriptor, "a", encoding="utf-8", errors="backslashreplace") as out:
            out.writelines(line.text + "\n" for line in lines if not is_marker(line))

    # -- control -------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job on the cluster (OSCAR deletes the pod; the Slurm job is scancelled),
        confirmed by the job's absence from the listing afterwards (`cancel_on_cluster`).

        Returns False, and changes nothing, when the job had already ended. Raises
        `CancelRefused` when the cluster did not cancel it (then nothing is recorded)."""
        if self.is_done():
            return False
        with self._lock:
            self._cancelling = True
        try:
            cancel_on_cluster(self.client, self.service, self.name)
        except CancelRefused as refused:
            with self._lock:
                self._cancelling = False
            if refused.status != 404 or not (self._listed or self.sent_here):
                raise
            with self._lock:  # listed before, gone now: deleted from another view
                self.vanished = True
                self.finished_at = self.finished_at or datetime.now(timezone.utc)
            self._notify()
            return False
        except BaseException:
            with self._lock:
                self._cancelling = False
            raise
        with self._lock:
            self._cancelled = True
            self._cancelling = False
            self.finished_at = datetime.now(timezone.utc)
        for listener in list(_CANCEL_LISTENERS):
            listener(self, BY_KERNEL)
        self._notify()
        return True

    def wait(
        self,
        timeout: float | None = None,
        *,
        on_update: Callable[[Job, list[OutputLine]], None] | None = None,
        interval: PollInterval | None = None,
        since: int | None = None,
    ) -> int | None:
        """Poll in the calling thread until the job ends; returns the exit code.

        `on_update(job, new_lines)` is called after every poll with the lines that arrived since the
        previous call (maybe none), whoever fetched them; the first call starts after line `since`
        (default: the lines the job already has, which are the caller's to show; 0 for a job just
        submitted, whose follower may have fed lines before the wait began). Raises
        `JobTimeout` when `timeout` seconds pass first.
        """
        interval = interval or PollInterval()
        deadline = None if timeout is None else time.monotonic() + timeout
        wake = threading.Event()  # set by new text from a followed stream

        def on_change(_job: Job) -> None:
            wake.set()

        self.add_listener(on_change)
        try:
            return self._wait(deadline, timeout, on_update, interval, wake, since)
        finally:
            self.remove_listener(on_change)

    def _wait(
        self,
        deadline: float | None,
        timeout: float | None,
        on_update: Callable[[Job, list[OutputLine]], None] | None,
        interval: PollInterval,
        wake: threading.Event,
        since: int | None,
    ) -> int | None:
        previous = None
        reported = len(self.lines()) if since is None else since
        while True:
            try:
                self.refresh(quiet_for=QUIET_LISTING_SECONDS)
            except OscarError as err:
                # A dropped connection or a busy server: keep polling (the whole log comes back
                # and de-duplication resumes it exactly); past MAX_OUTAGE_SECONDS the job is lost.
                if not is_transient(err):
                    raise
                self.record_outage(err)
            # Done is read before the lines: a follower thread may feed the last lines (and the
            # exit line with them) at any moment, and lines read after "done" are all there is.
            done = self.is_done()
            lines = self.lines()  # another thread (the poller) may have fetched some of them
            new, reported = lines[reported:], len(lines)
            state = (self.status(), self.node)
            changed = bool(new) or state != previous
            if on_update is not None:
                on_update(self, new)
            previous = state
            if done:
                if self.reread_after_follow() and on_update is not None:
                    lines = self.lines()
                    new, reported = lines[reported:], len(lines)
                    if new:
                        on_update(self, new)
                self.await_kill_reason()
                return self.exit_code
            delay = self.next_delay(interval, changed)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobTimeout(f"job {self.name} still {self.status()} after {timeout:g} s")
                delay = min(delay, remaining)
            if self.following:
                # Lines come through the stream: show them as they come; a poll then costs no
                # request once the runner has started (see `refresh`).
                wake.wait(delay)
            else:
                time.sleep(delay)
            wake.clear()

    _reread = False  # the whole log was read once the followed job had ended

    def reread_after_follow(self) -> bool:
        """Once a job whose log came through a followed stream has ended: read its whole log
        from OSCAR once. The plugin's follow re-reads only run-<container>.out from where its
        first read ended (B6), so whatever Slurm wrote to job.out afterwards (its time-limit or
        out-of-memory line) comes only this way; and a job that ended between two of the
        follow's reads may have brought nothing through it at all. True when it was read (by
        this call: the first one once the job has ended)."""
        with self._lock:
            if self._reread or (self._follower is None and self._fed_by is None):
                return False
            self._reread = True
        try:
            text = self._fetch_log()
        except OscarError:
            return False  # what the stream brought stays
        if text:
            self._absorb(text)
            self._settle()
        return bool(text)

    def await_kill_reason(self) -> None:
        """A cell killed by SIGKILL (exit 137): Slurm writes why (its out-of-memory line) only
        once the job has ended, after the runner's exit line. Read the log again until that
        line, or OSCAR's end of the job, arrives (at most SENTINEL_GRACE_SECONDS)."""
        if self.exit_code != KILLED or self.slurm_end is not None:
            return
        deadline = time.monotonic() + SENTINEL_GRACE_SECONDS
        while time.monotonic() < deadline:
            try:
                entry = self.client.list_jobs(self.service).get(self.name) or {}
                text = self.client.job_logs(self.service, self.name)
            except OscarError:
                return  # the reason stays unknown; the exit code still says killed
            self._absorb(text)
            if self.slurm_end is not None or entry.get("status") in ("Succeeded", "Failed"):
                return
            time.sleep(0.5)

    def result(
        self, timeout: float | None = None, *, progress: ProgressFactory | None = None
    ) -> dict[str, Any] | None:
        """Wait, bring back the ``--download`` files (also when the cell failed), then raise
        `JobFailed` (with the remote traceback) unless the cell exited 0; the ``outputs``
        values by name (None when the job was sent without outputs)."""
        self.wait(timeout)
        for note in self.collect_transfers(progress):
            print(note, file=sys.stderr)
        try:
            self.raise_for_status()
            return self.values(progress=progress) if self.outputs else None
        finally:
            self.discard_objects()

    def collect_transfers(self, progress: ProgressFactory | None = None) -> list[str]:
        """Once the job has ended: fetch its ``--download`` files; notes on what is missing."""
        if self.transfers is None or not self.is_done() or self.transfers.collected:
            return []
        self.transfer_notes = self.transfers.collect(progress or _no_progress)
        return self.transfer_notes

    def discard_objects(self) -> None:
        """Remove the job's objects from the user's bucket once it has ended (its values and
        downloads read, or never to be)."""
        if self.transfers is not None and self.is_done():
            transfers, self.transfers = self.transfers, None
            transfers.discard()

    def values(self, *, progress: ProgressFactory | None = None) -> dict[str, Any]:
        """The ``outputs`` values the cell sent back, checked (`values.ResultError` when they
        did not arrive intact); call once the job has succeeded. With --out-ranks all, each
        name is bound to the list of every rank's value, rank 0 first."""
        if not self.outputs:
            return {}
        if not self.spec.values_from_all_ranks():
            return self._rank_values(None, progress)
        each = [self._rank_values(rank, progress) for rank in range(self.spec.task_count())]
        return {name: [values[name] for values in each] for name in self.outputs}

    def _rank_values(self, rank: int | None, progress: ProgressFactory | None) -> dict[str, Any]:
        """The values one rank sent; `rank` None: rank 0's, when no other rank sends any."""
        sender = rank or 0
        with self._lock:
            record = self._parser.results.get(sender)
            exit_code = self._parser.exit_code
        transfers, read = self.transfers, self._result_blobs

        def fetch_object() -> bytes:
            if sender not in read:
                if transfers is None:
                    raise ResultError(
                        f"the values {', '.join(self.outputs)} were in the object storage, "
                        "and are gone (read once, then removed with the job's objects)"
                    )
                read[sender] = transfers.result_blob(progress or _no_progress, sender)
            return read[sender]

        return decode_result(
            record, self.outputs, exit_code=exit_code, fetch_object=fetch_object, rank=rank
        )

    def end_reason(self) -> str:
        """Why a job ended other than by its cell's exit; "" while it runs or when it exited."""
        by = cancelled_by(self.facts())
        if by is not None and by != BY_OTHER_VIEW:
            return f"cancelled {cancelled_phrase(by)}"
        if self.slurm_end == "walltime":
            limit = self.time_limit
            return "walltime exceeded" + (f" (--time {format_time(limit)})" if limit else "")
        if self.slurm_end == "oom" and self.exit_code != 0:
            return out_of_memory_reason(self.spec.mem)
        if self.exit_code is not None:
            return ""
        if self.service_gone:
            return f"its runner service {self.service} was deleted"
        if self.lost and self._log_route_failing():
            return f"{self.error}; the job may still run there: %oscar_attach {self.name} later"
        if self.lost:
            return (
                f"the cluster has not answered for {MAX_OUTAGE_SECONDS / 60:g} min "
                f"(last error: {self.error}); the job may still run there: "
                f"%oscar_attach {self.name} once it answers again"
            )
        if self.vanished:
            return f"cancelled {cancelled_phrase(cancelled_by(self.facts()))}"
        refusal = None if self._parser.started else sbatch_refusal(self.raw_log)
        if refusal:
            return f"sbatch refused it: {refusal}"
        if self.is_done() and not self._parser.started:
            return never_started_reason(self.raw_log, self.pod_message())
        if self.is_done():
            return "it ended without an exit status (killed, out of memory or rejected)"
        return ""

    _pod_message: str | None = None

    def pod_message(self) -> str | None:
        """The job pod's status message, where the profile names the cluster's own kubeconfig
        (OSCAR's users have no Kubernetes access: B5); None otherwise. Read once."""
        if self._pod_message is None:
            from .follow import kubeconfig_at_hand, pod_status_message

            path = kubeconfig_at_hand(getattr(self.client, "profile", None))
            self._pod_message = (pod_status_message(self.name, path) if path else None) or ""
        return self._pod_message or None

    def raise_for_status(self) -> None:
        status = self.status()
        if status == "Succeeded":
            return
        reason = self.end_reason()
        # Only Slurm's and the runtime's lines: the cell's output is already in the cell.
        tail = safe_tail(self.raw_log, list(self.spec.env.values())) if reason else ""
        if status == "Cancelled":
            raise JobCancelled(self, f"job {self.name} was cancelled: {reason}", tail, "Slurm:")
        if reason:
            raise JobFailed(self, f"job {self.name} failed: {reason}", tail, "The end of its log:")
        error = self.remote_traceback().strip()
        version = old_python_in(error)
        if version and error == old_python_message(version):  # the runner's version gate
            raise JobFailed(self, f"{error} (job {self.name})")
        raise JobFailed(
            self,
            f"the cell failed on {self.node or 'the cluster'} with exit code {self.exit_code} "
            f"(job {self.name})",
            self.remote_traceback(),
        )
