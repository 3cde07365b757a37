"""The runner through the REAL OSCAR supervisor (faas-supervisor 1.5.8, log_level DEBUG)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from oscar_jupyter.logs import LogParser
from oscar_jupyter.runner import RUNNER_SCRIPT
from oscar_jupyter.spec import OffloadSpec

VERSION = "1.5.8"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "oscar-jupyter-tests" / f"faas-supervisor-{VERSION}"


@pytest.fixture(scope="session")
def supervisor_python() -> Path:
    """A scratch venv with the real supervisor; built once, kept in the cache dir."""
    venv = cache_dir()
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        steps = [  # its metadata has a malformed requirement: install it without deps
            ["--no-deps", f"faas-supervisor=={VERSION}"],
            ["boto3", "pyyaml", "requests", "webdavclient3"],
        ]
        for args in steps:
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *args],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode != 0:
                unreachable = (
                    "No matching distribution",
                    "Could not find a version",
                    "NewConnectionError",
                    "Network is unreachable",
                )
                if any(text in proc.stderr for text in unreachable):
                    pytest.skip(f"PyPI unreachable: {proc.stderr.strip()[-200:]}")
                raise AssertionError(f"pip install {args} failed:\n{proc.stderr}")
        ready.write_text(VERSION)
    return python


def run_supervisor(python: Path, spec: OffloadSpec, code: str, tmp_path: Path) -> str:
    definition = spec.service_definition()
    config = {k: v for k, v in definition.items() if k != "script"}
    env = {
        "PATH": os.environ["PATH"],
        "SCRIPT": base64.b64encode(RUNNER_SCRIPT.encode()).decode(),
        "FUNCTION_CONFIG": base64.b64encode(yaml.safe_dump(config).encode()).decode(),
        "RESOURCE_ID": "vk-node",
        "JOB_UUID": f"{definition['name']}-1",
        **definition["environment"]["variables"],
    }
    # what the interLink pod runs: echo $EVENT | base64 -d | supervisor
    stdin = spec.job_body(code) + b"\n"
    proc = subprocess.run(
        [str(python), "-m", "faassupervisor.supervisor"],
        input=stdin,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")
    return proc.stdout.decode("utf-8")


def test_real_supervisor_debug_log_parses_back_to_the_cells_output(supervisor_python, tmp_path):
    spec = OffloadSpec(node="vk-node", env={"GREETING": 'it\'s "$HOME", a,b `x`'})
    code = textwrap.dedent("""\
        import os, sys
        print("   indented and trailing   ")
        print()
        print("ünïcødé ✓")
        print("progress 10%\\r100%")
        print(os.environ["GREETING"])
        print("to stderr", file=sys.stderr)
        print("no newline", end="")
        sys.exit(4)
    """)
    log = run_supervisor(supervisor_python, spec, code, tmp_path)
    assert " - supervisor - DEBUG - @@OJ|o|1|" in log  # live lines were logged at DEBUG
    parser = LogParser()
    # a poll in the middle of the log, cut inside a line, then the whole log
    cut = log.index("@@OJ|o|3|") + 12
    early = parser.feed(log[:cut])
    rest = parser.feed(log)
    assert [line.text for line in early + rest if line.stream == "stdout"] == [
        "   indented and trailing   ",
        "",
        "ünïcødé ✓",
        "100%ress 10%",  # as a terminal shows it
        'it\'s "$HOME", a,b `x`',
        "no newline",
    ]
    assert [line.text for line in parser.lines if line.stream == "stderr"] == ["to stderr"]
    assert parser.exit_code == 4
    assert parser.started["node"] == "vk-node"
    assert parser.started["job"] == f"{spec.service_name()}-1"
    # the final dump alone (what INFO level would give) carries the same lines
    dump_only = LogParser()
    dump_only.feed("\n".join(line for line in log.split("\n") if " - supervisor - " not in line))
    assert dump_only.lines == parser.lines and dump_only.exit_code == 4


def test_real_supervisor_traceback_of_a_failing_cell(supervisor_python, tmp_path):
    log = run_supervisor(
        supervisor_python, OffloadSpec(), "x = 1\nraise RuntimeError('bad')\n", tmp_path
    )
    parser = LogParser()
    parser.feed(log)
    assert parser.exit_code == 1
    tb = parser.traceback()
    assert 'cell.py", line 2, in <module>' in tb
    assert tb.endswith("RuntimeError: bad")
