"""The runner: the POSIX sh script of every runner service and the program each job carries.

This module is the only place that knows the wire format (see docs/ARCHITECTURE.md, "The runner
wire format"). Every output line of the cell reaches the log as

    @@OJ|<stream>|<seq>|<text>|@@

stream ``o`` (stdout) or ``e`` (stderr), ``seq`` counting from 1 per stream. A line that holds a
C0 control character other than tab (CR, NUL, ESC ...) or bytes that are not UTF-8 is sent with
the stream letter upper-cased (``O`` / ``E``) and its text escaped: ``\\\\`` for a backslash,
``\\r`` for CR, ``\\xNN`` for any other such character or byte. So the supervisor (universal
newlines, ``errors='ignore'``) can neither split nor drop anything. A line's text is what a
terminal shows of it: CR goes back to the line's start and what follows overwrites, so a
``\\r`` progress bar arrives as its last state. A line left without its newline for 0.5 s is
also sent as a partial record ``@@OJ|p|<seq>|<text>|@@`` (``q`` for stderr, ``P`` / ``Q``
escaped), ``seq`` being the one the line will have; at most two a second per stream. Control
lines:
``@@OJ|s|0|<json>|@@`` (start: node, job, host, time in epoch seconds, and ``exit_key_sha256``)
and ``@@OJ|x|<exit key>|<exit code>|@@`` (last): the exit key (decimal digits, in the seq field,
so that a parser that predates it still reads the code) is a per-job secret of the tagger whose
SHA-256 the start line announces; the parser takes no exit record without it, so the cell cannot
end its job by writing one into the supervisor's pipe. ``@@OJ|d|<seq>|<base64 JSON>|@@`` (a rich
output, under a stdout seq), ``@@OJ|r|0|<base64 JSON>|@@`` (the ``--out`` values) and
``@@OJ|t|<seq>||@@`` (under a stderr seq: the exception that ended the cell follows) are lines
that the program writes starting with a per-job nonce only it knows (see cell_program.py). ``t``
stands for the stderr line ``TRACEBACK_MARKER``, which the magic never shows (it shows the
traceback once, as the cell's error); a copy of that line printed by the cell is its text. The
early errors of the script (no job body, no python3, a python3 older than ``OLDEST_PYTHON``) come
with a start line without ``exit_key_sha256``, a ``t`` record and the error as one stderr line
(the cell's error), and an exit record with seq 0, as every exit record did before the key.

Records travel one per line as above, or many in one line, ``@@OJ|z|<n>|<stdout seq>|<stderr
seq>|<base64 of zlib>|@@`` (batch ``n``; the records inside in the inner form: a kind letter and
the text, seqs implicit, pieces ``c`` / ``k`` of a long line among them), and they go either
straight into the supervisor's own stdout (the pod's log file) or through the supervisor's pipe.

One process, the tagger (``tagger.py``, a program of its own, embedded in the script as
``TAGGER``), runs the cell's program with stdout and stderr on two pipes and is the only writer
of the records, so lines of any length stay whole.
"""

from __future__ import annotations

import base64
import re
import sys
import zlib
from pathlib import Path

MARKER = "@@OJ"
END = "|@@"
# The stderr line that stands before the traceback of the exception that ended the cell (a `t`
# record; a plain stderr line in logs that predate it): the magic streams stderr up to it and
# shows what follows once, as the cell's error.
TRACEBACK_MARKER = "oscar-jupyter: the cell raised an exception; its traceback follows"
STDOUT, STDERR, START, EXIT, TRACEBACK = "o", "e", "s", "x", "t"
# The start line's field holding the SHA-256 (hex) of the exit key the exit record carries.
EXIT_KEY_FIELD = "exit_key_sha256"
# A rich output (a figure, display(obj)): base64 of JSON {data, metadata, notes}, a stdout seq.
# The --out values: base64 of JSON {python, size, sha256, pickle}, seq 0, once, before the exit.
DISPLAY, RESULT = "d", "r"
# What the program used: `@@OJ|u|<HMAC-SHA256 of the JSON keyed by the exit key, decimal>|<json:
# wall_seconds, cpu_seconds, max_rss_kib[, gpu_memory_mib, gpu_total_mib]>|@@`, just before the
# exit record (see `usage.py`).
USAGE = "u"
# A line not ended yet, as it looks now, under the seq it will have: p (stdout), q (stderr).
PARTIAL_STDOUT, PARTIAL_STDERR = "p", "q"
# Many records in one line: `@@OJ|z|<n>|<stdout seq>|<stderr seq>|<base64 of zlib>|@@` (batch n,
# the seqs before it), the records in the inner form (see `tagger.py`); a piece of a long line
# still being written: c (stdout), k (stderr), inner form only.
BATCH = "z"
PIECE_STDOUT, PIECE_STDERR = "c", "k"
ESCAPED = {"O": "o", "E": "e", "P": "p", "Q": "q", "C": "c", "K": "k"}

# The first line of a program that runs as several ranks on one node: the tagger starts it once
# per rank (through `mpiexec -np {ranks} {flags}` where the image has mpiexec), each with its own
# output; records of rank r > 0 carry "r<r>" after their seq (a `z` line: after its number),
# which a parser that predates ranks skips (it shows rank 0).
RANKS_HEADER = "# oscar-jupyter ranks {ranks}{flags}\n"

# The body of POST /job is base64 text; OSCAR base64-encodes it again into the pod's EVENT variable,
# and Linux refuses one environment string over 128 KiB (MAX_ARG_STRLEN). 90 KiB of body gives
# EVENT = 120 KiB, just under; the program itself may then hold 3/4 of that.
MAX_BODY_BYTES = 90 * 1024
MAX_PROGRAM_BYTES = MAX_BODY_BYTES * 3 // 4

# The tagger (tagger.py, a program of its own: never imported) runs in the user's image with its
# python3, possibly old: plain Python 3.5 syntax. The script writes it into the job's work
# directory and runs it.
TAGGER = (Path(__file__).parent / "tagger.py").read_text(encoding="utf-8")

# The oldest Python the job's program runs on; the script's version gate ends a job whose image
# has an older python3 with OLD_PYTHON_MESSAGE as its error, before anything else runs.
OLDEST_PYTHON = (3, 8)
OLD_PYTHON_MESSAGE = (
    "python3 {version} found in the image; oscar-jupyter needs {oldest} or newer; "
    "choose another --image"
)
_OLDEST_TEXT = ".".join(map(str, OLDEST_PYTHON))
_OLD_PYTHON = re.compile(
    r"python3 (\d+\.\d+\.\d+) found in the image; oscar-jupyter needs \d+\.\d+ or newer"
)
# Runs on any python3 (2-compatible syntax, no single quote: it sits in '...' in the script).
_VERSION_CHECK = (
    'import sys; v = sys.version_info; print("%d.%d.%d %s" % '
    f'(v[0], v[1], v[2], "ok" if v >= {OLDEST_PYTHON!r} else "old"))'
)


def old_python_message(version: str) -> str:
    """The error of a job whose image has python3 `version`, older than OLDEST_PYTHON."""
    return OLD_PYTHON_MESSAGE.format(version=version, oldest=_OLDEST_TEXT)


def old_python_in(text: str) -> str | None:
    """The image's Python version when `text` holds the version gate's error, else None."""
    found = _OLD_PYTHON.search(text)
    return found.group(1) if found else None


def supports_python(version: str) -> bool:
    """Whether the job's program runs on Python `version` ("3.11.2", "3.6")."""
    parts = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return len(parts) == 2 and parts >= OLDEST_PYTHON


# Runs under dash, set -u safe. It handles the early errors itself (writing the start line
# first), then becomes the tagger (exec: a signal sent to the runner reaches the tagger, which
# forwards it), which writes the start line with its exit key's digest.
_SCRIPT_HEAD = r"""# oscar-jupyter runner (POSIX sh; the OSCAR supervisor runs it with /bin/sh)
set -u

_oj_safe() {  # value -> itself, or "unknown" when it would need JSON escaping
  case $1 in
    ''|*[!A-Za-z0-9._:-]*) printf 'unknown' ;;
    *) printf '%s' "$1" ;;
  esac
}

_oj_start=$(printf '{"node": "%s", "job": "%s", "host": "%s", "time": "%s"}' \
  "$(_oj_safe "${RESOURCE_ID:-}")" "$(_oj_safe "${JOB_UUID:-}")" \
  "$(_oj_safe "$(uname -n 2>/dev/null)")" "$(_oj_safe "$(date -u +%s 2>/dev/null)")")

_oj_fail() {  # exit code, message: the job ends before the tagger runs, with the message as
  # its error (after a traceback marker: the cell shows it once, as its error)
  printf '@@OJ|s|0|%s|@@\n' "$_oj_start"
  printf '@@OJ|t|1||@@\n'
  printf '@@OJ|e|2|%s|@@\n' "$2"
  printf '@@OJ|x|0|%s|@@\n' "$1"
  exit 0
}

if [ -z "${INPUT_FILE_PATH:-}" ] || [ ! -f "$INPUT_FILE_PATH" ]; then
  _oj_fail 2 "oscar-jupyter runner: no job body (INPUT_FILE_PATH is unset or missing); submit \
the cell through oscar-jupyter, which sends it as the job body"
fi
if ! command -v python3 >/dev/null 2>&1; then
  _oj_fail 127 "oscar-jupyter runner: python3 not found in the image; choose an image with \
Python 3 (--image)"
fi
# The version gate: the job's program needs OLDEST_PYTHON; an older python3 ends the job here,
# in one line, instead of deep inside the program.
_oj_python=$(python3 -c '@VERSION_CHECK@' 2>/dev/null) || _oj_python=""
case $_oj_python in
  *' ok') ;;
  *' old') _oj_fail 1 "@OLD_PYTHON@" ;;
  *) _oj_fail 127 "oscar-jupyter runner: the image's python3 does not start (python3 -c \
'import sys' fails); choose another --image" ;;
esac

_oj_work=$(mktemp -d /tmp/oj-XXXXXXXX 2>/dev/null) || {
  _oj_work=/tmp/oj-$$
  mkdir -p "$_oj_work"
}
cd "$_oj_work" || _oj_fail 2 "oscar-jupyter runner: cannot use the work directory $_oj_work"

_oj_unwritable="oscar-jupyter runner: cannot write into $_oj_work"
cat > .oj-tagger.py <<'_OJ_TAGGER_END_' || _oj_fail 2 "$_oj_unwritable"
"""
_SCRIPT_TAIL = r"""_OJ_TAGGER_END_
exec python3 .oj-tagger.py "$_oj_work" "$INPUT_FILE_PATH" "$_oj_start"
"""
RUNNER_SCRIPT = (
    _SCRIPT_HEAD.replace("@VERSION_CHECK@", _VERSION_CHECK).replace(
        "@OLD_PYTHON@", old_python_message("${_oj_python% old}")
    )
    + TAGGER.lstrip("\n")
    + _SCRIPT_TAIL
)


def _compact(source: str) -> str:
    """The program without its module docstring, comment lines and blank lines: the job body's
    bytes are counted. (Line-based, so the code itself reaches the image's Python as written,
    whatever Python builds the job.)"""
    body = source[source.index('"""', 3) + 3 :]  # after the module docstring
    kept = [
        line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return "\n".join(kept) + "\n"


_PROGRAM_CODE = _compact((Path(__file__).parent / "cell_program.py").read_text(encoding="utf-8"))
_PARAMS_LINE = "\nPARAMS = {}\n"
# Bounds of what travels back in the log: one rich output, and the --out values together.
MAX_DISPLAY_BYTES = 1_000_000
MAX_RESULT_BYTES = 8_000_000


def build_program(
    code: str,
    env: dict[str, str] | None = None,
    *,
    inputs: str = "",
    outputs: list[str] | None = None,
    ranks: int = 1,
    mpi_flags: list[str] | None = None,
    secrets: list[str] | None = None,
    out_ranks: bool = False,
) -> bytes:
    """The Python program a job carries (``cell_program.py`` with its parameters): sets ``env``,
    checks that the ``secrets`` (names only) arrived, loads ``inputs`` (base64 of a pickle, see
    ``values``), writes the cell to ``cell.py`` in the working directory and runs it as
    ``__main__``, then sends back ``outputs`` (from every rank with ``out_ranks``, else from
    rank 0). With ``ranks`` over 1 its first line is ``RANKS_HEADER``: the tagger starts it once
    per rank (issue 21), through mpiexec with ``mpi_flags`` (words) where the image has mpiexec."""
    params = {
        "code": code,
        "env": dict(env or {}),
        "inputs": inputs,
        "outputs": list(outputs or []),
        "secrets": sorted(secrets or []),
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "traceback_marker": TRACEBACK_MARKER,
        "max_display_bytes": MAX_DISPLAY_BYTES,
        "max_result_bytes": MAX_RESULT_BYTES,
    }
    if out_ranks:
        params["out_ranks"] = "all"
    program = _PROGRAM_CODE.replace(_PARAMS_LINE, f"\nPARAMS = {params!r}\n", 1)
    packed = pack_program(program.encode("utf-8"))
    if ranks < 2:
        return packed
    flags = "".join(" " + word for word in mpi_flags or [])
    return RANKS_HEADER.format(ranks=ranks, flags=flags).encode("utf-8") + packed


def pack_program(program: bytes) -> bytes:
    """`program` compressed, in a one-line Python bootstrap that runs it with its own globals
    (``__name__``, ``__file__``). The body, and the supervisor's DEBUG copy of it that every log
    fetch brings, shrink about threefold, and a cell may be as much larger."""
    packed = base64.b85encode(zlib.compress(program, 9)).decode("ascii")  # no quote, no "\\"
    return (
        f'import base64, zlib; exec(compile(zlib.decompress(base64.b85decode("{packed}")), '
        f'"<oscar-jupyter program>", "exec"))\n'
    ).encode("ascii")


def encode_body(program: bytes) -> bytes:
    """The body of ``POST /job/{service}``: base64 text, so the supervisor decodes it to a file."""
    return base64.b64encode(program)


_MAIN_CALL = '\nif __name__ == "__main__":\n    main()\n'
_SESSION_CODE = _compact((Path(__file__).parent / "session_program.py").read_text(encoding="utf-8"))


def build_session_program(env: dict[str, str] | None, sealed: str) -> bytes:
    """The program of a persistent session's job (issue 20): ``cell_program.py``'s code without
    its ``main()`` call, then ``session_program.py``'s, which waits for cells. ``sealed`` is the
    storage manifest (``cell_program.seal``) holding the session's channel."""
    params = {
        "code": "",
        "env": dict(env or {}),
        "inputs": sealed,
        "outputs": [],
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "traceback_marker": TRACEBACK_MARKER,
        "max_display_bytes": MAX_DISPLAY_BYTES,
        "max_result_bytes": MAX_RESULT_BYTES,
    }
    if not _PROGRAM_CODE.endswith(_MAIN_CALL):
        raise RuntimeError("cell_program.py no longer ends with its main() call")
    program = _PROGRAM_CODE[: -len(_MAIN_CALL)] + "\n" + _SESSION_CODE
    program = program.replace(_PARAMS_LINE, f"\nPARAMS = {params!r}\n", 1)
    return pack_program(program.encode("utf-8"))
