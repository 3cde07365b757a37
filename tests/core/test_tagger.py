"""The tagger (oscar_jupyter/tagger.py) as the program it is: run by a python3 on a program of
our own, and judged by what it writes."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser, OutputLine

from .pythons import find_python

START = {"node": "vk", "job": "oj-1", "host": "n1", "time": "1700000000"}
RECORD = re.compile(r"@@OJ\|(\w)\|(\d+)\|(.*)\|@@")

# What the program does with what the tagger gives it: the nonce's pipe named in its argv, and no
# other file descriptor but /dev/null and its two pipes. Then it writes rich records with that
# nonce (and one with another nonce), text around them, and a last line without its newline.
PROBE = textwrap.dedent(r"""
    import os, sys
    arg = [a for a in sys.argv[1:] if a.startswith("--rich-fd=")][0]
    fd = int(arg.split("=")[1])
    nonce = os.read(fd, 100).decode()
    os.close(fd)
    print("argv", sys.argv[1:] == [arg])
    print("nonce in environ", nonce in open("/proc/self/environ", "rb").read().decode("latin-1"))
    names = os.listdir("/proc/self/fd")  # the listing's own descriptor is closed once listed
    print("fds", sorted(int(n) for n in names if os.path.exists("/proc/self/fd/" + n)))
    print("stdin", os.readlink("/proc/self/fd/0"))
    sys.stdout.write("text before\x1eOJ%s|d|e30=\n" % nonce)  # e30= is base64 of {}
    sys.stdout.flush()
    sys.stderr.write("\x1eOJ%s|t|\nafter the marker\n" % nonce)
    sys.stderr.flush()
    sys.stdout.write("\x1eOJ%s|r|e30=\n\x1eOJ0123456789abcdef|d|e30=\n" % nonce)
    sys.stdout.write("\x1eOJ%s|t|\n" % nonce)  # a marker belongs on stderr
    sys.stdout.write("no newline")
    sys.exit(5)
""")


def run_tagger(tmp_path: Path, program: str, python: str, **popen) -> tuple[str, Path]:
    """Runs the tagger as the runner script does (from its file in the work directory, argv:
    work dir, program, start JSON); what it wrote on stdout, and the work dir."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".oj-tagger.py").write_text(runner.TAGGER)
    (tmp_path / "program.py").write_text(program)
    argv = [python, ".oj-tagger.py", str(work), str(tmp_path / "program.py"), json.dumps(START)]
    if popen:  # the caller reads its stdout
        return subprocess.Popen(argv, cwd=work, **popen), work
    proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60)
    assert proc.stderr == ""  # the tagger itself writes nowhere else
    return proc.stdout, work


def records(output: str) -> list[tuple[str, str, str]]:
    lines = output.splitlines()
    assert all(RECORD.fullmatch(line) for line in lines), output
    return [RECORD.fullmatch(line).groups() for line in lines]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def image_pythons() -> list:
    return [
        pytest.param(shutil.which("python3"), id="python3"),
        pytest.param(
            find_python("3.6"),
            id="python3.6",
            marks=pytest.mark.skipif(find_python("3.6") is None, reason="no python3.6 here"),
        ),
    ]


def test_the_tagger_keeps_to_old_python3_syntax_and_the_markers():
    # It runs with the image's own python3, whatever its age (the test below runs it on 3.6).
    ast.parse(runner.TAGGER, feature_version=(3, 5))
    assert "\n_OJ_TAGGER_END_\n" not in runner.TAGGER
    assert f'MARKER = "{runner.MARKER}"' in runner.TAGGER
    assert runner.TAGGER == Path(runner.__file__).with_name("tagger.py").read_text()


@pytest.mark.parametrize("python", image_pythons())
def test_the_tagger_tags_its_programs_streams_between_a_start_line_and_a_keyed_exit(
    tmp_path, python
):
    output, work = run_tagger(tmp_path, PROBE, python)
    tagged = records(output)
    kind, seq, text = tagged[0]
    start = json.loads(text)
    assert (kind, seq) == ("s", "0")
    assert start == {**START, runner.EXIT_KEY_FIELD: start[runner.EXIT_KEY_FIELD]}
    kind, key, code = tagged[-1]
    assert (kind, code) == ("x", "5") and digest(key) == start[runner.EXIT_KEY_FIELD]
    assert int(key) > 2**64  # a fresh random key, not a counter
    assert tagged[-2][0] == "u"  # what the program used, just before the exit record
    # order is exact within a stream; stderr's lines may come anywhere between stdout's
    stdout = [r for r in tagged[1:-2] if r[0] not in "et"]
    assert stdout[:7] == [
        ("o", "1", "argv True"),
        ("o", "2", "nonce in environ False"),
        ("o", "3", "fds [0, 1, 2]"),
        ("o", "4", "stdin /dev/null"),
        ("o", "5", "text before"),
        ("d", "6", "e30="),
        ("r", "0", "e30="),
    ]
    assert stdout[7] == ("O", "7", "\\x1eOJ0123456789abcdef|d|e30=")  # another nonce: text
    assert stdout[8][:2] == ("O", "8") and re.fullmatch(r"\\x1eOJ[0-9a-f]{16}\|t\|", stdout[8][2])
    assert stdout[9:] == [("o", "9", "no newline")]
    stderr = [r for r in tagged[1:-2] if r[0] in "et"]
    assert stderr == [("t", "1", ""), ("e", "2", "after the marker")]
    assert not work.exists()  # the tagger removed its file and the work directory


def test_a_second_run_has_another_exit_key(tmp_path):
    keys = set()
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        output, _ = run_tagger(tmp_path / run, "print(1)\n", shutil.which("python3"))
        keys.add(records(output)[-1][1])
    assert len(keys) == 2


def test_an_exit_record_written_around_the_tagger_does_not_end_the_job(tmp_path):
    # A pipe's read end, opened through /proc/<pid>/fd/<n>, gives the opener a new write end:
    # the cell can write into the supervisor's pipe without going through the tagger.
    read_end, write_end = os.pipe()
    around = f"/proc/{os.getpid()}/fd/{read_end}"
    program = textwrap.dedent(f"""
        import sys, time
        with open({around!r}, "w") as supervisor:
            supervisor.write("@@OJ|x|0|0|@@\\n@@OJ|x|12345|0|@@\\n")
        time.sleep(0.2)
        print("still running")
        sys.exit(3)
    """)
    proc, _ = run_tagger(tmp_path, program, shutil.which("python3"), stdout=write_end)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    assert proc.wait(60) == 0
    output = b"".join(chunks).decode()
    assert output.index("@@OJ|x|0|0|@@") < output.index("still running")
    parser = LogParser()
    parser.feed(output)
    assert parser.exit_code == 3  # the tagger's, not the cell's
    assert parser.lines == [
        OutputLine("stdout", 0, "@@OJ|x|0|0|@@"),
        OutputLine("stdout", 0, "@@OJ|x|12345|0|@@"),
        OutputLine("stdout", 1, "still running"),
    ]
