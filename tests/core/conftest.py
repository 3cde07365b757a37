"""Shared helpers for the core tests: run the real runner script under the real /bin/sh (dash)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from oscar_jupyter.logs import LogParser
from oscar_jupyter.runner import RUNNER_SCRIPT

SUPERVISOR_PREFIX = "2026-01-02 03:04:05,678 - supervisor - DEBUG - "


@dataclass
class RunResult:
    raw: str  # what the script wrote, decoded as the supervisor does
    log: str  # the same, as the supervisor logs it at DEBUG level plus its final dump
    parser: LogParser

    def text(self, stream: str) -> list[str]:
        return [line.text for line in self.parser.lines if line.stream == stream]


def supervisor_log(raw: str) -> str:
    """What the supervisor makes of the script's output: one stripped DEBUG line per line
    (universal newlines, as its text-mode pipe reads them), then the whole output again."""
    import io

    lines = io.StringIO(raw, newline=None).readlines()
    debug = "".join(f"{SUPERVISOR_PREFIX}{line.strip()}\n" for line in lines)
    return debug + "".join(lines) + "\n"


@pytest.fixture
def run_runner(tmp_path: Path):
    """Run RUNNER_SCRIPT with /bin/sh on the decoded job body, like the supervisor does."""

    def run(body: bytes, env: dict[str, str] | None = None, timeout: float = 60) -> RunResult:
        event = tmp_path / "event-file"
        event.write_bytes(base64.b64decode(body))
        script = tmp_path / "script.sh"
        script.write_text(RUNNER_SCRIPT)
        outdir = tmp_path / "out"
        outdir.mkdir(exist_ok=True)
        environment = {
            "PATH": os.environ["PATH"],
            "INPUT_FILE_PATH": str(event),
            "TMP_OUTPUT_DIR": str(outdir),
            "RESOURCE_ID": "vk-node",
            "JOB_UUID": "oj-test-1",
            **(env or {}),
        }
        proc = subprocess.run(
            ["/bin/sh", str(script)],
            env=environment,
            cwd="/",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        assert not list(outdir.iterdir()), "the runner wrote into $TMP_OUTPUT_DIR"
        raw = proc.stdout.decode("utf-8", errors="ignore")
        parser = LogParser()
        log = supervisor_log(raw)
        parser.feed(log)
        return RunResult(raw, log, parser)

    return run


# What the runner script runs besides python3 (mktemp, cat, uname, date).
RUNNER_TOOLS = ("mktemp", "cat", "uname", "date")


def path_without_mpiexec(folder: Path) -> str:
    """A PATH with what the runner script needs (python3: this interpreter) and no mpiexec: an
    image without MPI."""
    folder.mkdir(exist_ok=True)
    (folder / "python3").symlink_to(sys.executable)
    for tool in RUNNER_TOOLS:
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not on this machine's PATH"
        (folder / tool).symlink_to(found)
    return str(folder)
