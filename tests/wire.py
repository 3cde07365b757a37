"""Runner wire-format lines for tests, built in one place (docs/ARCHITECTURE.md, "The runner
wire format"; `oscar_jupyter/runner.py` writes them, `oscar_jupyter/logs.py` reads them).

    record("o", 1, "hi")            '@@OJ|o|1|hi|@@'
    out(1, "hi"), err(1, "oops")    stdout / stderr lines (seq counts from 1 per stream)
    start(node="vk", job="j")       '@@OJ|s|0|{"node": "vk", "job": "j"}|@@'
    exit_line(0)                    '@@OJ|x|0|0|@@'
    start(exit_key=K), exit_line(0, exit_key=K)
                                    a start line announcing sha256(K) and the exit record
                                    carrying K in its seq field (the exit record's integrity
                                    key; without it any exit record counts, as before the key)
    decorated(line)                 '<asctime> - supervisor - DEBUG - <line>'
    supervisor_log(lines)           a job's log as the supervisor writes it (DEBUG per line,
                                    then the output again, undecorated)

The control records are made by `start_text` and `exit_line` alone: when a record gains a field,
change those two and every builder (`cell_log` too) follows; callers pass the new values as
keyword arguments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

MARKER = "@@OJ"
END = "|@@"
ASCTIME = "2026-01-02 03:04:05,678"  # logging's default asctime layout, as the supervisor's
EXIT_KEY_FIELD = "exit_key_sha256"  # the start line's field naming the exit key's SHA-256


def record(kind: str, seq: int | str, text: str) -> str:
    """One tagged line, without its newline: `@@OJ|<kind>|<seq>|<text>|@@`."""
    return f"{MARKER}|{kind}|{seq}|{text}{END}"


def out(seq: int, text: str) -> str:
    return record("o", seq, text)


def err(seq: int, text: str) -> str:
    return record("e", seq, text)


def partial(seq: int, text: str, *, stderr: bool = False) -> str:
    """A partial record (`p` stdout, `q` stderr): the line as a terminal shows it so far."""
    return record("q" if stderr else "p", seq, text)


def start_text(
    node: str = "vk", job: str = "job", *, exit_key: str | None = None, **fields: Any
) -> str:
    """The start record's JSON (the runner also sends `host` and `time`, as strings); with
    `exit_key`, the SHA-256 of the key the exit record will carry."""
    document = {"node": node, "job": job, **fields}
    if exit_key is not None:
        document[EXIT_KEY_FIELD] = hashlib.sha256(exit_key.encode("ascii")).hexdigest()
    return json.dumps(document)


def start(node: str = "vk", job: str = "job", *, exit_key: str | None = None, **fields: Any) -> str:
    """`@@OJ|s|0|<json>|@@`, the runner's first line."""
    return record("s", 0, start_text(node, job, exit_key=exit_key, **fields))


def exit_line(code: int = 0, *, exit_key: str | None = None) -> str:
    """`@@OJ|x|<exit key, else 0>|<code>|@@`, the runner's last line."""
    return record("x", exit_key if exit_key is not None else 0, str(code))


def decorated(line: str, *, asctime: str = ASCTIME, level: str = "DEBUG") -> str:
    """How the supervisor logs one line of the script's output (after `strip()`)."""
    return f"{asctime} - supervisor - {level} - {line}"


def supervisor_log(lines: Iterable[str], *, final_dump: bool = True) -> str:
    """A job's log as OSCAR serves it: each line as a supervisor DEBUG line, then (once the
    script has ended, `final_dump`) the whole output again, undecorated."""
    lines = list(lines)
    text = "".join(decorated(line) + "\n" for line in lines)
    if final_dump:
        text += "".join(line + "\n" for line in lines) + "\n"
    return text


def cell_log(
    job: str,
    stdout: Iterable[str] = (),
    *,
    exit_code: int | None = 0,
    node: str = "vk",
    exit_key: str | None = None,
    final_dump: bool | None = None,
    **start_fields: Any,
) -> str:
    """The log of a runner job that printed `stdout` and (unless `exit_code` is None, a job
    still running) ended with `exit_code`. The final dump comes only once the job has ended."""
    lines = [start(node, job, exit_key=exit_key, **start_fields)]
    lines += [out(seq, text) for seq, text in enumerate(stdout, start=1)]
    if exit_code is not None:
        lines.append(exit_line(exit_code, exit_key=exit_key))
    if final_dump is None:
        final_dump = exit_code is not None
    return supervisor_log(lines, final_dump=final_dump)
