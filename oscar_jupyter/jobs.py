"""Job handles for offloaded cells, and the one poller per kernel that keeps them current.

A `Job` learns its state from two OSCAR calls: the job listing of its service (status, times)
and the whole log of the job (the cell's tagged output, parsed by `LogParser`). OSCAR reports
`Succeeded` even
when the cell failed, so the runner's exit sentinel decides the final status.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .client import OscarClient, OscarError
from .diagnostics import safe_tail, sbatch_refusal, slurm_end
from .logs import LogParser, OutputLine
from .spec import DEFAULT_MEMORY, OffloadSpec, format_memory, format_time, parse_memory

WAITING = ("Suspended", "Pending")
TERMINAL = ("Succeeded", "Failed", "Cancelled")
# After OSCAR reports a terminal phase, the log may still lack the exit sentinel for a moment.
SENTINEL_GRACE_SECONDS = 10.0
# How long a waiting cell keeps polling through a dropped connection before it gives up.
MAX_OUTAGE_SECONDS = 600.0
# A job still waiting after this long says why (a start takes a few seconds when all is well).
EXPLAIN_WAIT_SECONDS = 20.0
# OSCAR's per-user Kueue quota for non-admin users, unless the admins set another
# (pkg/utils/kueue.go: KUEUE_DEFAULT_CPU, KUEUE_DEFAULT_MEMORY; no GPU).
KUEUE_DEFAULT_CPU = 2.0
KUEUE_DEFAULT_MEMORY_BYTES = 2 * 1024**3


def _private_dir(path: Path) -> Path:
    """Create `path` readable by its owner only: job logs hold the cells' output."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def default_log_dir() -> Path:
    base = os.environ.get("OSCAR_JUPYTER_LOG_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oscar-jupyter" / "logs"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _runner_start(started: dict, submitted_at: datetime) -> datetime:
    """When the runner started, by the cluster's clock (its start line), else now. A clock that
    disagrees with ours by more than a few seconds before the submission is not trusted."""
    now = datetime.now(timezone.utc)
    try:
        stamp = datetime.fromtimestamp(int(started.get("time") or ""), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return now
    return stamp if submitted_at - timedelta(seconds=5) <= stamp <= now else now


def is_transient(err: OscarError) -> bool:
    """Worth retrying a read: no answer at all, or a server/gateway that is briefly unwell."""
    return err.status_code is None or err.status_code in (500, 502, 503, 504)


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
        self._parser = LogParser()
        self._cancelled = False
        self._listed = False
        self.vanished = False  # listed once, then deleted on the cluster
        self.service_gone = False  # its runner service was deleted (and with it the job)
        self.lost = False  # the cluster stopped answering for longer than MAX_OUTAGE_SECONDS
        self.log_missing_since: float | None = None  # the log route answered 404 since then
        self._outage_since: float | None = None
        self._terminal_seen_at: float | None = None
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Job], None]] = []
        self.log_path = _private_dir(log_dir or default_log_dir()) / f"{name}.log"
        self._log_started = False

    def __repr__(self) -> str:
        return f"<Job {self.name} on {self.spec.node or 'any node'}: {self.status()}>"

    # -- state ---------------------------------------------------------------------------------

    @property
    def exit_code(self) -> int | None:
        return self._parser.exit_code

    @property
    def time_limit(self) -> int | None:
        return self.spec.time_limit_seconds()

    def status(self) -> str:
        """Suspended, Pending, Running, Succeeded, Failed or Cancelled, as the user sees it."""
        with self._lock:
            if self._cancelled:
                return "Cancelled"
            if self.slurm_end == "cancelled":
                return "Cancelled"
            if self.slurm_end == "walltime":
                return "Failed"
            if self.exit_code is not None:  # the runner's last line: the cell has ended
                return "Succeeded" if self.exit_code == 0 else "Failed"
            if self.service_gone or self.lost:
                return "Failed"
            if self.vanished:
                return "Cancelled"  # deleting a job is how OSCAR cancels it
            if self.oscar_status in ("Succeeded", "Failed"):
                if self._parser.started and not self._sentinel_overdue():
                    return "Running"  # finishing: the exit sentinel is still on its way
                return "Failed"  # the runner never started, or died without its sentinel
            if self.oscar_status in WAITING and self._parser.started:
                # The runner has started, whatever the listing says: through interLink the pod
                # phase lags the Slurm job by 5-15 s, and the log is read after the listing.
                return "Running"
            return self.oscar_status

    def is_done(self) -> bool:
        return self.status() in TERMINAL

    def waiting_reason(self) -> str:
        """Why a job still waits, once it has waited long enough to matter; "" otherwise."""
        status = self.status()
        waited = (datetime.now(timezone.utc) - self.submitted_at).total_seconds()
        if waited < EXPLAIN_WAIT_SECONDS:
            return ""
        if self._log_route_failing():
            return ("OSCAR lists the job as Running but its log route answers 404 (OSCAR turns "
                    "any Kubernetes error there into 404); the output will appear once it answers")
        if status not in WAITING:
            return ""
        if status == "Suspended":
            if getattr(getattr(self.client, "profile", None), "auth_kind", "") == "basic":
                return "OSCAR has not created the job's pod yet"
            return self._kueue_reason()
        if self.spec.gpus and self.spec.site.schedules_gpus:
            return (f"the pod asks for a GPU (enable_gpu): it is Pending until "
                    f"{self.spec.node or 'the virtual node'} has one free")
        return (f"{self.spec.node or 'the virtual node'} has taken the pod; it waits in the "
                "site's Slurm queue (squeue on the site says why) or for its image to be pulled")

    def _log_route_failing(self) -> bool:
        return (self.log_missing_since is not None and self.oscar_status == "Running"
                and not self._parser.started)

    def _kueue_reason(self) -> str:
        cpu = float(self.spec.cpus_per_task or 1)
        memory = parse_memory(self.spec.mem or DEFAULT_MEMORY)
        over = []
        if cpu > KUEUE_DEFAULT_CPU:
            over.append(f"{cpu:g} CPUs > {KUEUE_DEFAULT_CPU:g}")
        if memory > KUEUE_DEFAULT_MEMORY_BYTES:
            over.append(f"{format_memory(memory)} of memory > 2Gi")
        if over:
            return ("suspended by Kueue: this job alone asks more than OSCAR's default per-user "
                    f"quota ({', '.join(over)}), so it is never admitted unless the cluster's "
                    "admins gave you more; ask for at most 2 CPUs and 2Gi (--cpus-per-task, --mem)")
        return ("suspended by Kueue: OSCAR admits a user's jobs while their CPUs and memory fit "
                "a per-user quota (by default 2 CPUs and 2Gi in all); your other running jobs may "
                "be using it (%oscar_jobs --mine)")

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
        """Seconds the cell has run, from the runner's start line (0 before it starts)."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at or datetime.now(timezone.utc)
        return max(0.0, (end - self.started_at).total_seconds())

    def lines(self) -> list[OutputLine]:
        with self._lock:
            return list(self._parser.lines)

    def tail(self, n: int) -> list[OutputLine]:
        with self._lock:
            return list(self._parser.lines[-n:]) if n > 0 else []

    def logs(self) -> str:
        """The whole output of the cell so far (stdout and stderr in arrival order)."""
        if self.log_path.exists():
            return self.log_path.read_text(encoding="utf-8")
        return "".join(line.text + "\n" for line in self.lines())

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

    def refresh(self, listing: dict[str, dict] | None = None) -> list[OutputLine]:
        """One poll: status from `listing` (fetched if not given), then the log; the new lines."""
        if self.is_done():
            return []
        if listing is None:
            try:
                listing = self.client.list_jobs(self.service)
            except OscarError as err:
                if err.status_code != 404:
                    raise
                self._mark_service_gone()
                return []
        before = (self.status(), self.node, self.error)
        with self._lock:
            self.error = None
            self._outage_since = None
            self._apply_listing(listing.get(self.name))
            text = self._fetch_log()
            if text:
                self.raw_log = text
                if "CANCELLED AT" in text:  # cheap test first: logs can be megabytes
                    self.slurm_end = slurm_end(text)
            new = self._parser.feed(text) if text else []
            self._check_log_route()
            if self._parser.started and not self.node:
                self.node = self._parser.started.get("node") or None
            if self._parser.started and self.started_at is None:
                self.started_at = _runner_start(self._parser.started, self.submitted_at)
            if new:
                self._append_to_file(new)
            if self.is_done() and self.finished_at is None:
                self.finished_at = datetime.now(timezone.utc)
        if new or before != (self.status(), self.node, self.error):
            self._notify()
        return new

    def _record_outage(self, err: OscarError) -> None:
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

    def _apply_listing(self, entry: dict | None) -> None:
        if entry is None:
            if self._listed and self.exit_code is None:
                # Listed before, gone now: deleted on the cluster (by a user or the job TTL).
                self.vanished = True
            return  # else not listed yet: OSCAR may still be creating it
        self._listed = True
        self.oscar_status = entry.get("status") or self.oscar_status
        # Not OSCAR's start_time/creation_time: the virtual kubelet sets them when it accepts the
        # pod, so they include Slurm's queue time. The clock starts at the runner's start line.
        finished = _parse_time(entry.get("finish_time"))
        if finished:
            self.finished_at = finished
        if self.oscar_status in ("Succeeded", "Failed") and self._terminal_seen_at is None:
            self._terminal_seen_at = time.monotonic()

    def _fetch_log(self) -> str:
        if self.oscar_status == "Suspended":
            return ""
        try:
            text = self.client.job_logs(self.service, self.name)
        except OscarError as err:
            if err.status_code == 404:  # pod not there yet, or container still initialising
                self.log_missing_since = self.log_missing_since or time.monotonic()
                return ""
            raise
        self.log_missing_since = None
        return text

    def _check_log_route(self) -> None:
        """A job OSCAR calls Running whose log stays 404 is lost after MAX_OUTAGE_SECONDS, not
        waited for forever."""
        if (self._log_route_failing()
                and time.monotonic() - (self.log_missing_since or 0) > MAX_OUTAGE_SECONDS):
            self.lost = True
            self.error = (f"OSCAR lists it as Running, but its log route has answered 404 for "
                          f"{MAX_OUTAGE_SECONDS / 60:g} min")
            self.finished_at = self.finished_at or datetime.now(timezone.utc)

    def _append_to_file(self, lines: Iterable[OutputLine]) -> None:
        # The first write starts the file afresh: a job attached to again (another kernel, a
        # restart) re-reads its whole output and must not double a file left from before.
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self._log_started else os.O_TRUNC)
        self._log_started = True
        descriptor = os.open(self.log_path, flags, 0o600)
        with open(descriptor, "a", encoding="utf-8", errors="backslashreplace") as out:
            out.writelines(line.text + "\n" for line in lines)

    # -- control -------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job on the cluster (OSCAR deletes the pod; the Slurm job is scancelled).

        Returns False, and changes nothing, when the job had already ended."""
        if self.is_done():
            return False
        try:
            self.client.delete_job(self.service, self.name)
        except OscarError as err:
            if err.status_code != 404:
                raise
        with self._lock:
            self._cancelled = True
            self.finished_at = datetime.now(timezone.utc)
        self._notify()
        return True

    def wait(
        self,
        timeout: float | None = None,
        *,
        on_update: Callable[[Job, list[OutputLine]], None] | None = None,
        interval: PollInterval | None = None,
    ) -> int | None:
        """Poll in the calling thread until the job ends; returns the exit code.

        `on_update(job, new_lines)` is called after every poll with the lines that arrived since the
        previous call (maybe none), whoever fetched them. Raises
        `JobTimeout` when `timeout` seconds pass first.
        """
        interval = interval or PollInterval()
        deadline = None if timeout is None else time.monotonic() + timeout
        previous = None
        reported = len(self.lines())  # lines before the wait are the caller's to show
        while True:
            try:
                self.refresh()
            except OscarError as err:
                # A dropped connection or a busy server: keep polling (the whole log comes back
                # and de-duplication resumes it exactly); past MAX_OUTAGE_SECONDS the job is lost.
                if not is_transient(err):
                    raise
                self._record_outage(err)
            lines = self.lines()  # another thread (the poller) may have fetched some of them
            new, reported = lines[reported:], len(lines)
            state = (self.status(), self.node)
            changed = bool(new) or state != previous
            if on_update is not None:
                on_update(self, new)
            previous = state
            if self.is_done():
                return self.exit_code
            delay = interval.next(changed)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobTimeout(f"job {self.name} still {self.status()} after {timeout:g} s")
                delay = min(delay, remaining)
            time.sleep(delay)

    def result(self, timeout: float | None = None) -> int:
        """Wait, then raise `JobFailed` (with the remote traceback) unless the cell exited 0."""
        self.wait(timeout)
        self.raise_for_status()
        return 0

    def end_reason(self) -> str:
        """Why a job ended other than by its cell's exit; "" while it runs or when it exited."""
        if self._cancelled:
            return "cancelled from this kernel"
        if self.slurm_end == "cancelled":
            return "cancelled by Slurm (scancel on the cluster)"
        if self.slurm_end == "walltime":
            limit = self.time_limit
            return "walltime exceeded" + (f" (--time {format_time(limit)})" if limit else "")
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
            return "it was deleted on the cluster before it finished (cancelled from another view)"
        refusal = None if self._parser.started else sbatch_refusal(self.raw_log)
        if refusal:
            return f"sbatch refused it: {refusal}"
        if self.is_done():
            return "it ended without an exit status (killed, out of memory or rejected)"
        return ""

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
        raise JobFailed(
            self,
            f"the cell failed on {self.node or 'the cluster'} with exit code {self.exit_code} "
            f"(job {self.name})",
            self.remote_traceback(),
        )


class PollInterval:
    """Adaptive poll delay: fast while output flows and for a few quiet polls after (a job about
    to start, a pause between prints), then backing off while nothing changes."""

    def __init__(
        self, minimum: float = 0.5, maximum: float = 5.0, factor: float = 1.5, patience: int = 8
    ) -> None:
        self.minimum, self.maximum, self.factor, self.patience = minimum, maximum, factor, patience
        self.current = minimum
        self._quiet = 0

    def next(self, changed: bool) -> float:
        self._quiet = 0 if changed else self._quiet + 1
        if self._quiet <= self.patience:
            self.current = self.minimum
        else:
            self.current = min(self.maximum, self.current * self.factor)
        return self.current


def poll_jobs(jobs: Iterable[Job]) -> bool:
    """One tick for many jobs: a listing per service, then each job's log. True on change."""
    by_service: dict[tuple[int, str], list[Job]] = {}
    for job in jobs:
        if not job.is_done():
            by_service.setdefault((id(job.client), job.service), []).append(job)
    changed = False
    for group in by_service.values():
        try:
            listing = group[0].client.list_jobs(group[0].service)
        except OscarError as err:
            for job in group:
                if err.status_code == 404:
                    job._mark_service_gone()
                elif is_transient(err):
                    job._record_outage(err)
            changed = True
            continue
        for job in group:
            before = (job.status(), job.node)
            try:
                new = job.refresh(listing)
            except OscarError as err:
                job._record_outage(err)
                continue
            changed = changed or bool(new) or before != (job.status(), job.node)
    return changed


class Poller:
    """The kernel's one background poller: watched jobs are refreshed until they end."""

    def __init__(self, interval: PollInterval | None = None) -> None:
        self._interval = interval or PollInterval(minimum=1.0)
        self._jobs: list[Job] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, job: Job) -> None:
        with self._lock:
            if job not in self._jobs:
                self._jobs.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="oscar-poller", daemon=True)
                self._thread.start()
        self._wake.set()

    def watched(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def poll_once(self) -> bool:
        with self._lock:
            self._jobs = [job for job in self._jobs if not job.is_done()]
            jobs = list(self._jobs)
        return poll_jobs(jobs)

    def _run(self) -> None:
        while True:
            changed = self.poll_once()
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
            self._wake.wait(self._interval.next(changed))
            self._wake.clear()
