"""Persistent sessions (issue 20): one job, one Python on the cluster, many cells.

Not to be mixed up with `session.py`, the kernel's *connection* to a cluster: a `RemoteSession`
is a long job of a runner service, started through that connection, whose program
(`session_program.py`) waits for cells. Only what a real site allows is used: cells go in as
objects under the job's own prefix in the user's bucket (`jobs/<job>/cells/<n>.json`), which the
job polls through presigned URLs (each cell's object carries the URL of the next one, so the job
always holds exactly one); what the cell prints comes out through the job's log like any
cell's, between begin/end markers (rich-output records with our metadata and the session's
token); `--out` values come back as objects (`cells/<n>.out`). Ctrl-C puts a control object
(`control/<n>.json`) that the job turns into KeyboardInterrupt in the cell.

Sessions are this kernel's: the registry object `sessions/<kernel tag>/<name>.json` in the
user's bucket lets `attach` find one again after a kernel restart (the kernel tag survives it);
another user has another bucket, another kernel another tag.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import pickle
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from . import job_records, runner
from .cell_program import seal
from .client import OscarError
from .display import partial_lines
from .errors import CellInterrupted
from .jobs import Job, is_marker
from .logs import OutputLine
from .ownership import make_job_name
from .session import Session, current, interrupts_deferred
from .spec import OffloadSpec, SpecError, spec_of_service
from .storage import job_prefix
from .transfers import (
    JobTransfers,
    check_transfers,
    parse_download,
    parse_upload,
    url_seconds,
)
from .values import check_names, pack_inputs

SESSION_KEY = "oscar_jupyter_session"  # session_program.SESSION_KEY
REGISTRY_FOLDER = "sessions/"
DEFAULT_IDLE_MINUTES = 30
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
# The notebook's look at the log while a cell runs: fast at first, slower for a long cell.
FIRST_POLL, MAX_POLL, POLL_GROWTH = 0.05, 1.0, 1.3
# The first look after a cell is sent: a trivial cell's end marker is in the log by then, so a
# user polled at most once a second (OIDC) still gets it back in one look.
FIRST_LOOK = 0.1
INTERRUPT_GRACE_SECONDS = 30.0
STOP_GRACE_SECONDS = 20.0
WALLTIME_WARNING_SECONDS = 300.0  # warn once when less than this is left
_CELL_FILE = re.compile(r'File "[^"]*/oj-[^"/]*/cell-(\d+)\.py", line (\d+)')

LineSink = Callable[[list[OutputLine]], None]


class PartialView(Protocol):
    """Where a cell's unfinished lines (a `\r` progress bar, a prompt) show live, as in any
    offloaded cell (`display.PartialLine`)."""

    def update(self, partial: dict[str, str], lines_follow: bool) -> None: ...

    def show(self, partial: dict[str, str]) -> None: ...

    def clear(self) -> None: ...


class SessionError(RuntimeError):
    """A session asked for in a way that cannot work, or that ended: one line in the notebook."""

    def _render_traceback_(self) -> list[str]:
        return [f"SessionError: {self}"]


class SessionCellError(RuntimeError):
    """A session cell raised: its traceback at the editor's lines; the session goes on."""

    def __init__(self, traceback_text: str, rendered: list[str]) -> None:
        lines = traceback_text.rstrip("\n").splitlines()
        super().__init__(lines[-1] if lines else "the cell failed")
        self.traceback_text = traceback_text
        self.rendered = rendered

    def _render_traceback_(self) -> list[str]:
        return list(self.rendered)


def relabel(text: str, cell: int, name: str, offset: int) -> str:
    """The cell's file named `name` with the editor's line numbers; earlier cells of the
    session as `session cell N`."""

    def sub(match: re.Match[str]) -> str:
        number, line = int(match.group(1)), int(match.group(2))
        if number == cell:
            return f"{name}, line {line + offset}"
        return f"session cell {number}, line {line}"

    return _CELL_FILE.sub(sub, text)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SessionError(
            f"session name {name!r}: use a letter, then letters, digits, '-' or '_' "
            "(at most 32), e.g. s1"
        )
    return name


@dataclass
class CellOutcome:
    cell: int
    status: str  # ok, error, interrupted
    values: dict[str, Any]
    seconds: float


class RemoteSession:
    """A persistent session of this kernel (see the module's docstring)."""

    def __init__(
        self,
        connection: Session,
        name: str,
        job: Job,
        *,
        token: str,
        idle_minutes: float,
        next_cell: int = 1,
        kernel_tag: str | None = None,
    ) -> None:
        self.connection = connection
        self.name = name
        # the kernel that started it (its registry entry's folder): this kernel's unless the
        # sidebar found it among the user's sessions
        self.kernel_tag = kernel_tag or getattr(connection, "kernel_tag", "")
        self.job = job
        self.token = token
        self.idle_minutes = idle_minutes
        self.next_cell = next_cell
        self.ready_at: float | None = None  # epoch seconds, the job's clock
        self.last_end: float | None = None
        self.closing: str | None = None
        self.running: int | None = None  # the cell begun and not ended
        self.warned = False  # the walltime warning was given
        self._read = 0  # lines of job.lines() looked at
        self._current_lines: list[OutputLine] = []  # since the last begin or end marker
        self._lock = threading.Lock()  # one cell at a time
        self._markers: list[dict[str, Any]] = []
        self._pending: PartialView | None = None  # the running cell's unfinished lines

    # -- where things are --------------------------------------------------------------------

    @property
    def bucket(self) -> Any:
        return self.connection.bucket

    def key(self, name: str) -> str:
        return job_prefix(self.job.name) + name

    def cell_key(self, number: int) -> str:
        return self.key(f"cells/{number:06d}.json")

    @property
    def url_seconds(self) -> int:
        return url_seconds(self.job.spec.time_limit_seconds())

    def presign(self, key: str, method: str = "GET") -> str:
        url: str = self.bucket.presign(key, method, self.url_seconds)
        return url

    def __repr__(self) -> str:
        return f"<RemoteSession {self.name} (job {self.job.name}): {self.state()}>"

    # -- the log ------------------------------------------------------------------------------

    def _marker(self, line: OutputLine) -> dict[str, Any] | None:
        if line.bundle is None:
            return None
        payload = (line.bundle.get("metadata") or {}).get(SESSION_KEY)
        if isinstance(payload, dict) and payload.get("token") == self.token:
            return payload
        return None

    def _take(self, sink: LineSink | None) -> list[dict[str, Any]]:
        """The lines that arrived since the last look: markers kept, the rest to `sink`."""
        lines = self.job.lines_since(self._read)
        self._read += len(lines)
        markers, batch = [], []
        for line in lines:
            marker = self._marker(line)
            if marker is None:
                batch.append(line)
                self._current_lines.append(line)
                continue
            if marker.get("event") in ("begin", "end"):
                self._current_lines = []
            if batch and sink is not None:
                sink(batch)
            batch = []
            self._note(marker)
            markers.append(marker)
        if batch and sink is not None:
            sink(batch)
        return markers

    def _note(self, marker: dict[str, Any]) -> None:
        self._markers.append(marker)
        event = marker.get("event")
        if event == "ready":
            self.ready_at = float(marker.get("time") or 0) or time.time()
        elif event == "begin":
            self.running = int(marker.get("cell") or 0)
            # another process's view (the sidebar) numbers a stop after the cells it saw begin
            self.next_cell = max(self.next_cell, self.running + 1)
        elif event == "end":
            self.running = None
            self.last_end = float(marker.get("time") or 0) or time.time()
        elif event == "closing":
            self.closing = str(marker.get("reason") or "stopped")

    def _poll(self, sink: LineSink | None, delay: float) -> tuple[list[dict[str, Any]], float]:
        self.job.refresh(quiet_for=5.0)
        markers = self._take(sink)
        # the job's own floor: OIDC's, and what a fetch of its (whole, growing) log costs
        floor = max(FIRST_POLL, self.job.min_poll_interval, self.job.cost_delay())
        return markers, floor if markers else min(MAX_POLL, max(floor, delay * POLL_GROWTH))

    def _ended_error(self) -> SessionError:
        reason = self.closing or self.job.end_reason() or self.job.status()
        if self.closing == "idle":
            reason = f"idle for {self.idle_minutes:g} min: its allocation was released"
        return SessionError(
            f"session {self.name} has ended ({reason}; job {self.job.name}); start it again "
            f"with %oscar_session start {self.name}"
        )

    # -- start ---------------------------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None, on_wait: Callable[[], None] = lambda: None):
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = FIRST_POLL
        while self.ready_at is None:
            if self.job.is_done():
                raise self._ended_error()
            if deadline is not None and time.monotonic() > deadline:
                raise SessionError(
                    f"session {self.name} did not start within {timeout:g} s (job "
                    f"{self.job.name}: {self.job.status()}; {self.job.waiting_reason()})"
                )
            on_wait()
            time.sleep(delay)
            _, delay = self._poll(None, delay)
            delay = max(delay, 0.2)

    # -- cells ---------------------------------------------------------------------------------

    def run(
        self,
        code: str,
        inputs: Mapping[str, Any] | None = None,
        outputs: Sequence[str] = (),
        *,
        sink: LineSink | None = None,
        cell_name: str = "<cell>",
        line_offset: int = 0,
        partial: PartialView | None = None,
        uploads: Sequence[str] = (),
        downloads: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Runs `code` in the session, its output to `sink` (printed without one), its
        unfinished lines live to `partial`; the `outputs` values. `uploads`/`downloads` as
        `--upload`/`--download` give them (LOCAL[:REMOTE], REMOTE[:LOCAL]): put in the session's
        job before the cell runs, fetched after it (also when it failed). Raises `SessionCellError`
        when the cell raises (the session goes on), `CellInterrupted` on Ctrl-C (the cell is
        interrupted, the session kept), `SessionError` when the session has ended."""
        if not isinstance(code, str):
            raise SessionError(f"code: give the cell's code as text, not {type(code).__name__}")
        if not self._lock.acquire(blocking=False):
            raise SessionError(
                f"session {self.name} is running another cell of this kernel; one at a time"
            )
        self._pending = partial
        try:
            return self._run(
                code, inputs, outputs, sink, cell_name, line_offset, uploads, downloads
            )
        finally:
            self._pending = None
            if partial is not None:
                partial.clear()
            self._lock.release()

    def _run(
        self,
        code: str,
        inputs: Mapping[str, Any] | None,
        outputs: Sequence[str],
        sink: LineSink | None,
        cell_name: str,
        line_offset: int,
        uploads: Sequence[str] = (),
        downloads: Sequence[str] = (),
    ) -> dict[str, Any]:
        wanted = check_names("--out", list(outputs)) if outputs else []
        packed = pack_inputs(dict(inputs or {}))
        check_transfers(uploads, downloads)
        if self.job.is_done() or self.closing:
            raise self._ended_error()
        sink = sink or PrintedLines()
        number = self.next_cell
        transfers = None
        if uploads or downloads:  # the cell's own objects, as a job's: jobs/<job>/cells/<n>/
            transfers = JobTransfers(self.bucket, f"{self.job.name}/cells/{number:06d}")
        cell: dict[str, Any] = {
            "n": number,
            "code": code,
            "inputs": packed,
            "outputs": wanted,
            "control_url": self.presign(self.key(f"control/{number:06d}.json")),
            "next": self.presign(self.cell_key(number + 1)),
        }
        if wanted:
            cell["out_url"] = self.presign(self.key(f"cells/{number:06d}.out"), "PUT")
        started = time.monotonic()
        progress = self.connection._progress()
        try:
            if transfers is not None:
                cell["storage"] = transfers.manifest(
                    inputs="",
                    uploads=[parse_upload(item) for item in uploads],
                    downloads=[parse_download(item) for item in downloads],
                    outputs=False,
                    seconds=self.url_seconds,
                    progress=progress,
                )
            self.bucket.put_bytes(self.cell_key(number), json.dumps(cell).encode("utf-8"))
        except BaseException:
            if transfers is not None:
                transfers.discard()
            raise
        self.next_cell = number + 1
        try:
            try:
                end = self._wait_end(number, sink)
            except KeyboardInterrupt:
                with interrupts_deferred():
                    end = self._interrupt(number, sink)
            if transfers is not None and end is not None:
                for note in transfers.collect(progress):
                    print(note, file=sys.stderr, flush=True)
            return self._outcome(number, end, wanted, cell_name, line_offset, started).values
        finally:
            self._discard_cell(number)
            if transfers is not None:
                transfers.discard()

    def _wait_end(
        self, number: int, sink: LineSink, deadline: float | None = None
    ) -> dict[str, Any] | None:
        """The end marker of cell `number`; None when `deadline` passed first."""
        delay = FIRST_POLL
        cell_lines: list[OutputLine] = []
        pending = self._pending
        in_traceback = False

        def unfinished() -> dict[str, str]:
            partial = partial_lines(self.job)
            if in_traceback:
                partial.pop("stderr", None)  # the traceback shows once, as the error
            return partial

        def keep(lines: list[OutputLine]) -> None:
            nonlocal in_traceback
            cell_lines.extend(lines)
            in_traceback = in_traceback or any(is_marker(line) for line in lines)
            if pending is not None:  # a bar that ended: its line streams in its place
                pending.update(unfinished(), lines_follow=True)
            sink(lines)

        self._cell_lines = cell_lines
        time.sleep(FIRST_LOOK)  # the job polls every 50 ms: no sooner than this is it done
        while True:
            markers, delay = self._poll(keep, delay)
            if pending is not None:
                pending.show(unfinished())
            for marker in markers:
                if marker.get("event") == "end" and marker.get("cell") == number:
                    return marker
            if self.job.is_done() or self.closing:
                raise self._ended_error()
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(delay)

    def _interrupt(self, number: int, sink: LineSink) -> dict[str, Any] | None:
        """Ctrl-C: the control object, then the cell's end (KeyboardInterrupt there)."""
        self.bucket.put_bytes(self.key(f"control/{number:06d}.json"), b'{"interrupt": true}')
        end = self._wait_end(number, sink, time.monotonic() + INTERRUPT_GRACE_SECONDS)
        if end is None:
            raise CellInterrupted(
                f"the cell did not stop within {INTERRUPT_GRACE_SECONDS:g} s of the interrupt "
                f"(busy outside Python?); it still runs in session {self.name}: "
                f"%oscar_session stop {self.name} ends it"
            )
        return end

    def follow_running(self, sink: LineSink | None = None, cell_name: str = "<cell>") -> None:
        """After `attach`: the output of the cell that was running when the kernel went away
        (what it printed so far, then the rest until it ends), its error if it failed."""
        number = self.running
        if number is None:
            return
        sink = sink or PrintedLines()
        before = list(self._current_lines)
        sink(before)
        started = time.monotonic()
        end = self._wait_end(number, sink)
        self._cell_lines = [*before, *self._cell_lines]
        self._outcome(number, end, [], cell_name, 0, started)

    def _outcome(
        self,
        number: int,
        end: dict[str, Any] | None,
        wanted: list[str],
        cell_name: str,
        offset: int,
        started: float,
    ) -> CellOutcome:
        assert end is not None
        status = str(end.get("status"))
        seconds = time.monotonic() - started
        if status == "interrupted":
            raise CellInterrupted(
                f"the cell was interrupted; session {self.name} and its variables are kept"
            )
        if status == "error":
            text = self._traceback()
            rendered = relabel(text.rstrip("\n"), number, cell_name, offset).splitlines()
            raise SessionCellError(text, rendered)
        values: dict[str, Any] = {}
        if wanted:
            blob = self.bucket.get_bytes(self.key(f"cells/{number:06d}.out"))
            if len(blob) != end.get("size") or hashlib.sha256(blob).hexdigest() != end.get(
                "sha256"
            ):
                raise SessionError(f"--out {','.join(wanted)}: the values arrived damaged")
            packed = pickle.loads(blob)
            values = {name: pickle.loads(packed[name]) for name in wanted}
        return CellOutcome(number, status, values, seconds)

    def _traceback(self) -> str:
        lines = getattr(self, "_cell_lines", [])
        marks = [i for i, line in enumerate(lines) if is_marker(line)]
        if not marks:
            return "\n".join(line.text for line in lines if line.stream == "stderr")
        return "\n".join(line.text for line in lines[marks[-1] + 1 :] if line.stream == "stderr")

    def _discard_cell(self, number: int) -> None:
        for name in (f"cells/{number:06d}.json", f"cells/{number:06d}.out"):
            try:
                self.bucket.s3.delete_object(Bucket=self.bucket.name, Key=self.key(name))
            except Exception:  # a leftover is removed with the session's prefix at stop
                pass
        try:
            self.bucket.s3.delete_object(
                Bucket=self.bucket.name, Key=self.key(f"control/{number:06d}.json")
            )
        except Exception:
            pass

    # -- state ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        if not self.job.is_done():
            try:
                self.job.refresh(quiet_for=0.0)
            except OscarError:
                pass
        self._take(None)

    def state(self) -> str:
        if self.job.is_done() or self.closing:
            return "ended"
        if self.ready_at is None:
            return "starting" if self.job.started_at is None else "loading"
        return "busy" if self.running is not None else "idle"

    def time_left(self) -> float | None:
        limit = self.job.spec.time_limit_seconds()
        if not limit or self.job.started_at is None:
            return float(limit) if limit else None
        return max(0.0, limit - self.job.elapsed())

    def walltime_warning(self) -> str | None:
        """Once, when the walltime is near: what to say (Slurm ends the job at it)."""
        left = self.time_left()
        if self.warned or left is None or left > WALLTIME_WARNING_SECONDS:
            return None
        self.warned = True
        return (
            f"oscar-jupyter: session {self.name} reaches its walltime in {left / 60:.0f} min; "
            "Slurm then ends it and its variables are lost: bring back what you need (--out)"
        )

    def idle_seconds(self) -> float | None:
        if self.state() != "idle":
            return None
        since = self.last_end or self.ready_at
        return max(0.0, time.time() - since) if since else None

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state(),
            "node": self.job.node or self.job.spec.node,
            "time_left": self.time_left(),
            "idle": self.idle_seconds(),
            "cells": self.next_cell - 1,
            "job": self.job.name,
            "service": self.job.service,
            "kernel": self.kernel_tag,
            "ended": self._ended_error().args[0] if self.state() == "ended" else None,
        }

    # -- stop ----------------------------------------------------------------------------------

    def stop(self, by: str | None = None) -> None:
        """Ends the job (a stop object; cancelled when it does not end within 20 s or a cell
        is running), removes its objects and the registry entry, forgets the job. `by` (the
        sidebar): stopped from outside its kernel, which is told so on its next cell (the job's
        record says who stopped it, as for a job cancelled there)."""
        with interrupts_deferred():
            self._stop(by)

    def _stop(self, by: str | None = None) -> None:
        job, connection = self.job, self.connection
        if not job.is_done():
            self.refresh()
        if not job.is_done() and self.running is None:
            stop = {"n": self.next_cell, "stop": True}
            self.bucket.put_bytes(self.cell_key(self.next_cell), json.dumps(stop).encode())
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while not job.is_done() and time.monotonic() < deadline:
                time.sleep(0.2)
                self.refresh()
        if not job.is_done():
            job.cancel()
        self.bucket.delete_prefix(job_prefix(job.name))
        self.bucket.delete_prefix(f"{REGISTRY_FOLDER}{self.kernel_tag}/{self.name}.json")
        client = connection.require_client()
        if by is not None:
            self.closing = self.closing or f"stopped by {by}"
            try:
                job_records.mark_final(
                    client.endpoint,
                    job.service,
                    job.name,
                    "Cancelled",
                    cancelled_by=by,
                    cluster=client.profile.cluster_id,
                )
            except OSError:  # the kernel then says only that the session ended
                pass
        try:
            client.delete_job(job.service, job.name)
        except OscarError as err:
            if err.status_code not in (403, 404):
                raise
        connection.jobs.pop(job.name, None)
        if by is None:
            connection._forget(job.name)
        if _SESSIONS.get(self.name) is self:
            del _SESSIONS[self.name]

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class PrintedLines:
    """The default sink of `run`: the cell's lines printed, stderr up to the traceback marker
    (the error shows the traceback once)."""

    def __init__(self) -> None:
        self.in_traceback = False

    def __call__(self, lines: list[OutputLine]) -> None:
        for line in lines:
            if line.stream == "stderr" and (self.in_traceback or is_marker(line)):
                self.in_traceback = True
                continue
            stream = sys.stderr if line.stream == "stderr" else sys.stdout
            print(line.text, file=stream, flush=True)


# -- this kernel's sessions -------------------------------------------------------------------

_SESSIONS: dict[str, RemoteSession] = {}


def registry_key(connection: Session, name: str) -> str:
    return f"{REGISTRY_FOLDER}{connection.kernel_tag}/{name}.json"


def _registered(connection: Session, name: str) -> dict[str, Any] | None:
    key = registry_key(connection, name)
    if connection.bucket.size_of(key) is None:
        return None
    loaded: dict[str, Any] = json.loads(connection.bucket.get_bytes(key))
    return loaded


def start(
    name: str,
    spec: OffloadSpec,
    *,
    idle_minutes: float = DEFAULT_IDLE_MINUTES,
    connection: Session | None = None,
    wait: bool = True,
    timeout: float | None = None,
    on_wait: Callable[[], None] = lambda: None,
) -> RemoteSession:
    """Starts session `name` of this kernel with `spec`'s resources; with `wait`, returns once
    its Python waits for cells. Everything is checked before anything is sent."""
    connection = connection or current()
    check_name(name)
    if not isinstance(idle_minutes, (int, float)) or idle_minutes < 0:
        raise SessionError(f"--idle-timeout {idle_minutes!r}: give minutes, 0 for none")
    if spec.uploads or spec.downloads:
        raise SessionError(
            "--upload/--download go with a session's cells, not with its start: "
            f"%%oscar_offload --session {name} --upload data.csv (or "
            "run(code, uploads=[...], downloads=[...]))"
        )
    if spec.task_count() > 1:
        raise SessionError(
            f"a session runs one Python, and --ntasks/--ntasks-per-node ask Slurm for "
            f"{spec.task_count()} tasks: leave them out of %oscar_session start, or run the "
            "cell as ranks with %%oscar_offload --ntasks N --mpi"
        )
    known = _SESSIONS.get(name)
    if known is not None and known.state() != "ended":
        raise SessionError(
            f"session {name} already runs (job {known.job.name}); use it with "
            f"%%oscar_offload --session {name}, or %oscar_session stop {name} first"
        )
    spec.validate(known_nodes=connection.known_node_names())
    spec.job_body("")  # checks --env as any job's body
    connection.check_offloadable(spec)
    if not connection.storage_available():
        raise SessionError(
            f"{connection.require_client().endpoint} offers no object storage to this user: a "
            "session takes its cells through it (the job cannot be reached otherwise); run the "
            "cells as jobs of their own (%%oscar_offload without --session)"
        )
    if known is None and _registered(connection, name) is not None:
        earlier = attach(name, connection)
        if earlier.state() != "ended":
            raise SessionError(
                f"session {name} of this kernel still runs (from before a restart; job "
                f"{earlier.job.name}): %oscar_session attach {name} to use it, or "
                f"%oscar_session stop {name}"
            )
        earlier.stop()  # ended meanwhile (walltime, idle): its leftovers go, the name is free
    elif known is not None:
        known.stop()  # ended: its objects and registry entry go before the name is reused
    client = connection.require_client()
    service = connection.ensure_service(spec)
    key = connection.channel_key(service)
    job_name = make_job_name(service, connection.kernel_tag)
    token = secrets.token_hex(16)
    seconds = url_seconds(spec.time_limit_seconds())
    bucket = connection.bucket
    first = bucket.presign(job_prefix(job_name) + "cells/000001.json", "GET", seconds)
    sealed = seal(
        key,
        {"session": {"token": token, "first": first, "idle_seconds": idle_minutes * 60}},
    )
    body = runner.encode_body(runner.build_session_program(spec.env, sealed))
    bucket.put_bytes(
        registry_key(connection, name),
        json.dumps(
            {
                "name": name,
                "job": job_name,
                "service": service,
                "token": token,
                "idle_minutes": idle_minutes,
                "started": time.time(),
            }
        ).encode("utf-8"),
    )
    try:
        job_name = connection._send(client, service, body, job_name)
    except BaseException:
        bucket.delete_prefix(registry_key(connection, name))
        raise
    job = Job(client, service, job_name, spec)
    job.transfers = JobTransfers(bucket, job_name)  # cleanup removes its objects
    job.sent_here = True
    job.min_poll_interval = connection.poll_floor()
    connection.jobs[job.name] = job
    connection.submitted.add(job.name)
    cluster = connection.profile.cluster_id if connection.profile else None
    job_records.note_submitted(job, f"%oscar_session start {name}", cluster, connection.kernel_tag)
    remote = RemoteSession(connection, name, job, token=token, idle_minutes=idle_minutes)
    _SESSIONS[name] = remote
    if wait:
        try:
            remote.wait_ready(timeout, on_wait)
        except BaseException:
            with interrupts_deferred():
                remote.stop()
            raise
    return remote


def get(name: str, connection: Session | None = None) -> RemoteSession:
    """This kernel's session `name`; a clear error when there is none."""
    check_name(name)
    remote = _SESSIONS.get(name)
    if remote is not None:
        return remote
    known = ", ".join(sorted(_SESSIONS)) or "none"
    raise SessionError(
        f"no session {name} in this kernel (sessions: {known}); start one with "
        f"%oscar_session start {name} --node NODE --time HH:MM:SS, or after a kernel restart "
        f"%oscar_session attach {name}"
    )


def attach(name: str, connection: Session | None = None) -> RemoteSession:
    """Session `name` of this kernel, found again after a kernel restart (the kernel tag
    survives it): its job's log is read again and the next cell numbered after the last."""
    connection = connection or current()
    check_name(name)
    if name in _SESSIONS:
        return _SESSIONS[name]
    record = _registered(connection, name)
    if record is None:
        raise SessionError(f"no session {name} of this kernel on the cluster to attach to")
    remote = _from_record(connection, name, record)
    connection.jobs[remote.job.name] = remote.job
    _SESSIONS[name] = remote
    return remote


def _from_record(
    connection: Session,
    name: str,
    record: Mapping[str, Any],
    *,
    kernel_tag: str | None = None,
    log_dir: Path | None = None,
) -> RemoteSession:
    """The session a registry entry names, its job's log read (the state, the next cell's
    number after the last); registered nowhere."""
    client = connection.require_client()
    try:
        spec = spec_of_service(client.get_service(record["service"]))
    except (OscarError, SpecError):
        spec = OffloadSpec()
    # timed from its start, not from this look: the runner's start line counts only when
    # it is not older than the submission (Job), and time left is counted from it
    try:
        submitted = datetime.fromtimestamp(float(record["started"]), timezone.utc)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        submitted = None
    job = Job(
        client, record["service"], record["job"], spec, log_dir=log_dir, submitted_at=submitted
    )
    job.sent_here = True
    job.min_poll_interval = connection.poll_floor()
    remote = RemoteSession(
        connection,
        name,
        job,
        token=record["token"],
        idle_minutes=float(record.get("idle_minutes") or 0),
        kernel_tag=kernel_tag,
    )
    remote.refresh()
    numbers = [int(m.get("cell") or 0) for m in remote._markers if m.get("event") == "begin"]
    prefix = job_prefix(job.name) + "cells/"
    for key in connection.bucket.keys(prefix):
        stem = key[len(prefix) :].split(".", 1)[0]
        if stem.isdigit():
            numbers.append(int(stem))
    remote.next_cell = max(numbers, default=0) + 1
    return remote


def sessions(connection: Session | None = None) -> list[RemoteSession]:
    """This kernel's sessions: those known here and those registered on the cluster."""
    connection = connection or current()
    prefix = f"{REGISTRY_FOLDER}{connection.kernel_tag}/"
    for key in connection.bucket.keys(prefix):
        name = key[len(prefix) :].removesuffix(".json")
        if name not in _SESSIONS and NAME_PATTERN.fullmatch(name):
            try:
                attach(name, connection)
            except SessionError:
                continue
    for remote in _SESSIONS.values():
        remote.refresh()
    return [_SESSIONS[name] for name in sorted(_SESSIONS)]


class UserSessions:
    """Every session of one user on one cluster, whichever of their kernels started it: what
    the sidebar lists and stops (server/backend.py). `connection` is that user's connection
    (its client and profile); the registry is read again on each look, and each session's log
    parsed only where it grew (its `RemoteSession` is kept between looks). Another user has
    another bucket, so never sees these."""

    def __init__(self, connection: Session, log_dir: Path) -> None:
        self.connection = connection
        self.log_dir = log_dir  # the jobs' output files: not the kernels' (they write theirs)
        self._known: dict[str, RemoteSession] = {}  # registry key -> its session
        self._lock = threading.Lock()
        self._looked_at = float("-inf")

    def _entries(self) -> dict[str, tuple[str, str]]:
        """Registry key -> (kernel tag, name) of every entry in the user's bucket."""
        bucket = self.connection.bucket
        if not bucket.exists():
            return {}
        found = {}
        for key in bucket.keys(REGISTRY_FOLDER):
            tag, _, file = key[len(REGISTRY_FOLDER) :].partition("/")
            name = file.removesuffix(".json")
            if tag and file.endswith(".json") and NAME_PATTERN.fullmatch(name):
                found[key] = (tag, name)
        return found

    def list(self, max_age: float = 0.0) -> list[RemoteSession]:
        """The user's sessions, each looked at once now (or, within `max_age` seconds of the
        last look, as then: however many views ask, OSCAR is asked once); by name, kernel."""
        with self._lock:
            if time.monotonic() - self._looked_at < max_age:
                return sorted(self._known.values(), key=lambda r: (r.name, r.kernel_tag))
            self._looked_at = time.monotonic()
            entries = self._entries()
            for key in set(self._known) - set(entries):  # stopped meanwhile
                del self._known[key]
            for key, (tag, name) in entries.items():
                remote = self._known.get(key)
                if remote is None:
                    try:
                        record = json.loads(self.connection.bucket.get_bytes(key))
                        remote = _from_record(
                            self.connection, name, record, kernel_tag=tag, log_dir=self.log_dir
                        )
                    except (ValueError, KeyError, TypeError):
                        continue  # an entry being written, or not ours to read
                    self._known[key] = remote
                else:
                    remote.refresh()
            return sorted(self._known.values(), key=lambda r: (r.name, r.kernel_tag))

    def stop(self, job: str, by: str) -> RemoteSession:
        """Stops the session whose job is `job` (`RemoteSession.stop`, recorded as by `by`)."""
        remote = next((r for r in self.list() if r.job.name == job), None)
        if remote is None:
            raise SessionError(
                f"no session with job {job} among yours (stopped already, or another user's)"
            )
        with self._lock:
            remote.stop(by)
            self._known = {k: r for k, r in self._known.items() if r is not remote}
        return remote


@atexit.register
def _announce_sessions_left_running() -> None:
    # At kernel shutdown the notebook is gone; the kernel's stderr reaches the server's log.
    for remote in _SESSIONS.values():
        if not remote.job.is_done() and not remote.closing:
            print(
                f"oscar-jupyter: session {remote.name} keeps its allocation until its idle "
                f"timeout ({remote.idle_minutes:g} min) or walltime; after a restart, "
                f"%oscar_session attach {remote.name} uses it again, %oscar_session stop "
                f"{remote.name} ends it",
                file=sys.__stderr__ or sys.stderr,
                flush=True,
            )


def start_session(
    name: str,
    *,
    idle_minutes: float = DEFAULT_IDLE_MINUTES,
    timeout: float | None = None,
    **settings: Any,
) -> RemoteSession:
    """`oscar_jupyter.start_session`: session `name` with `settings` (`OffloadSpec` fields:
    node, time, cpus_per_task, mem, image, mounts ...), ready for `run()`; a context manager
    that stops it."""
    connection = current()
    spec = connection.build_spec(settings)
    return start(name, spec, idle_minutes=idle_minutes, connection=connection, timeout=timeout)
