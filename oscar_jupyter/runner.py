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
``@@OJ|s|0|<json>|@@`` (start: node, job, host, time in epoch seconds) and
``@@OJ|x|0|<exit code>|@@`` (last); ``@@OJ|d|<seq>|<base64 JSON>|@@`` (a rich output, under a
stdout seq) and ``@@OJ|r|0|<base64 JSON>|@@`` (the ``--out`` values), which the program sends as
stdout lines starting with a per-job nonce only it knows (see cell_program.py). An exception
that ends the cell is printed on stderr after the line ``TRACEBACK_MARKER``, which the magic never
shows (it shows the traceback once, as the cell's error).

One process, the tagger (``TAGGER``, Python), runs the cell's program with stdout and stderr on
two pipes and is the only writer of the script's output, so lines of any length stay whole.
"""

from __future__ import annotations

import base64
import sys
import zlib
from pathlib import Path

MARKER = "@@OJ"
END = "|@@"
# The program prints this stderr line just before the traceback of the exception that ended the
# cell: the magic streams stderr up to it and shows what follows once, as the cell's error.
TRACEBACK_MARKER = "oscar-jupyter: the cell raised an exception; its traceback follows"
STDOUT, STDERR, START, EXIT = "o", "e", "s", "x"
# A rich output (a figure, display(obj)): base64 of JSON {data, metadata, notes}, a stdout seq.
# The --out values: base64 of JSON {python, size, sha256, pickle}, seq 0, once, before the exit.
DISPLAY, RESULT = "d", "r"
# A line not ended yet, as it looks now, under the seq it will have: p (stdout), q (stderr).
PARTIAL_STDOUT, PARTIAL_STDERR = "p", "q"
ESCAPED = {"O": "o", "E": "e", "P": "p", "Q": "q"}

# The body of POST /job is base64 text; OSCAR base64-encodes it again into the pod's EVENT variable,
# and Linux refuses one environment string over 128 KiB (MAX_ARG_STRLEN). 90 KiB of body gives
# EVENT = 120 KiB, just under; the program itself may then hold 3/4 of that.
MAX_BODY_BYTES = 90 * 1024
MAX_PROGRAM_BYTES = MAX_BODY_BYTES * 3 // 4

# The tagger runs in the user's image with its python3, possibly old: plain Python 3.5 syntax.
# argv: its own file (removed at once, so the cell's directory holds only cell.py), the work dir
# (removed at the end), the job's program. Each stream is a Stream object turning bytes into
# lines; Output is the single writer of fd 1. The select loop wakes at least every 0.5 s, so a
# line left without its newline (a progress bar, a prompt) goes out as a partial record.
TAGGER = r'''
import binascii
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import traceback

MARKER = "@@OJ"
WAKE_EVERY = 0.5
# A line pending this long without its newline is sent as a partial record (p / q), and a stream
# sends at most one partial record per PARTIAL_EVERY: a bar redrawn 50 times a second costs 2.
PARTIAL_EVERY = 0.5
PARTIAL_KIND = {"o": "p", "e": "q"}
# A partial record carries at most the end of its line: a line of dots growing for an hour must
# not put the whole line in the log twice a second (the complete line still arrives whole).
PARTIAL_CHARS = 1000
# After the program has exited, a process it left behind may hold its pipes open: once they are
# silent this long, the job ends anyway.
QUIET_AFTER_EXIT = 2.0
# The program's rich outputs (d) and results (r) are stdout lines that start with this prefix;
# the nonce, given to the program alone, keeps the cell's own text from passing for one.
RICH_NONCE = binascii.hexlify(os.urandom(8)).decode("ascii")
RICH_PREFIX = ("\x1eOJ%s|" % RICH_NONCE).encode("ascii")
BASE64 = re.compile(rb"[A-Za-z0-9+/=]*")

# C0 controls but tab (the supervisor ends a line at CR and logs the rest raw) and undecodable
# bytes (U+DC80..U+DCFF after surrogateescape) travel as \xNN, in an upper-case-letter line.
NEEDS_ESCAPE = re.compile("[\x00-\x08\x0a-\x1f\udc80-\udcff]")
ESCAPES = {ord("\\"): "\\\\", ord("\r"): "\\r"}
for _code in range(0x20):
    if _code not in (0x09, 0x0d):
        ESCAPES[_code] = "\\x%02x" % _code
for _byte in range(0x80, 0x100):
    ESCAPES[0xdc00 + _byte] = "\\x%02x" % _byte


def visible(text):
    """What a terminal shows of a line: CR goes back to its start and what follows overwrites."""
    if "\r" not in text:
        return text
    shown = ""
    for part in text.split("\r"):
        shown = part + shown[len(part):]
    return shown


def record(kind, seq, data, keep=None):
    text = visible(data.decode("utf-8", "surrogateescape"))
    if keep is not None:
        text = text[-keep:]
    if NEEDS_ESCAPE.search(text):
        kind, text = kind.upper(), text.translate(ESCAPES)
    return "%s|%s|%d|%s|@@\n" % (MARKER, kind, seq, text)


class Output:
    """The only writer of fd 1 (the supervisor's pipe): a long line may take several write()s,
    but nothing else ever writes in between, so lines cannot interleave."""

    def __init__(self, fd):
        self.fd = fd
        self.seq = {"o": 0, "e": 0}
        self.pending = []
        self.broken = False

    def line(self, stream, data):
        at = data.find(RICH_PREFIX) if stream == "o" else -1
        if at >= 0:
            kind, _, payload = data[at + len(RICH_PREFIX):].partition(b"|")
            if kind in (b"d", b"r") and BASE64.fullmatch(payload):
                if at:  # the cell's text that preceded it on the same line
                    self.plain(stream, data[:at])
                self.rich(kind.decode(), payload.decode())
                return
        self.plain(stream, data)

    def plain(self, stream, data):
        self.seq[stream] += 1
        self.pending.append(record(stream, self.seq[stream], data))

    def rich(self, kind, payload):
        """A rich output (d) takes the next stdout seq: it shows in order with the text. The
        result (r) is a control line."""
        if kind == "d":
            self.seq["o"] += 1
            self.pending.append("%s|d|%d|%s|@@\n" % (MARKER, self.seq["o"], payload))
        else:
            self.control("r", payload)

    def partial(self, stream, data):
        """The line `stream` has not ended yet, under the seq it will have once complete."""
        self.pending.append(
            record(PARTIAL_KIND[stream], self.seq[stream] + 1, data, PARTIAL_CHARS))

    def control(self, kind, text):
        self.pending.append("%s|%s|0|%s|@@\n" % (MARKER, kind, text))

    def flush(self):
        data = memoryview("".join(self.pending).encode("utf-8"))
        self.pending = []
        while data and not self.broken:
            try:
                data = data[os.write(self.fd, data):]
            except BrokenPipeError:
                self.broken = True  # nobody reads any more: keep running the program regardless


class Stream:
    """One pipe of the program: bytes in, complete lines out to Output; the rest at EOF. A line
    pending for PARTIAL_EVERY goes out as a partial record (`tick`), at most one per
    PARTIAL_EVERY."""

    def __init__(self, pipe, letter, output):
        self.pipe = pipe
        self.letter = letter
        self.output = output
        self.partial = bytearray()
        self.pending_since = 0.0  # when the pending partial line began
        self.partial_sent_at = 0.0
        self.partial_sent = None  # the text of the last partial record of the pending line

    def read(self):
        """Reads what the pipe holds; False at EOF."""
        chunk = os.read(self.pipe.fileno(), 65536)
        if not chunk:
            self.close()
            return False
        head, newline, tail = chunk.rpartition(b"\n")
        if newline:
            self.partial += head
            for line in self.partial.split(b"\n"):
                self.output.line(self.letter, line)
            self.partial = bytearray(tail)
            self.partial_sent = None
            self.pending_since = time.monotonic()
        else:
            if not self.partial:
                self.pending_since = time.monotonic()
            self.partial += chunk
        if b"\r" in chunk:
            self.compress()
        return True

    def compress(self):
        """Keeps a bar that redraws without a newline from growing: what precedes the last CR
        is replaced by what a terminal shows of it (the line's visible text stays the same)."""
        before, cr, current = bytes(self.partial).rpartition(b"\r")
        if cr and b"\r" in before:
            shown = visible(before.decode("utf-8", "surrogateescape"))
            self.partial = bytearray(shown.encode("utf-8", "surrogateescape") + cr + current)

    def tick(self, now):
        """Sends the pending partial line once it has waited PARTIAL_EVERY and has changed
        (never a rich output still arriving)."""
        if (not self.partial or now - self.pending_since < PARTIAL_EVERY
                or now - self.partial_sent_at < PARTIAL_EVERY or RICH_PREFIX in self.partial):
            return
        data = bytes(self.partial)
        if data != self.partial_sent:
            self.output.partial(self.letter, data)
            self.partial_sent, self.partial_sent_at = data, now

    def close(self):
        if self.partial:
            self.output.line(self.letter, self.partial)
            self.partial = bytearray()
        self.pipe.close()


class Child:
    """The program's process. SIGTERM (scancel) and SIGINT sent to the runner go on to it."""

    def __init__(self):
        self.process = None
        self.early = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.forward)

    def forward(self, signum, frame=None):
        if self.process is None:
            self.early.append(signum)
        elif self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except OSError:
                pass

    def start(self, argv):
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=dict(os.environ, _OJ_RICH=RICH_NONCE))
        self.process = process
        for signum in self.early:
            self.forward(signum)
        return process


def run(program, output):
    """Runs the program, tags both of its streams; its exit status as a shell reports it."""
    process = Child().start([sys.executable or "python3", "-u", program])
    selector = selectors.DefaultSelector()
    streams = []
    for pipe, letter in ((process.stdout, "o"), (process.stderr, "e")):
        streams.append(Stream(pipe, letter, output))
        selector.register(pipe, selectors.EVENT_READ, streams[-1])
    while selector.get_map():
        exited = process.poll() is not None
        events = selector.select(QUIET_AFTER_EXIT if exited else WAKE_EVERY)
        if exited and not events:
            break
        for key, _ in events:
            if not key.data.read():
                selector.unregister(key.fileobj)
        now = time.monotonic()
        for stream in streams:
            stream.tick(now)
        output.flush()
    for key in list(selector.get_map().values()):
        key.data.close()
    output.flush()
    status = process.wait()
    return status if status >= 0 else 128 - status


def main():
    try:
        os.unlink(sys.argv[0])
    except OSError:
        pass
    workdir, program = sys.argv[1], sys.argv[2]
    output = Output(1)
    status = 255
    try:
        status = run(program, output)
    except Exception:
        report = "oscar-jupyter runner: internal error\n" + traceback.format_exc()
        for line in report.rstrip("\n").split("\n"):
            output.line("e", line.encode("utf-8", "surrogateescape"))
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)
    output.control("x", str(status))
    output.flush()


main()
'''

# Runs under dash, set -u safe. It writes the start line and the early errors itself, then
# becomes the tagger (exec: a signal sent to the runner reaches the tagger, which forwards it).
_SCRIPT_HEAD = r"""# oscar-jupyter runner (POSIX sh; the OSCAR supervisor runs it with /bin/sh)
set -u

_oj_safe() {  # value -> itself, or "unknown" when it would need JSON escaping
  case $1 in
    ''|*[!A-Za-z0-9._:-]*) printf 'unknown' ;;
    *) printf '%s' "$1" ;;
  esac
}

_oj_finish() {  # exit code
  printf '@@OJ|x|0|%s|@@\n' "$1"
  exit 0
}

_oj_fail() {  # exit code, message
  printf '@@OJ|e|1|oscar-jupyter runner: %s|@@\n' "$2"
  _oj_finish "$1"
}

printf '@@OJ|s|0|{"node": "%s", "job": "%s", "host": "%s", "time": "%s"}|@@\n' \
  "$(_oj_safe "${RESOURCE_ID:-}")" "$(_oj_safe "${JOB_UUID:-}")" \
  "$(_oj_safe "$(uname -n 2>/dev/null)")" "$(_oj_safe "$(date -u +%s 2>/dev/null)")"

if [ -z "${INPUT_FILE_PATH:-}" ] || [ ! -f "$INPUT_FILE_PATH" ]; then
  _oj_fail 2 "no job body (INPUT_FILE_PATH is unset or missing); submit the cell through \
oscar-jupyter, which sends it as the job body"
fi
if ! command -v python3 >/dev/null 2>&1; then
  _oj_fail 127 "python3 not found in the image; choose an image with Python 3 (--image)"
fi

_oj_work=$(mktemp -d /tmp/oj-XXXXXXXX 2>/dev/null) || {
  _oj_work=/tmp/oj-$$
  mkdir -p "$_oj_work"
}
cd "$_oj_work" || _oj_fail 2 "cannot use the work directory $_oj_work"

cat > .oj-tagger.py <<'_OJ_TAGGER_END_' || _oj_fail 2 "cannot write into $_oj_work"
"""
_SCRIPT_TAIL = r"""_OJ_TAGGER_END_
exec python3 .oj-tagger.py "$_oj_work" "$INPUT_FILE_PATH"
"""
RUNNER_SCRIPT = _SCRIPT_HEAD + TAGGER.lstrip("\n") + _SCRIPT_TAIL


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
) -> bytes:
    """The Python program a job carries (``cell_program.py`` with its parameters): sets ``env``,
    loads ``inputs`` (base64 of a pickle, see ``values``), writes the cell to ``cell.py`` in the
    working directory and runs it as ``__main__``, then sends back ``outputs``."""
    params = {
        "code": code,
        "env": dict(env or {}),
        "inputs": inputs,
        "outputs": list(outputs or []),
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "traceback_marker": TRACEBACK_MARKER,
        "max_display_bytes": MAX_DISPLAY_BYTES,
        "max_result_bytes": MAX_RESULT_BYTES,
    }
    program = _PROGRAM_CODE.replace(_PARAMS_LINE, f"\nPARAMS = {params!r}\n", 1)
    return pack_program(program.encode("utf-8"))


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
