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
    usage_line({"wall_seconds": 3.0}, exit_key=K)
                                    '@@OJ|u|<HMAC-SHA256 of the JSON keyed by K>|<json>|@@',
                                    what the program used, written just before the exit record
    decorated(line)                 '<asctime> - supervisor - DEBUG - <line>'
    supervisor_log(lines)           a job's log as the supervisor writes it (DEBUG per line,
                                    then the output again, undecorated)
    batch(["oa", "eb"], stdout=4)   '@@OJ|z|1|4|0|<base64 of zlib>|@@': many records in one line,
                                    each in the inner form (a letter, then the text; seqs
                                    counted on from `stdout` / `stderr`)
    records_in(text)                every record of a log text, batches unpacked, as
                                    (kind, seq, text) with the seqs a parser gives them

The control records are made by `start_text` and `exit_line` alone: when a record gains a field,
change those two and every builder (`cell_log` too) follows; callers pass the new values as
keyword arguments.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
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


def usage_line(usage: dict[str, Any], *, exit_key: str | None = None) -> str:
    """`@@OJ|u|<signature>|<json>|@@`: the usage record, signed with `exit_key` (0 without)."""
    text = json.dumps(usage, sort_keys=True)
    signature = "0"
    if exit_key is not None:
        mac = hmac.new(exit_key.encode("ascii"), text.encode("utf-8"), hashlib.sha256)
        signature = str(int(mac.hexdigest(), 16))
    return record("u", signature, text)


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
    usage: dict[str, Any] | None = None,
    **start_fields: Any,
) -> str:
    """The log of a runner job that printed `stdout` and (unless `exit_code` is None, a job
    still running) ended with `exit_code`. The final dump comes only once the job has ended."""
    lines = [start(node, job, exit_key=exit_key, **start_fields)]
    lines += [out(seq, text) for seq, text in enumerate(stdout, start=1)]
    if exit_code is not None:
        if usage is not None:
            lines.append(usage_line(usage, exit_key=exit_key))
        lines.append(exit_line(exit_code, exit_key=exit_key))
    if final_dump is None:
        final_dump = exit_code is not None
    return supervisor_log(lines, final_dump=final_dump)


def batch(
    records: Iterable[str], *, stdout: int = 0, stderr: int = 0, number: int = 1, level: int = 6
) -> str:
    """A `z` line (batch `number`): `records` in the inner form (letter + text: o/O/e/E a line,
    d a rich output, t the traceback marker, p/P q/Q a partial line, c/C k/K a piece of a long
    line), the stdout and stderr seqs before them in the header."""
    inner = "".join(f"{item}\n" for item in records).encode("utf-8")
    payload = base64.b64encode(zlib.compress(inner, level)).decode("ascii")
    return record("z", number, f"{stdout}|{stderr}|{payload}")


# The inner letters that take the next seq of stdout / stderr (the others take the seq their
# line will have: partial lines and pieces).
_NEXT_STDOUT, _NEXT_STDERR, _ON_STDOUT = "oOd", "eEt", "pPcC"


def records_in(text: str) -> list[tuple[str, int, str]]:
    """Every tagged record of a log text in order (decorated or not), `z` lines unpacked into
    their records with the seqs they stand for: what was on the wire, before de-duplication."""
    found: list[tuple[str, int, str]] = []
    for raw in text.split("\n"):
        at = raw.find(f"{MARKER}|")
        if at < 0 or not raw.endswith(END):
            continue
        kind, seq, rest = raw[at + len(MARKER) + 1 : -len(END)].split("|", 2)
        if kind != "z":
            found.append((kind, int(seq), rest))
            continue
        stdout_text, stderr, payload = rest.split("|")
        stdout, stderr_seq = int(stdout_text), int(stderr)
        body = zlib.decompress(base64.b64decode(payload)).decode("utf-8")
        for item in body.split("\n")[:-1]:
            letter, item_text = item[:1], item[1:]
            if letter in _NEXT_STDOUT:
                stdout += 1
                found.append((letter, stdout, item_text))
            elif letter in _NEXT_STDERR:
                stderr_seq += 1
                found.append((letter, stderr_seq, item_text))
            else:
                on = stdout if letter in _ON_STDOUT else stderr_seq
                found.append((letter, on + 1, item_text))
    return found
