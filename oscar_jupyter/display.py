"""Plain renderings of a job for cell outputs: the one-line status and the bounded live view."""

from __future__ import annotations

import html

from .jobs import Job
from .spec import format_time

SYMBOLS = {
    "Suspended": "◌",
    "Pending": "◔",
    "Running": "▶",
    "Succeeded": "✔",
    "Failed": "✖",
    "Cancelled": "■",
}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    return format_time(int(seconds))


def status_line(job: Job) -> str:
    """e.g. '▶ Running on local-slurm · 00:00:12 / 02:30:00 · job oj-1a2b3c4d5e-…'"""
    status = job.status()
    parts = [f"{SYMBOLS.get(status, '?')} {status}"]
    if job.node and status not in ("Suspended", "Pending"):
        parts[0] += f" on {job.node}"
    if status not in ("Suspended", "Pending"):
        limit = job.time_limit
        elapsed = format_duration(job.elapsed())
        parts.append(f"{elapsed} / {format_duration(limit)}" if limit else elapsed)
    if job.exit_code is not None and status in ("Succeeded", "Failed"):
        parts.append(f"exit code {job.exit_code}")
    queued = job.queued()
    if queued is not None and queued >= 1:
        parts.append(f"queued {format_duration(queued)}")
    reason = job.waiting_reason()
    if reason:
        parts.append(f"waiting {format_duration(job.waited())}: {reason}")
    if job.error and not job.is_done():
        parts.append(f"(retrying: {job.error})")
    parts.append(f"job {job.name}")
    return " · ".join(parts)


def status_bundle(job: Job) -> dict[str, str]:
    text = status_line(job)
    colour = {
        "Succeeded": "var(--jp-success-color1, green)",
        "Failed": "var(--jp-error-color1, red)",
        "Running": "var(--jp-brand-color1, steelblue)",
    }.get(job.status(), "var(--jp-ui-font-color2, gray)")
    return {
        "text/plain": text,
        "text/html": f'<div style="font-family: var(--jp-code-font-family, monospace); '
        f'color: {colour}">{html.escape(text)}</div>',
    }


def live_bundle(job: Job, tail_lines: int) -> dict[str, str]:
    """Status line plus the last `tail_lines` lines (the whole log stays in the job's file)."""
    lines = job.lines()
    shown = lines[-tail_lines:] if tail_lines > 0 else []
    hidden = len(lines) - len(shown)
    body = [status_line(job)]
    if hidden:
        body.append(f"… {hidden} earlier lines: %oscar_logs {job.name}")
    body += [line.text for line in shown]
    text = "\n".join(body)
    rows = [status_bundle(job)["text/html"]]
    if hidden:
        rows.append(
            f"<div><i>… {hidden} earlier lines: %oscar_logs {html.escape(job.name)}</i></div>"
        )
    rows.append(
        '<pre style="margin: 0">'
        + "".join(
            f'<span style="color: var(--jp-error-color1, red)">{html.escape(ln.text)}</span>\n'
            if ln.stream == "stderr"
            else html.escape(ln.text) + "\n"
            for ln in shown
        )
        + "</pre>"
    )
    return {"text/plain": text, "text/html": "".join(rows)}


def table_bundle(headers: list[str], rows: list[list[str]], empty: str) -> dict[str, str]:
    """A table as aligned plain text and as HTML."""
    if not rows:
        return {"text/plain": empty, "text/html": f"<i>{html.escape(empty)}</i>"}
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    text_rows = [headers, *rows]
    text = "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in text_rows
    )
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return {"text/plain": text, "text/html": f"<table><thead><tr>{head}</tr></thead>{body}</table>"}
