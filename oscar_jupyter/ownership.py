"""Who owns what on a shared OSCAR, and the one status every view shows for a job.

OSCAR's service names are unique cluster-wide and services are private by default, so runner
service names carry their owner (`OffloadSpec.service_name(owner, endpoint)`). Several kernels of
one user share a runner service, so each job's name carries the submitting kernel's tag:
`<service>-<kernel tag>-<12 random hex>`.

Every view (`%oscar_jobs`, the jobs table, the sidebar) shows `Job.status()`, the runner's exit
sentinel's word; `JobTracker` gives it for jobs this process did not submit, at the cost of one
listing per service per refresh plus a log read per job whose final state is not known yet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import job_records
from .client import OscarClient, OscarError
from .config import Secret
from .job_records import JobLabel, JobRecord
from .jobs import SENTINEL_GRACE_SECONDS, TERMINAL, Job
from .spec import RUNNER_LABEL, OffloadSpec
from .timefmt import parse_iso

if TYPE_CHECKING:
    from .session import Session

KERNEL_TAG_LENGTH = 6
JOB_RANDOM_HEX = 12
SCOPES = ("kernel", "mine", "all")
MAX_REMEMBERED_JOBS = 10000
_KERNEL_TAG = re.compile(rf"[0-9a-f]{{{KERNEL_TAG_LENGTH}}}")


def jwt_subject(token: Secret | str | None) -> str | None:
    """The `sub` claim of a JWT, read without verification (only to name things), or None."""
    if not token:
        return None
    text = token.reveal() if isinstance(token, Secret) else token
    parts = text.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


def owner_identity(client: OscarClient) -> tuple[str, bool]:
    """(who the client acts as, whether that is an OIDC `sub`): the access token's `sub`, else the
    refresh token's, else the basic-auth user ("" when none is known)."""
    # The access token the client really sends (from oidc-agent or the refresh token too).
    access = client._oidc_token()
    for token in (access, client.profile.refresh_token):
        sub = jwt_subject(token)
        if sub:
            return sub, True
    return client.profile.user or "", False


def kernel_tag() -> str:
    """6 hex characters fixed for this kernel: from its connection file's name under ipykernel
    (so the tag survives a kernel restart), else random."""
    if "ipykernel" in sys.modules:
        try:
            from ipykernel.connect import get_connection_file

            name = os.path.basename(get_connection_file())
        except Exception:  # not inside a running kernel (a plain IPython, a script)
            name = ""
        if name:
            return hashlib.sha256(name.encode()).hexdigest()[:KERNEL_TAG_LENGTH]
    return secrets.token_hex(KERNEL_TAG_LENGTH // 2)


def make_job_name(service: str, tag: str) -> str:
    """`<service>-<kernel tag>-<12 random hex>` (a Kubernetes name: at most 63 characters)."""
    return f"{service}-{tag}-{secrets.token_hex(JOB_RANDOM_HEX // 2)}"


def kernel_tag_of(service: str, job: str) -> str | None:
    """The kernel tag in a job's name, None for a job named otherwise (e.g. by OSCAR itself)."""
    if not job.startswith(service + "-"):
        return None
    rest = job[len(service) + 1 :]
    tag, dash, random = rest.partition("-")
    if dash and _KERNEL_TAG.fullmatch(tag) and re.fullmatch(r"[0-9a-f]+", random):
        return tag
    return None


def is_runner_service(service: Mapping[str, Any]) -> bool:
    return (service.get("labels") or {}).get(RUNNER_LABEL) == "true"


def owns_service(service: Mapping[str, Any], owner: str, by_sub: bool, endpoint: str) -> bool:
    """A runner service of `owner`: OSCAR's `owner` field says so (OIDC), or its name was made
    for this owner and cluster (basic auth, where every service's owner is the cluster admin)."""
    name = str(service.get("name") or "")
    if by_sub and service.get("owner"):
        return service.get("owner") == owner
    return OffloadSpec.is_owned_service_name(name, owner, endpoint)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    return scope


@dataclass(frozen=True)
class JobState:
    """A job as every view shows it (`Job.status()` and what goes with it)."""

    status: str
    exit_code: int | None
    node: str | None
    started_at: datetime | None  # the runner's start line, by the cluster's clock
    finished_at: datetime | None
    cancelled_by: str | None = None  # "this kernel", "Slurm (scancel)", ... for Cancelled

    @classmethod
    def of(cls, job: Job) -> JobState:
        status = job.status()
        return cls(
            status,
            job.exit_code,
            job.node,
            job.started_at,
            job.finished_at,
            cancelled_by(job) if status == "Cancelled" else None,
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def duration(self) -> float | None:
        """Seconds run (up to now while running), None before the job started."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(timezone.utc)
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True)
class JobRow:
    """One line of `Session.list_jobs()` / `%oscar_jobs`."""

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
    created: str = ""  # OSCAR's creation time (ISO), "" before the pod exists

    @property
    def label_text(self) -> str:
        """'train.ipynb · [3] · model.fit(x)', or the job id when nothing is known."""
        return self.label.text(self.job) if self.label is not None else self.job

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def cancelled_by(job: Job) -> str | None:
    """Who cancelled a job, as the job views say it."""
    if job._cancelled:
        return "this kernel"
    if job.slurm_end == "cancelled":
        return "Slurm (scancel)"
    if job.vanished:
        return "another view (deleted on the cluster)"
    return None


def rows_with_records(
    rows: list[JobRow],
    records: Mapping[str, JobRecord],
    *,
    keep: Callable[[JobRecord], bool] = lambda _r: True,
    kernel: str | None = None,
) -> list[JobRow]:
    """`rows` labelled from the local job records, plus the recorded Cancelled jobs that OSCAR
    no longer lists (those `keep` accepts), newest first as the sidebar sorts them."""
    listed = {row.job for row in rows}
    merged = []
    for row in rows:
        record = records.get(row.job)
        if record is None:
            merged.append(row)
            continue
        status, by = row.status, row.cancelled_by
        if record.status == "Cancelled":
            status, by = "Cancelled", record.cancelled_by or by
        merged.append(replace(row, label=record.label, status=status, cancelled_by=by))
    for record in records.values():
        if record.job in listed or record.status != "Cancelled" or not keep(record):
            continue
        merged.append(
            JobRow(
                job=record.job,
                service=record.service,
                status="Cancelled",
                start="",
                duration=None,
                kernel_tag=record.kernel,
                this_kernel=kernel is not None and record.kernel == kernel,
                exit_code=record.exit_code,
                node=None,
                label=record.label,
                cancelled_by=record.cancelled_by,
                recorded=True,
                created=record.submitted_at or "",
            )
        )
    merged.sort(key=lambda r: r.start or r.created or "\uffff", reverse=True)
    return merged


def list_rows(
    session: Session,
    scope: str = "kernel",
    *,
    notebook: str | None = None,
    hide_finished: bool = False,
) -> list[JobRow]:
    """The jobs `%oscar_jobs` shows: `Session.list_jobs`'s jobs with the sidebar's labels, states
    and runner start times, plus this machine's recorded Cancelled jobs; newest first.
    `notebook` keeps the jobs submitted from that notebook (`JPY_SESSION_NAME`)."""
    check_scope(scope)
    client = session.require_client()
    rows: list[JobRow] = []
    for service in session.runner_services("mine" if notebook else scope):
        listing = session.job_listing(service)
        if listing is None:
            continue
        names = {
            n
            for n in listing
            if scope != "kernel" or notebook or session.is_this_kernels(service, n)
        }
        states = session.tracker.states(client, service, listing, names=names, own=session.jobs)
        for name in names:
            info, state = listing[name], states[name]
            rows.append(
                JobRow(
                    job=name,
                    service=service,
                    status=state.status,
                    start=info.get("start_time") or info.get("creation_time") or "",
                    duration=state.duration(),
                    kernel_tag=kernel_tag_of(service, name),
                    this_kernel=session.is_this_kernels(service, name),
                    exit_code=state.exit_code,
                    node=state.node,
                    cancelled_by=state.cancelled_by,
                    runner_start=state.started_at,
                    created=info.get("creation_time") or "",
                )
            )

    def in_scope(record: JobRecord) -> bool:
        if notebook is not None:
            return True
        return scope != "kernel" or record.kernel == session.kernel_tag

    merged = rows_with_records(
        rows,
        job_records.records(client.endpoint, session.owner),
        keep=in_scope,
        kernel=session.kernel_tag,
    )
    if notebook is not None:
        merged = [r for r in merged if r.label is not None and r.label.notebook == notebook]
    if hide_finished:
        merged = [r for r in merged if not r.done]
    return merged


def forget_records(session: Session, deleted: list[str], *, mine: bool) -> list[str]:
    """After `Session.cleanup`: drop the records of the jobs it deleted, and the recorded
    Cancelled jobs OSCAR no longer lists, this kernel's (or all, `mine`); returns the latter."""
    endpoint = session.require_client().endpoint
    forgotten: list[str] = []
    try:
        for name in deleted:
            job_records.delete(endpoint, name)
        done = set(deleted)
        for record in job_records.records(endpoint).values():
            if (
                record.status == "Cancelled"
                and record.job not in done
                and (mine or record.kernel == session.kernel_tag)
            ):
                job_records.delete(endpoint, record.job)
                forgotten.append(record.job)
    except OSError as err:  # the jobs are deleted on the cluster; a record left is harmless
        warnings.warn(
            f"oscar-jupyter could not update the job records: {err}", RuntimeWarning, stacklevel=2
        )
    return forgotten


class JobTracker:
    """`Job.status()` for jobs of any kernel, kept between refreshes.

    A job whose state is final is remembered as a `JobState` (its log is not read again); a job
    still going is a `Job` refreshed from the service's listing the caller already fetched.
    Thread safe: the sidebar's requests run in worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._final: dict[tuple[str, str, str], JobState] = {}
        self._live: dict[tuple[str, str, str], Job] = {}
        # The followed logs go to a private folder of this tracker, never to the kernel's own
        # log files (a kernel following the same job writes those).
        self._log_dir = Path(tempfile.mkdtemp(prefix="oscar-jupyter-seen-"))
        weakref.finalize(self, shutil.rmtree, self._log_dir, True)

    def states(
        self,
        client: OscarClient,
        service: str,
        listing: Mapping[str, Mapping[str, Any]],
        *,
        names: set[str] | None = None,
        own: Mapping[str, Job] | None = None,
    ) -> dict[str, JobState]:
        """The state of each listed job (only those in `names` when given); `own` are the
        caller's own Job handles, refreshed rather than duplicated."""
        listing = dict(listing)
        wanted = [n for n in listing if names is None or n in names]
        states: dict[str, JobState] = {}
        for name in wanted:
            key = (client.endpoint, service, name)
            job = (own or {}).get(name)
            if job is not None and job.service != service:
                job = None
            if job is None:
                with self._lock:
                    final = self._final.get(key)
                    job = self._live.get(key)
                if final is not None:
                    states[name] = final
                    continue
                if job is None or job.client is not client:  # the profile changed: new client
                    job = self._new_job(client, service, name, listing[name])
            if not job.is_done():
                try:
                    job.refresh(listing)
                except OscarError:
                    pass  # the log could not be read this time: the listing's word stands
            state = JobState.of(job)
            states[name] = state
            with self._lock:
                if state.done:
                    self._live.pop(key, None)
                    if len(self._final) >= MAX_REMEMBERED_JOBS:
                        self._final.clear()
                    self._final[key] = state
                elif job is not (own or {}).get(name):
                    self._live[key] = job
        with self._lock:  # jobs deleted on the cluster are forgotten
            for key in [
                k for k in self._live if k[:2] == (client.endpoint, service) and k[2] not in listing
            ]:
                del self._live[key]
        return states

    def _new_job(
        self, client: OscarClient, service: str, name: str, info: Mapping[str, Any]
    ) -> Job:
        # Submitted before we saw it: its runner's start line is trusted from its creation on,
        # not only from now (a job found running for 40 s has run 40 s, not 0).
        created = parse_iso(info.get("creation_time"))
        job = Job(client, service, name, OffloadSpec(), log_dir=self._log_dir, submitted_at=created)
        finished = parse_iso(info.get("finish_time"))
        if finished is not None:
            age = (datetime.now(timezone.utc) - finished).total_seconds()
            if age > SENTINEL_GRACE_SECONDS:
                # Ended long ago: a missing exit sentinel will not arrive any more, so the job
                # is Failed at once rather than "finishing" for the grace period.
                job._terminal_seen_at = time.monotonic() - SENTINEL_GRACE_SECONDS - 1
        return job
