"""Ranks under mpiexec (issue 21): where the image has mpiexec, the tagger starts the ranks
through it, so mpi4py works unchanged (COMM_WORLD holds every rank), while each rank's output,
variables and end stay as without it: a rank that raises fails the job with its traceback, a
rank that hangs is stopped after the grace even when rank 0 waits for it in MPI_Finalize, and a
cancel (SIGTERM to the runner) ends every rank. Without mpiexec the cell is told so, once.

Real runner script, tagger, Open MPI and mpi4py (Debian's, as scripts/setup.sh installs them)
on this machine; no Slurm. The ranks run on /usr/bin/python3, which has mpi4py."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from oscar_jupyter.logs import LogParser
from oscar_jupyter.runner import RUNNER_SCRIPT

from .conftest import path_without_mpiexec, supervisor_log
from .test_rank_records import ranks_body

SYSTEM_PATH = "/usr/bin:/bin"  # python3 with mpi4py, and mpiexec


def _has_mpi4py() -> bool:
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import mpi4py"], capture_output=True, check=False
    )
    return probe.returncode == 0


needs_mpi = pytest.mark.skipif(
    shutil.which("mpiexec", path=SYSTEM_PATH) is None or not _has_mpi4py(),
    reason="no Open MPI / mpi4py on this machine (scripts/setup.sh installs them)",
)
NOT_FOUND = "mpiexec was not found in the image"


def parsed(raw: str) -> LogParser:
    parser = LogParser(all_ranks=True)
    parser.feed(supervisor_log(raw))
    return parser


def texts(parser: LogParser, rank: int, stream: str = "stdout") -> list[str]:
    return [line.text for line in parser.rank_output(rank) if line.stream == stream]


@needs_mpi
def test_mpi4py_sees_every_rank_in_comm_world_and_each_ranks_output_stays_its_own(run_runner):
    result = run_runner(
        ranks_body(
            """
            import os, sys
            from mpi4py import MPI
            world = MPI.COMM_WORLD
            me = world.Get_rank()
            print(me, "of", world.Get_size(), "RANK", os.environ["RANK"],
                  os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"],
                  os.environ["OSCAR_JUPYTER_RANK"], os.environ["MASTER_ADDR"])
            print("sum", world.allreduce(me + 1))
            print("warn from", me, file=sys.stderr)
            """,
            ranks=3,
        ),
        env={"PATH": SYSTEM_PATH},
    )
    parser = LogParser(all_ranks=True)
    parser.feed(result.log)
    assert parser.exit_code == 0, parser.traceback()
    for rank in range(3):
        assert texts(parser, rank) == [
            f"{rank} of 3 RANK {rank} 3 {rank} {rank} 127.0.0.1",
            "sum 6",
        ]
        assert f"warn from {rank}" in texts(parser, rank, "stderr")
    assert not any(NOT_FOUND in line.text for line in parser.lines)
    assert parser.ranks_summary() == "ranks 0, 1, 2 ended"


@needs_mpi
def test_mpiexec_flags_reach_mpiexec_and_its_refusal_is_the_cells_error(run_runner):
    passed = run_runner(
        ranks_body("import os\nprint(os.environ['OJ_FLAG'])\n", mpi="-x OJ_FLAG=from-mpiexec"),
        env={"PATH": SYSTEM_PATH},
    )
    assert texts(parsed(passed.raw), 0) == ["from-mpiexec"]
    assert texts(parsed(passed.raw), 1) == ["from-mpiexec"]
    refused = run_runner(
        ranks_body("print('ran')\n", mpi="--no-such-flag"), env={"PATH": SYSTEM_PATH}
    )
    parser = parsed(refused.raw)
    assert parser.exit_code == 1
    assert any('unknown option "--no-such-flag"' in text for text in texts(parser, 0, "stderr"))
    assert parser.ranks_summary() == "ranks 0, 1 of 2 failed (exit 1, 1)"
    assert not any("ran" == line.text for line in parser.lines)


@needs_mpi
def test_a_rank_raising_under_mpi_fails_the_job_with_its_traceback_and_a_waiting_rank_is_stopped(
    run_runner,
):
    started = time.monotonic()
    result = run_runner(
        ranks_body(
            """
            from mpi4py import MPI
            world = MPI.COMM_WORLD
            if world.Get_rank() == 1:
                raise ValueError("rank 1 breaks before the allreduce")
            print("sum", world.allreduce(1))  # rank 0 waits here for rank 1
            """
        ),
        env={"PATH": SYSTEM_PATH},
        timeout=60,
    )
    took = time.monotonic() - started
    parser = result.parser
    assert 9 < took < 30  # the 10 s grace, not the job's time limit
    assert parser.exit_code == 1
    error = parser.traceback()
    assert error.splitlines()[-1] == "ValueError: rank 1 breaks before the allreduce"
    assert parser.ranks_summary() == (
        "rank 1 of 2 failed (exit 1); rank 0 still ran 10 s after rank 1 failed: stopped"
    )
    # after the last collective, the ranks leave MPI together: no grace to wait
    started = time.monotonic()
    after = run_runner(
        ranks_body(
            """
            from mpi4py import MPI
            print("sum", MPI.COMM_WORLD.allreduce(1))
            if MPI.COMM_WORLD.Get_rank() == 1:
                raise ValueError("rank 1 breaks after the allreduce")
            """
        ),
        env={"PATH": SYSTEM_PATH},
    )
    assert time.monotonic() - started < 8
    assert after.parser.traceback().endswith("ValueError: rank 1 breaks after the allreduce")
    assert after.parser.ranks_summary() == "rank 1 of 2 failed (exit 1); rank 0 ended"


@needs_mpi
def test_a_rank_that_hangs_is_stopped_although_rank_0_waits_for_it_in_mpi_finalize(run_runner):
    started = time.monotonic()
    result = run_runner(
        ranks_body(
            """
            import time
            from mpi4py import MPI
            print("up", MPI.COMM_WORLD.Get_rank(), flush=True)
            if MPI.COMM_WORLD.Get_rank() == 1:
                time.sleep(600)
            """
        ),
        env={"PATH": SYSTEM_PATH},
        timeout=60,
    )
    took = time.monotonic() - started
    parser = result.parser
    assert 9 < took < 30
    assert parser.exit_code == 143
    assert parser.ranks_summary() == (
        "rank 1 of 2 still ran 10 s after rank 0 ended: stopped; rank 0 ended"
    )
    assert parser.usage is not None and parser.usage["rank_exits"] == [0, 143]


def processes_running(text: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def process_tree(root: int) -> list[int]:
    """`root` and every process below it."""
    tree, index = [root], 0
    while index < len(tree):
        pid = tree[index]
        index += 1
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                tree += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return tree


@needs_mpi
@pytest.mark.parametrize("whom", ["the runner", "every process"])
def test_a_cancel_reaches_every_rank_under_mpiexec_and_leaves_no_process(tmp_path: Path, whom):
    """scancel's SIGTERM reaches the runner, which passes it on to each rank; under Slurm's
    cgroup tracking it reaches every process of the job at once (mpiexec and its shims too)."""
    event = tmp_path / "event-file"
    event.write_bytes(
        base64.b64decode(
            ranks_body(
                f"""
                import time
                from pathlib import Path
                from mpi4py import MPI
                MPI.COMM_WORLD.Barrier()
                Path("{tmp_path}", "up-" + str(MPI.COMM_WORLD.Get_rank())).touch()
                time.sleep(600)
                """
            )
        )
    )
    script = tmp_path / "script.sh"
    script.write_text(RUNNER_SCRIPT)
    runner = subprocess.Popen(
        ["/bin/sh", str(script)],
        env={"PATH": SYSTEM_PATH, "INPUT_FILE_PATH": str(event)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"up-{rank}").exists() for rank in (0, 1)):
        assert time.monotonic() < deadline, "the ranks did not start"
        time.sleep(0.1)
    assert len(processes_running(str(event))) >= 4  # mpiexec's shims and the ranks
    targets = [runner.pid] if whom == "the runner" else process_tree(runner.pid)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):  # one that ended since the listing
            os.kill(pid, signal.SIGTERM)  # what scancel sends the job
    raw = runner.communicate(timeout=30)[0].decode("utf-8", "replace")
    assert processes_running(str(event)) == []
    parser = parsed(raw)
    assert parser.usage is not None and parser.usage["rank_exits"] == [143, 143]


def test_without_mpiexec_the_ranks_start_alone_and_the_cell_is_told_once(run_runner, tmp_path):
    result = run_runner(
        ranks_body("import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])"),
        env={"PATH": path_without_mpiexec(tmp_path / "bin")},
    )
    parser = result.parser
    assert parser.exit_code == 0
    notices = [line.text for line in parser.lines if NOT_FOUND in line.text]
    assert notices == [
        "oscar-jupyter: mpiexec was not found in the image, so the 2 ranks started without it: "
        "MPI's COMM_WORLD has size 1 in each rank (torch.distributed's env:// still works)"
    ]
    assert texts(parser, 0) == ["rank 0 of 2"] and texts(parser, 1) == ["rank 1 of 2"]


@needs_mpi
def test_an_image_without_ssh_still_starts_the_ranks_through_mpiexec(run_runner, tmp_path):
    # Open MPI 4's mpiexec wants ssh or rsh even for ranks on its own node, unless told that
    # they all are (as the tagger does); container images often have neither.
    folder = tmp_path / "bin"
    path = path_without_mpiexec(folder)
    (folder / "python3").unlink()
    (folder / "python3").symlink_to("/usr/bin/python3")
    mpiexec = shutil.which("mpiexec", path=SYSTEM_PATH)
    assert mpiexec is not None
    (folder / "mpiexec").symlink_to(mpiexec)
    assert shutil.which("ssh", path=path) is None and shutil.which("rsh", path=path) is None
    result = run_runner(
        ranks_body("from mpi4py import MPI\nprint('size', MPI.COMM_WORLD.Get_size())\n"),
        env={"PATH": path},
    )
    parser = parsed(result.raw)
    assert parser.exit_code == 0, parser.traceback()
    assert texts(parser, 0) == ["size 2"] and texts(parser, 1) == ["size 2"]
