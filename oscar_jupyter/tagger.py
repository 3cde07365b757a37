"""The runner's tagger: runs the job's program and is the only writer of the runner's output.

Never imported: ``runner.RUNNER_SCRIPT`` carries this file's text, writes it into the job's work
directory and runs it with the image's own python3, possibly old, so it keeps to plain Python 3.5
syntax and the standard library. The wire format it writes is described in ``runner`` and in
docs/ARCHITECTURE.md ("The runner wire format").

argv: its own file (removed at once, so the cell's directory holds only cell.py), the work dir
(removed at the end), the job's program, and the start line's JSON (node, job, host, time) as
the script made it. It writes the start line, runs the program with stdout and stderr on two
pipes, tags what it reads, and writes the exit record last.

Where the records go: the OSCAR supervisor runs this process with its stdout on a pipe, logs
every line it reads (DEBUG) and adds it to a string it keeps (``output = output + line``):
quadratic in the number of lines and bytes. So when the supervisor's own stdout is a regular
file (the pod's log file, as the interLink Slurm plugin opens it: ``&>`` up to 0.6.1, ``>>``
from 0.6.2) that can be appended to safely (see ROOM), the tagger writes its records straight
into that file (opening /proc/<supervisor>/fd/1) and nothing through the supervisor; otherwise
through the pipe, in few and large lines, spaced so that the supervisor's copying stays linear.
Either way, a flush of a few small records goes out as plain records (one line each) and a
larger one as ``z`` lines: many records, compact, compressed.

The exit record is the job's outcome, so the cell must not be able to write one: the start line
announces the SHA-256 of an exit key that only this process knows, and the exit record carries the
key. The key never leaves this process before the end: the program does not inherit it, and this
process is made non-dumpable so that a process of the same user (the cell) can neither read its
memory, environment or file descriptors through /proc nor ptrace it.

Just before the exit record comes the usage record (``u``): what the program used, measured here
(wall time, user+sys CPU and peak RSS of its process tree, peak GPU memory where nvidia-smi
answers), as JSON signed with an HMAC-SHA256 keyed by the exit key: it can be checked only once
the exit record reveals the key, so the cell cannot forge one either.
"""

# ruff: noqa: UP031 (printf-style formatting, as the 3.5 syntax this program keeps to allows)

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
import zlib

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
# A job of several ranks adds f (stderr): the cell's code ran to its end (see Ranks); never sent.
RICH_KINDS = {"o": (b"d", b"r"), "e": (b"t", b"f")}
BASE64 = re.compile(rb"[A-Za-z0-9+/=]*")

# What one flush writes: at most PLAIN_RECORDS records and PLAIN_BYTES go out as plain records,
# one line each (a lone line reads in the log as ever); more as `z` lines, each holding up to
# BATCH_BYTES of records in the inner form (one letter, then the text; seqs implicit), zlib'd
# and base64'd: `@@OJ|z|<batch number>|<stdout seq before>|<stderr seq before>|<base64>|@@`
# (numbered from 1: two batches may hold the same records, e.g. pieces of a repetitive line).
PLAIN_RECORDS = 8
PLAIN_BYTES = 2048
BATCH_BYTES = 1 << 20
# zlib's fastest level (level 6 saves 3% on a log's text, at twice the time); a large batch
# whose start does not shrink by a tenth (random or compressed data) is stored, not compressed.
ZLIB_LEVEL = 1
SAMPLE_BYTES = 16384
# Inner letters that take the next seq of a stream (the others do not: partial lines p/q, and
# pieces c/k of a line still being written, which belong to the seq that line will have).
NEXT_STDOUT, NEXT_STDERR = "oOd", "eEt"
PIECE_KIND = {"o": "c", "e": "k"}
# A line growing past LINE_PIECE bytes without a CR goes out in pieces (all but its last
# PIECE_KEEP bytes, cut at a character's start): the tagger's memory stays bounded however long
# a line grows. The line still arrives whole: the parser joins the pieces to its end.
LINE_PIECE = 1 << 20
PIECE_KEEP = 64
# The program's pipes are made this large where the system allows (fs.pipe-max-size, 1 MiB by
# default): a fast printer blocks less often, and each read brings more lines.
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.10
READ_SIZE = 1 << 20
# With pipes that large, after a read that leaves records waiting for the next flush the tagger
# lets the pipes fill for up to this long instead of waking for every few lines (a fast
# printer's small writes cost it a wake-up each otherwise; a 1 MiB pipe holds 5 ms of 200 MB/s).
READ_PAUSE = 0.005
# Through the supervisor, whose `output + line` copies all it holds on every line, a flush of n
# lines waits n times the bytes already sent over SUPERVISOR_RATE (at least MIN_SPACING) after
# the previous one: it copies at most that many bytes a second. Pending records go out earlier
# once they reach a quarter of what was sent (lines then grow geometrically, and are few): the
# supervisor's cost stays linear in the output.
SUPERVISOR_RATE = 50e6
MIN_SPACING = 0.02
PENDING_FLOOR = 4 << 20
# Straight into the log, flushes are at least this far apart (a lone line after a pause goes at
# once; a fast printer's lines gather into large batches), or BATCH_BYTES pending.
BATCH_WINDOW = 0.02

# A job of several ranks on one node (issue 21): the program's first line is RANKS_HEADER (the
# rank count, then any mpiexec flags), and this process starts it once per rank (through
# mpiexec where the PATH has one: see MPIEXEC), each with its own output, its rank's variables
# and RANK_SETTING. Once rank 0 has ended or any rank has failed, the others get RANK_GRACE seconds
# to end (a collective waiting for a dead peer never does); then SIGTERM, and SIGKILL
# RANK_KILL_AFTER later.
RANKS_HEADER = re.compile(rb"# oscar-jupyter ranks (\d+)((?: [^ \n]+)*)\n")
RANK_SETTING = "OSCAR_JUPYTER_RANK"
RANK_GRACE = 10.0
RANK_KILL_AFTER = 5.0

# GPU memory is sampled this often while the program runs (nvidia-smi, where there is one); its
# peak over the samples goes into the usage record.
GPU_EVERY = 5.0
GPU_QUERY = ["--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"]

# C0 controls but tab (the supervisor ends a line at CR and logs the rest raw) and undecodable
# bytes (U+DC80..U+DCFF after surrogateescape) travel as \xNN, in an upper-case-letter line.
NEEDS_ESCAPE = re.compile("[\x00-\x08\x0a-\x1f\udc80-\udcff]")
# The same but newline: a block of lines split on it needs per-line work only when this matches.
BLOCK_NEEDS_WORK = re.compile("[\x00-\x08\x0b-\x1f\udc80-\udcff]")
ESCAPES = {ord("\\"): "\\\\", ord("\r"): "\\r"}
for _code in range(0x20):
    if _code not in (0x09, 0x0D):
        ESCAPES[_code] = "\\x%02x" % _code
for _byte in range(0x80, 0x100):
    ESCAPES[0xDC00 + _byte] = "\\x%02x" % _byte

# The supervisor's own stdout is written directly only when it is a regular file that this
# process can append to without its writes being overwritten: opened with O_APPEND (the interLink
# Slurm plugin's `>>`, from 0.6.2), or opened without it (`&>`, up to 0.6.1) but positioned at
# its end. In that second case the supervisor still writes at its own offset, which no longer
# moves: its last lines (a few hundred bytes once the script has ended: nothing went through it)
# land over ROOM, a line of spaces written first, instead of over the records.
ROOM = 4096
SUPERVISOR_NAMES = ("supervisor", "supervisor.py", "faassupervisor.supervisor")
# "supervisor" forces the records through the supervisor's pipe (tests, diagnosis).
OUTPUT_SETTING = "OSCAR_JUPYTER_OUTPUT"


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


def inner(letter, text, keep=None):
    """One record in the inner form: its letter (upper-cased when the text is escaped) and the
    text a terminal shows (its last `keep` characters), without a newline."""
    text = visible(text)
    if keep is not None:
        text = text[-keep:]
    if NEEDS_ESCAPE.search(text):
        return letter.upper() + text.translate(ESCAPES)
    return letter + text


def decoded(data):
    return data.decode("utf-8", "surrogateescape")


def is_supervisor(argv):
    """The OSCAR supervisor's command line: /data/supervisor (interLink), /oscar/bin/supervisor,
    or python -m faassupervisor.supervisor."""
    for arg in argv[:4]:
        name = os.path.basename(arg.decode("utf-8", "replace"))
        if name in SUPERVISOR_NAMES:
            return True
    return False


def fd_info(pid, fd):
    """The flags (int) and offset (int) of descriptor `fd` of process `pid` (its fdinfo)."""
    fields = {}
    with open("/proc/%d/fdinfo/%d" % (pid, fd)) as info:
        for row in info:
            name, _, value = row.partition(":")
            fields[name] = value.strip()
    return int(fields["flags"], 8), int(fields["pos"])


def at_end(pid, fd, path, tries=5):
    """Whether descriptor `fd` of `pid` is positioned at the end of the file `path` (asked again
    a few times, 10 ms apart: the supervisor may be writing a line just then)."""
    for _ in range(tries):
        if fd_info(pid, fd)[1] == os.stat(path).st_size:
            return True
        time.sleep(0.01)
    return False


def open_direct(environ):
    """(descriptor, room): a descriptor on the supervisor's own stdout, opened for appending,
    when writing there directly is safe (see ROOM): our parent is the supervisor and reads our
    stdout (a pipe), and its stdout is a regular file that it (and anything sharing it: its
    stderr) appends to, or writes at its end; `room` when ROOM must be written first. (None,
    False) otherwise: then the records go through the supervisor's pipe."""
    if environ.get(OUTPUT_SETTING) == "supervisor":
        return None, False
    parent = os.getppid()
    if parent <= 1:
        return None, False
    try:
        with open("/proc/%d/cmdline" % parent, "rb") as cmdline:
            if not is_supervisor(cmdline.read().split(b"\0")):
                return None, False
        ours = os.fstat(1)
        if not stat.S_ISFIFO(ours.st_mode):
            return None, False
        pipe = "pipe:[%d]" % ours.st_ino
        fds = "/proc/%d/fd" % parent
        if not any(os.readlink(os.path.join(fds, name)) == pipe for name in os.listdir(fds)):
            return None, False  # our stdout is not the parent's to read
        target = os.stat(os.path.join(fds, "1"))
        if not stat.S_ISREG(target.st_mode):
            return None, False
        room = False
        for fd in (1, 2):
            other = os.stat(os.path.join(fds, str(fd)))
            if (other.st_dev, other.st_ino) == (target.st_dev, target.st_ino):
                if not fd_info(parent, fd)[0] & os.O_APPEND:
                    if not at_end(parent, fd, os.path.join(fds, "1")):
                        return None, False  # it would write over what is behind its offset
                    room = True
        fd = os.open(os.path.join(fds, "1"), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except (OSError, ValueError, KeyError, IndexError):
        return None, False
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (target.st_dev, target.st_ino):
        os.close(fd)
        return None, False
    return fd, room


class Sink:
    """Where the records go: the supervisor's stdout itself (`direct`, the pod's log file) or
    the pipe it reads (fd 1). Only this process writes records, one write() per flush: in the
    log file (opened here with O_APPEND) a flush lands whole, after whole lines of the
    supervisor's; `room` first when the supervisor writes at its own offset."""

    def __init__(self, direct_fd=None, room=False):
        self.fd = 1 if direct_fd is None else direct_fd
        self.direct = direct_fd is not None
        self.sent = 0  # bytes written
        self.broken = False
        if self.direct and room:
            self.write(b" " * (ROOM - 1) + b"\n")

    def write(self, data):
        view = memoryview(data)
        while view and not self.broken:
            try:
                view = view[os.write(self.fd, view) :]
            except BrokenPipeError:
                self.broken = True  # nobody reads any more: keep running the program regardless
            except OSError:
                if not self.direct:
                    self.broken = True
                    continue
                # The log file refused (full, gone): end the line cut there, and send the whole
                # flush again through the supervisor (the parser drops what it already has).
                try:
                    os.write(self.fd, b"\n")
                except OSError:
                    pass
                self.fd, self.direct, view = 1, False, memoryview(data)
        self.sent += len(data)


class Output:
    """The only writer of the records: takes the program's lines in, in order, and writes them
    in flushes (plain records or `z` lines), then the control records."""

    def __init__(self, sink, rank=0):
        self.sink = sink
        # A rank other than 0 of a job of several (see RANKS_HEADER): its records carry
        # "r<rank>" after their seq (a batch: after its number), which older parsers skip.
        self.rank_tag = "r%d" % rank if rank else ""
        self.rank = rank
        self.seq = {"o": 0, "e": 0}  # lines taken per stream (a rich output counts on stdout)
        self.base = {"o": 0, "e": 0}  # the same as of the records written
        self.blocks = []  # pending inner text: (text, records, stdout lines, stderr lines)
        self.records = 0
        self.size = 0
        self.pieces = False
        self.next_at = 0.0  # through the supervisor: when the next flush may go
        self.batch_number = 0
        self.raised = False  # the cell raised (its traceback marker came)
        self.finished = False  # the cell's code ran to its end (a rank's f mark)

    # -- taking records in ---------------------------------------------------------------------

    def take(self, text, records, stream=None, lines=0):
        self.blocks.append(
            (text, records, lines if stream == "o" else 0, lines if stream == "e" else 0)
        )
        if stream is not None:
            self.seq[stream] += lines
        self.records += records
        self.size += len(text)

    def lines(self, stream, data):
        """Complete lines (`data` holds them without their last newline). The common case, text
        without controls, escapes or rich outputs, takes no per-line work."""
        if RICH_PREFIX in data:
            for line in data.split(b"\n"):
                self.line(stream, line)
            return
        text = decoded(data)
        texts = text.split("\n")
        if BLOCK_NEEDS_WORK.search(text):
            block = "".join(inner(stream, line) + "\n" for line in texts)
        else:
            block = stream + ("\n" + stream).join(texts) + "\n"
        self.take(block, len(texts), stream, len(texts))

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
        self.take(inner(stream, decoded(data)) + "\n", 1, stream, 1)

    def rich(self, kind, payload):
        """A rich output (d) takes the next stdout seq and the traceback marker (t) the next
        stderr seq: they show in order with the text. The result (r) is a control line, tagged
        with its rank: the program sends values from rank 0, or from every rank with
        --out-ranks all. Figures and display() of a job of several ranks come from rank 0."""
        if kind == "t":
            self.raised = True
        if kind == "f":
            self.finished = True
            return
        if self.rank and kind == "d":
            return
        if kind == "r":
            self.control("r", payload, "0" + self.rank_tag)
        elif kind == "d":
            self.take("d%s\n" % payload, 1, "o", 1)
        else:
            self.take("t\n", 1, "e", 1)

    def partial(self, stream, data):
        """The line `stream` has not ended yet, under the seq it will have once complete."""
        self.take(inner(PARTIAL_KIND[stream], decoded(data), PARTIAL_CHARS) + "\n", 1)

    def piece(self, stream, data):
        """The start of a long line still being written (no CR in it: shown as written)."""
        self.take(inner(PIECE_KIND[stream], decoded(data)) + "\n", 1)
        self.pieces = True

    def control(self, kind, text, seq="0"):
        """A control record, on its own line, after everything taken before it."""
        self.flush(force=True)
        self.sink.write(("%s|%s|%s|%s|@@\n" % (MARKER, kind, seq, text)).encode("utf-8"))

    # -- writing -------------------------------------------------------------------------------

    def due_in(self, now):
        """Seconds until pending records may be flushed; None when nothing waits."""
        if not self.blocks:
            return None
        return max(0.0, self.next_at - now)

    def flush(self, now=None, force=False):
        if not self.blocks:
            return
        now = time.monotonic() if now is None else now
        if not force and now < self.next_at:
            if self.sink.direct and self.size < BATCH_BYTES:
                return
            if not self.sink.direct and self.size < max(PENDING_FLOOR, self.sink.sent // 4):
                return
        if self.records <= PLAIN_RECORDS and self.size <= PLAIN_BYTES and not self.pieces:
            data = self.plain_records()
        else:
            data = self.batches(BATCH_BYTES if self.sink.direct else None)
        self.blocks, self.records, self.size, self.pieces = [], 0, 0, False
        self.sink.write(data)
        if self.sink.direct:
            self.next_at = now + BATCH_WINDOW
        else:
            copied = data.count(b"\n") * self.sink.sent
            self.next_at = now + max(MIN_SPACING, copied / SUPERVISOR_RATE)

    def plain_records(self):
        out, o, e = [], self.base["o"], self.base["e"]
        for block in self.blocks:
            for record in block[0].split("\n")[:-1]:
                letter, text = record[0], record[1:]
                if letter in NEXT_STDOUT:
                    o += 1
                    seq = o
                elif letter in NEXT_STDERR:
                    e += 1
                    seq = e
                else:  # a partial line: the seq its line will have
                    seq = o + 1 if letter in "pP" else e + 1
                out.append("%s|%s|%d%s|%s|@@\n" % (MARKER, letter, seq, self.rank_tag, text))
        self.base["o"], self.base["e"] = o, e
        return "".join(out).encode("utf-8")

    def batches(self, limit):
        """The pending records as `z` lines of at most `limit` inner bytes (one block may be
        more; None: one line)."""
        out, size = [], 0
        group = []  # type: list
        for block in self.blocks + [None]:
            if group and (block is None or (limit is not None and size + len(block[0]) > limit)):
                out.append(self.batch(group))
                group, size = [], 0
            if block is not None:
                group.append(block)
                size += len(block[0])
        return b"".join(out)

    def batch(self, group):
        text = "".join(block[0] for block in group).encode("utf-8", "surrogateescape")
        level = ZLIB_LEVEL
        if len(text) > 4 * SAMPLE_BYTES:
            sample = zlib.compress(text[:SAMPLE_BYTES], ZLIB_LEVEL)
            level = ZLIB_LEVEL if len(sample) < 0.9 * SAMPLE_BYTES else 0
        payload = base64.b64encode(zlib.compress(text, level))
        self.batch_number += 1
        head = "%s|z|%d%s|%d|%d|" % (
            MARKER,
            self.batch_number,
            self.rank_tag,
            self.base["o"],
            self.base["e"],
        )
        self.base["o"] += sum(block[2] for block in group)
        self.base["e"] += sum(block[3] for block in group)
        return head.encode("ascii") + payload + b"|@@\n"


class Stream:
    """One pipe of the program: bytes in, complete lines out to Output; the rest at EOF. A line
    pending for PARTIAL_EVERY goes out as a partial record (`tick`), at most one per
    PARTIAL_EVERY; a line growing past LINE_PIECE goes out in pieces."""

    def __init__(self, pipe, letter, output):
        self.pipe = pipe
        self.letter = letter
        self.output = output
        self.partial = bytearray()
        self.pending_since = 0.0  # when the pending partial line began
        self.partial_sent_at = 0.0
        self.partial_sent = None  # the text of the last partial record of the pending line
        self.has_cr = False  # the pending line holds a CR: kept whole (a terminal redraws it)
        self.has_rich = False  # the pending line holds a rich output's prefix: kept whole
        try:
            self.large = fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE) >= PIPE_SIZE
        except OSError:
            self.large = False

    def read(self):
        """Reads what the pipe holds; False at EOF."""
        chunk = os.read(self.pipe.fileno(), READ_SIZE)
        if not chunk:
            self.close()
            return False
        head, newline, tail = chunk.rpartition(b"\n")
        if newline:
            self.output.lines(self.letter, bytes(self.partial) + head if self.partial else head)
            self.partial = bytearray(tail)
            self.partial_sent = None
            self.pending_since = time.monotonic()
            self.has_cr, self.has_rich = b"\r" in tail, False
        else:
            if not self.partial:
                self.pending_since = time.monotonic()
            self.partial += chunk
            self.has_cr = self.has_cr or b"\r" in chunk
        if b"\r" in chunk:
            self.compress()
        if len(self.partial) > LINE_PIECE:
            self.cut_piece()
        return True

    def compress(self):
        """Keeps a bar that redraws without a newline from growing: what precedes the last CR
        is replaced by what a terminal shows of it (the line's visible text stays the same)."""
        before, cr, current = bytes(self.partial).rpartition(b"\r")
        if cr and b"\r" in before:
            shown = visible(before.decode("utf-8", "surrogateescape"))
            self.partial = bytearray(shown.encode("utf-8", "surrogateescape") + cr + current)

    def cut_piece(self):
        """Sends all but the end of a long pending line, cut where a character starts."""
        if self.has_cr or self.has_rich:
            return
        if RICH_PREFIX in self.partial:
            self.has_rich = True  # a rich output, bounded by the program: it travels whole
            return
        cut = len(self.partial) - PIECE_KEEP
        while cut > 0 and self.partial[cut] & 0xC0 == 0x80:
            cut -= 1
        self.output.piece(self.letter, bytes(self.partial[:cut]))
        del self.partial[:cut]

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


def usage_mac(exit_key, text):
    """The usage record's signature: HMAC-SHA256 of its JSON keyed by the exit key, as decimal
    digits (it travels in the record's seq field)."""
    mac = hmac.new(exit_key.encode("ascii"), text.encode("utf-8"), hashlib.sha256)
    return str(int(mac.hexdigest(), 16))


def visible_gpus(environ):
    """The GPU indexes CUDA_VISIBLE_DEVICES names (None: all that nvidia-smi lists)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return set(names) if all(name.isdigit() for name in names) else None


class GpuMemory:
    """Peak GPU memory of the job's GPUs, sampled with nvidia-smi every GPU_EVERY (a thread, so
    a slow nvidia-smi never holds the output up). Its own CPU time is counted apart: it is a
    child of this process, as the program is, and the program's CPU time is what is reported."""

    def __init__(self, environ):
        self.command = shutil.which("nvidia-smi")
        self.wanted = visible_gpus(environ)
        self.peak_mib = None
        self.total_mib = None
        self.overhead_cpu = 0.0
        self.stopped = False
        self.thread = None

    def sample(self):
        try:
            process = subprocess.Popen(
                [str(self.command)] + GPU_QUERY,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            pipe = process.stdout
            assert pipe is not None
            text = pipe.read().decode("ascii", "replace")
            pipe.close()
            # its own rusage, not counted as the program's (communicate() would reap it first)
            _, status, used = os.wait4(process.pid, 0)
            process.returncode = status
            self.overhead_cpu += used.ru_utime + used.ru_stime
        except (OSError, ValueError):
            self.command = None
            return
        memory, total = 0, 0
        for row in text.splitlines():
            fields = [field.strip() for field in row.split(",")]
            if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
                continue
            if self.wanted is None or fields[0] in self.wanted:
                memory += int(fields[1])
                total += int(fields[2])
        if status != 0 or not total:
            self.command = None  # no GPU here (or none of ours): sampled no more
            return
        self.peak_mib = max(self.peak_mib or 0, memory)
        self.total_mib = total

    def watch(self):
        while self.command and not self.stopped:
            self.sample()
            deadline = time.monotonic() + GPU_EVERY
            while not self.stopped and time.monotonic() < deadline:
                time.sleep(0.1)

    def start(self):
        if self.command:
            self.thread = threading.Thread(target=self.watch)
            self.thread.daemon = True
            self.thread.start()

    def stop(self):
        self.stopped = True
        if self.thread is not None:
            self.thread.join(2 * GPU_EVERY)


def measured_usage(started, gpu, ranks=None):
    """What the program used, as the usage record's JSON: wall seconds since it started, its
    process tree's user+sys CPU seconds and peak RSS (KiB: the largest of its processes, as
    getrusage gives it on Linux) once it has been waited for, GPU memory when sampled. Where
    nvidia-smi ran, its own CPU time is left out; its peak RSS (tens of MiB) is not separable,
    which matters only for a GPU job that uses less host memory than nvidia-smi itself."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = children.ru_utime + children.ru_stime - gpu.overhead_cpu
    usage = {
        "wall_seconds": round(time.monotonic() - started, 3),
        "cpu_seconds": round(max(0.0, cpu), 3),
        "max_rss_kib": int(children.ru_maxrss),
    }
    if gpu.peak_mib is not None:
        usage["gpu_memory_mib"] = gpu.peak_mib
        usage["gpu_total_mib"] = gpu.total_mib
    if ranks is not None:
        usage.update(ranks.record())
    return json.dumps(usage, sort_keys=True)


class Children:
    """The program's processes (one per rank). SIGTERM (scancel) and SIGINT sent to the runner
    go on to each."""

    def __init__(self):
        self.processes = []
        self.early = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.forward)

    def forward(self, signum, frame=None):
        if not self.processes:
            self.early.append(signum)
        for process in self.processes:
            send(process, signum)

    def start(self, argv, env=None):
        """A program gets /dev/null, its two pipes and the nonce's pipe (named in its argv),
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
                env=env,
            )
        finally:
            os.close(nonce_fd)
        self.processes.append(process)
        return process

    def started(self):
        for signum in self.early:
            self.forward(signum)


def send(process, signum):
    if process.returncode is None:
        try:
            process.send_signal(signum)
        except OSError:
            pass


def rank_plan(program):
    """How many ranks the program runs as and the mpiexec flags (words) its RANKS_HEADER line
    gives: (1, []) without one."""
    try:
        with open(program, "rb") as source:
            match = RANKS_HEADER.match(source.readline(1000))
    except OSError:
        return 1, []
    if not match:
        return 1, []
    return max(1, int(match.group(1))), match.group(2).decode("utf-8", "replace").split()


def free_port():
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


# The variables that differ from rank to rank (RANK_SHIM sets the same three).
RANK_NAMES = ("RANK", "LOCAL_RANK", RANK_SETTING)


def ranks_environment(size, port):
    """What every rank's environment holds beyond this one: where the ranks meet, as
    torch.distributed's env:// reads it (every rank on this node)."""
    env = dict(os.environ)
    for name, value in (
        ("WORLD_SIZE", size),
        ("LOCAL_WORLD_SIZE", size),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", port),
    ):
        env[name] = str(value)
    return env


def rank_environment(rank, size, port):
    """A rank's environment: ranks_environment, its rank, and OSCAR_JUPYTER_RANK for the
    program itself."""
    env = ranks_environment(size, port)
    for name in RANK_NAMES:
        env[name] = str(rank)
    return env


def shell_status(code):
    return code if code >= 0 else 128 - code


class Ranks:
    """How the ranks ended: each one's exit status, the order they failed in, and those stopped
    because they still ran RANK_GRACE after rank 0 ended or another rank failed.

    A rank's cell that raised (its traceback marker) has failed, and rank 0's cell that ran to
    its end (its f mark) counts as rank 0 ended, before their processes end: under mpiexec a
    rank may then wait in MPI_Finalize for ranks that never get there. Stopped then, such a
    rank keeps the outcome of its cell (1, or 0)."""

    def __init__(self, processes, outputs):
        self.processes = processes
        self.outputs = outputs
        self.ended = set()
        self.exits = {}  # rank -> exit status
        self.failed = []  # ranks that ended with a status other than 0, in the order they did
        self.stopped = []
        self.grace_started = False
        self.stop_at = None
        self.kill_at = None

    def watch(self, now):
        for rank, process in enumerate(self.processes):
            if rank in self.ended:
                continue
            if process.poll() is None:
                self.read_marks(rank, now)
                continue
            self.ended.add(rank)
            if rank not in self.exits:
                self.exits[rank] = shell_status(process.returncode)
            if self.exits[rank] and rank not in self.stopped + self.failed:
                self.failed.append(rank)
            if rank == 0 or self.exits[rank]:
                self.start_grace(now)
        if self.stop_at is not None and now >= self.stop_at:
            self.stop_at, self.kill_at = None, now + RANK_KILL_AFTER
            self.stop_the_rest()
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            for process in self.processes:
                send(process, signal.SIGKILL)
        return len(self.ended) == len(self.processes)

    def read_marks(self, rank, now):
        """A job of one rank ends by its process alone (a session's cells may raise and it runs
        on)."""
        if len(self.processes) < 2:
            return
        if self.outputs[rank].raised and rank not in self.failed:
            self.failed.append(rank)
            self.start_grace(now)
        if rank == 0 and self.outputs[rank].finished:
            self.start_grace(now)

    def start_grace(self, now):
        if len(self.processes) > 1 and not self.grace_started:
            self.grace_started, self.stop_at = True, now + RANK_GRACE

    def stop_the_rest(self):
        for rank, process in enumerate(self.processes):
            if rank in self.ended:
                continue
            if self.outputs[rank].raised:
                self.exits[rank] = 1
            elif self.outputs[rank].finished:
                self.exits[rank] = 0
            else:
                self.stopped.append(rank)
            send(process, signal.SIGTERM)

    def status(self):
        """The job's exit status: that of the first rank that failed (else a stopped one's)."""
        for rank in self.failed + self.stopped:
            return self.exits.get(rank, 1) or 1
        return 0

    def record(self):
        """The ranks' part of the usage record (nothing for one rank)."""
        if len(self.processes) < 2:
            return {}
        return {
            "rank_exits": [self.exits.get(rank, 1) for rank in range(len(self.processes))],
            "ranks_failed": self.failed,
            "ranks_stopped": self.stopped,
            "rank_grace_seconds": RANK_GRACE,
        }


# With mpiexec on the PATH the ranks start through it, so MPI's COMM_WORLD holds them all:
# `mpiexec -np T [flags] python3 MPI_DIR/shim.py MPI_DIR/socket <python3> <program>`, MPI_DIR in
# the work directory (private: mktemp -d), removed once every rank has connected. Each rank's
# shim (RANK_SHIM) connects to the socket three times: the program's stdout, its stderr (each
# rank's records stay its own, as with pipes) and a control line that brings the nonce and
# takes back the program's pid and how it ended. The shim runs the program as its child and
# exits 0 whatever it did: how the ranks ended is Ranks' to judge, not mpiexec's.
MPIEXEC = "mpiexec"
MPI_DIR = ".oj-mpi"
HELLO_TIMEOUT = 5.0
RANK_SHIM = r"""# oscar-jupyter: one rank under mpiexec (see the runner's tagger)
import os, signal, socket, sys
address, python, program = sys.argv[1:4]
names = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")
found = [os.environ[name] for name in names if os.environ.get(name, "").isdigit()]
if not found:
    sys.exit("oscar-jupyter runner: mpiexec set none of " + ", ".join(names))
rank = found[0]
def connect(kind):
    line = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    line.connect(address)
    line.sendall((rank + " " + kind + "\n").encode())
    return line
out, err, control = connect("o"), connect("e"), connect("c")
nonce = b""
while not nonce.endswith(b"\n"):
    chunk = control.recv(100)
    if not chunk:
        sys.exit("oscar-jupyter runner: rank " + rank + " got no nonce")
    nonce += chunk
read_end, write_end = os.pipe()
os.write(write_end, nonce.strip())
os.close(write_end)
child, pending = [], []
def forward(signum, frame):
    if not child:
        pending.append(signum)
        return
    try:
        os.kill(child[0], signum)
    except OSError:
        pass
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, forward)
env = dict(os.environ, RANK=rank, LOCAL_RANK=rank, OSCAR_JUPYTER_RANK=rank)
pid = os.fork()
if pid == 0:
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        os.set_inheritable(read_end, True)
        os.execve(python, [python, "-u", program, "--rich-fd=%d" % read_end], env)
    finally:
        os._exit(127)
child.append(pid)
out.close()
err.close()
os.close(read_end)
control.sendall(("pid %d\n" % pid).encode())
for signum in pending:
    forward(signum, None)
status = os.waitpid(pid, 0)[1]
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
control.sendall(("exit %d\n" % code).encode())
"""
NO_MPIEXEC = (
    "oscar-jupyter: mpiexec was not found in the image, so the %d ranks started without it: "
    "MPI's COMM_WORLD has size 1 in each rank (torch.distributed's env:// still works)"
)


def open_mpi_kind(mpiexec):
    """ "orte" for Open MPI up to 4 (its mpiexec says OpenRTE), "prrte" for Open MPI 5 and later,
    None for another MPI (MPICH, Intel MPI) or no answer."""
    try:
        answer = subprocess.run(
            [mpiexec, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
        ).stdout.lower()
    except (OSError, subprocess.SubprocessError):
        return False
    if b"openrte" in answer:
        return "orte"
    if b"open mpi" in answer or b"open-mpi" in answer:
        return "prrte"
    return None


def mpiexec_command(mpiexec, kind, size, flags):
    """mpiexec -np <size>, what Open MPI needs here unless the flags say it (as root:
    --allow-run-as-root; more ranks than this job's CPUs: --oversubscribe), then the flags."""
    words = [mpiexec, "-np", str(size)]
    if kind is not None:
        if os.geteuid() == 0 and "--allow-run-as-root" not in flags:
            words.append("--allow-run-as-root")
        if size > len(os.sched_getaffinity(0)) and "--oversubscribe" not in flags:
            words.append("--oversubscribe")
    return words + list(flags)


def mpiexec_environment(kind, size, port):
    env = ranks_environment(size, port)
    if kind == "orte":
        # Open MPI 4 kills every rank once one ends without MPI_Finalize (stopped, or leaving
        # after its cell raised): Ranks decides that instead, with its grace.
        env["OMPI_MCA_orte_allowed_exit_without_sync"] = "1"
        # Every rank is on this node: without this, mpiexec refuses to start in an image
        # without ssh or rsh, which it would only need to reach other nodes.
        env["OMPI_MCA_plm"] = "isolated"
    return env


class RemoteRank:
    """A rank that mpiexec started, as Ranks and Children see a process (poll, returncode,
    send_signal): its shim's control line says the program's pid, then how it ended. A signal
    sent before the pid is known goes once it is."""

    def __init__(self):
        self.pid = None
        self.returncode = None
        self.connected = False
        self.pending = []

    def poll(self):
        return self.returncode

    def wait(self):
        return self.returncode

    def send_signal(self, signum):
        if self.pid is None:
            self.pending.append(signum)
        else:
            os.kill(self.pid, signum)

    def told(self, line):
        word, _, value = line.partition(b" ")
        if not value.lstrip(b"-").isdigit():
            return
        if word == b"pid":
            self.pid = int(value)
            for signum in self.pending:
                send(self, signum)
            self.pending = []
        elif word == b"exit" and self.returncode is None:
            self.returncode = int(value)


class Control:
    """A rank's control line (see RANK_SHIM), read in the run loop as a Stream is."""

    def __init__(self, line, rank):
        self.line = line
        self.rank = rank
        self.buffer = b""

    def read(self):
        chunk = self.line.recv(4096)
        if not chunk:
            if self.rank.returncode is None:
                self.rank.returncode = 1  # its shim ended without saying how the rank did
            self.close()
            return False
        self.buffer += chunk
        while b"\n" in self.buffer:
            text, _, self.buffer = self.buffer.partition(b"\n")
            self.rank.told(text)
        return True

    def close(self):
        self.line.close()


class MpiLaunch:
    """The ranks started through mpiexec (see RANK_SHIM): the socket in MPI_DIR takes each
    rank's three connections, and mpiexec's own output is rank 0's stderr."""

    def __init__(self, outputs, selector, streams, mpiexec, argv, env):
        """Starts `mpiexec ... python3 shim.py socket` + argv (the program's python3 and the
        program) in env."""
        self.outputs = outputs
        self.selector = selector
        self.streams = streams
        self.ranks = [RemoteRank() for _ in outputs]
        self.waiting = 3 * len(outputs)  # connections still to come
        self.folder = os.path.abspath(MPI_DIR)
        os.mkdir(self.folder, 0o700)
        self.shim = os.path.join(self.folder, "shim.py")
        with open(self.shim, "w") as shim:
            shim.write(RANK_SHIM)
        self.path = os.path.join(self.folder, "socket")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(self.waiting)
        self.listening = True
        self.process = subprocess.Popen(
            mpiexec + [argv[0], self.shim, self.path] + argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            env=env,
        )
        self.add(self.process.stdout, Stream(self.process.stdout, "e", self.outputs[0]))
        self.selector.register(self.listener, selectors.EVENT_READ, self)

    def add(self, fileobj, handler):
        if isinstance(handler, Stream):
            self.streams.append(handler)
        self.selector.register(fileobj, selectors.EVENT_READ, handler)

    def read(self):
        """Takes one connection; False once every rank's three have come."""
        self.accept()
        if self.waiting:
            return True
        self.close()
        return False

    def accept(self):
        """Takes one connection; False when none was waiting."""
        try:
            line, _ = self.listener.accept()
        except OSError:  # BlockingIOError: none waiting
            return False
        self.take(line)
        self.waiting -= 1
        return True

    def take(self, line):
        """A shim's connection: its first line says whose and which ("<rank> o|e|c"), read a
        byte at a time so that nothing after it is taken."""
        hello = b""
        try:
            line.settimeout(HELLO_TIMEOUT)
            while not hello.endswith(b"\n") and len(hello) < 40:
                byte = line.recv(1)
                if not byte:
                    break
                hello += byte
            line.settimeout(None)
        except OSError:
            hello = b""
        rank, _, kind = hello.decode("ascii", "replace").strip().partition(" ")
        if not rank.isdigit() or int(rank) >= len(self.ranks) or kind not in ("o", "e", "c"):
            line.close()
            return
        number = int(rank)
        if kind == "c":
            line.sendall(RICH_NONCE.encode("ascii") + b"\n")
            self.ranks[number].connected = True
            self.add(line, Control(line, self.ranks[number]))
        else:
            line.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIPE_SIZE)
            self.add(line, Stream(line, kind, self.outputs[number]))

    def check(self):
        """Once mpiexec has ended, the connections still queued are taken, and a rank that never
        connected ended with mpiexec's status (1 for 0)."""
        if not self.listening or self.process.poll() is None:
            return
        self.selector.unregister(self.listener)
        self.listener.setblocking(False)
        while self.waiting and self.accept():
            pass
        self.close()
        for rank in self.ranks:
            if not rank.connected and rank.returncode is None:
                rank.returncode = self.process.returncode or 1

    def close(self):
        if self.listening:
            self.listener.close()
            self.listening = False
            shutil.rmtree(self.folder, ignore_errors=True)

    def finish(self):
        """Waits for mpiexec (killed if it outlives its ranks by RANK_KILL_AFTER)."""
        try:
            self.process.wait(timeout=RANK_KILL_AFTER)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_ranks(program, outputs, children, selector, streams, flags):
    """Starts the program as each of its ranks (through mpiexec when the PATH has it); the
    MpiLaunch, or None."""
    size = len(outputs)
    python = sys.executable or "python3"
    port = free_port() if size > 1 else 0
    mpiexec = shutil.which(MPIEXEC) if size > 1 else None
    if mpiexec:
        kind = open_mpi_kind(mpiexec)
        command = mpiexec_command(mpiexec, kind, size, flags)
        env = mpiexec_environment(kind, size, port)
        launch = MpiLaunch(outputs, selector, streams, command, [python, program], env)
        children.processes = launch.ranks
        return launch
    if size > 1:
        outputs[0].line("e", (NO_MPIEXEC % size).encode("utf-8"))
    for rank in range(size):
        process = children.start(
            [python, "-u", program], rank_environment(rank, size, port) if size > 1 else None
        )
        for pipe, letter in ((process.stdout, "o"), (process.stderr, "e")):
            streams.append(Stream(pipe, letter, outputs[rank]))
            selector.register(pipe, selectors.EVENT_READ, streams[-1])
    return None


def run(program, output, gpu, size=1, flags=()):
    """Runs the program (as each of its `size` ranks), tags the streams; how they ended."""
    outputs = [output] + [Output(output.sink, rank) for rank in range(1, size)]
    children = Children()
    selector = selectors.DefaultSelector()
    streams = []  # type: list
    launch = start_ranks(program, outputs, children, selector, streams, flags)
    children.started()
    ranks = Ranks(children.processes, outputs)
    gpu.start()
    quiet_from = None  # once the program has exited: since when its pipes have been silent
    while selector.get_map():
        now = time.monotonic()
        if launch is not None:
            launch.check()
        if quiet_from is None and ranks.watch(now):
            quiet_from = now
        if quiet_from is not None and now - quiet_from >= QUIET_AFTER_EXIT:
            break
        timeout = WAKE_EVERY if quiet_from is None else QUIET_AFTER_EXIT - (now - quiet_from)
        dues = [due for due in (out.due_in(now) for out in outputs) if due is not None]
        if dues:
            timeout = min([timeout] + dues)
        events = selector.select(max(0.0, timeout))
        if events and quiet_from is not None:
            quiet_from = time.monotonic()
        for key, _ in events:
            if not key.data.read():
                selector.unregister(key.fileobj)
        now = time.monotonic()
        for stream in streams:
            stream.tick(now)
        for out in outputs:
            out.flush(now)
        dues = [due for due in (out.due_in(now) for out in outputs) if due]
        if events and dues and all(stream.large for stream in streams):
            time.sleep(min(min(dues), READ_PAUSE))
    for key in list(selector.get_map().values()):
        key.data.close()
    for out in outputs:
        out.flush(force=True)
    for process in children.processes:
        process.wait()
    if launch is not None:
        launch.finish()
    ranks.watch(time.monotonic())
    gpu.stop()
    return ranks


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
    size, flags = rank_plan(program)
    if size > 1:
        start["ranks"] = size
    output = Output(Sink(*open_direct(os.environ)))
    output.control("s", json.dumps(start))
    status, ranks = 255, None
    started = time.monotonic()
    gpu = GpuMemory(os.environ)
    try:
        ranks = run(program, output, gpu, size, flags)
        status = ranks.status()
    except Exception:
        report = "oscar-jupyter runner: internal error\n" + traceback.format_exc()
        for line in report.rstrip("\n").split("\n"):
            output.line("e", line.encode("utf-8", "surrogateescape"))
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        usage = measured_usage(started, gpu, ranks)
        output.control("u", usage, usage_mac(exit_key, usage))
    except Exception:
        pass  # the job's end matters more than what it used
    output.control("x", str(status), exit_key)


if __name__ == "__main__":
    main()
