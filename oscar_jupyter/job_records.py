"""Local job records: which notebook cell submitted a job, and how it ended, kept on this machine.

The kernel writes a record when it submits a job (`note_submitted`) and when it cancels one; the
Jupyter server extension (same user, same machine) reads them to label the sidebar's jobs and to
keep cancelled jobs listed after OSCAR forgot them. One small JSON file per job, written whole
(temp file + rename), in a private folder next to the kernel's job logs:
`<default_log_dir()>/../job-records/<cluster key>/<job>.json`, the cluster key being 12 hex of
the endpoint's sha256. A record never holds the cell's code beyond its first line, nor any
setting's value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from .files import default_log_dir, write_atomically
from .spec import OffloadSpec
from .timefmt import iso_utc, now_iso

# Who cancelled a job: the value every view keeps (job_status says it in a sentence).
BY_KERNEL = "this kernel"
BY_SLURM = "Slurm (scancel on the cluster)"
BY_OTHER_VIEW = "another view (deleted on the cluster)"  # a guess: it was gone when looked at
BY_SIDEBAR = "the sidebar"

FIRST_LINE_MAX = 80
RECORDS_DIRNAME = "job-records"
SEPARATOR = " · "
# Job names are DNS-1123 labels: nothing else becomes a file name here.
_JOB_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class JobLabel:
    """What a person recognises a job by: its notebook, cell and first code line."""

    notebook: str | None = None  # as the kernel knows it (JPY_SESSION_NAME), often absolute
    cell_id: str | None = None  # JupyterLab's cell id (execute_request metadata `cellId`)
    execution_count: int | None = None
    first_line: str | None = None

    def text(self, job: str) -> str:
        """'train.ipynb · [3] · model.fit(x)'; the job id when nothing is known."""
        parts = []
        if self.notebook:
            parts.append(os.path.basename(self.notebook.rstrip("/")) or self.notebook)
        if self.execution_count is not None:
            parts.append(f"[{self.execution_count}]")
        if self.first_line:
            parts.append(self.first_line)
        return SEPARATOR.join(parts) if parts else job

    def as_json(self, job: str) -> dict[str, Any]:
        """The sidebar's `label` object."""
        return {
            "notebook": self.notebook,
            "cell_id": self.cell_id,
            "execution_count": self.execution_count,
            "first_line": self.first_line,
            "text": self.text(job),
        }


@dataclass(frozen=True)
class JobRecord:
    cluster: str  # the profile's cluster id when submitted
    endpoint: str
    service: str
    job: str
    kernel: str | None = None  # the submitting kernel's tag
    submitted_at: str | None = None  # ISO UTC
    label: JobLabel = field(default_factory=JobLabel)
    status: str | None = None  # the final state once known (only a final state is recorded)
    exit_code: int | None = None
    cancelled_by: str | None = None  # "this kernel", "the sidebar", ...
    finished_at: str | None = None  # ISO UTC
    # What it asked for ({cpus, mem, time}: `usage.Request`) and, once it has ended, what it
    # used (the runner's usage record: `usage.Usage`): the job views word them after the kernel.
    request: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.status is not None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        label = values.get("label") or {}
        label_known = {f.name for f in fields(JobLabel)}
        values["label"] = JobLabel(**{k: v for k, v in label.items() if k in label_known})
        return cls(**values)


def first_code_line(code: str) -> str | None:
    """The first non-blank line of the code, stripped, at most 80 characters ('…' when cut)."""
    for line in code.splitlines():
        text = line.strip()
        if text:
            return text if len(text) <= FIRST_LINE_MAX else text[: FIRST_LINE_MAX - 1] + "…"
    return None


def current_label(code: str) -> JobLabel:
    """The label of the cell now running in this kernel: the notebook from `JPY_SESSION_NAME`
    (jupyter_server sets it), the cell id from the execute request's metadata, the execution
    count, and the code's first line. Anything unknown (plain IPython, a script) is None."""
    notebook = os.environ.get("JPY_SESSION_NAME") or None
    cell_id = None
    count = None
    shell = None
    with contextlib.suppress(Exception):
        from IPython import get_ipython

        shell = get_ipython()
    if shell is not None:
        count = _running_cell_number(shell)
        kernel = getattr(shell, "kernel", None)
        parent: Any = None
        with contextlib.suppress(Exception):
            parent = kernel.get_parent() if kernel is not None else None
        metadata = parent.get("metadata") if isinstance(parent, dict) else None
        value = metadata.get("cellId") if isinstance(metadata, dict) else None
        cell_id = value if isinstance(value, str) and value else None
    return JobLabel(
        notebook=notebook, cell_id=cell_id, execution_count=count, first_line=first_code_line(code)
    )


def _running_cell_number(shell: Any) -> int | None:
    """The execution count of the cell being run: from the caller frames' code, which IPython
    names after its cell (`In[7]`). `shell.execution_count` is not it: IPython 9 counts it up
    before the cell runs, older ones after."""
    compiler = getattr(shell, "compile", None)
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and compiler is not None:
        with contextlib.suppress(Exception):
            label = compiler.format_code_name(frame.f_code.co_filename)
            found = re.fullmatch(r"In\[(\d+)\]", label[1]) if label else None
            if found:
                return int(found.group(1))
        frame = frame.f_back
    return None


# -- files ---------------------------------------------------------------------------------------


def records_root() -> Path:
    return default_log_dir().parent / RECORDS_DIRNAME


def cluster_key(endpoint: str) -> str:
    return hashlib.sha256(endpoint.rstrip("/").encode()).hexdigest()[:12]


def private_folder(name: str) -> Path:
    """`records_root()/name`, made private (0700) with the root when missing; a folder of
    another user is refused (two users of one machine share no records)."""
    path = records_root() / name
    for folder in (records_root(), path):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_uid != os.getuid():
            raise PermissionError(
                f"{folder} belongs to another user; set "
                "OSCAR_JUPYTER_LOG_DIR to a folder of your own"
            )
        folder.chmod(0o700)
    return path


def cluster_dir(endpoint: str, *, create: bool = False) -> Path:
    return (
        private_folder(cluster_key(endpoint)) if create else records_root() / cluster_key(endpoint)
    )


def _path(endpoint: str, job: str, suffix: str = ".json", *, create: bool = False) -> Path:
    if not _JOB_NAME.fullmatch(job):
        raise ValueError(
            f"Job name {job!r} is not valid: a job id is lower-case letters, digits "
            "and '-' (see %oscar_jobs)"
        )
    return cluster_dir(endpoint, create=create) / f"{job}{suffix}"


def write_json(path: Path, data: Any) -> None:
    """Write `data` to `path` whole or not at all (0600, temp file + rename)."""
    write_atomically(path, json.dumps(data, ensure_ascii=False))


def save(record: JobRecord) -> None:
    write_json(_path(record.endpoint, record.job, create=True), record.as_json())


def _load(endpoint: str, job: str) -> JobRecord | None:
    try:
        text = _path(endpoint, job).read_text(encoding="utf-8")
        return JobRecord.from_json(json.loads(text))
    except (OSError, ValueError, TypeError):
        return None  # none, or unreadable: a record is a convenience, never a requirement


def _is_owners(record: JobRecord, endpoint: str, owner: str) -> bool:
    """The record is of a job of `owner`'s runner services on this cluster (the service name
    carries its owner): two cluster users of one machine account see only their own."""
    return record.endpoint.rstrip("/") == endpoint.rstrip("/") and (
        OffloadSpec.is_owned_service_name(record.service, owner, endpoint)
    )


def load(endpoint: str, job: str, owner: str) -> JobRecord | None:
    """`owner`'s record of `job`, None when there is none or it is another user's."""
    record = _load(endpoint, job)
    return record if record is not None and _is_owners(record, endpoint, owner) else None


def records(endpoint: str, owner: str) -> dict[str, JobRecord]:
    """`owner`'s records of the cluster at `endpoint`, by job name (the jobs of that user's
    runner services: two cluster users of one machine account see their own)."""
    found: dict[str, JobRecord] = {}
    folder = cluster_dir(endpoint)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.endswith(".json") or entry.name.startswith("."):
            continue
        if entry.name.endswith(".log.json"):
            continue
        try:
            with open(entry.path, encoding="utf-8") as source:
                record = JobRecord.from_json(json.load(source))
        except (OSError, ValueError, TypeError):
            continue
        if _is_owners(record, endpoint, owner):
            found[record.job] = record
    return found


def delete(endpoint: str, job: str, owner: str) -> bool:
    """Forget `owner`'s job: its record and the log snapshot kept with it. Another user's
    record is left alone (False)."""
    record = _load(endpoint, job)
    if record is not None and not _is_owners(record, endpoint, owner):
        return False
    for suffix in (".json", ".log.json"):
        with contextlib.suppress(FileNotFoundError):
            _path(endpoint, job, suffix).unlink()
    return True


# -- what the kernel and the server record -------------------------------------------------------


def record_submitted(
    *,
    cluster: str,
    endpoint: str,
    service: str,
    job: str,
    kernel: str | None,
    code: str,
    request: dict[str, Any] | None = None,
) -> JobRecord:
    record = JobRecord(
        cluster=cluster,
        endpoint=endpoint,
        service=service,
        job=job,
        kernel=kernel,
        submitted_at=iso_utc(datetime.now(timezone.utc), "milliseconds"),
        label=current_label(code),
        request=request,
    )
    save(record)
    return record


def note_submitted(job: Any, code: str, cluster: str | None, kernel: str | None) -> None:
    """`record_submitted` for a `Job` just submitted; any error is a warning, never a failure
    of the submit."""
    try:
        endpoint = job.client.endpoint
        record_submitted(
            cluster=cluster or endpoint,
            endpoint=endpoint,
            service=job.service,
            job=job.name,
            kernel=kernel,
            code=code,
            request=_request_of(job.spec),
        )
    except Exception as err:  # a full disk or a read-only home must not stop a cell
        warnings.warn(
            f"oscar-jupyter could not record job {getattr(job, 'name', '?')} "
            f"for the job views: {err}",
            RuntimeWarning,
            stacklevel=2,
        )


def _request_of(spec: OffloadSpec) -> dict[str, Any]:
    """What the job asked for, as `usage.Request` reads it back."""
    return {"cpus": spec.cpus_per_task or 1, "mem": spec.mem, "time": spec.time}


def mark_final(
    endpoint: str,
    service: str,
    job: str,
    status: str,
    *,
    cancelled_by: str | None = None,
    exit_code: int | None = None,
    cluster: str | None = None,
    finished_at: str | None = None,
    usage: dict[str, Any] | None = None,
) -> JobRecord:
    """Record how a job ended and what it used (a record is made when none exists). A record
    already final keeps its first word on who cancelled it, unless that word was only the guess
    "another view" (a view saw the job gone before the view that deleted it had said so: the
    canceller's word then replaces it); a usage learned later is added."""
    record = _load(endpoint, job) or JobRecord(
        cluster=cluster or endpoint, endpoint=endpoint, service=service, job=job
    )
    if record.final and record.status == status:
        named = (
            status == "Cancelled"
            and record.cancelled_by == BY_OTHER_VIEW
            and cancelled_by not in (None, BY_OTHER_VIEW)
        )
        if named:
            record = replace(record, cancelled_by=cancelled_by)
        if usage is not None and record.usage is None:
            record = replace(record, usage=usage)
        elif not named:
            return record
        save(record)
        return record
    record = replace(
        record,
        status=status,
        exit_code=exit_code,
        cancelled_by=cancelled_by if status == "Cancelled" else None,
        finished_at=finished_at or now_iso(),
        usage=usage or record.usage,
    )
    save(record)
    return record


def note_ended(job: Any) -> bool:
    """Record how a `Job` this kernel submitted ended and what it used, once it has ended (a job
    listener: True once recorded, so the caller can stop listening). A records error is a
    warning, never a failure of the cell."""
    state = job.state()
    if not state.done:
        return False
    usage = state.usage.as_record() if state.usage is not None else None
    endpoint = getattr(job.client, "endpoint", None)
    if not isinstance(endpoint, str):
        return True
    try:
        mark_final(
            endpoint,
            job.service,
            job.name,
            state.status,
            exit_code=state.exit_code,
            cancelled_by=state.cancelled_by,
            finished_at=iso_utc(state.finished_at) or None,
            usage=usage,
        )
    except Exception as err:
        warnings.warn(
            f"oscar-jupyter could not record how job {job.name} ended: {err}",
            RuntimeWarning,
            stacklevel=2,
        )
    return True


def note_cancelled(job: Any, by: str) -> None:
    """Record a `Job` as Cancelled by `by`; a records error is a warning, never a failed cancel
    (a job handle of a client that names no endpoint is not recorded)."""
    endpoint = getattr(job.client, "endpoint", None)
    if not isinstance(endpoint, str):
        return
    try:
        mark_final(endpoint, job.service, job.name, "Cancelled", cancelled_by=by)
    except Exception as err:
        warnings.warn(
            f"oscar-jupyter could not record the cancel of {job.name}: {err}",
            RuntimeWarning,
            stacklevel=2,
        )


# -- log snapshots -------------------------------------------------------------------------------


def save_log_snapshot(endpoint: str, job: str, snapshot: dict[str, Any]) -> None:
    """The parsed log of a job about to be deleted on the cluster (lines with their streams)."""
    write_json(_path(endpoint, job, ".log.json", create=True), snapshot)


def load_log_snapshot(endpoint: str, job: str, owner: str) -> dict[str, Any] | None:
    """The snapshot kept with `owner`'s record of `job`; None for another user's job."""
    if load(endpoint, job, owner) is None:
        return None
    try:
        data = json.loads(_path(endpoint, job, ".log.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def kernel_log_lines(job: str) -> list[str] | None:
    """The lines a kernel that followed the job saved (`<default_log_dir()>/<job>.log`)."""
    if not _JOB_NAME.fullmatch(job):
        return None
    try:
        text = (default_log_dir() / f"{job}.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.splitlines()
