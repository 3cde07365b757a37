"""One job status and one row per job, shared by every view: the cell, `%oscar_jobs`, `--watch`
and the sidebar's JSON.

Pure functions and values only: a status from what is known of a job (`JobFacts`), who cancelled
it and how that is said, the state kept for a job (`JobState`), and the row a view shows
(`JobRow`) from OSCAR's listing entry and this machine's record of the job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .job_records import (  # who cancelled a job: the value every view keeps
    BY_KERNEL,
    BY_OTHER_VIEW,
    BY_SLURM,
    JobLabel,
    JobRecord,
)
from .timefmt import iso_utc, parse_iso
from .usage import Request, Usage, core_hours, total_core_hours, usage_json

WAITING = ("Suspended", "Pending")
TERMINAL = ("Succeeded", "Failed", "Cancelled")
STATUSES = (*WAITING, "Running", "Succeeded", "Failed", "Cancelled")


def cancelled_phrase(by: str | None) -> str:
    """'from this kernel', 'by the sidebar', 'by Slurm (scancel on the cluster)'; "" unknown."""
    if not by:
        return ""
    return f"from {by}" if by in (BY_KERNEL, BY_OTHER_VIEW) else f"by {by}"


def status_text(status: str, exit_code: int | None, by: str | None) -> str:
    """'Failed (exit 1)', 'Cancelled by the sidebar', 'Running'."""
    if status == "Cancelled" and by:
        return f"Cancelled {cancelled_phrase(by)}"
    if status in ("Succeeded", "Failed") and exit_code is not None and exit_code != 0:
        return f"{status} (exit {exit_code})"
    return status


def placement_text(nodes: int | None, ranks: int) -> str:
    """Where a job runs beyond its node's name: '2 nodes (8 ranks)', '1 node (4 ranks)', or
    '4 ranks' when Slurm chooses the nodes; "" for one task on one node."""
    rank_words = f"{ranks} rank{'' if ranks == 1 else 's'}"
    if nodes is None:
        return rank_words if ranks > 1 else ""
    if nodes == 1 and ranks <= 1:
        return ""
    return f"{nodes} node{'' if nodes == 1 else 's'} ({rank_words})"


@dataclass(frozen=True)
class JobFacts:
    """What is known of a job, from its log, OSCAR's listing and this kernel."""

    cancelled_here: bool = False  # this kernel cancelled it (and the cluster confirmed it)
    slurm_end: str | None = None  # "cancelled" or "walltime" when Slurm's banner says so
    exit_code: int | None = None  # the runner's exit line
    runner_started: bool = False  # the runner's start line
    oscar_status: str = "Suspended"  # OSCAR's listing
    vanished: bool = False  # listed once, then no more: deleted on the cluster
    service_gone: bool = False  # its runner service was deleted (and the job with it)
    lost: bool = False  # the cluster stopped answering for too long
    sentinel_overdue: bool = False  # OSCAR says it ended long enough ago: no exit line will come
    recorded_by: str | None = None  # who cancelled it, as this machine's record says


def status_of(facts: JobFacts) -> str:
    """Suspended, Pending, Running, Succeeded, Failed or Cancelled, as the user sees it.

    OSCAR reports Succeeded even when the cell failed, so the runner's exit line decides; the
    runner's start line means Running whatever the listing says (through interLink the pod
    phase lags the Slurm job by 5-15 s)."""
    if facts.cancelled_here or facts.slurm_end == "cancelled":
        return "Cancelled"
    if facts.slurm_end == "walltime":
        return "Failed"
    if facts.slurm_end == "oom" and facts.exit_code != 0:
        return (
            "Failed"  # killed over its --mem (a cell exiting 0 after a child was killed: its word)
        )
    if facts.exit_code is not None:
        return "Succeeded" if facts.exit_code == 0 else "Failed"
    if facts.service_gone or facts.lost:
        return "Failed"
    if facts.vanished:
        return "Cancelled"  # deleting a job is how OSCAR cancels it
    if facts.oscar_status in ("Succeeded", "Failed"):
        if facts.runner_started and not facts.sentinel_overdue:
            return "Running"  # finishing: the exit line is still on its way
        return "Failed"  # the runner never started, or died without its exit line
    if facts.oscar_status in WAITING and facts.runner_started:
        return "Running"
    return facts.oscar_status


def cancelled_by(facts: JobFacts) -> str | None:
    """Who cancelled a job whose status is Cancelled (None when it is not)."""
    if facts.cancelled_here:
        return BY_KERNEL
    if facts.slurm_end == "cancelled":
        return BY_SLURM
    if facts.vanished and facts.exit_code is None:
        return facts.recorded_by or BY_OTHER_VIEW
    return None


@dataclass(frozen=True)
class JobState:
    """A job as every view shows it: its status and what goes with it."""

    status: str
    exit_code: int | None
    node: str | None
    started_at: datetime | None  # the runner's start line, by the cluster's clock
    finished_at: datetime | None
    cancelled_by: str | None = None
    usage: Usage | None = None  # what it used, measured by the runner (once it has ended)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def duration(self) -> float | None:
        """Seconds run (up to now while running), None before the job started; once it has
        ended, the wall time the runner measured, when it said."""
        if self.usage is not None and self.done:
            return self.usage.wall_seconds
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(timezone.utc)
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True)
class JobRow:
    """One job as a listing shows it (`%oscar_jobs`, `--watch`, the sidebar)."""

    job: str
    service: str
    status: str
    start: str  # ISO time OSCAR gives (start, else creation), "" before the pod exists
    duration: float | None  # seconds, None before the job started
    kernel_tag: str | None  # None: named by OSCAR, not by a kernel
    this_kernel: bool
    exit_code: int | None = None
    node: str | None = None
    label: JobLabel | None = None  # from the local job records, when this machine submitted it
    cancelled_by: str | None = None
    runner_start: datetime | None = None  # the runner's own start (durations count from it)
    recorded: bool = False  # no longer listed by OSCAR: kept from the local job records
    created: str = ""  # when it was submitted (OSCAR's creation time, else the record's), ISO
    finished: str = ""  # OSCAR's finish time (else the record's), ISO
    started: str = ""  # OSCAR's start time, ISO
    mine: bool = True  # one of the user's own runner services
    submitted: str = ""  # when this machine's kernel submitted it (its record), ISO
    usage: Usage | None = None  # measured by the runner, once it has ended
    request: Request | None = None  # what it asked for (its record), None when unknown

    @property
    def core_hours(self) -> float:
        """Cores asked x wall time (measured, else as counted here); 0 before it started."""
        wall = self.usage.wall_seconds if self.usage is not None else self.duration
        return core_hours(self.request, wall)

    @property
    def submitted_at(self) -> datetime | None:
        """When it was submitted: this machine's record of it, else OSCAR's creation time (with
        Kueue, the pod and so OSCAR's creation time come only when the job is admitted)."""
        return parse_iso(self.submitted) or parse_iso(self.created)

    @property
    def label_text(self) -> str:
        """'train.ipynb · [3] · model.fit(x)', or the job id when nothing is known."""
        return self.label.text(self.job) if self.label is not None else self.job

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def as_json(self, notebook: str | None) -> dict[str, Any]:
        """The sidebar's job object (labextension/src/api.ts `IJob`); `notebook` is the label's
        notebook as the sidebar names it (relative to the Jupyter root). `submitted_time` is what
        "newest first" sorts by in every view; `duration` the seconds run as every view counts
        them (from the runner's start line to the job's end, or to now while it runs)."""
        label = (self.label or JobLabel()).as_json(self.job)
        label["notebook"] = notebook
        submitted = self.submitted_at
        return {
            "service": self.service,
            "job": self.job,
            "kernel": self.kernel_tag,
            "node": self.node,
            "status": self.status,
            "exit_code": self.exit_code,
            "creation_time": self.created or None,
            "start_time": self.started or None,
            "finish_time": self.finished or None,
            "runner_start": iso_utc(self.runner_start, "milliseconds") or None,
            "submitted_time": iso_utc(submitted, "milliseconds") if submitted else None,
            "duration": None if self.duration is None else round(self.duration, 3),
            "mine": self.mine,
            "label": label,
            "cancelled_by": self.cancelled_by if self.status == "Cancelled" else None,
            "recorded": self.recorded,
            "usage": usage_json(self.usage, self.request),
            "request": None if self.request is None else self.request.as_record(),
            "core_hours": round(self.core_hours, 4),
        }


def listed_row(
    service: str,
    name: str,
    info: Mapping[str, Any],
    state: JobState,
    *,
    kernel_tag: str | None,
    this_kernel: bool,
    mine: bool = True,
    node: str | None = None,
) -> JobRow:
    """The row of a job OSCAR lists (`info`: its listing entry) in state `state`."""
    return JobRow(
        job=name,
        service=service,
        status=state.status,
        start=info.get("start_time") or info.get("creation_time") or "",
        duration=state.duration(),
        kernel_tag=kernel_tag,
        this_kernel=this_kernel,
        exit_code=state.exit_code,
        node=state.node or node,
        cancelled_by=state.cancelled_by if state.status == "Cancelled" else None,
        runner_start=state.started_at,
        created=info.get("creation_time") or "",
        finished=info.get("finish_time") or "",
        started=info.get("start_time") or "",
        mine=mine,
        usage=state.usage,
    )


def with_record(row: JobRow, record: JobRecord | None) -> JobRow:
    """`row` labelled from this machine's record of the job; a cancel recorded there wins (a
    view that cancelled knows who did; OSCAR only forgets the job)."""
    if record is None:
        return row
    status, by = row.status, row.cancelled_by
    if record.status == "Cancelled":
        status, by = "Cancelled", record.cancelled_by or by
    return replace(
        row,
        label=record.label,
        status=status,
        cancelled_by=by,
        submitted=record.submitted_at or row.submitted,
        usage=row.usage or Usage.from_record(record.usage),
        request=Request.from_record(record.request) or row.request,
    )


def recorded_row(record: JobRecord, *, this_kernel: bool) -> JobRow:
    """The row of a job OSCAR no longer lists, from its record (a cancelled job stays listed
    until cleaned up)."""
    return JobRow(
        job=record.job,
        service=record.service,
        status=record.status or "Cancelled",
        start="",
        duration=None,
        kernel_tag=record.kernel,
        this_kernel=this_kernel,
        exit_code=record.exit_code,
        label=record.label,
        cancelled_by=record.cancelled_by,
        recorded=True,
        created=record.submitted_at or "",
        finished=record.finished_at or "",
        submitted=record.submitted_at or "",
        usage=Usage.from_record(record.usage),
        request=Request.from_record(record.request),
    )


def merge_records(
    rows: list[JobRow],
    records: Mapping[str, JobRecord],
    *,
    keep: Callable[[JobRecord], bool] = lambda _record: True,
    kernel: str | None = None,
) -> list[JobRow]:
    """`rows` labelled from the records, plus the recorded Cancelled jobs OSCAR no longer lists
    (those `keep` accepts); newest submission first, in every view."""
    listed = {row.job for row in rows}
    merged = [with_record(row, records.get(row.job)) for row in rows]
    for record in records.values():
        if record.job in listed or record.status != "Cancelled" or not keep(record):
            continue
        merged.append(
            recorded_row(record, this_kernel=kernel is not None and record.kernel == kernel)
        )
    return newest_first(merged)


_NOT_YET = datetime.max.replace(tzinfo=timezone.utc)


def newest_first(rows: list[JobRow]) -> list[JobRow]:
    """By submission (`JobRow.submitted_at`), newest first, whatever the queue did: a job that
    waited in Kueue or Slurm and started last stays where its submission puts it. A job known
    by neither time is the newest of all; equal times fall back to OSCAR's creation time."""
    return sorted(
        rows,
        key=lambda r: (r.submitted_at or _NOT_YET, parse_iso(r.created) or _NOT_YET, r.job),
        reverse=True,
    )


def status_from_log(
    exit_code: int | None,
    runner_started: bool,
    slurm_end: str | None,
    listed: str | None,
    listed_cancelled_by: str | None = None,
) -> tuple[str, str | None]:
    """(status, who cancelled) of a job known from its log alone, plus what its last listing
    said (`listed`): the sidebar's log panel."""
    facts = JobFacts(
        slurm_end=slurm_end,
        exit_code=exit_code,
        runner_started=runner_started,
        oscar_status=listed if listed in (*WAITING, "Running") else "Pending",
    )
    status = status_of(facts)
    if status in TERMINAL or listed not in TERMINAL:
        return status, cancelled_by(facts) if status == "Cancelled" else None
    return listed, listed_cancelled_by


def rows_core_hours(rows: list[JobRow]) -> float:
    """Core-hours of the rows' jobs together (cores asked x wall time)."""
    return total_core_hours(
        (row.request, row.usage.wall_seconds if row.usage else row.duration) for row in rows
    )
