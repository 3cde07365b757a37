"""The runner script under the real /bin/sh (dash), its program, and the log parser reading it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser
from oscar_jupyter.spec import RESERVED_ENV, OffloadSpec, SpecError

from ..wire import records_in
from .pythons import fake_python, find_python

pytestmark = pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash as /bin/sh")

# Text a cell may print: anything but NUL and lone surrogates (not encodable as UTF-8).
printable = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=40)


def terminal_view(line: str) -> str:
    """What a terminal shows of a line: CR goes back to its start and what follows overwrites."""
    shown = ""
    for part in line.split("\r"):
        shown = part + shown[len(part) :]
    return shown


def exit_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def expected_lines(text: str) -> list[str]:
    lines = [terminal_view(line) for line in text.split("\n")]
    return lines[:-1] if lines[-1] == "" else lines


def test_output_keeps_indentation_spaces_empty_lines_unicode_and_last_partial_line(run_runner):
    code = textwrap.dedent("""\
        import sys
        print("    indented")
        print("trailing   ")
        print()
        print("ünïcødé ✓ 日本 \\u2028 sep")
        print("   warn  ", file=sys.stderr)
        print("tab\\tand back\\\\slash")
        print("no newline at the end", end="")
    """)
    result = run_runner(OffloadSpec().job_body(code))
    assert result.text("stdout") == [
        "    indented",
        "trailing   ",
        "",
        "ünïcødé ✓ 日本 \u2028 sep",
        "tab\tand back\\slash",
        "no newline at the end",
    ]
    assert result.text("stderr") == ["   warn  "]
    assert [line.seq for line in result.parser.lines if line.stream == "stdout"] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert result.parser.exit_code == 0
    started = dict(result.parser.started)
    assert abs(int(started.pop("time")) - time.time()) < 60  # the runner's clock, epoch seconds
    assert re.fullmatch("[0-9a-f]{64}", started.pop(runner.EXIT_KEY_FIELD))
    assert started == {"node": "vk-node", "job": "oj-test-1", "host": os.uname().nodename}


def test_carriage_returns_arrive_as_a_terminal_shows_the_line(run_runner):
    code = (
        'print("10%\\r50%\\r100%")\nprint("dos line\\r")\nprint("a\\\\r is not a CR")\n'
        'print("long old text\\rnew")\n'
    )
    result = run_runner(OffloadSpec().job_body(code))
    assert result.text("stdout") == ["100%", "dos line", "a\\r is not a CR", "newg old text"]
    assert "\r" not in result.raw and "@@OJ|O|" not in result.raw  # nothing left to escape
    assert not re.search(r"@@OJ\|[pq]", result.raw)  # no line waited: no partial record


def partial_records(raw: str) -> list[tuple[str, int, str]]:
    """The partial records on the wire, also those batched into `z` lines (under load the tagger
    batches more)."""
    return [record for record in records_in(raw) if record[0] in "pqPQ"]


def test_a_progress_bar_sends_partial_records_at_most_twice_a_second_and_its_line_once(run_runner):
    code = textwrap.dedent("""\
        import time
        print("before")
        for i in range(60):
            print(f"\\r{i}/60", end="", flush=True)
            time.sleep(0.05)
        print()
    """)
    started = time.monotonic()
    result = run_runner(OffloadSpec().job_body(code))
    took = time.monotonic() - started
    partials = partial_records(result.raw)
    assert 2 <= len(partials) <= took * 2 + 1
    assert all(
        kind == "p" and seq == 2 and re.fullmatch(r"\d+/60", text) for kind, seq, text in partials
    )
    assert result.text("stdout") == ["before", "59/60"]
    assert [text for _, _, text in records_in(result.raw)].count("59/60") <= 2  # line + partial
    assert result.parser.partial == {}  # the complete line cleared it
    # every redraw would have been a line of its own had the tagger not waited
    assert len(result.raw.splitlines()) < 20


def test_a_prompt_without_newline_is_sent_as_a_partial_record_before_its_line(run_runner):
    code = textwrap.dedent("""\
        import sys, time
        sys.stderr.write("warming up"); sys.stderr.flush()
        print("Name? ", end="", flush=True)
        time.sleep(1.5)
        print("Ada")
        sys.stderr.write(" done\\n")
    """)
    result = run_runner(OffloadSpec().job_body(code))
    # Under load a partial line may go out more than once (once per tick it waited, or once more
    # when a tick falls between the cell's writes): each is the start of its line, and the prompt
    # and the stderr line as they waited are among them.
    partials = partial_records(result.raw)
    assert {("p", 1, "Name? "), ("q", 1, "warming up")} <= set(partials)
    ends = {"p": "Name? Ada", "q": "warming up done"}
    assert all(seq == 1 and ends[kind].startswith(text) for kind, seq, text in partials), partials
    wire = records_in(result.raw)
    assert wire.index(("p", 1, "Name? ")) < wire.index(("o", 1, "Name? Ada"))
    assert result.text("stdout") == ["Name? Ada"]
    assert result.text("stderr") == ["warming up done"]
    assert result.parser.partial == {}


def test_a_partial_record_carries_only_the_end_of_a_long_line(run_runner):
    code = (
        'import time\nprint("a" * 2000 + "b" * 1000, end="", flush=True)\ntime.sleep(1)\nprint()\n'
    )
    result = run_runner(OffloadSpec().job_body(code))
    assert partial_records(result.raw) == [("p", 1, "b" * 1000)]
    assert result.text("stdout") == ["a" * 2000 + "b" * 1000]


def test_a_partial_line_with_control_characters_is_escaped(run_runner):
    code = (
        'import time\nprint("\\x1b[1mbold\\x1b[0m\\r\\x1b[1mBOLD", end="", flush=True)\n'
        "time.sleep(1)\n"
    )
    result = run_runner(OffloadSpec().job_body(code))
    assert partial_records(result.raw) == [("P", 1, "\\x1b[1mBOLD\\x1b[0m")]
    assert result.text("stdout") == ["\x1b[1mBOLD\x1b[0m"]


def test_lines_keep_their_order_across_streams_when_apart_in_time(run_runner):
    code = textwrap.dedent("""\
        import sys, time
        for i in range(3):
            print(f"out {i}")
            time.sleep(0.05)
            print(f"err {i}", file=sys.stderr)
            time.sleep(0.05)
    """)
    result = run_runner(OffloadSpec().job_body(code))
    assert [line.text for line in result.parser.lines] == [
        "out 0",
        "err 0",
        "out 1",
        "err 1",
        "out 2",
        "err 2",
    ]


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        ("print('ok')", 0),
        ("import sys; sys.exit(3)", 3),
        ("raise SystemExit(0)", 0),
        ("import sys; sys.exit('bye')", 1),
        ("raise ValueError('boom')", 1),
        ("import os; os._exit(7)", 7),
        ("raise KeyboardInterrupt", 130),
    ],
)
def test_exit_code_reaches_the_sentinel(run_runner, code, exit_code):
    result = run_runner(OffloadSpec().job_body(code))
    assert result.parser.finished
    assert result.parser.exit_code == exit_code
    last = re.fullmatch(r"@@OJ\|x\|(\d+)\|(-?\d+)\|@@", result.raw.rstrip("\n").splitlines()[-1])
    assert last and int(last[2]) == exit_code
    assert exit_key_digest(last[1]) == result.parser.started[runner.EXIT_KEY_FIELD]


def test_traceback_names_the_cells_lines_and_not_the_runners(run_runner):
    code = "x = 1\n\ndef f():\n    return 1 / 0\nf()\n"
    result = run_runner(OffloadSpec().job_body(code))
    tb = result.parser.traceback()
    assert tb.startswith("Traceback (most recent call last):")
    assert re.search(r'File "/tmp/oj-[^/]+/cell\.py", line 5, in <module>\n    f\(\)', tb)
    assert re.search(r'File "/tmp/oj-[^/]+/cell\.py", line 4, in f\n    return 1 / 0', tb)
    assert tb.endswith("ZeroDivisionError: division by zero")
    assert "_oj_" not in tb and "exec(" not in tb
    assert result.parser.exit_code == 1


def test_syntax_error_in_the_cell_is_reported_with_its_line(run_runner):
    result = run_runner(OffloadSpec().job_body("a = 1\nb = (\n"))
    tb = result.parser.traceback()
    assert 'cell.py", line 2' in tb
    assert "SyntaxError" in tb
    assert result.parser.exit_code == 1


def test_cell_runs_as_main_in_a_writable_tmp_dir_that_is_removed(run_runner):
    code = textwrap.dedent("""\
        import os, sys
        print(__name__, sys.argv[0] == __file__, os.path.basename(__file__))
        print(os.getcwd())
        print(os.listdir())
        open("scratch.txt", "w").write("x")
        class C: pass
        import pickle; print(type(pickle.loads(pickle.dumps(C()))).__name__)
    """)
    result = run_runner(OffloadSpec().job_body(code))
    out = result.text("stdout")
    assert out[0] == "__main__ True cell.py"
    assert out[1].startswith("/tmp/oj-")
    assert out[2] == "['cell.py']"  # the runner's own tagger file is gone
    assert out[3] == "C"
    assert not os.path.exists(out[1])


def test_threads_of_the_cell_finish_before_the_exit_sentinel(run_runner):
    code = textwrap.dedent("""\
        import threading, time
        def late():
            time.sleep(0.2)
            print("from thread")
        threading.Thread(target=late).start()
    """)
    result = run_runner(OffloadSpec().job_body(code))
    assert result.text("stdout") == ["from thread"]
    assert result.parser.exit_code == 0


def test_missing_job_body_is_a_clear_error(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text(runner.RUNNER_SCRIPT)
    proc = subprocess.run(
        ["/bin/sh", str(script)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    parser = LogParser()
    parser.feed(proc.stdout)
    assert parser.exit_code == 2
    assert "INPUT_FILE_PATH" in parser.traceback()
    assert parser.started["node"] == "unknown" and parser.started["job"] == "unknown"
    assert parser.started["host"] == os.uname().nodename


def test_image_without_python3_is_a_clear_error(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text(runner.RUNNER_SCRIPT)
    event = tmp_path / "event"
    event.write_text("print(1)")
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    for tool in ("uname", "mktemp", "rm", "mkdir"):
        os.symlink(shutil.which(tool), empty_path / tool)
    proc = subprocess.run(
        ["/bin/sh", str(script)],
        env={"PATH": str(empty_path), "INPUT_FILE_PATH": str(event)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    parser = LogParser()
    parser.feed(proc.stdout)
    assert parser.exit_code == 127
    assert "--image" in parser.traceback() and "python3" in parser.traceback()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(out=printable, err=printable)
def test_property_printed_text_comes_back_exactly(run_runner, out, err):
    code = f"import sys\nsys.stdout.write({out!r})\nsys.stderr.write({err!r})\n"
    result = run_runner(OffloadSpec().job_body(code))
    assert result.text("stdout") == expected_lines(out)
    assert result.text("stderr") == expected_lines(err)
    assert result.parser.exit_code == 0


def visible_lines(data: bytes) -> list[str]:
    """What raw bytes a cell writes to stdout become: its lines, NUL and every byte that is not
    UTF-8 shown as the text \\xNN, CR applied as a terminal does, other controls as they are. A
    last line without its newline that a terminal shows as nothing (a lone CR) is no line."""
    lines = data.split(b"\n")
    shown = [terminal_view(line.decode("utf-8", "surrogateescape")) for line in lines]
    if shown[-1] == "":
        shown.pop()
    return [
        re.sub("[\udc80-\udcff]", lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}", line).replace(
            "\0", "\\x00"
        )
        for line in shown
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=60)
    | st.text(max_size=30).map(lambda text: text.encode("utf-8", "surrogatepass"))
)
@example(data=b"\r")  # found by a run: a lone CR is no line
@example(data=b"x\n\r")
@example(data=b"\n")  # an empty line ended is a line
@example(data=b"ab\rc")
def test_property_raw_bytes_come_back_visibly_and_nothing_is_dropped(run_runner, data):
    result = run_runner(OffloadSpec().job_body(f"import os\nos.write(1, {data!r})\n"))
    assert result.text("stdout") == visible_lines(data)
    assert result.parser.exit_code == 0
    # the supervisor gets no control character it could drop or split a line at
    assert not re.search(r"[\x00-\x08\x0b-\x1f]", result.raw)


def old_pythons(tmp_path: Path, version: str) -> str:
    """A real python<major.minor> when this machine has one, else one that says it is."""
    real = find_python(".".join(version.split(".")[:2]))
    if real is not None:
        return real
    return str(fake_python(tmp_path / "old-python", version))


@pytest.mark.parametrize("version", ["3.6.15", "3.7.17"])
def test_an_image_with_a_python3_older_than_3_8_ends_the_job_in_one_line(
    run_runner, tmp_path, version
):
    bin_dir = tmp_path / "old-bin"
    bin_dir.mkdir()
    os.symlink(old_pythons(tmp_path, version), bin_dir / "python3")
    result = run_runner(
        OffloadSpec().job_body("print('never runs')"),
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    found = runner.old_python_in(result.raw)
    assert found is not None and found.startswith(version[:3])
    message = runner.old_python_message(found)
    assert message == (
        f"python3 {found} found in the image; oscar-jupyter needs 3.8 or newer; "
        "choose another --image"
    )
    # the job's error is that one line, after the marker: nothing else ran
    assert result.parser.exit_code == 1
    assert result.parser.traceback() == message
    assert result.text("stdout") == []
    assert [line.marker for line in result.parser.lines] == [True, False]


def test_the_version_gate_lets_this_python_through(run_runner):
    assert runner.supports_python(platform.python_version())
    result = run_runner(OffloadSpec().job_body("print('ran')"))
    assert result.text("stdout") == ["ran"] and result.parser.exit_code == 0


@pytest.mark.parametrize(
    ("version", "supported"),
    [("3.8.0", True), ("3.13.1", True), ("3.7.17", False), ("3.6", False), ("2.7.18", False)],
)
def test_which_pythons_the_job_program_supports(version, supported):
    assert runner.supports_python(version) is supported
    assert runner.OLDEST_PYTHON == (3, 8)


env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name not in RESERVED_ENV | {"PATH"} and not name.startswith("OSCAR_")
)
awkward = st.text(
    st.sampled_from(list("'\"$`,;\\\n\t =|&*?~!#") + ["ü", "日", "✓", "\r", "a", " "])
    | st.characters(exclude_categories=("Cs",), exclude_characters="\0"),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(env=st.dictionaries(env_names, awkward, max_size=4))
def test_property_environment_values_arrive_byte_for_byte(run_runner, env):
    spec = OffloadSpec(env=env)
    code = f"import os, json\nprint(json.dumps({{k: os.environ.get(k) for k in {sorted(env)!r}}}))"
    variables = spec.service_definition()["environment"]["variables"]
    result = run_runner(spec.job_body(code), env=variables)
    assert json.loads(result.text("stdout")[0]) == env


def test_program_sets_env_values_even_when_the_container_mangled_them(run_runner):
    spec = OffloadSpec(env={"JSON": '{"a": "b,c"}', "MULTI": "line1\nline2"})
    code = "import os\nprint(repr(os.environ['JSON']), repr(os.environ['MULTI']))"
    mangled = {"JSON": "{a: b", "MULTI": "line1"}  # what a plugin <= 0.3.3 made of them
    result = run_runner(spec.job_body(code), env=mangled)
    assert result.text("stdout") == [repr('{"a": "b,c"}') + " " + repr("line1\nline2")]


def test_body_size_limit_matches_the_kernels_limit_on_one_environment_string():
    # OSCAR puts base64(body) into EVENT; the kernel refuses one env string over 128 KiB.
    largest = b"x" * runner.MAX_PROGRAM_BYTES
    event = base64.b64encode(runner.encode_body(largest)).decode()
    subprocess.run(["/bin/true"], env={"EVENT": event}, check=True)
    too_big = b"x" * (90 * 1024)
    event = base64.b64encode(runner.encode_body(too_big)).decode()
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["/bin/true"], env={"EVENT": event}, check=True)


def test_job_body_refuses_a_program_over_the_limit_and_says_to_use_storage():
    spec = OffloadSpec()
    room = runner.MAX_PROGRAM_BYTES - len(runner.build_program(""))
    # what the program itself takes (with the storage channel since issue 19, the secrets'
    # check since issue 17) leaves most of the body to the cell
    assert room > 55 * 1024
    ok = "s = '" + "a" * (room - 100) + "'"
    assert len(base64.b64decode(spec.job_body(ok))) <= runner.MAX_PROGRAM_BYTES
    with pytest.raises(SpecError) as error:  # random: what compression cannot shrink
        spec.job_body("data = " + repr(os.urandom(runner.MAX_PROGRAM_BYTES).hex()))
    assert error.value.flag == "cell"
    assert "storage" in str(error.value) and "KiB" in str(error.value)


def test_the_marker_comes_just_before_the_final_traceback_and_errors_relabels_it(run_runner):
    from oscar_jupyter import errors

    code = "import sys\nprint('own', file=sys.stderr)\ndef f():\n    return 1 / 0\nf()\n"
    result = run_runner(OffloadSpec().job_body(code))
    stderr = result.text("stderr")
    assert stderr[:3] == ["own", runner.TRACEBACK_MARKER, "Traceback (most recent call last):"]
    tb = "\n".join(stderr[2:])
    assert errors.relabel(tb, "Cell In[7]", 1).splitlines()[1:4:2] == [
        "  Cell In[7], line 6, in <module>",
        "  Cell In[7], line 5, in f",
    ]


def test_a_printed_copy_of_the_traceback_marker_is_the_cells_text(run_runner):
    code = (
        "import sys\n"
        f"print({runner.TRACEBACK_MARKER!r})\n"
        f"print({runner.TRACEBACK_MARKER!r}, file=sys.stderr)\n"
        "print('later', file=sys.stderr)\n"
        "raise ValueError('boom')\n"
    )
    result = run_runner(OffloadSpec().job_body(code))
    stderr = [line for line in result.parser.lines if line.stream == "stderr"]
    assert [(line.text, line.marker) for line in stderr[:4]] == [
        (runner.TRACEBACK_MARKER, False),  # the cell's
        ("later", False),
        (runner.TRACEBACK_MARKER, True),  # the program's, just before the traceback
        ("Traceback (most recent call last):", False),
    ]
    assert result.text("stdout") == [runner.TRACEBACK_MARKER]
    assert not any(line.marker for line in result.parser.lines if line.stream == "stdout")
    assert result.parser.traceback().endswith("ValueError: boom")


# What the cell can find of the rich-output nonce and of the runner's descriptors: the nonce is
# in no environment block (the initial one survives os.environ's changes) nor in argv, and the
# cell holds /dev/null and its own two pipes, nothing else.
PROBE_CELL = """\
import os
nonce = display.__globals__["CHANNEL"].nonce
print(len(nonce))
print(nonce.encode() in open("/proc/self/environ", "rb").read())
print(nonce.encode() in open("/proc/self/cmdline", "rb").read())
names = os.listdir("/proc/self/fd")
print(sorted(int(n) for n in names if os.path.exists("/proc/self/fd/" + n)))
print(os.readlink("/proc/self/fd/0"))
"""


@pytest.mark.parametrize("env", [{}, {"OJ_PROBE": "1"}], ids=["no-env", "env-restart"])
def test_the_cell_finds_no_nonce_in_its_environment_and_no_other_descriptor(run_runner, env):
    result = run_runner(OffloadSpec(env=env).job_body(PROBE_CELL))
    assert result.text("stdout") == ["16", "False", "False", "[0, 1, 2]", "/dev/null"]


def run_as_another_user(body: bytes) -> LogParser:
    """The runner script as an unprivileged user (root reads any process's /proc files)."""
    if os.getuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("root, and no setpriv to run as nobody")
    shared = Path(tempfile.mkdtemp(prefix="oj-test-"))
    try:
        shared.chmod(0o755)
        (shared / "event").write_bytes(base64.b64decode(body))
        (shared / "script.sh").write_text(runner.RUNNER_SCRIPT)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        proc = subprocess.run(
            [*(as_nobody if os.getuid() == 0 else []), "/bin/sh", str(shared / "script.sh")],
            env={"PATH": "/usr/bin:/bin", "INPUT_FILE_PATH": str(shared / "event")},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(shared)
    parser = LogParser()
    parser.feed(proc.stdout)
    return parser


def test_the_tagger_keeps_its_memory_environment_and_descriptors_from_the_cell():
    # The exit key lives in the tagger's memory: a process of the same user (the cell) must not
    # read it there, nor write into the tagger's stdout through /proc/<pid>/fd/1.
    code = (
        "import os\n"
        "for what in ('mem', 'environ', 'fd/1'):\n"
        "    try:\n"
        "        open(f'/proc/{os.getppid()}/{what}', 'rb').close()\n"
        "        print(what, 'readable')\n"
        "    except OSError as error:\n"
        "        print(what, type(error).__name__)\n"
    )
    parser = run_as_another_user(OffloadSpec(env={"OJ_PROBE": "1"}).job_body(code))
    assert [line.text for line in parser.lines] == [
        "mem PermissionError",
        "environ PermissionError",
        "fd/1 PermissionError",
    ]
    assert parser.exit_code == 0
