"""The live view of one job: status badge, node, elapsed against the limit, log tail, buttons.

Made in the main thread (the cell that shows it), then updated only through widget traits from the
poller thread, so output never lands in whichever cell happens to run (DESIGN.md decision 10).
The buttons work because the kernel is idle between cells.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as w

from ..display import partial_output_lines
from ..jobs import Job
from ..session import Session, current
from ..timefmt import duration
from ..usage import hint, usage_text
from .clock import CLOCK
from .style import badge, style_widget

DEFAULT_TAIL_LINES = 20


def header_html(job: Job) -> str:
    """Badge, job name, node and elapsed / limit with a bar, as one HTML fragment."""
    status = job.status()
    parts = [badge(status), f'<span class="oj-name oj-title">{html.escape(job.name)}</span>']
    node = job.node or getattr(job.spec, "node", None)
    if node:
        where = "on" if job.node else "for"
        parts.append(f'<span class="oj-muted">{where}</span> {html.escape(str(node))}')
    limit = job.time_limit
    elapsed = job.elapsed()
    if status not in ("Suspended", "Pending") or elapsed:
        clock = duration(elapsed)
        if limit:
            clock += f" / {duration(limit)}"
        parts.append(f'<span class="oj-clock">{clock}</span>')
    if limit:
        share = min(1.0, elapsed / limit)
        late = " oj-late" if share >= 0.9 else ""
        parts.append(
            f'<div class="oj-bar{late}" title="elapsed against the time limit">'
            f'<div style="width: {share * 100:.1f}%"></div></div>'
        )
    if job.exit_code is not None and job.is_done():
        parts.append(f'<span class="oj-muted">exit code {job.exit_code}</span>')
    usage = job.usage if job.is_done() else None
    if usage is not None:
        used = html.escape(usage_text(usage, job.request))
        parts.append(f'<span class="oj-muted oj-usage">{used}</span>')
        advice = hint(usage, job.request)
        if advice:
            parts.append(f'<span class="oj-hint">{html.escape(advice)}</span>')
    for note in (job.waiting_reason(), job.lag_note):
        if note:
            parts.append(f'<span class="oj-muted">{html.escape(note)}</span>')
    error = getattr(job, "error", None)
    if error and not job.is_done():
        parts.append(f'<span class="oj-error">retrying: {html.escape(str(error))}</span>')
    return f'<div class="oj-header">{"".join(parts)}</div>'


def server_cancel_html(job: Job, cluster: str | None, *, done: bool) -> str:
    """A Cancel button the JupyterLab extension handles in the page (labextension
    outputcancel.ts): it asks the Jupyter server at once, even while the kernel runs another
    cell. Without the extension it stays hidden and the kernel's button shows instead."""
    return (
        '<button type="button" class="oj-cancel-via-server jupyter-button mod-danger"'
        f' data-oj-cluster="{html.escape(cluster or "", quote=True)}"'
        f' data-oj-service="{html.escape(job.service, quote=True)}"'
        f' data-oj-job="{html.escape(job.name, quote=True)}"'
        ' title="Cancel the job on the cluster (through the Jupyter server: at once, even while'
        ' the kernel runs another cell)"' + (" disabled" if done else "") + ">Cancel</button>"
    )


def lines_html(lines: list[Any], hidden: int = 0, job_name: str = "") -> str:
    """A log block; stderr lines in the theme's error colour."""
    body = "".join(
        f'<span class="oj-stderr">{html.escape(ln.text)}</span>\n'
        if ln.stream == "stderr"
        else html.escape(ln.text) + "\n"
        for ln in lines
    )
    more = ""
    if hidden:
        more = (
            f'<div class="oj-muted">… {hidden} earlier line(s): "Full log" or '
            f"%oscar_logs {html.escape(job_name)}</div>"
        )
    return f'{more}<pre class="oj-log">{body}</pre>'


class JobView(w.VBox):
    """Live view of `job`; `watch=True` asks the kernel's shared poller to keep it current."""

    def __init__(
        self,
        job: Job,
        *,
        tail_lines: int = DEFAULT_TAIL_LINES,
        session: Session | None = None,
        watch: bool = True,
    ) -> None:
        super().__init__()
        self.job = job
        self.tail_lines = tail_lines
        self._lock = threading.Lock()
        self.header = w.HTML()
        self.tail = w.HTML()
        self.tail.add_class("oj-follow")
        self.message = w.HTML()
        self.message.add_class("oj-error")
        self.cancel_button = w.Button(
            description="Cancel",
            icon="stop",
            button_style="danger",
            tooltip="Cancel the job on the cluster",
        )
        self.log_button = w.Button(
            description="Full log", icon="file-text-o", tooltip="Show the whole output so far"
        )
        for button in (self.cancel_button, self.log_button):
            button.layout.width = "auto"
        self.cancel_button.add_class("oj-kernel-cancel")
        owner = session if session is not None else current()
        profile = getattr(owner, "profile", None)
        self._cluster = profile.cluster_id if profile is not None else None
        # Set once now and once when the job ends: an HTML widget redraws on each change.
        self.server_cancel = w.HTML(server_cancel_html(job, self._cluster, done=job.is_done()))
        self.cancel_button.on_click(lambda _: self.cancel())
        self.log_button.on_click(lambda _: self.toggle_full_log())
        self.full_log = w.HTML()
        self.full_log.layout.display = "none"
        buttons = w.HBox([self.server_cancel, self.cancel_button, self.log_button])
        buttons.add_class("oj-buttons")
        self.children = [
            style_widget(),
            self.header,
            self.tail,
            buttons,
            self.message,
            self.full_log,
        ]
        self.add_class("oj-root")
        self.add_class("oj-card")
        self.add_class("oj-jobview")
        self.layout.width = "100%"
        self._listening = False
        self.refresh()
        if not job.is_done():
            job.add_listener(self._on_job_change)
            self._listening = True
            CLOCK.add(self._tick)
            if watch:
                (session if session is not None else current()).poller.watch(job)

    # -- updates (main thread or poller thread: traits only, never print) ------------------------

    def _on_job_change(self, job: Job) -> None:
        self.refresh()

    def _tick(self) -> bool:
        """The clock's call: redraw the header (elapsed time); False once there is no more to do."""
        if not self._listening:
            return False
        with self._lock:
            self.header.value = header_html(self.job)
        return True

    def refresh(self) -> None:
        """Redraw from the job's current state; stops listening once the job is done."""
        with self._lock:
            job = self.job
            lines = job.tail(self.tail_lines) if self.tail_lines > 0 else []
            hidden = len(job.lines()) - len(lines)
            if self.tail_lines > 0:
                lines = lines + partial_output_lines(job)  # the lines not ended yet, as now
            self.header.value = header_html(job)
            if lines or hidden:
                self.tail.value = lines_html(lines, hidden, job.name)
            else:
                self.tail.value = '<div class="oj-muted">No output yet.</div>'
            done = job.is_done()
            self.cancel_button.disabled = done
            if done and "disabled>" not in self.server_cancel.value:
                self.server_cancel.value = server_cancel_html(job, self._cluster, done=True)
            if done and self._listening:
                job.remove_listener(self._on_job_change)
                self._listening = False
            if self.full_log.layout.display != "none":
                self.full_log.value = self._full_log_html()

    # -- buttons -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the job on the cluster; a failure is shown in the view, not raised."""
        self.message.value = ""
        try:
            self.job.cancel()
        except Exception as err:  # shown to the user in the view; the kernel stays usable
            self.message.value = html.escape(f"Could not cancel {self.job.name}: {err}")
        self.refresh()

    def toggle_full_log(self) -> None:
        if self.full_log.layout.display == "none":
            self.full_log.value = self._full_log_html()
            self.full_log.layout.display = ""
            self.log_button.description = "Hide log"
        else:
            self.full_log.layout.display = "none"
            self.full_log.value = ""
            self.log_button.description = "Full log"

    def _full_log_html(self) -> str:
        try:
            text = self.job.logs()
        except Exception as err:  # e.g. the log file went away
            return f'<div class="oj-error">{html.escape(f"Could not read the log: {err}")}</div>'
        if not text:
            return '<div class="oj-muted">No output yet.</div>'
        return f'<pre class="oj-log">{html.escape(text)}</pre>'

    def close(self) -> None:
        CLOCK.remove(self._tick)
        if self._listening:
            self.job.remove_listener(self._on_job_change)
            self._listening = False
        super().close()

    def __repr__(self) -> str:
        return f"<oscar_jupyter JobView of {self.job.name}: {self.job.status()}>"
