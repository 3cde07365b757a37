"""The rank faults table (rank_faults.yaml): a rank of a two-rank cell dies, floods its output
with 1 MB lines or hangs while the other ends, in a real kernel against the local OSCAR on the
real Slurm; the cell ends as the row says, within its bound, and leaves no process behind."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..e2e.test_cell_experience import CONNECT, client_for, errors, notebook, run
from .table import record

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
TABLE = "rank faults"
CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).with_name("rank_faults.yaml")).read_text()
)
OFFLOAD = "%%oscar_offload --node local-slurm --time 00:02:00 --ntasks 2 --mpi"
# "[r1] " in the rank's colour, as the cell's stream shows a labelled line
LABELLED = re.compile(r"\x1b\[[0-9;]*m\[r(\d+)\]\x1b\[0m (.*)", re.DOTALL)
LEFT_BEHIND_WAIT = 30.0


def test_the_table_is_well_formed():
    names = [case["case"] for case in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert set(case) <= {"case", "code", "flags", "expect"}, case["case"]
        assert set(case["expect"]) == {"error", "shows", "within"}, case["case"]


def cell_of(case: dict[str, Any], marker: str) -> str:
    flags = f"{OFFLOAD} {case.get('flags', '')} --env OJ_ROW={marker}"
    return f"{flags}\n{case['code']}"


def shown_by_rank(cell) -> dict[int, list[str]]:
    """The lines the cell's streams show, by the rank its label names (none: rank 0's)."""
    by_rank: dict[int, list[str]] = {}
    for name in ("stdout", "stderr"):
        text = "".join(o.text for o in cell.outputs if o.get("name") == name)
        for line in text.split("\n"):
            labelled = LABELLED.fullmatch(line)
            rank, shown = (int(labelled.group(1)), labelled.group(2)) if labelled else (0, line)
            by_rank.setdefault(rank, []).append(shown)
    return by_rank


def expected_line(line: str | dict[str, Any]) -> str:
    if isinstance(line, str):
        return line
    return line["prefix"] + line["char"] * line["count"]


def error_of(cell) -> str:
    """The cell's error as the notebook shows it: its traceback lines."""
    return "\n".join("\n".join(out.traceback) for out in errors(cell))


def wall_seconds(cell) -> int | None:
    """The job's wall time as the cell's final status line says it ('wall 00:00:12 of ...',
    measured by the runner: queueing left out); None when it says none."""
    shown = [o for o in cell.outputs if o.output_type == "display_data"]
    status = shown[-1].data.get("text/plain", "") if shown else ""
    wall = re.search(r"wall (\d+):(\d\d):(\d\d)", status)
    if wall is None:
        return None
    hours, minutes, seconds = (int(part) for part in wall.groups())
    return hours * 3600 + minutes * 60 + seconds


def processes_with(marker: str) -> list[str]:
    """The processes on this machine whose environment holds the row's --env marker."""
    found = []
    needle = f"OJ_ROW={marker}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


def problems_of(case: dict[str, Any], cell, left: list[str]) -> list[str]:
    expect = case["expect"]
    problems = []
    error = error_of(cell)
    wanted = [expect["error"]] if isinstance(expect["error"], str) else expect["error"]
    if wanted == [""]:
        if error:
            problems.append(f"the cell failed: {error[-500:]}")
    else:
        at = 0
        for part in wanted:
            found = error.find(part, at)
            if found < 0:
                problems.append(f"the error lacks {part!r} (after what came before): {error!r}")
                break
            at = found + len(part)
    shown = shown_by_rank(cell)
    # whole lines equal to what each rank printed: another rank's text inside one, a cut or a
    # wrong label all fail this
    for rank in sorted({rank for rank, _ in expect["shows"]}):
        lines = [expected_line(line) for r, line in expect["shows"] if r == rank]
        seen = [line for line in shown.get(rank, []) if line in lines]
        if seen != lines:
            problems.append(
                f"rank {rank}'s lines in the stream: {[line[:40] for line in seen]}, not "
                f"{[line[:40] for line in lines]}"
            )
    took = wall_seconds(cell)
    if took is None or took > expect["within"]:
        problems.append(f"the job's wall time was {took} s, not at most {expect['within']} s")
    if left:
        problems.append(f"processes left behind: {left}")
    return problems


def test_each_rank_fault_ends_the_cell_as_the_row_says(local_oscar, monkeypatch):
    # the control: a process with a marker is found (the check of what is left can fail)
    control = subprocess.Popen(["sleep", "60"], env={"OJ_ROW": "control", "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd with its environment
        while not processes_with("control") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [found.split(":")[0] for found in processes_with("control")] == [str(control.pid)]
    finally:
        control.kill()
        control.wait()
    markers = [f"{index}-{uuid.uuid4().hex[:8]}" for index in range(len(CASES))]
    cells = [CONNECT] + [cell_of(case, marker) for case, marker in zip(CASES, markers, strict=True)]
    nb = run(client_for(notebook(*cells), local_oscar, monkeypatch), "rank-faults")
    failures = []
    for index, case in enumerate(CASES):
        deadline = time.monotonic() + LEFT_BEHIND_WAIT
        while processes_with(markers[index]) and time.monotonic() < deadline:
            time.sleep(0.5)
        problems = problems_of(case, nb.cells[1 + index], processes_with(markers[index]))
        record(TABLE, case["case"], not problems)
        if problems:
            failures.append(f"{case['case']}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
