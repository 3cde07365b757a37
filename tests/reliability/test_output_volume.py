"""Issue 18 through the REAL OSCAR supervisor (faas-supervisor, the local OSCAR's kit), run as an
interLink pod runs it: `echo $EVENT | base64 -d | /data/supervisor`, its stdout and stderr on
the pod's log file as the Slurm plugin opens it (`>>` from 0.6.2, `&>` up to 0.6.1).

The supervisor keeps `output = output + line` and logs every line: a cell printing 100,000
short lines took a minute that way. Here the records go straight into the log file (nothing
through the supervisor), or, where that is refused, through its pipe in few large lines."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser

from .. import wire

LINES = 300_000
CELL = f"import sys\nfor i in range({LINES}):\n    print('line', i)\nsys.exit(7)\n"


@pytest.fixture(scope="module")
def supervisor() -> Path:
    """The local OSCAR's supervisor kit launcher (the image's /supervisor/supervisor)."""
    from oscar_jupyter.local.supervisor_kit import SupervisorKitError, ensure_supervisor_kit

    try:
        return ensure_supervisor_kit() / "supervisor"
    except SupervisorKitError as err:  # no network to build it
        pytest.skip(f"no supervisor kit: {err}")


def run_pod(
    supervisor: Path, tmp_path: Path, code: str, redirect: str, env: dict | None = None
) -> tuple[str, float]:
    """The pod's main container: the job body decoded into the supervisor, which runs the runner
    service's script; its output appended (`>>`) or written (`>`) to run-oscar-container.out.
    The log and how long it took."""
    config = {"name": "oj-volume", "log_level": "DEBUG"}
    body = runner.encode_body(runner.build_program(code))
    log = tmp_path / "run-oscar-container.out"
    environment = {
        "PATH": os.environ["PATH"],
        "SCRIPT": base64.b64encode(runner.RUNNER_SCRIPT.encode()).decode(),
        "FUNCTION_CONFIG": base64.b64encode(yaml.safe_dump(config).encode()).decode(),
        "EVENT": base64.b64encode(body).decode(),
        "RESOURCE_ID": "vk-node",
        "JOB_UUID": "oj-volume-1",
        **(env or {}),
    }
    command = f'echo $EVENT | base64 -d | "{supervisor}" {redirect} "{log}" 2>&1'
    started = time.monotonic()
    subprocess.run(["/bin/sh", "-c", command], env=environment, cwd=tmp_path, timeout=600)
    return log.read_text(encoding="utf-8"), time.monotonic() - started


def check_output(log: str, copies: int = 1) -> LogParser:
    """Every line back once and in order, the exit code, the start record; on the wire each
    record `copies` times (through the supervisor: its DEBUG line and its final dump)."""
    parser = LogParser()
    parser.feed(log)
    assert parser.exit_code == 7
    assert parser.started and parser.started["job"] == "oj-volume-1"
    assert [line.text for line in parser.lines] == [f"line {i}" for i in range(LINES)]
    assert [line.seq for line in parser.lines] == list(range(1, LINES + 1))
    seqs = [seq for kind, seq, _ in wire.records_in(log) if kind == "o"]
    assert sorted(seqs) == sorted(list(range(1, LINES + 1)) * copies)
    return parser


@pytest.mark.parametrize("redirect", [">>", ">"], ids=["plugin-0.6.2-append", "plugin-0.6.1"])
def test_records_bypass_the_supervisor_into_the_pod_log(supervisor, tmp_path, redirect):
    log, took = run_pod(supervisor, tmp_path, CELL, redirect)
    check_output(log)
    debug = [line for line in log.splitlines() if " - supervisor - DEBUG - @@OJ" in line]
    assert debug == []  # nothing went through the supervisor: its final dump is empty
    assert "INFO - Creating response" in log
    assert len(log) < 1_500_000  # 3.9 MB printed, compact on the wire
    assert took < 60, f"{took:.1f} s"  # ~2 s here; the supervisor's pipe line by line: minutes


def test_through_the_supervisors_pipe_the_cost_stays_linear(supervisor, tmp_path):
    env = {"OSCAR_JUPYTER_OUTPUT": "supervisor"}
    log, took = run_pod(supervisor, tmp_path, CELL, ">>", env)
    check_output(log, copies=2)
    debug = [line for line in log.splitlines() if " - supervisor - DEBUG - @@OJ" in line]
    assert 1 < len(debug) < 500  # few lines, each many records
    assert took < 60, f"{took:.1f} s"  # ~3 s here; one line per record: minutes
