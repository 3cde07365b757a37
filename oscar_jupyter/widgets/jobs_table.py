"""This kernel's jobs (or all of the user's, or all visible) as a table that keeps itself current.

It listens to the jobs the kernel's one poller already refreshes (DESIGN.md decision 9); it adds
no polling of its own. "View" opens a job's live view below the table; "Cancel" cancels it. Jobs
of other kernels ("mine", "all") are read from the runner services' listings on "Refresh" and
followed as `Job`s too, so every row shows `Job.status()`. Rows are labelled as in the sidebar
(notebook · [n] · first line, from the local job records), the job id in the tooltip.

`listing_bundle` is `%oscar_jobs`'s plain table: the same labels, states and times.
"""

from __future__ import annotations

import html
import os
import threading
import time
from datetime import datetime

import ipywidgets as w
from IPython.core.error import UsageError

from .. import job_records
from ..client import OscarError
from ..job_status import JobRow, rows_core_hours, status_text
from ..jobs import Job
from ..ownership import check_scope, job_found
from ..session import Session, current
from ..timefmt import duration, iso_utc, local_and_relative, parse_iso, short_id
from ..usage import Request, core_hours_text, total_core_hours, total_line, used_text
from .clock import CLOCK
from .jobview import JobView
from .style import badge, style_widget

HEADINGS = ("Job", "Status", "Started", "Elapsed / limit", "Node", "")
# How often a watch of other kernels' jobs lists the cluster again.
RELIST_SECONDS = 10.0
EMPTY = {
    "kernel": "No jobs from this kernel (--mine: all your jobs).",
    "mine": "You have no jobs on this cluster.",
    "all": "No jobs visible on this cluster.",
    "notebook": "No jobs from this notebook.",
}


def this_notebook() -> str:
    """The notebook of this kernel as jupyter_server names it (`JPY_SESSION_NAME`)."""
    name = os.environ.get("JPY_SESSION_NAME")
    if not name:
        raise UsageError(
            "--notebook: this kernel does not know its notebook (it was not started "
            "by a Jupyter server); use %oscar_jobs for this kernel's jobs, or --mine"
        )
    return name


def row_started(row: JobRow) -> datetime | None:
    """When the job started: the runner's own start line, else OSCAR's start or creation."""
    return row.runner_start or parse_iso(row.start) or parse_iso(row.created)


def listing_bundle(
    rows: list[JobRow], *, ids: bool = False, empty: str = "", whose: str = "these jobs"
) -> dict[str, str]:
    """The rows as aligned plain text and as HTML (job id, service and kernel in the label's
    tooltip, ISO UTC times in the time's tooltip), what each used as measured on the cluster,
    and their core-hours in all (`whose`: 'this notebook', 'this kernel's jobs' ...)."""
    if not rows:
        return {"text/plain": empty, "text/html": f"<i>{html.escape(empty)}</i>"}
    headers = ["job", "id", "status", "started", "duration", "node", "used"]
    plain, cells = [], []
    for row in rows:
        started = row_started(row)
        kernel = "this kernel" if row.this_kernel else f"kernel {row.kernel_tag or '?'}"
        values = [
            row.label_text,
            row.job if ids else short_id(row.job),
            status_text(row.status, row.exit_code, row.cancelled_by),
            local_and_relative(started),
            duration(row.duration),
            row.node or "",
            used_text(row.usage, row.request),
        ]
        plain.append(values)
        where = " (kept from the local records)" if row.recorded else ""
        when = "started" if row.runner_start or parse_iso(row.start) else "submitted"
        tips = [
            f"job {row.job}, service {row.service}, {kernel}{where}",
            f"{row.job}: %oscar_logs, %oscar_cancel and %oscar_attach take this short id",
            "",
            f"{when} {iso_utc(started)} UTC" if started else "",
            "from the runner's own start" if row.duration is not None else "",
            "",
            "measured on the cluster by the runner" if row.usage is not None else "",
        ]
        cells.append(list(zip(values, tips, strict=True)))
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *plain, strict=True)]
    text = "\n".join(
        "  ".join(str(c).ljust(wd) for c, wd in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *plain]
    )
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            "<td style='text-align:left'"
            + (f" title='{html.escape(tip, quote=True)}'" if tip else "")
            + f">{html.escape(value)}</td>"
            for value, tip in row
        )
        + "</tr>"
        for row in cells
    )
    total = total_line(rows_core_hours(rows), whose)
    return {
        "text/plain": f"{text}\n{total}",
        "text/html": f"<table><thead><tr>{head}</tr></thead>{body}</table>"
        f"<div>{html.escape(total)}</div>",
    }


class _Row:
    def __init__(self, table: JobsTable, job: Job) -> None:
        self.job = job
        self.name = w.HTML()
        self.name.add_class("oj-name")
        self.status = w.HTML()
        self.node = w.HTML()
        self.clock = w.HTML()
        self.started = w.HTML()
        record = _record_of(job, table.session)
        self.label = record.label if record is not None else None
        # What it asked for: its own spec in this kernel, else what its record kept.
        recorded = Request.from_record(record.request) if record is not None else None
        self.request = recorded if recorded is not None and not job.sent_here else job.request
        self.view_button = w.Button(description="View", tooltip="Show this job's live view")
        self.cancel_button = w.Button(
            description="Cancel", button_style="danger", tooltip="Cancel the job on the cluster"
        )
        for button in (self.view_button, self.cancel_button):
            button.layout.width = "auto"
        self.view_button.on_click(lambda _: table.show(job))
        self.cancel_button.on_click(lambda _: table.cancel(job))
        actions = w.HBox([self.view_button, self.cancel_button])
        actions.add_class("oj-buttons")
        self.cells = [self.name, self.status, self.started, self.clock, self.node, actions]
        self.update()

    def update(self) -> None:
        job = self.job
        status = job.status()
        text = self.label.text(job.name) if self.label is not None else job.name
        tip = f"job {job.name}, service {job.service}"
        self.name.value = f"<span title='{html.escape(tip, quote=True)}'>{html.escape(text)}</span>"
        self.status.value = badge(status)
        self.node.value = html.escape(job.node or getattr(job.spec, "node", None) or "")
        limit = job.time_limit
        clock = duration(job.elapsed())
        self.clock.value = f"{clock} / {duration(limit)}" if limit else clock
        used = used_text(job.usage, self.request) if job.is_done() else ""
        if used:
            self.clock.value += f'<div class="oj-muted oj-usage">{html.escape(used)}</div>'
        # The runner's own start once it has started; until then when it was submitted.
        started = job.started_at or getattr(job, "submitted_at", None)
        word = "" if job.started_at else "submitted "
        self.started.value = (
            f"<span title='{iso_utc(started)} UTC'>{word}{html.escape(local_and_relative(started))}"
            "</span>"
            if started
            else ""
        )
        done = job.is_done()
        self.cancel_button.disabled = done
        # A finished job has nothing to cancel: no bright button that does nothing.
        self.cancel_button.button_style = "" if done else "danger"
        self.cancel_button.layout.visibility = "hidden" if done else "visible"

    @property
    def notebook(self) -> str | None:
        return self.label.notebook if self.label is not None else None


def _record_of(job: Job, session: Session) -> job_records.JobRecord | None:
    try:
        return job_records.load(job.client.endpoint, job.name, session.owner)
    except Exception:  # a record only adds a label
        return None


class JobsTable(w.VBox):
    """The jobs of `session.jobs` (scope "kernel"), or of all the user's kernels ("mine") or
    of every visible runner service ("all"); rows follow their jobs through the shared poller."""

    def __init__(
        self,
        session: Session | None = None,
        *,
        watch: bool = True,
        scope: str = "kernel",
        notebook: str | None = None,
        hide_finished: bool = False,
    ) -> None:
        super().__init__()
        self.session = session if session is not None else current()
        self.watch = watch
        self.scope = check_scope(scope)
        self.notebook = notebook  # only the jobs of this notebook (JPY_SESSION_NAME), any kernel
        self.hide_finished = hide_finished
        self._others: dict[str, Job] = {}  # jobs of other kernels, found on the cluster
        self.relist_seconds = RELIST_SECONDS
        self._listed_at = 0.0
        self._lock = threading.RLock()
        self._rows: dict[str, _Row] = {}
        self._listening: set[str] = set()
        self.summary = w.HTML()
        self.summary.add_class("oj-muted")
        self.message = w.HTML()
        self.message.add_class("oj-error")
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", tooltip="Look for new jobs of this kernel"
        )
        self.refresh_button.layout.width = "auto"
        self.refresh_button.on_click(lambda _: self.refresh())
        self.grid = w.GridBox()
        self.grid.layout.grid_template_columns = "minmax(10em, 2fr) auto auto auto auto auto"
        self.grid.layout.width = "100%"
        self.grid.add_class("oj-grid")
        self.detail = w.VBox()
        self.detail.layout.width = "100%"
        self.detail_view: JobView | None = None
        toolbar = w.HBox([self.summary, self.refresh_button])
        toolbar.layout.justify_content = "space-between"
        toolbar.layout.align_items = "center"
        toolbar.layout.width = "100%"
        self.children = [style_widget(), toolbar, self.grid, self.message, self.detail]
        self.add_class("oj-root")
        self.add_class("oj-card")
        self.add_class("oj-jobs")
        self.layout.width = "100%"
        self.refresh()

    # -- rows ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Pick up new jobs (of the session, or the cluster's for "mine"/"all"), drop those
        deleted on the cluster, and redraw."""
        self._listed_at = time.monotonic()
        try:
            jobs = self._jobs()
        except OscarError as err:  # shown in the table; the rows already shown stay
            self.message.value = html.escape(f"Could not list the jobs: {err}")
            jobs = [row.job for row in self._rows.values()]
        with self._lock:
            added = False
            listed = {job.name for job in jobs}
            for name in [n for n in self._rows if n not in listed]:
                # Deleted on the cluster (a cleanup, another view): gone from the table too.
                self._forget(name)
                added = True
            for job in jobs:
                if job.name not in self._rows:
                    row = _Row(self, job)
                    if self.notebook is not None and row.notebook != self.notebook:
                        continue
                    if self.hide_finished and job.is_done():
                        continue
                    self._rows[job.name] = row
                    added = True
                    self._follow(job)
                else:
                    self._rows[job.name].update()
            if self.hide_finished:
                for name in [n for n, r in self._rows.items() if r.job.is_done()]:
                    del self._rows[name]
                    added = True
            if added or not self.grid.children:
                self._layout_grid()
            self._summarise()

    def _jobs(self) -> list[Job]:
        if self.scope == "kernel" and self.notebook is None:
            return list(self.session.jobs.values())
        session = self.session
        client = session.require_client()
        jobs = []
        for service in session.runner_services("mine" if self.notebook else self.scope):
            listing = session.job_listing(service)
            for name in sorted(listing or {}):
                job = session.jobs.get(name) or self._others.get(name)
                if job is None:
                    info = (listing or {})[name]
                    job = self._others[name] = job_found(client, service, name, info)
                if not job.is_done():
                    try:
                        job.refresh(listing)  # the listing is at hand: no second one
                    except OscarError:
                        pass  # its log could not be read now: the poller tries again
                jobs.append(job)
        if self.notebook is not None:  # this kernel's own, also those OSCAR no longer lists
            listed = {job.name for job in jobs}
            jobs += [job for job in session.jobs.values() if job.name not in listed]
        return jobs

    def _follow(self, job: Job) -> None:
        if job.is_done() or job.name in self._listening:
            return
        job.add_listener(self._on_job_change)
        self._listening.add(job.name)
        CLOCK.add(self._tick)
        if self.watch:
            self.session.poller.watch(job)

    def _on_job_change(self, job: Job) -> None:
        with self._lock:
            row = self._rows.get(job.name)
            if row is not None:
                row.update()
            if job.is_done() and job.name in self._listening:
                job.remove_listener(self._on_job_change)
                self._listening.discard(job.name)
            # A job submitted since the last look shows up with the next change of any job
            # (other kernels' jobs only with Refresh: that asks the cluster).
            if self.scope == "kernel" and len(self.session.jobs) != len(self._rows):
                self.refresh()
            else:
                self._summarise()

    def _forget(self, name: str) -> None:
        row = self._rows.pop(name)
        if name in self._listening:
            row.job.remove_listener(self._on_job_change)
            self._listening.discard(name)

    def _tick(self) -> bool:
        """The clock's call: redraw the running rows' elapsed time, and list the cluster's jobs
        again every `relist_seconds` when the table shows other kernels' jobs (a watch, not a
        snapshot); False when there is nothing left to follow."""
        relist = self.watch and (self.scope != "kernel" or self.notebook is not None)
        if relist and time.monotonic() - self._listed_at >= self.relist_seconds:
            self.refresh()
        with self._lock:
            running = [row for row in self._rows.values() if row.job.name in self._listening]
            for row in running:
                row.update()
            return bool(running) or relist

    def _layout_grid(self) -> None:
        heads = []
        for text in HEADINGS:
            head = w.HTML(html.escape(text))
            head.add_class("oj-head")
            heads.append(head)
        # Newest submission first, as %oscar_jobs and the sidebar list them.
        rows = sorted(self._rows.values(), key=lambda r: (r.job.submitted_at, r.job.name))
        cells = [cell for row in reversed(rows) for cell in row.cells]
        self.grid.children = heads + cells if self._rows else []

    def _summarise(self) -> None:
        jobs = [row.job for row in self._rows.values()]
        where = {"kernel": "in this kernel", "mine": "of yours", "all": "visible"}[self.scope]
        if self.notebook is not None:
            where = f"of {os.path.basename(self.notebook)}"
        if not jobs:
            self.summary.value = (
                "No jobs in this kernel yet: run a cell with %%oscar_offload."
                if self.scope == "kernel" and self.notebook is None
                else f"No {'running or waiting ' if self.hide_finished else ''}jobs {where} "
                "on this cluster."
            )
            return
        running = sum(1 for job in jobs if not job.is_done())
        hours = total_core_hours(
            (row.request, row.job.usage.wall_seconds if row.job.usage else row.job.elapsed())
            for row in self._rows.values()
        )
        self.summary.value = html.escape(
            f"{len(jobs)} job(s) {where}, {running} not finished"
            + ("; updating as they change." if running else ".")
            + f" {core_hours_text(hours)} (cores asked × wall time)."
        )

    # -- actions -------------------------------------------------------------------------------

    def show(self, job: Job) -> None:
        """Open `job`'s live view below the table (replacing the one shown)."""
        if self.detail_view is not None:
            self.detail_view.close()
        self.detail_view = JobView(job, session=self.session, watch=self.watch)
        self.detail.children = [self.detail_view]

    def cancel(self, job: Job) -> None:
        self.message.value = ""
        try:
            job.cancel()
        except Exception as err:  # shown in the table; the kernel stays usable
            self.message.value = html.escape(f"Could not cancel {job.name}: {err}")
        self._on_job_change(job)

    def close(self) -> None:
        CLOCK.remove(self._tick)
        with self._lock:
            for row in self._rows.values():
                if row.job.name in self._listening:
                    row.job.remove_listener(self._on_job_change)
            self._listening.clear()
        if self.detail_view is not None:
            self.detail_view.close()
        super().close()

    def __repr__(self) -> str:
        return f"<oscar_jupyter JobsTable: {len(self._rows)} job(s)>"
