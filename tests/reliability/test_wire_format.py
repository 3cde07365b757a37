"""The wire format under abuse: the real runner script under dash (and the real OSCAR supervisor).

The first test is the cell that broke the two-tagger shell runner on a real Slurm: long stdout
lines interleaved with a stderr heartbeat inside the supervisor's pipe.
"""

from __future__ import annotations

import base64
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser

from .. import wire

pytestmark = pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash as /bin/sh")

SUPERVISOR_VERSION = "1.5.8"
DEBUG_PREFIX = "2026-01-02 03:04:05,678 - supervisor - DEBUG - "

ADVERSARIAL_CELL = textwrap.dedent("""\
    import logging, threading, time
    logging.basicConfig(level=logging.INFO)
    beats = 0
    stop = threading.Event()
    def heartbeat():
        global beats
        while not stop.is_set():
            beats += 1
            logging.info("heartbeat %d", beats)
            time.sleep(0.001)
    thread = threading.Thread(target=heartbeat)
    thread.start()
    while beats < 5:
        time.sleep(0.001)
    for i in range(300):
        print(f"{i:04d}:" + "0" * 8995)
    stop.set()
    thread.join()
    print("heartbeats", beats)
""")


@dataclass
class Run:
    raw: bytes  # what the runner wrote
    parser: LogParser

    def text(self, stream: str) -> list[str]:
        return [line.text for line in self.parser.lines if line.stream == stream]

    def seqs(self, stream: str) -> list[int]:
        return [line.seq for line in self.parser.lines if line.stream == stream]


def supervisor_log(raw: bytes) -> str:
    """What faas-supervisor makes of the script's output: it decodes with errors='ignore', reads
    universal newlines, logs each stripped line at DEBUG, then returns the whole output again."""
    lines = io.StringIO(raw.decode("utf-8", errors="ignore"), newline=None).readlines()
    return "".join(f"{DEBUG_PREFIX}{line.strip()}\n" for line in lines) + "".join(lines) + "\n"


def runner_env(tmp_path: Path, code: str) -> dict[str, str]:
    event = tmp_path / "event-file"
    event.write_bytes(runner.build_program(code))
    return {
        "PATH": os.environ["PATH"],
        "INPUT_FILE_PATH": str(event),
        "RESOURCE_ID": "vk-node",
        "JOB_UUID": "oj-wire-1",
    }


def script_file(tmp_path: Path, script: str) -> str:
    path = tmp_path / "script.sh"
    path.write_text(script)
    return str(path)


def run_runner(
    tmp_path: Path, code: str, script: str = runner.RUNNER_SCRIPT, timeout: float = 120
) -> Run:
    """The runner under /bin/sh (dash) on the cell's program, its output parsed as OSCAR logs it."""
    proc = subprocess.run(
        ["/bin/sh", script_file(tmp_path, script)],
        env=runner_env(tmp_path, code),
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )
    parser = LogParser()
    parser.feed(supervisor_log(proc.stdout))
    return Run(proc.stdout, parser)


def check_adversarial_cell(run: Run) -> None:
    stdout = run.text("stdout")
    assert stdout[-1].startswith("heartbeats ")
    beats = int(stdout[-1].split()[1])
    expected_out = [f"{i:04d}:" + "0" * 8995 for i in range(300)]
    broken = [text[:8] + "..." + text[-60:] for text in stdout[:-1] if text not in expected_out]
    assert not broken, f"{len(broken)} corrupted stdout lines, e.g. {broken[:3]}"
    assert stdout[:-1] == expected_out
    stderr = run.text("stderr")
    expected_err = [f"INFO:root:heartbeat {n}" for n in range(1, beats + 1)]
    missing = len(set(expected_err) - set(stderr))
    assert stderr == expected_err, f"{missing} of {beats} heartbeats missing"
    assert run.seqs("stdout") == list(range(1, 302))
    assert run.seqs("stderr") == list(range(1, beats + 1))
    assert run.parser.exit_code == 0


def test_long_stdout_lines_and_a_stderr_heartbeat_do_not_interleave(tmp_path):
    run = run_runner(tmp_path, ADVERSARIAL_CELL)
    check_adversarial_cell(run)
    # On the wire, not only after the parser's de-duplication: each line once, in order.
    on_wire = [seq for kind, seq, _ in wire.records_in(run.raw.decode()) if kind == "o"]
    assert on_wire == list(range(1, 302))


def test_lines_of_100_kb_on_both_streams_at_once_stay_whole(tmp_path):
    code = textwrap.dedent("""\
        import sys, threading
        def err():
            for i in range(20):
                print(f"e{i:02d}" + "E" * 100_000, file=sys.stderr)
        thread = threading.Thread(target=err)
        thread.start()
        for i in range(20):
            print(f"o{i:02d}" + "日" * 40_000)
        thread.join()
        sys.stdout.write("tail" + "t" * 100_000)
    """)
    run = run_runner(tmp_path, code)
    assert run.text("stdout") == (
        [f"o{i:02d}" + "日" * 40_000 for i in range(20)] + ["tail" + "t" * 100_000]
    )
    assert run.text("stderr") == [f"e{i:02d}" + "E" * 100_000 for i in range(20)]
    assert run.parser.exit_code == 0


def test_bytes_that_are_not_utf8_and_control_characters_arrive_visibly(tmp_path):
    code = textwrap.dedent("""\
        import os
        os.write(1, b"a\\xffb\\x00c\\n")
        os.write(2, b"\\xe6\\x97\\xa5 cut \\xe6\\x97\\n")
        print("\\x1b[31mred\\x1b[0m bell\\x07 tab\\t")
        print("literal \\\\x41 and \\\\ with a NUL \\x00 and a CR\\r")
        os.write(1, b"last \\xc3")
    """)
    run = run_runner(tmp_path, code)
    assert run.text("stdout") == [
        "a\\xffb\\x00c",
        "\x1b[31mred\x1b[0m bell\x07 tab\t",
        "literal \\x41 and \\ with a NUL \\x00 and a CR",  # a trailing CR changes nothing
        "last \\xc3",
    ]
    assert run.text("stderr") == ["日 cut \\xe6\\x97"]
    # what the runner writes is valid UTF-8 without control characters, so nothing is dropped
    text = run.raw.decode("utf-8")
    assert not re.search(r"[\x00-\x08\x0b-\x1f]", text)
    assert "@@OJ|O|1|a\\xffb\\x00c|@@\n" in text


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        ("print('fine')", 0),
        ("raise ValueError('boom')", 1),
        ("import sys; sys.exit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + 9),
    ],
)
def test_exit_code_is_the_last_line(tmp_path, code, exit_code):
    run = run_runner(tmp_path, code)
    assert run.parser.exit_code == exit_code
    last = run.raw.decode().rstrip("\n").split("\n")[-1]
    assert re.fullmatch(rf"@@OJ\|x\|\d+\|{exit_code}\|@@", last), last
    if exit_code == 1:
        assert run.parser.traceback().endswith("ValueError: boom")


def read_until(proc: subprocess.Popen, needle: bytes, timeout: float = 30) -> bytes:
    """Reads the runner's output until ``needle`` shows up."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came; got {seen[-500:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the runner ended before {needle!r}: {seen[-500:]!r}"
            seen += chunk
    return seen


SLEEPER = textwrap.dedent("""\
    import os, signal, sys, time
    if os.environ.get("HANDLE_TERM"):
        def on_term(signum, frame):
            print("cleaning up after", signal.Signals(signum).name)
            sys.exit(5)
        signal.signal(signal.SIGTERM, on_term)
    print("pid", os.getpid())
    print("cwd", os.getcwd())
    print("to stderr", file=sys.stderr)
    print("ready")
    time.sleep(60)
    print("never")
""")


@pytest.mark.parametrize(
    ("target", "handle", "exit_code", "last"),
    [
        ("runner", False, 128 + 15, "ready"),
        ("runner", True, 5, "cleaning up after SIGTERM"),
        ("group", False, 128 + 15, "ready"),  # what Slurm's scancel does: every process of the job
    ],
)
def test_sigterm_keeps_the_output_and_ends_with_the_sentinel(
    tmp_path, target, handle, exit_code, last
):
    env = runner_env(tmp_path, SLEEPER)
    if handle:
        env["HANDLE_TERM"] = "1"
    proc = subprocess.Popen(
        ["/bin/sh", script_file(tmp_path, runner.RUNNER_SCRIPT)],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        head = read_until(proc, b"|ready|@@\n")
        if target == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    parser = LogParser()
    parser.feed(supervisor_log(head + rest))
    stdout = [line.text for line in parser.lines if line.stream == "stdout"]
    assert stdout[0].startswith("pid ") and stdout[1].startswith("cwd ")
    assert stdout[2:] == ["ready"] + ([last] if last != "ready" else [])
    assert [line.text for line in parser.lines if line.stream == "stderr"] == ["to stderr"]
    assert parser.exit_code == exit_code
    assert proc.returncode == 0
    cell_pid = int(stdout[0].split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(cell_pid, 0)
    assert not os.path.exists(stdout[1].split(" ", 1)[1])


def test_a_process_the_cell_leaves_behind_does_not_hold_the_job(tmp_path):
    code = textwrap.dedent("""\
        import subprocess
        child = subprocess.Popen(["sleep", "60"])
        print("left", child.pid)
    """)
    started = time.monotonic()
    run = run_runner(tmp_path, code, timeout=40)
    took = time.monotonic() - started
    [line] = run.text("stdout")
    os.kill(int(line.split()[1]), signal.SIGKILL)
    assert run.parser.exit_code == 0
    assert took < 20


# --- the same through the real OSCAR supervisor ------------------------------------------------


@pytest.fixture(scope="session")
def supervisor_python() -> Path:
    """The venv tests/core/test_supervisor.py builds (same cache dir), built here when missing."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = base / "oscar-jupyter-tests" / f"faas-supervisor-{SUPERVISOR_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        for args in (
            ["--no-deps", f"faas-supervisor=={SUPERVISOR_VERSION}"],
            ["boto3", "pyyaml", "requests", "webdavclient3"],
        ):
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *args],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode != 0:
                pytest.skip(f"cannot install faas-supervisor: {proc.stderr.strip()[-200:]}")
        (venv / ".ready").write_text(SUPERVISOR_VERSION)
    return python


def run_supervisor(python: Path, code: str, tmp_path: Path) -> Run:
    """What the interLink pod runs: ``echo $EVENT | base64 -d | supervisor``, the runner service's
    script and configuration in the environment."""
    config = {
        "name": "oj-wire",
        "image": "docker://python:3.12-slim",
        "log_level": "DEBUG",
        "environment": {"variables": {"PYTHONUNBUFFERED": "1"}},
    }
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONUNBUFFERED": "1",
        "SCRIPT": base64.b64encode(runner.RUNNER_SCRIPT.encode()).decode(),
        "FUNCTION_CONFIG": base64.b64encode(yaml.safe_dump(config).encode()).decode(),
        "RESOURCE_ID": "vk-node",
        "JOB_UUID": "oj-wire-1",
    }
    body = runner.encode_body(runner.build_program(code))
    proc = subprocess.run(
        [str(python), "-m", "faassupervisor.supervisor"],
        input=body + b"\n",
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-2000:]
    parser = LogParser()
    parser.feed(proc.stdout.decode("utf-8"))
    return Run(proc.stdout, parser)


def test_real_supervisor_adversarial_cell(supervisor_python, tmp_path):
    run = run_supervisor(supervisor_python, ADVERSARIAL_CELL, tmp_path)
    check_adversarial_cell(run)
    # the lines were logged live at DEBUG level, not only in the final dump
    logged = "\n".join(line for line in run.raw.decode().splitlines() if DEBUG_PREFIX[23:] in line)
    assert ("o", 300) in {(kind, seq) for kind, seq, _ in wire.records_in(logged)}


def test_real_supervisor_keeps_invalid_bytes_visible(supervisor_python, tmp_path):
    code = 'import os\nos.write(1, b"a\\xffb\\x00c\\n")\nprint("ok\\r")\n'
    run = run_supervisor(supervisor_python, code, tmp_path)
    assert run.text("stdout") == ["a\\xffb\\x00c", "ok"]
    assert run.parser.exit_code == 0


PROGRESS_CELL = textwrap.dedent("""\
    import sys, time
    for i in range(40):
        print(f"\\r{i + 1}/40 \\x1b[32m" + "#" * (i // 4) + "\\x1b[0m", end="", flush=True)
        time.sleep(0.05)
    print()
    sys.stderr.write("Name? "); sys.stderr.flush()
    time.sleep(1)
    sys.stderr.write("Ada\\n")
""")


def test_real_supervisor_carries_partial_records_and_the_bar_once(supervisor_python, tmp_path):
    run = run_supervisor(supervisor_python, PROGRESS_CELL, tmp_path)
    final = "40/40 \x1b[32m#########\x1b[0m"
    assert run.text("stdout") == [final]
    assert run.text("stderr") == ["Name? Ada"]
    assert run.parser.partial == {}
    log = run.raw.decode("utf-8", "ignore")
    debug = [line for line in log.splitlines() if " - supervisor - DEBUG - @@OJ|" in line]
    partial = [line for line in debug if re.search(r"@@OJ\|[pqPQ]\|", line)]
    assert 2 <= len(partial) <= 6  # ~3 s of output: at most two a second per stream
    assert any("@@OJ|q|1|Name? |@@" in line for line in partial)
    assert not any("\r" in line for line in debug)  # 40 redraws are one line, not 40
    # a poll that ends before the prompt's newline shows the prompt as the partial line
    cut = log.index("@@OJ|q|1|Name? |@@")
    parser = LogParser()
    parser.feed(log[: log.index("\n", cut) + 1])
    assert parser.partial == {"stderr": "Name? "}
    assert [line.text for line in parser.lines] == [final]
