"""Plain renderings of a job for cell outputs: the one-line status, the bounded live view, the
bounded stream of a blocking cell, its line not ended yet, and the summary of a dry run."""

from __future__ import annotations

import collections
import html
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from IPython.display import display

from .job_status import TERMINAL, cancelled_phrase, placement_text
from .jobs import Job, is_marker
from .logs import OutputLine
from .spec import OffloadSpec
from .timefmt import duration, short_id
from .usage import hint, usage_parts

SYMBOLS = {
    "Suspended": "◌",
    "Pending": "◔",
    "Running": "▶",
    "Succeeded": "✔",
    "Failed": "✖",
    "Cancelled": "■",
}

WHOLE_MINUTES = " (Slurm counts --time in whole minutes)"

# A rank's label ("[r3] ") in its own colour: ANSI in the streamed text, CSS in HTML views; red
# is left to errors.
_RANK_ANSI = ("32", "34", "35", "36", "33", "92", "94", "95", "96", "93")
_RANK_CSS = ("#2e7d32", "#1565c0", "#8e24aa", "#00838f", "#ef6c00", "#6d4c41")


def _html_text(line: OutputLine) -> str:
    """A line's text as HTML, its rank label in the rank's colour."""
    if not line.label:
        return html.escape(line.text)
    colour = _RANK_CSS[line.rank % len(_RANK_CSS)]
    label = html.escape(line.text[: line.label].rstrip())
    return f'<span style="color: {colour}">{label}</span> ' + html.escape(line.text[line.label :])


def _ansi_text(line: OutputLine) -> str:
    if not line.label:
        return line.text
    colour = _RANK_ANSI[line.rank % len(_RANK_ANSI)]
    label = line.text[: line.label].rstrip()
    return f"\x1b[{colour}m{label}\x1b[0m " + line.text[line.label :]


class RankTracebacks:
    """Which ranks have printed their traceback marker: the stderr lines after it are the
    cell's error (shown once, as the error), never streamed. One rank's marker hides only its
    own stderr."""

    def __init__(self) -> None:
        self.ranks: set[int] = set()

    def hides(self, line: OutputLine) -> bool:
        if line.stream != "stderr":
            return False
        if is_marker(line):
            self.ranks.add(line.rank)
        return line.rank in self.ranks


def status_line(job: Job, note: str | None = None) -> str:
    """e.g. '▶ Running on local-slurm · 00:00:12 / 02:30:00 · job 9827865a7cfd' (the short id;
    `note`, e.g. that the view detached, before it)."""
    status = job.status()
    parts = [f"{SYMBOLS.get(status, '?')} {status}"]
    if status == "Cancelled":
        parts[0] += cancelled_by(job)
    if job.node and status not in ("Suspended", "Pending"):
        parts[0] += f" on {job.node}"
        spec = getattr(job, "spec", None)
        if spec is not None and spec.mpi is not None:  # ranks: 'on vega, 2 nodes (8 ranks)'
            nodes = 1 if spec.launches_ranks() else spec.node_count()
            placement = placement_text(nodes, spec.task_count())
            parts[0] += f", {placement}" if placement else ""
    usage = job.usage if status in TERMINAL else None
    limit = job.time_limit
    if usage is not None:  # measured on the cluster: wall, CPU and peak memory against the request
        parts.extend(usage_parts(usage, job.request))
        if limit and limit % 60 and usage.wall_seconds > limit:
            parts[1] += WHOLE_MINUTES
    elif status not in ("Suspended", "Pending"):
        elapsed = duration(job.elapsed())
        shown = f"{elapsed} / {duration(limit)}" if limit else elapsed
        if limit and limit % 60 and job.elapsed() > limit:
            shown += WHOLE_MINUTES
        parts.append(shown)
    if job.exit_code is not None and status in ("Succeeded", "Failed"):
        parts.append(f"exit code {job.exit_code}")
    queued = job.queued()
    if queued is not None and queued >= 1:
        parts.append(f"queued {duration(queued)}")
    reason = job.waiting_reason()
    if reason:
        parts.append(f"waiting {duration(job.waited())}: {reason}")
    lag = job.lag_note
    if lag:
        parts.append(lag)
    if job.error and not job.is_done():
        parts.append(f"(retrying: {job.error})")
    if note:
        parts.append(note)
    parts.append(f"job {short_id(job.name)}")
    advice = hint(usage, job.request) if usage is not None else None
    return " · ".join(parts) + (f"\n{advice}" if advice else "")


def cancelled_by(job: Job) -> str:
    """' from this kernel', ' by Slurm (scancel on the cluster)' ...; "" when unknown."""
    phrase = cancelled_phrase(job.state().cancelled_by)
    return " " + phrase if phrase else ""


def status_bundle(job: Job, note: str | None = None) -> dict[str, str]:
    text = status_line(job, note)
    colour = {
        "Succeeded": "var(--jp-success-color1, green)",
        "Failed": "var(--jp-error-color1, red)",
        "Running": "var(--jp-brand-color1, steelblue)",
    }.get(job.status(), "var(--jp-ui-font-color2, gray)")
    return {
        "text/plain": text,
        "text/html": f'<div style="font-family: var(--jp-code-font-family, monospace); '
        f'white-space: pre-line; color: {colour}" title="job {html.escape(job.name)}">'
        f"{html.escape(text)}</div>",
    }


def partial_lines(job: Job) -> dict[str, str]:
    """The lines the job's streams have not ended yet, as they look now: {"stdout": text, ...}."""
    parser = getattr(job, "_parser", None)  # a copy: the poller thread may change it meanwhile
    return dict(getattr(parser, "partial", None) or {})


def partial_output_lines(job: Job) -> list[OutputLine]:
    """`partial_lines` as lines to show after the complete ones (seq 0: not a line yet)."""
    partial = partial_lines(job)
    return [
        OutputLine(stream, 0, partial[stream])
        for stream in ("stdout", "stderr")
        if stream in partial
    ]


def live_bundle(job: Job, tail_lines: int) -> dict[str, str]:
    """Status line plus the last `tail_lines` lines (the whole log stays in the job's file) and
    the lines not ended yet."""
    lines = [line for line in job.lines() if not is_marker(line)]
    shown = lines[-tail_lines:] if tail_lines > 0 else []
    if tail_lines > 0:
        shown += partial_output_lines(job)
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
            f'<span style="color: var(--jp-error-color1, red)">{_html_text(ln)}</span>\n'
            if ln.stream == "stderr"
            else _html_text(ln) + "\n"
            for ln in shown
        )
        + "</pre>"
    )
    return {"text/plain": text, "text/html": "".join(rows)}


# Images a finished job's record in the notebook shows inline (binary types travel base64).
_INLINE_IMAGES = ("image/png", "image/jpeg")
_PRE = '<pre style="margin: 0">'
_RED = 'style="color: var(--jp-error-color1, red)"'


def final_bundle(job: Job, max_lines: int, error: str = "") -> dict[str, str]:
    """What a finished --no-wait job leaves in the notebook's own outputs (no widget state):
    its status line, its output (the first and last lines, at most `max_lines`), its figures
    and its error, as plain text and as HTML. A saved notebook reads the same without a kernel,
    in JupyterLab, nbviewer and GitHub."""
    lines, tracebacks = [], RankTracebacks()
    for line in job.lines():
        if not tracebacks.hides(line):  # the traceback shows in `error`
            lines.append(line)
    head = (max(max_lines, 0) + 1) // 2
    tail = max(max_lines, 0) - head
    left_out = max(0, len(lines) - head - tail)
    shown = lines if not left_out else lines[:head] + lines[len(lines) - tail :]
    gap = f"… {left_out} lines left out (all of them: %oscar_logs {short_id(job.name)})"
    text_rows = [status_line(job)]
    html_rows = [status_bundle(job)["text/html"], _PRE]
    for index, line in enumerate(shown):
        if left_out and index == head:
            text_rows.append(gap)
            html_rows.append(f"<i>{html.escape(gap)}</i>\n")
        text_rows.append(line.text)
        image = next((m for m in _INLINE_IMAGES if m in (line.bundle or {}).get("data", {})), None)
        if image is not None:
            data = line.bundle["data"][image]  # type: ignore[index]
            html_rows.append(
                f'</pre><img src="data:{image};base64,{data}"/><pre style="margin: 0">'
            )
        elif line.stream == "stderr":
            html_rows.append(f"<span {_RED}>{_html_text(line)}</span>\n")
        else:
            html_rows.append(_html_text(line) + "\n")
    html_rows.append("</pre>")
    if error:
        text_rows.append(error)
        html_rows.append(f"<pre {_RED}>{html.escape(error)}</pre>")
    return {"text/plain": "\n".join(text_rows), "text/html": "".join(html_rows)}


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


def _write(line: OutputLine) -> None:
    if line.bundle is not None:
        show_rich(line)
        return
    stream = sys.stderr if line.stream == "stderr" else sys.stdout
    stream.write(_ansi_text(line) + "\n")


def write_all(job: Job, rank: int | None = None) -> None:
    """The whole output of a job so far, figures and rich outputs included (`rank`: that rank's
    alone, of a job of several)."""
    if rank is not None:
        for line in job.rank_lines(rank):
            if not is_marker(line):
                _write(line)
        sys.stdout.flush()
        sys.stderr.flush()
        return
    lines = [line for line in job.lines() if not is_marker(line)]
    if not lines:
        sys.stdout.write(job.logs())  # read before: the log file of an earlier kernel
    for line in lines:
        _write(line)
    sys.stdout.flush()
    sys.stderr.flush()


def show_rich(line: OutputLine) -> None:
    """A figure or display(obj) from the cluster, as the notebook shows any cell's rich output
    (its own output item, in order with the text), and its notes (a part over the bound)."""
    assert line.bundle is not None
    sys.stdout.flush()
    sys.stderr.flush()
    display(line.bundle["data"], metadata=line.bundle["metadata"] or None, raw=True)
    for note in line.bundle["notes"]:
        print(note, file=sys.stderr)


def partial_bundle(partial: dict[str, str]) -> dict[str, str]:
    """The lines not ended yet (stdout, then stderr in the error colour); empty for none."""
    streams = [stream for stream in ("stdout", "stderr") if stream in partial]
    if not streams:
        return {"text/plain": ""}
    rows = "\n".join(
        f'<span style="color: var(--jp-error-color1, red)">{html.escape(partial[stream])}</span>'
        if stream == "stderr"
        else html.escape(partial[stream])
        for stream in streams
    )
    return {
        "text/plain": "\n".join(partial[stream] for stream in streams),
        "text/html": f'<pre style="margin: 0">{rows}</pre>',
    }


class PartialLine:
    """A blocking cell's lines not ended yet (a progress bar, a prompt), shown in place in a
    display under the streamed text and emptied once they end: the complete line is streamed as
    text like any other, so the saved notebook holds each line once."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.shown: dict[str, str] = {}

    def update(self, partial: dict[str, str], lines_follow: bool) -> None:
        """Call before streaming the poll's new lines (`lines_follow`): a display that has to
        change is emptied then, and the next partial line gets a new one under the new text."""
        if lines_follow and partial != self.shown:
            self.clear()

    def show(self, partial: dict[str, str]) -> None:
        """Call after streaming the poll's new lines."""
        if partial == self.shown:
            return
        if self.handle is None:
            if not partial:
                return
            self.handle = display(partial_bundle(partial), raw=True, display_id=True)
        else:
            self.handle.update(partial_bundle(partial), raw=True)
        self.shown = dict(partial)

    def clear(self) -> None:
        if self.handle is not None and self.shown:
            self.handle.update(partial_bundle({}), raw=True)
        self.handle, self.shown = None, {}


class BoundedStream:
    """Writes a job's lines into a blocking cell as they arrive.

    stderr stops at the program's traceback marker (the cell's error shows the traceback once).
    At most `limit` lines: the first half live, the last half when the job ends (`close`), with
    the count left out and where to see them all."""

    def __init__(self, job_name: str, limit: int) -> None:
        self.job_name = job_name
        self.head = (max(limit, 0) + 1) // 2
        self.tail: collections.deque[OutputLine] = collections.deque(maxlen=max(limit, 0) // 2)
        self.shown = 0
        self.left_out = 0
        self.tracebacks = RankTracebacks()

    @property
    def in_traceback(self) -> bool:
        """Rank 0 (the only rank of most jobs) has begun its traceback."""
        return 0 in self.tracebacks.ranks

    def write(self, lines: Iterable[OutputLine]) -> None:
        wrote = False
        for line in lines:
            if self.tracebacks.hides(line):
                continue
            if self.shown < self.head:
                _write(line)
                self.shown += 1
                wrote = True
                continue
            if len(self.tail) == self.tail.maxlen:
                self.left_out += 1
                if self.left_out == 1:
                    print(
                        f"… more lines than the cell shows: the last {self.tail.maxlen} will "
                        f"follow when the job ends (all of them: %oscar_logs {self.job_name})",
                        file=sys.stderr,
                    )
                    wrote = True
            self.tail.append(line)
        if wrote:
            sys.stdout.flush()
            sys.stderr.flush()

    def close(self) -> None:
        """Writes the kept last lines (the job ended, or the cell stops following it)."""
        if self.left_out:
            print(
                f"… {self.left_out} lines left out (all of them: %oscar_logs {self.job_name})",
                file=sys.stderr,
            )
        while self.tail:
            _write(self.tail.popleft())
        self.left_out = 0
        sys.stdout.flush()
        sys.stderr.flush()


def spec_summary(spec: OffloadSpec) -> str:
    """What a cell would ask for, one topic a line (node, resources, image, sbatch flags)."""
    resources = [f"time {spec.time}" if spec.time else "time: the partition's default"]
    if spec.cpus_per_task:
        resources.append(f"{spec.cpus_per_task} CPUs per task")
    resources.append(f"memory {spec.mem}" if spec.mem else "memory: the default")
    if spec.gpus:
        resources.append(f"{spec.gpus} GPU(s)")
    if spec.nodes:
        resources.append(f"{spec.nodes} nodes")
    lines = [
        f"node: {spec.node or '(none chosen)'}",
        "resources: " + ", ".join(resources),
        f"image: {spec.image}",
        "sbatch flags: " + (" ".join(spec.slurm_flags()) or "(none)"),
    ]
    if spec.mounts:
        lines.append("mounts: " + ", ".join(spec.mounts))
    if spec.pre_exec:
        lines.append(f"pre-exec: {spec.pre_exec}")
    if spec.env or spec.secrets:
        names = sorted(spec.env) + sorted(spec.secrets)
        lines.append("environment (values not shown): " + ", ".join(names))
    return "\n".join(lines)


class TransferProgress:
    """Progress bars for the cell's large transfers (`--in`/`--out` values, `--upload`,
    `--download`): one display per transfer, updated in place at most 5 times a second (the
    transfer's threads call it; the cell that waits for them is the one they show in)."""

    MIN_BYTES = 4 * 1024 * 1024  # smaller transfers show nothing
    EVERY_SECONDS = 0.2

    def __call__(self, label: str, total: int) -> Callable[[int], None]:
        if total < self.MIN_BYTES:
            return lambda moved: None
        handle = display(self._bundle(label, 0, total, 0.0), raw=True, display_id=True)
        lock = threading.Lock()
        started = time.monotonic()
        state = {"done": 0, "shown": 0.0}

        def on_bytes(moved: int) -> None:
            with lock:
                state["done"] += moved
                now = time.monotonic()
                finished = state["done"] >= total
                if not finished and now - state["shown"] < self.EVERY_SECONDS:
                    return
                state["shown"] = now
                bundle = self._bundle(label, int(state["done"]), total, now - started)
            if handle is not None:
                handle.update(bundle, raw=True)

        return on_bytes

    @staticmethod
    def _bundle(label: str, done: int, total: int, seconds: float) -> dict[str, str]:
        fraction = min(1.0, done / total) if total else 1.0
        bar = "█" * int(fraction * 30) + "░" * (30 - int(fraction * 30))
        rate = f", {done / seconds / 1e6:.0f} MB/s" if seconds > 0.1 and done else ""
        text = f"{label}: {bar} {done / 1e6:.1f} of {total / 1e6:.1f} MB{rate}"
        return {"text/plain": text}
