"""The errors an offloaded cell ends with, in the notebook's terms.

A failing cell shows the exception and its traceback once, with the cell's own line numbers as
the editor shows them and the file named as the cell; a cancelled job or Ctrl-C is one line.
"""

from __future__ import annotations

import re
import traceback
from typing import Any

from . import hints
from .jobs import Job, JobCancelled, JobFailed

# The cell's file in a remote traceback (the program writes it to <work dir>/cell.py), or the
# name a local compile gives it.
_CELL_FILE = re.compile(r'File "(?:[^"]*/oj-[^"/]*/cell\.py|<cell>)", line (\d+)')
LOCAL_FILENAME = "<cell>"


def relabel(text: str, name: str, offset: int) -> str:
    """Names the cell's file `name` and adds `offset` to its line numbers (1 in a cell magic:
    the editor counts the %%oscar_offload line)."""
    return _CELL_FILE.sub(lambda m: f"{name}, line {int(m.group(1)) + offset}", text)


def final_traceback(job: Job) -> str:
    """The traceback of the exception that ended the cell: the stderr lines after the program's
    marker (chained exceptions included), else the parser's guess; "" when none."""
    return job.remote_traceback()


class CellError(JobFailed):
    """The cell raised an exception on the cluster. Renders like a local error: the traceback
    (cell lines as the editor shows them), the exception, and a hint where one helps."""

    def __init__(self, job: Job, remote_traceback: str, name: str, offset: int) -> None:
        lines = remote_traceback.rstrip("\n").splitlines()
        exception_line = lines[-1] if lines else f"exit code {job.exit_code}"
        # A job of several ranks: the failing rank's traceback, then which ranks failed.
        ranks = job.ranks_summary() if hasattr(job, "ranks_summary") else ""
        message = f"{exception_line}; {ranks}" if ranks and ranks != exception_line else None
        super().__init__(job, message or exception_line, remote_traceback)
        self.rendered = relabel(remote_traceback.rstrip("\n"), name, offset).splitlines()
        advice = hints.hint(exception_line, job.spec)
        if advice:
            self.rendered.append(advice)
        if message:
            self.rendered.append(ranks)

    def _render_traceback_(self) -> list[str]:
        return list(self.rendered)


class CellCancelled(JobCancelled):
    """The job was cancelled before the cell ended: one line, no traceback."""

    def __init__(self, job: Job) -> None:
        reason = job.end_reason() or "cancelled"
        super().__init__(job, f"job {job.name} was {reason}; its output so far is above")

    def _render_traceback_(self) -> list[str]:
        return [f"JobCancelled: {self.args[0]}"]


class CellInterrupted(KeyboardInterrupt):
    """Ctrl-C in a blocking cell (still a KeyboardInterrupt, so Run All stops): one line."""

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


class CellSyntaxError(SyntaxError):
    """The cell does not compile: found before anything is sent. A SyntaxError (so `except
    SyntaxError` catches it) that renders like Python's, with the line as the editor shows it."""

    def __init__(self, error: SyntaxError, name: str, offset: int) -> None:
        line = (error.lineno or 0) + offset
        super().__init__(error.msg, (name, line, error.offset, error.text))
        self.error = error
        text = "".join(traceback.format_exception_only(type(error), error))
        self.rendered = relabel(text.rstrip("\n"), name, offset).splitlines()

    def _render_traceback_(self) -> list[str]:
        return list(self.rendered)


def show_cell_syntax_error(
    shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
) -> list[str]:
    """IPython's handler for `CellSyntaxError` (`set_custom_exc`): the error as Python shows
    it, with the editor's line, named SyntaxError (nbclient and the notebook see that name)."""
    rendered = value._render_traceback_()  # type: ignore[attr-defined]
    shell._showtraceback(SyntaxError, value, rendered)
    return list(rendered)


CELL_SYNTAX_ERRORS = (CellSyntaxError,)  # what `show_cell_syntax_error` handles


def check_syntax(code: str, name: str, offset: int) -> None:
    """Raises CellSyntaxError when `code` does not compile here."""
    try:
        compile(code, LOCAL_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as err:
        raise CellSyntaxError(err, name, offset) from None


def raise_for_status(job: Job, name: str = LOCAL_FILENAME, offset: int = 0) -> None:
    """Like `Job.raise_for_status`, with the clean errors: CellError for an exception in the
    cell, CellCancelled for a cancelled job; any other failure as JobFailed explains it."""
    status = job.status()
    if status == "Succeeded":
        return
    if status == "Cancelled":
        raise CellCancelled(job)
    remote = final_traceback(job)
    if remote and job.exit_code is not None and not job.end_reason():
        raise CellError(job, remote, name, offset)
    job.raise_for_status()
