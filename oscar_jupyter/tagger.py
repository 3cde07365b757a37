"""The runner's tagger: runs the job's program and is the only writer of the runner's output.

Never imported: ``runner.RUNNER_SCRIPT`` carries this file's text, writes it into the job's work
directory and runs it with the image's own python3, possibly old, so it keeps to plain Python 3.5
syntax and the standard library. The wire format it writes is described in ``runner`` and in
docs/ARCHITECTURE.md ("The runner wire format").

argv: its own file (removed at once, so the cell's directory holds only cell.py), the work dir
(removed at the end), the job's program, and the start line's JSON (node, job, host, time) as
the script made it. It writes the start line, runs the program with stdout and stderr on two
pipes, tags what it reads, and writes the exit record last.

The exit record is the job's outcome, so the cell must not be able to write one: the start line
announces the SHA-256 of an exit key that only this process knows, and the exit record carries the
key. The key never leaves this process before the end: the program does not inherit it, and this
process is made non-dumpable so that a process of the same user (the cell) can neither read its
memory, environment or file descriptors through /proc nor ptrace it.
"""

# ruff: noqa: UP031 (printf-style formatting, as the 3.5 syntax this program keeps to allows)

import binascii
import hashlib
import json
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
# The program's rich outputs (d), results (r) and traceback marker (t) are lines that start with
# this prefix; the nonce, given to the program alone, keeps the cell's own text from passing for
# one. d and r come on stdout, t on stderr.
RICH_NONCE = binascii.hexlify(os.urandom(8)).decode("ascii")
RICH_PREFIX = ("\x1eOJ%s|" % RICH_NONCE).encode("ascii")
RICH_KINDS = {"o": (b"d", b"r"), "e": (b"t",)}
BASE64 = re.compile(rb"[A-Za-z0-9+/=]*")

# C0 controls but tab (the supervisor ends a line at CR and logs the rest raw) and undecodable
# bytes (U+DC80..U+DCFF after surrogateescape) travel as \xNN, in an upper-case-letter line.
NEEDS_ESCAPE = re.compile("[\x00-\x08\x0a-\x1f\udc80-\udcff]")
ESCAPES = {ord("\\"): "\\\\", ord("\r"): "\\r"}
for _code in range(0x20):
    if _code not in (0x09, 0x0D):
        ESCAPES[_code] = "\\x%02x" % _code
for _byte in range(0x80, 0x100):
    ESCAPES[0xDC00 + _byte] = "\\x%02x" % _byte


def keep_memory_private():
    """PR_SET_DUMPABLE 0 (Linux, through ctypes): /proc/<this pid>/mem, environ and fd/ become
    unreadable to processes of the same user, and ptrace refuses them. Where it cannot be done
    (no ctypes, not Linux) the job still runs."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) == 0
    except Exception:
        return False


def new_exit_key():
    """128 random bits as decimal digits: the exit record carries it in its seq field."""
    return str(int(binascii.hexlify(os.urandom(16)), 16))


def visible(text):
    """What a terminal shows of a line: CR goes back to its start and what follows overwrites."""
    if "\r" not in text:
        return text
    shown = ""
    for part in text.split("\r"):
        shown = part + shown[len(part) :]
    return shown


def shows_something(data):
    """False for a line a terminal shows as nothing (a lone CR): not sent without its newline."""
    return bool(visible(data.decode("utf-8", "surrogateescape")))


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
        at = data.find(RICH_PREFIX)
        if at >= 0:
            kind, _, payload = data[at + len(RICH_PREFIX) :].partition(b"|")
            if kind in RICH_KINDS[stream] and BASE64.fullmatch(payload):
                if at:  # the cell's text that preceded it on the same line
                    self.plain(stream, data[:at])
                self.rich(kind.decode(), payload.decode())
                return
        self.plain(stream, data)

    def plain(self, stream, data):
        self.seq[stream] += 1
        self.pending.append(record(stream, self.seq[stream], data))

    def rich(self, kind, payload):
        """A rich output (d) takes the next stdout seq and the traceback marker (t) the next
        stderr seq: they show in order with the text. The result (r) is a control line."""
        if kind == "r":
            self.control("r", payload)
            return
        stream = "o" if kind == "d" else "e"
        self.seq[stream] += 1
        self.pending.append("%s|%s|%d|%s|@@\n" % (MARKER, kind, self.seq[stream], payload))

    def partial(self, stream, data):
        """The line `stream` has not ended yet, under the seq it will have once complete."""
        self.pending.append(record(PARTIAL_KIND[stream], self.seq[stream] + 1, data, PARTIAL_CHARS))

    def control(self, kind, text, seq="0"):
        self.pending.append("%s|%s|%s|%s|@@\n" % (MARKER, kind, seq, text))

    def flush(self):
        data = memoryview("".join(self.pending).encode("utf-8"))
        self.pending = []
        while data and not self.broken:
            try:
                data = data[os.write(self.fd, data) :]
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
        if (
            not self.partial
            or now - self.pending_since < PARTIAL_EVERY
            or now - self.partial_sent_at < PARTIAL_EVERY
            or RICH_PREFIX in self.partial
        ):
            return
        data = bytes(self.partial)
        if data != self.partial_sent and shows_something(data):
            self.output.partial(self.letter, data)
            self.partial_sent, self.partial_sent_at = data, now

    def close(self):
        if self.partial and shows_something(bytes(self.partial)):
            self.output.line(self.letter, bytes(self.partial))
        self.partial = bytearray()
        self.pipe.close()


def nonce_pipe():
    """The read end of a pipe that holds the nonce, for the program to read once: never in an
    environment, which the cell could read back from /proc/self/environ."""
    read_end, write_end = os.pipe()
    os.write(write_end, RICH_NONCE.encode("ascii"))
    os.close(write_end)
    return read_end


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
        """The program gets /dev/null, its two pipes and the nonce's pipe (named in its argv),
        nothing else: not this process's stdout, the supervisor's pipe."""
        nonce_fd = nonce_pipe()
        try:
            process = subprocess.Popen(
                argv + ["--rich-fd=%d" % nonce_fd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                pass_fds=(nonce_fd,),
            )
        finally:
            os.close(nonce_fd)
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


def start_fields(text):
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    return fields if isinstance(fields, dict) else {}


def main():
    keep_memory_private()  # first: before the exit key exists
    try:
        os.unlink(sys.argv[0])
    except OSError:
        pass
    workdir, program = sys.argv[1], sys.argv[2]
    exit_key = new_exit_key()
    start = start_fields(sys.argv[3] if len(sys.argv) > 3 else "")
    start["exit_key_sha256"] = hashlib.sha256(exit_key.encode("ascii")).hexdigest()
    output = Output(1)
    output.control("s", json.dumps(start))
    output.flush()
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
    output.control("x", str(status), exit_key)
    output.flush()


if __name__ == "__main__":
    main()
