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
from oscar_jupyter.values import ResultError

from .conftest import path_without_mpiexec, supervisor_log
from .one_job import OneJobOscar


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


# --- --out-ranks all: every rank's --out values, a list per name in rank order ------------------


def ended_job(tmp_path, log: str, spec: OffloadSpec, outputs: list[str]):
    from oscar_jupyter.jobs import Job

    job = Job(OneJobOscar(log), "svc", "job-1", spec, log_dir=tmp_path)
    job.outputs = outputs
    job.refresh()
    return job


def out_ranks_spec(ranks: int = 3, **settings) -> OffloadSpec:
    return OffloadSpec(
        node="vk", ntasks=ranks, mpi=True, out_ranks="all", site=SiteFacts(), **settings
    )


EVERY_RANK = """
import os
rank = int(os.environ["RANK"])
x = {"rank": rank, "square": rank * rank}
y = "from " + str(rank)
"""


def test_out_ranks_all_binds_each_name_to_every_ranks_value_in_rank_order(run_runner, tmp_path):
    spec = out_ranks_spec(3)
    result = run_runner(spec.job_body(textwrap.dedent(EVERY_RANK), "", ["x", "y"]))
    assert result.parser.exit_code == 0
    # one record per rank, each tagged with the rank that sent it
    tags = re.findall(r"^@@OJ\|r\|(0(?:r\d+)?)\|", result.raw, re.MULTILINE)
    assert sorted(tags) == ["0", "0r1", "0r2"]
    job = ended_job(tmp_path, result.log, spec, ["x", "y"])
    assert job.status() == "Succeeded"
    assert job.values() == {
        "x": [{"rank": 0, "square": 0}, {"rank": 1, "square": 1}, {"rank": 2, "square": 4}],
        "y": ["from 0", "from 1", "from 2"],
    }
    # without --out-ranks all the same cell brings rank 0's values back, as before
    default = OffloadSpec(node="vk", ntasks=3, mpi=True, site=SiteFacts())
    plain = run_runner(default.job_body(textwrap.dedent(EVERY_RANK), "", ["x", "y"]))
    assert plain.raw.count("@@OJ|r|") == 1
    job = ended_job(tmp_path / "plain", plain.log, default, ["x", "y"])
    assert job.values() == {"x": {"rank": 0, "square": 0}, "y": "from 0"}


def test_a_ranks_values_are_never_taken_for_another_ranks(run_runner, tmp_path):
    spec = out_ranks_spec(3)
    result = run_runner(spec.job_body(textwrap.dedent(EVERY_RANK), "", ["x", "y"]))
    # the log says rank 1's record is rank 2's and the other way round: refused, not swapped
    swapped = (
        result.log.replace("|r|0r1|", "|r|0rX|")
        .replace("|r|0r2|", "|r|0r1|")
        .replace("|r|0rX|", "|r|0r2|")
    )
    job = ended_job(tmp_path, swapped, spec, ["x", "y"])
    with pytest.raises(ResultError) as refused:
        job.values()
    assert str(refused.value) == (
        "--out-ranks all, rank 1: the values x, y came from rank 1 but say they are rank 2's; "
        "none was used"
    )
    # rank 2's record cut short in each of its copies (the DEBUG line, the final dump): refused
    # as damaged, naming the rank
    cut = re.compile(r"(\|r\|0r2\|[A-Za-z0-9+/=]{40})[A-Za-z0-9+/=]*\|@@")
    damaged = cut.sub(r"\1|@@", result.log)
    assert damaged.count("|r|0r2|") == 2 and damaged != result.log
    job = ended_job(tmp_path / "damaged", damaged, spec, ["x", "y"])
    with pytest.raises(ResultError, match=r"^--out-ranks all, rank 2: the values x, y arrived"):
        job.values()
    # cut in its first copy alone: the intact one is used
    once = cut.sub(r"\1|@@", result.log, count=1)
    job = ended_job(tmp_path / "once", once, spec, ["x", "y"])
    assert job.values()["y"] == ["from 0", "from 1", "from 2"]


def test_a_rank_that_sends_no_values_is_named(run_runner, tmp_path):
    spec = out_ranks_spec(2)
    code = EVERY_RANK + "if rank == 1:\n    os._exit(0)\n"
    result = run_runner(spec.job_body(textwrap.dedent(code), "", ["x"]))
    assert result.parser.exit_code == 0  # every rank ended with 0
    job = ended_job(tmp_path, result.log, spec, ["x"])
    with pytest.raises(ResultError) as refused:
        job.values()
    assert str(refused.value).startswith(
        "--out-ranks all, rank 1: the cell ended its process itself (os._exit() or sys.exit()) "
        "before x could be sent back"
    )


def test_a_rank_without_the_value_fails_the_cell_naming_the_rank(run_runner):
    spec = out_ranks_spec(2)
    code = "import os\nif os.environ['RANK'] == '0':\n    x = 1\n"
    result = run_runner(spec.job_body(code, "", ["x"]))
    parser = result.parser
    assert parser.exit_code == 1
    assert parser.traceback() == "OffloadValuesError: --out x: the cell did not define x"
    assert parser.ranks_summary() == "rank 1 of 2 failed (exit 1); rank 0 ended"


def test_the_ranks_share_the_logs_bound_for_values(run_runner):
    # 8 MB travel back in the log at most: with 2 ranks, 4 MB each
    spec = out_ranks_spec(2)
    code = "import os\nx = b'v' * (3_000_000 if os.environ['RANK'] == '0' else 5_000_000)\n"
    result = run_runner(spec.job_body(code, "", ["x"]), timeout=120)
    parser = result.parser
    assert parser.exit_code == 1
    assert parser.traceback() == (
        "OffloadValuesError: --out: rank 1's values take 5.0 MB (x 5.0 MB); at most 4.0 MB "
        "travels back in the log from each of the 2 ranks (--out-ranks all): save large results "
        "to a file on a --mount'ed path"
    )
    assert parser.ranks_summary() == "rank 1 of 2 failed (exit 1); rank 0 ended"


class PutServer:
    """Stands in for the user's bucket: presigned URLs on a local HTTP server that keeps what
    each PUT brings, by key (the job's program PUTs large values as it would to MinIO)."""

    def __init__(self) -> None:
        import http.server
        import threading

        objects: dict[str, bytes] = {}
        self.objects = objects

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers["Content-Length"])
                objects[self.path.lstrip("/")] = self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def presign(self, key: str, method: str, seconds: int) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{key}"

    def size_of(self, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    def get_bytes(self, key: str, progress=None) -> bytes:
        return self.objects[key]


def test_large_values_of_each_rank_come_back_through_its_own_object(run_runner, tmp_path):
    import os

    from oscar_jupyter.cell_program import CHANNEL_KEY_VARIABLE
    from oscar_jupyter.transfers import JobTransfers

    bucket = PutServer()
    try:
        transfers = JobTransfers(bucket, "job-1")  # type: ignore[arg-type]
        key = os.urandom(32)
        sealed = transfers.prepare(
            channel_key=key,
            inputs="",
            uploads=[],
            downloads=[],
            outputs=True,
            seconds=600,
            out_ranks=3,
        )
        spec = out_ranks_spec(3)
        # 512 KiB travel in the log, 170 KiB for each of 3 ranks: ranks 1 and 2 use objects
        code = (
            "import os\nrank = int(os.environ['RANK'])\nx = bytes([rank]) * (rank * 200_000 or 9)\n"
        )
        result = run_runner(
            spec.job_body(code, sealed, ["x"]), env={CHANNEL_KEY_VARIABLE: key.hex()}
        )
        assert result.parser.exit_code == 0
        assert sorted(bucket.objects) == [
            "jobs/job-1/out-rank-1.pickle",
            "jobs/job-1/out-rank-2.pickle",
        ]
        job = ended_job(tmp_path, result.log, spec, ["x"])
        job.transfers = transfers
        assert job.values() == {"x": [b"\x00" * 9, b"\x01" * 200_000, b"\x02" * 400_000]}
        # rank 2's object in rank 1's place: refused, never taken for rank 1's values
        bucket.objects["jobs/job-1/out-rank-1.pickle"] = bucket.objects[
            "jobs/job-1/out-rank-2.pickle"
        ]
        job = ended_job(tmp_path / "swapped", result.log, spec, ["x"])
        job.transfers = transfers
        with pytest.raises(ResultError, match=r"^--out-ranks all, rank 1: the values x arrived "):
            job.values()
    finally:
        bucket.server.shutdown()


def test_too_many_ranks_storage_urls_for_the_job_body_are_refused_naming_out_ranks():
    import os

    from oscar_jupyter.spec import SpecError
    from oscar_jupyter.transfers import JobTransfers

    class Bucket:  # URLs as long as MinIO's presigned ones
        def presign(self, key: str, method: str, seconds: int) -> str:
            return f"https://minio.example.org/b/{key}?X-Amz-Signature={'0' * 300}"

    def body(ranks: int) -> bytes:
        transfers = JobTransfers(Bucket(), "job-1")  # type: ignore[arg-type]
        sealed = transfers.prepare(
            channel_key=os.urandom(32),
            inputs="",
            uploads=[],
            downloads=[],
            outputs=True,
            seconds=600,
            out_ranks=ranks,
        )
        return out_ranks_spec(ranks).job_body("x = 1\n", sealed, ["x"])

    assert body(64)
    with pytest.raises(SpecError) as refused:
        body(256)
    assert refused.value.flag == "--out-ranks"
    assert str(refused.value).startswith(
        "--out-ranks all: the storage URLs of its 256 ranks (one each, for values too large for "
        "the log) take "
    )
    assert "gather the values on rank 0" in str(refused.value)
