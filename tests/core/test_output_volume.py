"""Issue 18: a cell's output costs the cluster time linear in its size.

The parser on `z` lines (many records in one line) and pieces of long lines; the tagger as the
program it is: batches, pieces, and where it writes (the supervisor's own log file, opened for
appending, or the supervisor's pipe)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser, OutputLine

from .. import wire
from .pythons import find_python

START = {"node": "vk", "job": "oj-1", "host": "n1", "time": "1700000000"}
KEY = "123456789"


def texts(lines: list[OutputLine], stream: str = "stdout") -> list[str]:
    return [line.text for line in lines if line.stream == stream]


# --- the parser ----------------------------------------------------------------------------


def test_a_batch_carries_many_records_under_implicit_seqs():
    log = wire.supervisor_log(
        [
            wire.start(exit_key=KEY),
            wire.out(1, "plain first"),
            wire.batch(["otwo", "ethree", "ofour", "Ofive\\x00", "t", "eTraceback"], stdout=1),
            wire.out(5, "plain after"),
            wire.exit_line(1, exit_key=KEY),
        ],
        final_dump=False,
    )
    parser = LogParser()
    new = parser.feed(log)
    assert [(line.stream, line.seq, line.text) for line in new] == [
        ("stdout", 1, "plain first"),
        ("stdout", 2, "two"),
        ("stderr", 1, "three"),
        ("stdout", 3, "four"),
        ("stdout", 4, "five\\x00"),
        ("stderr", 2, runner.TRACEBACK_MARKER),
        ("stderr", 3, "Traceback"),
        ("stdout", 5, "plain after"),
    ]
    assert new[5].marker and not new[6].marker
    assert parser.exit_code == 1


def test_a_batch_seen_again_in_the_final_dump_or_a_new_parse_is_taken_once():
    lines = [
        wire.start(exit_key=KEY),
        wire.batch([f"o{i}" for i in range(1000)]),
        wire.exit_line(0, exit_key=KEY),
    ]
    log = wire.supervisor_log(lines)  # each line twice: DEBUG, then the final dump
    parser = LogParser()
    assert texts(parser.feed(log)) == [str(i) for i in range(1000)]
    assert parser.feed("job.out grew in front\n" + log) == []  # parsed whole again
    assert len(parser.lines) == 1000


def test_a_batch_cut_by_a_poll_is_taken_once_complete():
    line = wire.batch([f"o{i}" for i in range(100)])
    log = wire.start() + "\n" + line + "\n"
    parser = LogParser()
    for end in (len(wire.start()) + 1 + 30, len(log) - 5, len(log) - 1):
        assert parser.feed(log[:end]) == []
    assert len(parser.feed(log)) == 100


def test_a_damaged_batch_is_skipped_and_its_intact_copy_taken():
    good = wire.batch(["oa", "ob"])
    head, payload, tail = good.rsplit("|", 2)[0], good.rsplit("|", 2)[1], "|@@"
    damaged = f"{head}|{payload[:10]}{payload[12:]}{tail}"
    parser = LogParser()
    assert parser.feed(wire.start() + "\n" + damaged + "\n") == []
    assert texts(parser.feed_more(good + "\n")) == ["a", "b"]


def test_partial_records_in_a_batch_show_until_their_line_completes():
    parser = LogParser()
    parser.feed(wire.start() + "\n" + wire.batch(["oa", "p50%", "qName? "]) + "\n")
    assert parser.partial == {"stdout": "50%", "stderr": "Name? "}
    parser.feed_more(wire.batch(["o100%", "P\\x1b[0m"], stdout=1, number=2) + "\n")
    assert parser.partial == {"stderr": "Name? ", "stdout": "\x1b[0m"}
    assert texts(parser.lines) == ["a", "100%"]


def test_pieces_of_a_long_line_join_its_end_whatever_the_batches():
    parser = LogParser()
    parser.feed(wire.start() + "\n" + wire.batch(["obefore", "cAAA", "kerr-"]) + "\n")
    assert texts(parser.lines) == ["before"]
    parser.feed_more(wire.batch(["cBBB", "CC\\x00"], stdout=1, number=2) + "\n")
    parser.feed_more(wire.batch(["oDDD", "eline", "oafter"], stdout=1, number=3) + "\n")
    assert texts(parser.lines) == ["before", "AAABBBC\\x00DDD", "after"]
    assert texts(parser.lines, "stderr") == ["err-line"]
    # the same log parsed whole again gives the same, without a piece twice
    again = LogParser()
    log = "\n".join(
        [
            wire.start(),
            wire.batch(["obefore", "cAAA", "kerr-"]),
            wire.batch(["cBBB", "CC\\x00"], stdout=1, number=2),
            wire.batch(["oDDD", "eline", "oafter"], stdout=1, number=3),
        ]
    )
    again.feed(log + "\n")
    again.feed("more in front\n" + log + "\n")
    assert again.lines == parser.lines


def test_batches_alike_but_for_their_number_are_both_taken():
    # the pieces of a repetitive line: same records, same seqs before them
    same = [wire.batch(["cab"], stdout=1, number=n) for n in (1, 2, 3)]
    log = "\n".join([wire.start(), wire.out(1, "x"), *same, wire.batch(["oc"], stdout=1, number=4)])
    parser = LogParser()
    parser.feed(log + "\n")
    assert texts(parser.lines) == ["x", "abababc"]


def test_a_rich_output_in_a_batch_is_a_stdout_line_with_its_bundle():
    bundle = {"data": {"text/plain": "<Figure>", "image/png": "iVBOR"}, "metadata": {}}
    payload = base64.b64encode(json.dumps(bundle).encode()).decode()
    parser = LogParser()
    parser.feed(wire.start() + "\n" + wire.batch(["otext", f"d{payload}", "oafter"]) + "\n")
    assert [(line.seq, line.text) for line in parser.lines] == [
        (1, "text"),
        (2, "<Figure>"),
        (3, "after"),
    ]
    assert (parser.lines[1].bundle or {})["data"]["image/png"] == "iVBOR"


def test_logs_of_the_plain_format_still_parse_alongside():
    log = wire.cell_log("oj-1", ["one", "two"], exit_key=KEY)
    parser = LogParser()
    assert texts(parser.feed(log)) == ["one", "two"]
    assert parser.exit_code == 0


def test_a_million_lines_in_batches_parse_in_seconds_in_order():
    batches, seq = [], 0
    for number in range(1, 21):
        lines = [f"oline {seq + i}" for i in range(50_000)]
        batches.append(wire.batch(lines, stdout=seq, number=number, level=1))
        seq += 50_000
    log = "\n".join([wire.start(exit_key=KEY), *batches, wire.exit_line(0, exit_key=KEY)]) + "\n"
    parser = LogParser()
    started = time.process_time()
    parser.feed(log)
    took = time.process_time() - started
    assert len(parser.lines) == 1_000_000 and parser.exit_code == 0
    assert parser.lines[-1] == OutputLine("stdout", 1_000_000, "line 999999")
    assert all(line.seq == i for i, line in enumerate(parser.lines, start=1))
    assert took < 15  # ~1.5 s here; the plain format took twice as long for the same lines


# --- the tagger -----------------------------------------------------------------------------


# Runs argv[1:] and reports on stderr the peak RSS (kB) of it and what it waited for.
PEAK = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
)


def run_tagger(
    tmp_path: Path, program: str, *, python: str | None = None, env: dict | None = None
) -> tuple[str, float]:
    """Runs the tagger as the runner script does, its stdout a pipe read here (so: the records
    go through the pipe, this test standing for the supervisor). Its output and the peak RSS
    (MB) of the tagger and the program."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".oj-tagger.py").write_text(runner.TAGGER)
    (tmp_path / "program.py").write_text(program)
    python = python or shutil.which("python3") or "python3"
    argv = [python, ".oj-tagger.py", str(work), str(tmp_path / "program.py"), json.dumps(START)]
    proc = subprocess.run(
        [python, "-c", PEAK, *argv],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=env or dict(os.environ),
    )
    return proc.stdout, int(proc.stderr.strip()) / 1024


def image_pythons() -> list:
    return [
        pytest.param(shutil.which("python3"), id="python3"),
        pytest.param(
            find_python("3.6"),
            id="python3.6",
            marks=pytest.mark.skipif(find_python("3.6") is None, reason="no python3.6 here"),
        ),
    ]


@pytest.mark.parametrize("python", image_pythons())
def test_a_fast_printer_goes_out_in_few_batch_lines_all_in_order(tmp_path, python):
    program = textwrap.dedent("""\
        import sys
        for i in range(200000):
            print("line", i)
            if i % 50000 == 0:
                print("err", i, file=sys.stderr)
                sys.stdout.write("\\x1b[1mbold\\x1b[0m %d\\n" % i)
    """)
    output, _ = run_tagger(tmp_path, program, python=python)
    lines = output.splitlines()
    assert len(lines) < 1000  # 200,000 lines of output in a few hundred physical ones
    plain = [line for line in lines if not line.startswith("@@OJ|z|")]
    assert len(plain) < 500  # and nearly all records in batches
    parser = LogParser()
    parser.feed(output)
    expected = []
    for i in range(200000):
        expected.append(f"line {i}")
        if i % 50000 == 0:
            expected.append(f"\x1b[1mbold\x1b[0m {i}")
    assert texts(parser.lines) == expected
    assert texts(parser.lines, "stderr") == [f"err {i}" for i in range(0, 200000, 50000)]
    assert [line.seq for line in parser.lines if line.stream == "stdout"] == list(
        range(1, len(expected) + 1)
    )
    assert parser.exit_code == 0
    # on the wire, each record once
    stdout_seqs = [seq for kind, seq, _ in wire.records_in(output) if kind in "oO"]
    assert stdout_seqs == list(range(1, len(expected) + 1))


def test_a_slow_printer_still_gets_plain_records_one_line_each(tmp_path):
    program = "import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.3)\n"
    output, _ = run_tagger(tmp_path, program)
    assert "@@OJ|o|1|tick 0|@@\n@@OJ|o|2|tick 1|@@\n@@OJ|o|3|tick 2|@@\n" in output
    assert "@@OJ|z|" not in output


def test_a_long_line_goes_out_in_pieces_and_the_tagger_stays_small(tmp_path):
    # 64 MB on one line, written 64 kB at a time: the tagger holds about 1 MiB of it at most
    program = textwrap.dedent("""\
        import os, sys
        chunk = (b"0123456789abcdef" * 4096)
        for _ in range(1024):
            os.write(1, chunk)
        os.write(1, "é\\n".encode())
        print("next")
    """)
    output, peak = run_tagger(tmp_path, program)
    parser = LogParser()
    parser.feed(output)
    line = "0123456789abcdef" * 4096 * 1024 + "é"
    assert texts(parser.lines) == [line, "next"]
    assert [line.seq for line in parser.lines] == [1, 2]
    assert any(kind == "c" for kind, _, _ in wire.records_in(output))
    assert peak < 60, f"peak RSS {peak:.0f} MB"  # held whole, it would be 128 MB or more


def test_a_rich_output_longer_than_a_piece_still_travels_whole(tmp_path):
    # a rich output's line is bounded by the program (1 MB of display): never cut in pieces
    program = textwrap.dedent("""\
        import base64, json, os, sys
        arg = [a for a in sys.argv[1:] if a.startswith("--rich-fd=")][0]
        nonce = os.read(int(arg.split("=")[1]), 100).decode()
        data = {"data": {"text/plain": "big", "text/html": "x" * 1500000}, "metadata": {}}
        payload = base64.b64encode(json.dumps(data).encode()).decode()
        sys.stdout.write("\\x1eOJ%s|d|%s\\n" % (nonce, payload))
        print("after")
    """)
    output, _ = run_tagger(tmp_path, program)
    parser = LogParser()
    parser.feed(output)
    assert texts(parser.lines) == ["big", "after"]
    assert len((parser.lines[0].bundle or {})["data"]["text/html"]) == 1500000


def test_through_the_pipe_flushes_are_spaced_and_few(tmp_path):
    # 40 MB in 400,000 lines through the pipe: a few hundred lines (each flush one line)
    program = "import sys\nfor i in range(400000):\n    sys.stdout.write('%099d\\n' % i)\n"
    output, _ = run_tagger(tmp_path, program)
    lines = output.splitlines()
    assert len(lines) < 500
    parser = LogParser()
    parser.feed(output)
    assert len(parser.lines) == 400000 and parser.lines[-1].text == f"{399999:099d}"


# --- where the tagger writes: the supervisor's own log file -----------------------------------

# A stand-in for the OSCAR supervisor with its name: runs the script on a pipe, logs each line it
# reads to its stderr (as DEBUG), keeps them, prints them all at the end (its final dump).
FAKE_SUPERVISOR = textwrap.dedent("""\
    import subprocess, sys
    proc = subprocess.Popen(["/bin/sh", sys.argv[1]], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, encoding="utf-8", errors="ignore")
    output = ""
    for line in proc.stdout:
        sys.stderr.write("2026-01-02 03:04:05,678 - supervisor - DEBUG - " + line.strip() + "\\n")
        sys.stderr.flush()
        output = output + line
    print("2026-01-02 03:04:05,679 - supervisor - INFO - Creating response", file=sys.stderr)
    print(output)
""")


def run_under_fake_supervisor(
    tmp_path: Path, code: str, redirect: str = ">>", env: dict | None = None
) -> str:
    """The runner script under a process named `supervisor` whose stdout and stderr go to a log
    file as job.sh opens it (`>>`: O_APPEND; `>` for an older plugin's `&>`)."""
    supervisor = tmp_path / "supervisor"
    supervisor.write_text(FAKE_SUPERVISOR)
    script = tmp_path / "script.sh"
    script.write_text(runner.RUNNER_SCRIPT)
    event = tmp_path / "event"
    event.write_bytes(runner.build_program(code))
    log = tmp_path / "run-oscar-container.out"
    log.write_text("supervisor INFO lines before the script\n")
    command = f'exec "$0" {supervisor} {script} {redirect} {log} 2>&1'
    subprocess.run(
        ["/bin/sh", "-c", command, sys.executable],
        env={
            "PATH": os.environ["PATH"],
            "INPUT_FILE_PATH": str(event),
            "RESOURCE_ID": "vk",
            "JOB_UUID": "oj-direct-1",
            **(env or {}),
        },
        check=True,
        timeout=120,
    )
    return log.read_text()


def test_records_go_straight_into_the_supervisors_log_file_when_it_appends(tmp_path):
    code = "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nprint('bye')\n"
    log = run_under_fake_supervisor(tmp_path, code)
    assert log.startswith("supervisor INFO lines before the script\n@@OJ|s|0|{")
    assert " - supervisor - DEBUG - " not in log  # nothing went through its pipe
    assert log.endswith("INFO - Creating response\n\n")  # its final dump: empty
    parser = LogParser()
    parser.feed(log)
    assert texts(parser.lines) == ["hello", "bye"] and texts(parser.lines, "stderr") == ["oops"]
    assert parser.exit_code == 0 and (parser.started or {}).get("job") == "oj-direct-1"


def test_a_log_file_written_at_the_supervisors_offset_gets_room_for_its_last_lines(tmp_path):
    # `>` (the plugin's `&>` up to 0.6.1): the supervisor writes at its own offset, which our
    # appends do not move: its last lines land over the room written first, not over records
    code = "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nprint('bye')\n"
    log = run_under_fake_supervisor(tmp_path, code, ">")
    assert log.startswith("2026-01-02 03:04:05,679 - supervisor - INFO - Creating response\n\n ")
    assert " - supervisor - DEBUG - " not in log
    end = log.index("\n", log.index("Creating response") + 20)
    assert log[end - 100 : end + 1] == " " * 100 + "\n"  # the rest of the room
    assert log[end + 1 :].startswith("@@OJ|s|0|{")
    parser = LogParser()
    parser.feed(log)
    assert texts(parser.lines) == ["hello", "bye"] and texts(parser.lines, "stderr") == ["oops"]
    assert parser.exit_code == 0 and (parser.started or {}).get("job") == "oj-direct-1"


def test_a_supervisor_writing_behind_the_files_end_keeps_the_records_in_its_pipe(tmp_path):
    # `1<>`: opened without truncating, at offset 0 of a file that has more: appending behind its
    # back could be overwritten by more than the room
    log = run_under_fake_supervisor(tmp_path, "print('hello')\n", "1<>")
    assert " - supervisor - DEBUG - @@OJ|o|1|hello|@@" in log
    parser = LogParser()
    parser.feed(log)
    assert texts(parser.lines) == ["hello"] and parser.exit_code == 0


def test_the_setting_keeps_the_records_in_the_supervisors_pipe(tmp_path):
    log = run_under_fake_supervisor(
        tmp_path, "print('hello')\n", ">>", {"OSCAR_JUPYTER_OUTPUT": "supervisor"}
    )
    assert " - supervisor - DEBUG - @@OJ|o|1|hello|@@" in log
    parser = LogParser()
    parser.feed(log)
    assert texts(parser.lines) == ["hello"] and parser.exit_code == 0


def test_a_big_output_into_the_log_file_is_few_writes_and_parses_back_whole(tmp_path):
    code = "import sys\nfor i in range(300000):\n    print('line', i)\nsys.exit(3)\n"
    started = time.monotonic()
    log = run_under_fake_supervisor(tmp_path, code)
    took = time.monotonic() - started
    assert " - supervisor - DEBUG - @@OJ" not in log
    parser = LogParser()
    parser.feed(log)
    assert texts(parser.lines) == [f"line {i}" for i in range(300000)]
    assert parser.exit_code == 3
    assert len(log) < 2_000_000  # compact: 3.9 MB printed
    assert took < 60  # ~1 s here; through the supervisor's pipe line by line, minutes


def test_the_compact_form_survives_zlib_of_any_level():
    # the parser does not care how hard the tagger compressed
    for level in (0, 1, 9):
        line = wire.batch(["oa", "eb"], level=level)
        payload = line.split("|")[5]
        assert zlib.decompress(base64.b64decode(payload)) == b"oa\neb\n"
        parser = LogParser()
        parser.feed(line + "\n")
        assert [(x.stream, x.text) for x in parser.lines] == [("stdout", "a"), ("stderr", "b")]


def test_a_log_file_that_refuses_a_write_sends_the_flush_through_the_pipe_instead():
    # /dev/full stands for a full (or vanished) log file: the flush goes through the supervisor
    tagger_file = str(Path(runner.__file__).with_name("tagger.py"))
    probe = textwrap.dedent(f"""\
        import importlib.util, os
        spec = importlib.util.spec_from_file_location("tagger", {tagger_file!r})
        tagger = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tagger)
        sink = tagger.Sink(os.open("/dev/full", os.O_WRONLY))
        sink.write(b"@@OJ|o|1|one|@@\\n")
        sink.write(b"@@OJ|o|2|two|@@\\n")
        os.write(2, b"direct %s\\n" % str(sink.direct).encode())
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
    assert proc.stderr == b"direct False\n"
    assert proc.stdout == b"@@OJ|o|1|one|@@\n@@OJ|o|2|two|@@\n"
