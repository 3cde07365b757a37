"""Ranks on one node (issue 21): the runner's tagger starts the cell once per rank, each rank's
records carry its rank, and the parser shows rank 0 (plus every rank's stderr) or every rank,
labelled; the job fails with the failing rank's traceback and which ranks failed.

Each test runs twice: with mpiexec on the PATH (the tagger starts the ranks through it) and
without (an image without MPI: the tagger starts them itself). Real runner script and tagger
processes on this machine (the supervisor's log made as it makes it); no Slurm."""

from __future__ import annotations

import base64
import json
import re
import shutil
import textwrap
import time

import pytest

from oscar_jupyter import runner
from oscar_jupyter.config import SiteFacts
from oscar_jupyter.logs import LogParser
from oscar_jupyter.spec import OffloadSpec

from .conftest import path_without_mpiexec, supervisor_log


def ranks_body(code: str, ranks: int = 2, **settings) -> bytes:
    settings.setdefault("mpi", True)
    spec = OffloadSpec(node="vk", ntasks=ranks, site=SiteFacts(), **settings)
    return spec.job_body(textwrap.dedent(code), **({"outputs": ["x"]} if "x =" in code else {}))


@pytest.fixture(params=["mpiexec", "no mpiexec"])
def run_ranks(request, run_runner, tmp_path):
    """run_runner with mpiexec on the PATH, or with a PATH without it."""
    if request.param == "mpiexec":
        if shutil.which("mpiexec") is None:
            pytest.skip("no mpiexec on this machine (scripts/setup.sh installs Open MPI)")
        env: dict[str, str] = {}
    else:
        env = {"PATH": path_without_mpiexec(tmp_path / "bin")}

    def run(body: bytes, timeout: float = 60):
        return run_runner(body, env=env, timeout=timeout)

    return run


def test_each_rank_knows_where_it_is_and_the_view_shows_rank_0_and_every_stderr(run_ranks):
    result = run_ranks(
        ranks_body(
            """
            import os, sys
            print("rank", os.environ["RANK"], "of", os.environ["WORLD_SIZE"],
                  os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"],
                  os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"].isdigit())
            print("info", oscar_rank().rank, oscar_rank().size)
            print("warn from", os.environ["RANK"], file=sys.stderr)
            """,
            ranks=3,
        )
    )
    parser = result.parser
    assert parser.exit_code == 0
    assert parser.ranks == 3
    shown = [(line.stream, line.text) for line in parser.lines]
    assert ("stdout", "rank 0 of 3 0 3 127.0.0.1 True") in shown
    assert ("stdout", "info 0 3") in shown
    assert ("stderr", "warn from 0") in shown
    # the other ranks: only their stderr, labelled
    assert ("stderr", "[r1] warn from 1") in shown and ("stderr", "[r2] warn from 2") in shown
    assert not any("rank 1 of 3" in text or "rank 2 of 3" in text for _, text in shown)
    # each rank's own lines, unlabelled
    assert [line.text for line in parser.rank_output(2)] == [
        "rank 2 of 3 2 3 127.0.0.1 True",
        "info 2 3",
        "warn from 2",
    ]
    rank_0_stdout = [line.text for line in parser.rank_output(0) if line.stream == "stdout"]
    assert rank_0_stdout[0] == "rank 0 of 3 0 3 127.0.0.1 True"
    assert parser.traceback() == "" and parser.ranks_summary() == "ranks 0, 1, 2 ended"


def test_all_ranks_labels_every_line_and_a_parser_before_ranks_shows_rank_0(run_ranks):
    result = run_ranks(ranks_body("import os\nprint('hello from', os.environ['RANK'])\n"))
    parser = LogParser(all_ranks=True)
    parser.feed(result.log)
    printed = [line for line in parser.lines if line.stream == "stdout"]
    assert sorted(line.text for line in printed) == ["[r0] hello from 0", "[r1] hello from 1"]
    assert {line.rank: line.label for line in printed} == {0: 5, 1: 5}
    # A parser that predates ranks reads "<seq>r1" as no record of its own: rank 0 alone.
    old_tag = re.compile(r"^@@OJ\|([oesxpqdrtuOEPQ])\|(\d+)\|")  # logs.py before ranks
    legacy = [line for line in result.raw.splitlines() if old_tag.match(line) and "|o|" in line]
    assert legacy == [f"{runner.MARKER}|o|1|hello from 0|@@"]


def test_one_rank_failing_fails_the_job_with_its_traceback_and_who_failed(run_ranks):
    result = run_ranks(
        ranks_body(
            """
            import os
            print("before", os.environ["RANK"])
            if os.environ["RANK"] == "1":
                raise ValueError("rank one broke")
            """
        )
    )
    parser = result.parser
    assert parser.exit_code == 1
    error = parser.traceback()
    assert error.splitlines()[0] == "Traceback (most recent call last):"
    assert "ValueError: rank one broke" in error
    assert error.splitlines()[-1] == "ValueError: rank one broke"
    assert parser.ranks_summary() == "rank 1 of 2 failed (exit 1); rank 0 ended"
    assert "[r1]" not in error  # the traceback as the rank printed it
    # rank 1's traceback is the error, not streamed text: its lines follow its marker
    markers = [line for line in parser.lines if line.marker]
    assert [line.rank for line in markers] == [1]


def test_a_rank_killed_by_a_signal_fails_the_job_and_is_named(run_ranks):
    result = run_ranks(
        ranks_body(
            """
            import os, signal, time
            print("up", os.environ["RANK"], flush=True)
            if os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(1)
            """
        )
    )
    parser = result.parser
    assert parser.exit_code == 137
    assert parser.traceback() == "rank 1 of 2 failed (exit 137); rank 0 ended"
    assert [line.text for line in parser.rank_output(1)] == ["up 1"]


def test_a_rank_that_hangs_after_rank_0_ends_is_stopped_after_the_grace(run_ranks):
    started = time.monotonic()
    result = run_ranks(
        ranks_body(
            """
            import os, time
            print("up", os.environ["RANK"], flush=True)
            if os.environ["RANK"] == "1":
                time.sleep(600)
            """
        ),
        timeout=60,
    )
    took = time.monotonic() - started
    parser = result.parser
    assert 9 < took < 30
    assert parser.exit_code == 143
    assert parser.traceback() == (
        "rank 1 of 2 still ran 10 s after rank 0 ended: stopped; rank 0 ended"
    )
    assert parser.usage is not None and parser.usage["rank_exits"] == [0, 143]


def test_long_lines_of_two_ranks_stay_whole_and_apart(run_ranks):
    result = run_ranks(
        ranks_body(
            """
            import os
            rank = os.environ["RANK"]
            for i in range(3):
                print(rank * (1 << 20) + f" end {rank} {i}")
            for i in range(2000):
                print(f"{rank} line {i}")
            """
        ),
        timeout=120,
    )
    parser = LogParser(all_ranks=True)
    parser.feed(result.log)
    assert parser.exit_code == 0
    for rank in ("0", "1"):
        lines = [line for line in parser.rank_output(int(rank)) if line.stream == "stdout"]
        assert [line.text for line in lines[:3]] == [
            rank * (1 << 20) + f" end {rank} {i}" for i in range(3)
        ]
        assert [line.text for line in lines[3:]] == [f"{rank} line {i}" for i in range(2000)]
    # no line of the log holds two ranks' records
    for line in result.raw.splitlines():
        assert line.count(runner.MARKER + "|") <= 1


def test_values_and_figures_come_from_rank_0(run_ranks):
    result = run_ranks(
        ranks_body(
            """
            import os
            x = int(os.environ["RANK"]) + 10
            display({"text/plain": "shown by " + os.environ["RANK"]}, raw=True)
            """
        )
    )
    parser = result.parser
    assert parser.exit_code == 0
    shown = [line.text for line in parser.lines if line.bundle is not None]
    assert shown == ["shown by 0"]
    record = json.loads(base64.b64decode(parser.result or ""))
    assert record["size"] > 0  # one --out record: rank 0's
    assert result.raw.count(f"{runner.MARKER}|r|") == 1


def test_the_parser_takes_rank_records_once_and_a_cell_cannot_claim_a_rank():
    start = {"node": "n", "ranks": 2}
    log = "\n".join(
        [
            f"@@OJ|s|0|{json.dumps(start)}|@@",
            "@@OJ|o|1|zero|@@",
            "@@OJ|o|1r1|one|@@",
            "@@OJ|e|1r1|one err|@@",
            "@@OJ|o|1r1|one|@@",  # the supervisor's final dump repeats it
            "@@OJ|o|2|@@OJ|o|2r1|forged|@@|@@",  # a cell printing a record: its text
            "@@OJ|r|0r1|AAAA|@@",  # values from another rank: not taken
            "",
        ]
    )
    parser = LogParser()
    parser.feed(supervisor_log(log))
    assert [(line.rank, line.text) for line in parser.lines] == [
        (0, "zero"),
        (1, "[r1] one err"),
        (0, "@@OJ|o|2r1|forged|@@"),
    ]
    assert [line.text for line in parser.rank_output(1)] == ["one", "one err"]
    assert parser.result is None


def test_a_one_rank_job_that_marks_a_traceback_and_runs_on_ends_by_its_exit(run_runner):
    """A session's cell may raise (its traceback marker) while the session runs on: only a job
    of several ranks takes the marker as the rank's failure."""
    program = textwrap.dedent(
        """
        import os, sys
        fd = int([arg for arg in sys.argv if arg.startswith("--rich-fd=")][0].split("=")[1])
        nonce = os.read(fd, 64).decode()
        sys.stderr.write("\\x1eOJ" + nonce + "|t|\\n")
        sys.stderr.write("ValueError: one cell of the session broke\\n")
        sys.stderr.flush()
        print("the session goes on")
        """
    ).encode()
    result = run_runner(base64.b64encode(program))
    assert result.parser.exit_code == 0
    assert result.parser.traceback() == "ValueError: one cell of the session broke"
