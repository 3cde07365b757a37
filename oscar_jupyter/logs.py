"""Whole-log text of a runner job -> the cell's output lines, its start data and its exit code.

OSCAR returns the whole log on every poll: the Slurm preamble, supervisor INFO lines, every
script line as a supervisor DEBUG line, and at the end the script's whole output again. Only the
runner's tagged lines count (format in ``runner``); they are de-duplicated by (stream, seq).

The log only grows between polls, except that ``job.out`` (Slurm's preamble, served in front of
the container's output) may grow too and shift everything after it. So the parser remembers how
far it has consumed complete lines and, when the next text still has the same consumed prefix
(checked on its first and last characters: O(1)), parses only what follows; any other text is
parsed whole again, and de-duplication keeps the result the same.

Control records are trusted only as the runner writes them. The first start line counts; when it
announces an exit key's SHA-256, an exit record counts only with that key, so a cell that writes
an exit record into the supervisor's pipe itself cannot end its job (the record shows as its
text), and the usage record counts only when its HMAC, keyed by that exit key, holds. The
traceback marker counts only as the program's ``t`` record. The ``--out`` record is taken from
its first intact copy: the supervisor logs it twice (DEBUG line, final dump), and a log stream
that resends or loses bytes inside one copy must not cost the values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import zlib
from typing import Any, Literal, NamedTuple

from . import runner
from .values import is_intact

_STREAM_NAMES = {runner.STDOUT: "stdout", runner.STDERR: "stderr"}
_STREAM_LETTERS = {"stdout": runner.STDOUT, "stderr": runner.STDERR}
_PARTIAL_STREAMS = {runner.PARTIAL_STDOUT: "stdout", runner.PARTIAL_STDERR: "stderr"}
_PIECE_STREAMS = {runner.PIECE_STDOUT: "stdout", runner.PIECE_STDERR: "stderr"}
# A batch's inner letters: which take the next seq of a stream, and which belong to stdout.
_NEXT_STDOUT = frozenset("oOd")
_NEXT_STDERR = frozenset("eEt")
_ON_STDOUT = frozenset("pPcC")
_BATCH_HEAD = runner.MARKER + "|" + runner.BATCH + "|"
# The key of a line in `_seen`: seq * 2, + 1 on stderr.
_STREAM_BIT = {runner.STDOUT: 0, runner.STDERR: 1}
_DEBUG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - supervisor - DEBUG - ")
_TAG = re.compile(
    r"^" + re.escape(runner.MARKER) + r"\|([oesxpqdrtuOEPQ])\|(\d+)(?:r([1-9]\d{0,5}))?\|"
)
_BATCH_NUMBER = re.compile(r"(\d+)(?:r([1-9]\d{0,5}))?")
# Usage records kept until the exit record reveals the key that checks them: the runner's is the
# last before the exit record; a cell that writes many costs no more than this many.
_USAGE_CANDIDATES = 8
_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")
_TRACEBACK_HEADER = "Traceback (most recent call last):"
# How much of the consumed text's start and end is kept to recognise the next text as its
# extension: the shift that a growing job.out causes changes both.
_HEAD_CHARS = 1024
_ANCHOR_CHARS = 1024


class OutputLine(NamedTuple):
    """One line of the cell's output (a tuple: a million of them stay cheap to make and keep)."""

    stream: Literal["stdout", "stderr"]
    seq: int
    text: str
    # A rich output (figure, display(obj)): {"data": mime bundle, "metadata", "notes"}; `text`
    # is then its text/plain form, for views that show text only.
    bundle: dict | None = None
    # The program's line before the traceback of the exception that ended the cell (its text is
    # runner.TRACEBACK_MARKER): never shown. A copy of that text printed by the cell is not one.
    marker: bool = False
    # The rank that printed it (a job of several ranks, issue 21), and how many characters of
    # `text` are its label ("[r3] "), put in front where the view shows more than rank 0.
    rank: int = 0
    label: int = 0

    def unlabelled(self) -> OutputLine:
        return self._replace(text=self.text[self.label :], label=0) if self.label else self


def _unescape_one(match: re.Match[str]) -> str:
    escape = match.group(1)
    if escape == "r":
        return "\r"
    if len(escape) == 3:  # xNN
        code = int(escape[1:], 16)
        # NUL and bytes that are not UTF-8 (>= 0x80) stay visible; other controls (ESC ...) act
        return chr(code) if 0 < code < 0x80 else f"\\x{code:02x}"
    return escape


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(_unescape_one, text)


class LogParser:
    """Feed it the whole log text after every poll (`feed`), or the text that arrived since the
    last call (`feed_more`, for a followed stream); it returns only the lines not seen before."""

    def __init__(self, all_ranks: bool = False) -> None:
        # A job of several ranks (its start line says how many): `lines` holds rank 0's output
        # and every rank's stderr, the others' labelled "[r3] "; `all_ranks`: every rank's
        # output, each line labelled. `rank_lines` keeps each other rank's own lines.
        self.all_ranks = all_ranks
        self.ranks = 1
        self.rank_lines: dict[int, list[OutputLine]] = {}
        self._seen_ranks: dict[int, set[int]] = {}
        self.lines: list[OutputLine] = []
        self.exit_code: int | None = None
        self.started: dict | None = None
        # The --out values' records, base64 (see values.py), by rank: rank 0's, and with
        # --out-ranks all every rank's.
        self.results: dict[int, str] = {}
        # What the program used (the runner's usage record, checked by the exit key), once the
        # job has ended: JSON fields as `usage.Usage` reads them.
        self.usage: dict[str, Any] | None = None
        self._usage_candidates: list[tuple[str, str]] = []  # (signature, JSON) in log order
        # The line each stream has not ended yet, as it looks now; gone once it is complete.
        self.partial: dict[str, str] = {}
        self.chars_parsed = 0  # characters looked at, over all feeds (cost: tests and bench)
        self.full_parses = 0  # feeds whose text did not extend the previous one
        self._seen: set[int] = set()  # lines taken: seq * 2, + 1 on stderr
        self._last_seq: dict[str, int] = {}  # the highest complete seq per stream name
        self._partial_seq: dict[str, int] = {}
        self._consumed = 0  # characters of the text whose complete lines have been parsed
        self._head = ""  # the first characters of the consumed text
        self._anchor = ""  # the last characters of the consumed text
        self._pending = ""  # the text after the last newline: possibly cut off
        self._start_seen = False
        # The SHA-256 of the exit key announced by the start line; None in logs that predate it.
        self._exit_digest: str | None = None
        self._forged: set[str] = set()  # exit records without the key, already shown as text
        self._results_intact: set[int] = set()  # ranks whose --out record came intact
        # `z` lines taken: (number, payload hash, rank)
        self._batches: set[tuple[int, int, int]] = set()
        # The pieces of the line each stream is still writing: (its seq, texts so far).
        self._pieces: dict[str, tuple[int, list[str]]] = {}
        # Ranks whose --out record came damaged in a supervisor DEBUG line: its final dump
        # repeats the record, so the exit record is taken from there (after the second copy).
        self._results_again: set[int] = set()

    @property
    def result(self) -> str | None:
        """Rank 0's --out record (the only one unless --out-ranks all)."""
        return self.results.get(0)

    @property
    def finished(self) -> bool:
        return self.exit_code is not None

    def feed(self, whole_text: str) -> list[OutputLine]:
        """The log as served now, from its first character."""
        if self._extends(whole_text):
            return self._parse(whole_text[self._consumed :])
        self.full_parses += 1
        self._consumed, self._head, self._anchor, self._pending = 0, "", "", ""
        return self._parse(whole_text)

    def feed_more(self, text: str) -> list[OutputLine]:
        """The characters that follow the text fed so far."""
        return self._parse(self._pending + text)

    def _extends(self, text: str) -> bool:
        consumed = self._consumed
        if consumed == 0 or len(text) < consumed:
            return False
        return (
            text.startswith(self._head)
            and text[consumed - len(self._anchor) : consumed] == self._anchor
        )

    def _parse(self, part: str) -> list[OutputLine]:
        """Parse `part`, the text from `self._consumed` on; consume its complete lines."""
        self.chars_parsed += len(part)
        cut = part.rfind("\n") + 1  # the text after the last "\n" may be cut off by this poll
        complete = part[:cut]
        if len(self._head) < _HEAD_CHARS:
            self._head = (self._head + complete)[:_HEAD_CHARS]
        self._anchor = (self._anchor + complete[-_ANCHOR_CHARS:])[-_ANCHOR_CHARS:]
        self._consumed += cut
        self._pending = part[cut:]
        # Split on "\n" only: str.splitlines() would also split on \x1c, \x85, \u2028 ...
        raw_lines = part.split("\n")
        last = len(raw_lines) - 1
        new: list[OutputLine] = []
        for index, raw in enumerate(raw_lines):
            line = raw[:-1] if raw.endswith("\r") else raw
            prefix = None if line.startswith(runner.MARKER) else _DEBUG_PREFIX.match(line)
            if prefix:
                line = line[prefix.end() :]
            if line.startswith(_BATCH_HEAD):
                if index != last:  # cut off at the end of this poll: taken on a later feed
                    self._take_batch(line, new)
                continue
            tag = _TAG.match(line)
            if not tag or not line.endswith(runner.END):
                continue  # not ours, or cut off at the end of this poll: taken on a later feed
            kind, seq = tag.group(1), int(tag.group(2))
            rank = int(tag.group(3) or 0)
            if rank and kind not in _RANKED_KINDS:
                continue
            if index == last and kind not in (runner.START, runner.EXIT):
                continue  # a user line may itself contain "|@@": wait for its newline
            text = line[tag.end() : -len(runner.END)]
            if kind == runner.START:
                self._take_start(text)
                continue
            if kind == runner.RESULT:
                self._take_result(text, decorated=prefix is not None, rank=rank)
                continue
            if kind == runner.USAGE:
                self._take_usage_candidate(tag.group(2), text)
                continue
            if kind == runner.EXIT:
                if self.exit_code is not None or not text.strip().lstrip("-").isdigit():
                    continue
                if not self._exit_key_matches(tag.group(2)):
                    # Not the tagger's: the cell wrote it around the tagger, into the
                    # supervisor's pipe. It is what the cell wrote, shown once (it has no seq);
                    # the job goes on.
                    if line not in self._forged:
                        self._forged.add(line)
                        new.append(OutputLine("stdout", 0, line))
                    continue
                if self._results_again and prefix is not None:
                    continue  # taken from the final dump, after the --out record's second copy
                self.exit_code = int(text)
                self.usage = self._checked_usage(tag.group(2))
                continue
            self._take_record(kind, seq, text, new, rank)
        self.lines.extend(new)
        return new

    def _take_record(
        self, kind: str, seq: int, text: str, new: list[OutputLine], rank: int = 0
    ) -> None:
        """A record of the cell's output (plain, or from a batch's inner form)."""
        bundle, marker = None, False
        if kind == runner.DISPLAY:  # a rich output: a stdout line, shown as its bundle
            bundle = _display_bundle(text) or _DAMAGED
            plain = bundle["data"].get("text/plain", "")
            kind, text = runner.STDOUT, plain if isinstance(plain, str) else ""
        elif kind == runner.TRACEBACK:
            kind, text, marker = runner.STDERR, runner.TRACEBACK_MARKER, True
        elif kind in runner.ESCAPED:
            kind, text = runner.ESCAPED[kind], _unescape(text)
        if kind in _PARTIAL_STREAMS:
            if not rank:  # the other ranks' lines show once complete
                self._take_partial(_PARTIAL_STREAMS[kind], seq, text)
            return
        if kind in _PIECE_STREAMS:
            self._take_piece(_PIECE_STREAMS[kind], seq, text, rank)
            return
        if kind not in _STREAM_NAMES:
            return
        if self._exit_digest is None and kind == runner.STDERR:
            marker = marker or text == runner.TRACEBACK_MARKER  # a runner before `t` records
        key = seq * 2 + _STREAM_BIT[kind]
        seen = self._seen_ranks.setdefault(rank, set()) if rank else self._seen
        if key in seen:
            return
        seen.add(key)
        stream = _STREAM_NAMES[kind]
        piece_key = _piece_key(stream, rank)
        if piece_key in self._pieces:
            start, pieces = self._pieces.pop(piece_key)
            if start == seq:
                text = "".join(pieces) + text
        out = OutputLine(stream, seq, text, bundle, marker, rank)  # type: ignore[arg-type]
        if rank or self.ranks > 1:
            self._take_ranked(out, new)
        else:
            new.append(out)
        if not rank:
            self._complete(out.stream, seq)

    def _take_ranked(self, line: OutputLine, new: list[OutputLine]) -> None:
        """A line of a job of several ranks: kept per rank, and in `lines` as the view has it."""
        rank = line.rank
        if rank:
            self.rank_lines.setdefault(rank, []).append(line)
            if not self.all_ranks and line.stream != "stderr":
                return
        if rank or self.all_ranks:
            label = f"[r{rank}] "
            line = line._replace(text=label + line.text, label=len(label))
        new.append(line)

    def rank_output(self, rank: int) -> list[OutputLine]:
        """Every line of one rank, unlabelled (`%oscar_logs JOB --rank N`)."""
        if rank:
            return list(self.rank_lines.get(rank, []))
        return [line.unlabelled() for line in self.lines if line.rank == 0]

    def _take_batch(self, line: str, new: list[OutputLine]) -> None:
        """A `z` line: many records in the inner form (one letter, then the text), their seqs
        counted from the stdout and stderr seqs the line names. A copy of a batch already taken
        (same number and payload: the supervisor's final dump, a text parsed again) is skipped
        whole; a damaged one is skipped (a later intact copy is still taken)."""
        fields = line[len(_BATCH_HEAD) : -len(runner.END)].split("|")
        if len(fields) != 4 or not line.endswith(runner.END):
            return
        number, stdout_field, stderr_field, payload = fields
        numbered = _BATCH_NUMBER.fullmatch(number)
        if not (numbered and stdout_field.isdigit() and stderr_field.isdigit()):
            return
        stdout, stderr = int(stdout_field), int(stderr_field)
        rank = int(numbered.group(2) or 0)
        key = (int(numbered.group(1)), hash(payload), rank)
        if key in self._batches:
            return
        try:
            body = zlib.decompress(base64.b64decode(payload, validate=True))
            text = body.decode("utf-8", "replace")
        except (ValueError, binascii.Error, zlib.error):
            return
        self._batches.add(key)
        if rank or self.ranks > 1:
            self._take_ranked_batch(text, stdout, stderr, rank, new)
            return
        # Plain lines (the bulk) are taken here; any other record by _take_record. A stream's
        # last seq is updated once, at the end (a partial record's seq is past it anyway).
        seen, pieces, append = self._seen, self._pieces, new.append
        plain_stderr = self._exit_digest is not None  # else a stderr line may be the marker
        top_out = top_err = 0
        for record in text.split("\n")[:-1]:
            letter = record[:1]
            if letter == "o" and "stdout" not in pieces:
                stdout += 1
                if stdout * 2 not in seen:
                    seen.add(stdout * 2)
                    append(OutputLine("stdout", stdout, record[1:]))
                    top_out = stdout
            elif letter == "e" and plain_stderr and "stderr" not in pieces:
                stderr += 1
                if stderr * 2 + 1 not in seen:
                    seen.add(stderr * 2 + 1)
                    append(OutputLine("stderr", stderr, record[1:]))
                    top_err = stderr
            else:
                stdout, stderr, seq = _batch_seq(letter, stdout, stderr)
                self._take_record(letter, seq, record[1:], new)
        if top_out:
            self._complete("stdout", top_out)
        if top_err:
            self._complete("stderr", top_err)

    def _take_ranked_batch(
        self, text: str, stdout: int, stderr: int, rank: int, new: list[OutputLine]
    ) -> None:
        """A batch of a job of several ranks: each record as any other, under its rank."""
        for record in text.split("\n")[:-1]:
            letter = record[:1]
            stdout, stderr, seq = _batch_seq(letter, stdout, stderr)
            if rank and letter in "dD":
                continue  # rich outputs come from rank 0 only
            self._take_record(letter, seq, record[1:], new, rank)

    def _take_piece(self, stream: str, seq: int, text: str, rank: int = 0) -> None:
        """The start of line `seq`, still being written: kept until the line ends."""
        seen = self._seen_ranks.get(rank, set()) if rank else self._seen
        if seq * 2 + _STREAM_BIT[_STREAM_LETTERS[stream]] in seen:
            return
        key = _piece_key(stream, rank)
        start, pieces = self._pieces.get(key, (seq, []))
        if start != seq:
            pieces = []
        pieces.append(text)
        self._pieces[key] = (seq, pieces)

    def _take_start(self, text: str) -> None:
        """Only the first start line counts: the tagger writes it before the cell runs."""
        if self._start_seen:
            return
        self._start_seen = True
        self.started = _json_or_none(text)
        ranks = (self.started or {}).get("ranks")
        self.ranks = ranks if isinstance(ranks, int) and 1 < ranks <= 1 << 16 else 1
        digest = (self.started or {}).get(runner.EXIT_KEY_FIELD)
        self._exit_digest = digest if isinstance(digest, str) else None

    def _exit_key_matches(self, key: str) -> bool:
        if self._exit_digest is None:  # an older runner, or the script's own early error
            return True
        digest = hashlib.sha256(key.encode("ascii")).hexdigest()
        return hmac.compare_digest(digest, self._exit_digest)

    def _take_usage_candidate(self, signature: str, text: str) -> None:
        if self.exit_code is not None or (signature, text) in self._usage_candidates:
            return
        self._usage_candidates = [*self._usage_candidates, (signature, text)][-_USAGE_CANDIDATES:]

    def _checked_usage(self, exit_key: str) -> dict[str, Any] | None:
        """The last usage record signed with the exit key (the last one at all in logs whose
        start line names no key); None when there is none."""
        for signature, text in reversed(self._usage_candidates):
            if self._exit_digest is not None:
                expected = hmac.new(exit_key.encode("ascii"), text.encode(), hashlib.sha256)
                if not hmac.compare_digest(str(int(expected.hexdigest(), 16)), signature):
                    continue
            return _json_or_none(text)
        return None

    def _take_result(self, text: str, decorated: bool, rank: int = 0) -> None:
        """The first intact copy of a rank's --out record; the first copy while none is intact.
        A copy can arrive damaged where a log stream resent or lost bytes inside it."""
        if rank in self._results_intact:
            return
        intact = is_intact(text)
        if rank not in self.results or intact:
            self.results[rank] = text
        if intact:
            self._results_intact.add(rank)
            self._results_again.discard(rank)
        elif decorated:
            self._results_again.add(rank)

    def _take_partial(self, stream: str, seq: int, text: str) -> None:
        # Records come in log order, so a later one of the same line is newer; one whose line is
        # already complete (a text parsed again) is old.
        if seq > self._last_seq.get(stream, 0) and seq >= self._partial_seq.get(stream, 0):
            self.partial[stream] = text
            self._partial_seq[stream] = seq

    def _complete(self, stream: str, seq: int) -> None:
        self._last_seq[stream] = max(seq, self._last_seq.get(stream, 0))
        if stream in self.partial and self._partial_seq[stream] <= seq:
            del self.partial[stream]

    def traceback(self) -> str:
        """The error that ended the job: the stderr lines after the last traceback marker (the
        cell's exception, chained ones included, or the runner's early error), else the
        trailing stderr block from the last traceback header (or, for a SyntaxError, from its
        last ``File`` line); "" when none. A job of several ranks: that of the first rank that
        failed (`ranks_summary` where it printed none)."""
        if self.ranks < 2:
            return _traceback_of(self.lines)
        failed = _rank_list(self.usage, "ranks_failed") + _rank_list(self.usage, "ranks_stopped")
        if not failed:
            return _traceback_of(self.rank_output(0))
        return _traceback_of(self.rank_output(failed[0])) or self.ranks_summary()

    def ranks_summary(self) -> str:
        """How the ranks ended, once the job has: 'rank 1 of 2 failed (exit 1); rank 0 ended';
        "" for a job of one rank or one whose end is not known."""
        usage = self.usage or {}
        exits = usage.get("rank_exits")
        if self.ranks < 2 or not isinstance(exits, list) or len(exits) != self.ranks:
            return ""
        failed = _rank_list(usage, "ranks_failed")
        stopped = _rank_list(usage, "ranks_stopped")
        parts = []
        if failed:
            codes = ", ".join(str(exits[rank]) for rank in failed)
            parts.append(f"{_rank_words(failed)} of {self.ranks} failed (exit {codes})")
        if stopped:
            grace = usage.get("rank_grace_seconds")
            after = f"{_rank_words(failed[:1])} failed" if failed else "rank 0 ended"
            wait = f" {grace:g} s" if isinstance(grace, (int, float)) else ""
            of = "" if failed else f" of {self.ranks}"
            parts.append(f"{_rank_words(stopped)}{of} still ran{wait} after {after}: stopped")
        ended = [rank for rank in range(self.ranks) if rank not in failed + stopped]
        if ended:
            parts.append(f"{_rank_words(ended)} ended")
        return "; ".join(parts)


def _rank_list(usage: dict[str, Any] | None, name: str) -> list[int]:
    value = (usage or {}).get(name)
    if not isinstance(value, list):
        return []
    return [rank for rank in value if isinstance(rank, int) and not isinstance(rank, bool)]


def _rank_words(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _traceback_of(lines: list[OutputLine]) -> str:
    """`LogParser.traceback` of some lines (one rank's)."""
    marks = [i for i, line in enumerate(lines) if line.marker]
    if marks:
        after = lines[marks[-1] + 1 :]
        return "\n".join(line.unlabelled().text for line in after if line.stream == "stderr")
    stderr = [line.unlabelled().text for line in lines if line.stream == "stderr"]
    for marker in (_TRACEBACK_HEADER, '  File "'):
        starts = [i for i, text in enumerate(stderr) if text.startswith(marker)]
        if starts:
            return "\n".join(stderr[starts[-1] :])
    return ""


# Records a rank other than 0 writes: its lines, traceback marker and --out values (sent with
# --out-ranks all); its rich outputs and control records do not count.
_RANKED_KINDS = frozenset("oeOEpqPQtr")


def _piece_key(stream: str, rank: int) -> str:
    return f"{stream}/{rank}" if rank else stream


_DAMAGED: dict[str, Any] = {
    "data": {"text/plain": "oscar-jupyter: a rich output arrived damaged"},
    "metadata": {},
    "notes": [],
}


def _display_bundle(text: str) -> dict | None:
    """A `d` record's JSON, checked to be a mime bundle; None when damaged."""
    try:
        payload = json.loads(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    data, metadata = payload.get("data"), payload.get("metadata") or {}
    notes = payload.get("notes") or []
    # Values are text, or JSON data (application/json ...) that display(raw=True) may send.
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        return None
    if not isinstance(data.get("text/plain", ""), str):
        return None
    if not isinstance(metadata, dict) or not isinstance(notes, list):
        return None
    return {"data": data, "metadata": metadata, "notes": [str(n) for n in notes]}


def _json_or_none(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _batch_seq(letter: str, stdout: int, stderr: int) -> tuple[int, int, int]:
    """(stdout, stderr, seq) after a batch's record of `letter`: a line takes its stream's next
    seq; a partial line or a piece of one the seq its line will have."""
    if letter in _NEXT_STDOUT:
        return stdout + 1, stderr, stdout + 1
    if letter in _NEXT_STDERR:
        return stdout, stderr + 1, stderr + 1
    return stdout, stderr, (stdout + 1 if letter in _ON_STDOUT else stderr + 1)
