"""Multi-rank cells in a real kernel (nbclient) against the local OSCAR and real Slurm (issue 21).

The local OSCAR models interLink's Slurm plugin 0.6.1, which ignores slurm-job.vk.io/mpi-flags
(pkg/slurm/prepare.go 961-966 assign the mpiexec words to a loop copy): ranks on more than one
node are refused before anything is sent, with what to add or why; on one node the job's runner
starts the ranks itself, and the cell shows rank 0 (and every rank's stderr), or every rank with
--ranks all; a rank that fails fails the cell with its error.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
OFFLOAD = "%%oscar_offload --node local-slurm --time 00:02:00"
CONNECT = "%load_ext oscar_jupyter\n%oscar_connect local"


def run_notebook(local_oscar, monkeypatch, name: str, *sources: str):
    nb = new_notebook(
        cells=[new_code_cell(source) for source in sources],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True)
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(client.nb, ARTIFACTS / f"{name}.ipynb")
    return client.nb


def error_text(cell) -> str:
    return "\n".join(o.ename + ": " + o.evalue for o in cell.outputs if o.output_type == "error")


def stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def services(local_oscar) -> list[str]:
    response = httpx.get(
        f"{local_oscar.endpoint}/system/services",
        auth=(local_oscar.user, local_oscar.password),
        timeout=30,
    )
    response.raise_for_status()
    return sorted(service["name"] for service in response.json())


def test_more_than_one_rank_is_refused_before_sending_and_one_rank_runs(local_oscar, monkeypatch):
    before = services(local_oscar)
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-refusals",
        CONNECT,
        OFFLOAD + " --nodes 2\nprint('ran on two nodes')",
        OFFLOAD + " --nodes 2 --ntasks 2 --mpi\nprint('ran as two ranks')",
        OFFLOAD + " --nodes 2 --ntasks 1 --mpi\nprint('ran')",
        OFFLOAD + " --ntasks 2 --mpi '-np 4'\nprint('ran')",
    )
    two_nodes, two_ranks, bad_layout, flags = nb.cells[1:5]
    assert "--nodes 2: 2 nodes without --mpi" in error_text(two_nodes)
    assert "add --mpi to run the cell as one rank per task" in error_text(two_nodes)
    assert "ranks on more than one node need the site's Slurm plugin" in error_text(two_ranks)
    assert "jupyter: {mpi_flags: true}" in error_text(two_ranks)
    assert "--nodes 1 --ntasks 2 --mpi" in error_text(two_ranks)
    assert "fewer tasks than --nodes 2" in error_text(bad_layout)
    assert "set the number of ranks with --ntasks" in error_text(flags)
    for cell in (two_nodes, two_ranks, bad_layout, flags):
        assert "ran" not in stdout(cell)
        # one error line, no traceback of our own code
        assert [o.output_type for o in cell.outputs if o.output_type == "error"] == ["error"]
    assert services(local_oscar) == before, "a refused cell made a runner service"


def test_one_task_under_mpi_runs_and_knows_it_is_rank_0_of_1(local_oscar, monkeypatch):
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-one-rank",
        CONNECT,
        OFFLOAD + " --ntasks 1 --mpi\nme = oscar_rank()\nprint('rank', me.rank, 'of', me.size)",
    )
    cell = nb.cells[1]
    assert error_text(cell) == ""
    assert "rank 0 of 1" in stdout(cell)


def stream_text(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


RANK_LINE = "import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n"


def test_two_ranks_on_one_node_show_both_with_ranks_all_and_a_failing_rank_fails_the_cell(
    local_oscar, monkeypatch
):
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-two-ranks",
        CONNECT,
        OFFLOAD + " --ntasks 2 --mpi --ranks all\n" + RANK_LINE,
        OFFLOAD + " --ntasks 2 --mpi\n" + RANK_LINE,
        OFFLOAD
        + " --ntasks 2 --mpi --ranks all\n"
        + RANK_LINE
        + "if os.environ['RANK'] == '1':\n    raise ValueError('only rank 1 breaks')\n",
        "jobs = %oscar_jobs\n",
    )
    every, default, failing = nb.cells[1:4]
    assert error_text(every) == ""
    text = stream_text(every)
    # each line labelled with its rank, the label coloured (ANSI) in the stream
    assert "[r0]\x1b[0m rank 0 of 2" in text and "[r1]\x1b[0m rank 1 of 2" in text
    assert error_text(default) == ""
    # the status line: one node, two ranks, measured against the two ranks' CPUs
    status = [o for o in default.outputs if o.output_type == "display_data"][0]
    assert "on local-slurm, 1 node (2 ranks)" in status.data["text/plain"]
    assert "of 2 CPUs on average" in status.data["text/plain"]
    assert "rank 0 of 2" in stdout(default) and "rank 1 of 2" not in stream_text(default)
    error = error_text(failing)
    assert "ValueError: only rank 1 breaks" in error
    assert "rank 1 of 2 failed (exit 1); rank 0 ended" in error
    assert "rank 0 of 2" in stream_text(failing) and "rank 1 of 2" in stream_text(failing)


def test_oscar_logs_rank_gives_one_ranks_output(local_oscar, monkeypatch):
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-logs-rank",
        CONNECT,
        OFFLOAD + " --ntasks 2 --mpi -o job\n" + RANK_LINE + "print('tail of', os.environ['RANK'])",
        "%oscar_logs {job.name} --rank 1",
        "%oscar_logs {job.name} --rank 2",
        "import oscar_jupyter\n"
        "api = oscar_jupyter.offload(" + repr(RANK_LINE) + ", node='local-slurm', "
        "time='00:02:00', ntasks=2, mpi=True, ranks='all')\n"
        "print(sorted(api.logs().splitlines()))",
    )
    ran, rank_one, beyond, python_api = nb.cells[1:5]
    assert error_text(ran) == ""
    assert "rank 1" not in stream_text(ran)
    assert stdout(rank_one) == "rank 1 of 2\ntail of 1\n"
    assert "the job runs as 2 ranks (0 to 1)" in stream_text(beyond)  # a UsageError
    assert error_text(python_api) == ""
    assert "['[r0] rank 0 of 2', '[r1] rank 1 of 2']" in stdout(python_api)


RENDEZVOUS = """\
import os, socket, time
rank = int(os.environ["RANK"])
address = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
if rank == 0:  # as torch.distributed's env:// store: rank 0 listens, the others connect
    server = socket.create_server(address)
    peer, _ = server.accept()
    print("rank 0 heard:", peer.recv(100).decode())
else:
    for _ in range(200):
        try:
            peer = socket.create_connection(address)
            break
        except OSError:
            time.sleep(0.05)
    peer.sendall(f"hello from rank {rank} of {os.environ['WORLD_SIZE']}".encode())
"""


def test_the_ranks_meet_at_master_addr_and_port(local_oscar, monkeypatch):
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-rendezvous",
        CONNECT,
        OFFLOAD + " --ntasks 2 --mpi\n" + RENDEZVOUS,
    )
    cell = nb.cells[1]
    assert error_text(cell) == ""
    assert "rank 0 heard: hello from rank 1 of 2" in stdout(cell)


# mpi4py through the image's mpiexec (the local cluster's image is the host's /usr, with Debian's
# Open MPI and mpi4py from scripts/setup.sh).
MPI_SUM = """\
from mpi4py import MPI
world = MPI.COMM_WORLD
total = world.allreduce(world.Get_rank() + 10)
print("mpi", world.Get_rank(), "of", world.Get_size(), "sum", total)
"""


def test_mpi4py_sees_both_ranks_and_a_rank_raising_fails_the_cell_with_its_traceback(
    local_oscar, monkeypatch
):
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-mpi4py",
        CONNECT,
        OFFLOAD + " --ntasks 2 --mpi --ranks all\n" + MPI_SUM,
        OFFLOAD
        + " --ntasks 2 --mpi\n"
        + "from mpi4py import MPI\n"
        + "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        + "    raise ValueError('rank 1 has no data')\n"
        + "MPI.COMM_WORLD.Barrier()\n"
        + "print('past the barrier')\n",
    )
    summed, failing = nb.cells[1:3]
    assert error_text(summed) == ""
    text = stream_text(summed)
    assert "[r0]\x1b[0m mpi 0 of 2 sum 21" in text and "[r1]\x1b[0m mpi 1 of 2 sum 21" in text
    assert "mpiexec was not found" not in text
    error = error_text(failing)
    assert "ValueError: rank 1 has no data" in error
    stopped = "rank 1 of 2 failed (exit 1); rank 0 still ran 10 s after rank 1 failed: stopped"
    assert stopped in error
    assert "past the barrier" not in stream_text(failing)


def test_without_mpiexec_in_the_image_the_ranks_still_run_and_the_cell_says_so(
    local_oscar, monkeypatch, tmp_path
):
    # The local image is the host's /usr: an empty, non-executable file bound over the file
    # that mpiexec leads to makes an image whose PATH has no mpiexec to run.
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec on this machine (scripts/setup.sh installs Open MPI)")
    empty = tmp_path / "no-mpiexec"
    empty.write_bytes(b"")
    empty.chmod(0o644)
    mount = f" --mount {empty}:{os.path.realpath(mpiexec)}:ro"
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-no-mpiexec",
        CONNECT,
        OFFLOAD + " --ntasks 2 --mpi --ranks all" + mount + "\n" + RANK_LINE,
    )
    cell = nb.cells[1]
    assert error_text(cell) == ""
    text = stream_text(cell)
    assert "[r0]\x1b[0m rank 0 of 2" in text and "[r1]\x1b[0m rank 1 of 2" in text
    assert text.count("mpiexec was not found in the image") == 1
    assert "MPI's COMM_WORLD has size 1 in each rank" in text


# Kernel-side code of the cancel test: the job's processes are found on this machine (the local
# Slurm node) by a variable only their cell was given (--env), with their parents (the shims
# mpiexec started, and mpiexec), as (pid, start time) so that a reused pid is not taken for one.
FIND_RANKS = """\
import os, time

def start_time(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return fields[19], int(fields[1])  # starttime, ppid

def tagged():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if TAG.encode() in environ.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found

def family(pids):
    seen = set()
    for pid in pids:
        for _ in range(3):  # the rank, its shim, mpiexec
            try:
                started, parent = start_time(pid)
            except OSError:
                break
            seen.add((pid, started))
            pid = parent
    return seen

def alive(members):
    left = []
    for pid, started in members:
        try:
            if start_time(pid)[0] == started:
                left.append(pid)
        except OSError:
            pass
    return left

deadline = time.monotonic() + 180
while len(tagged()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
members = family(tagged())
print("ranks found:", len(tagged()), "processes:", len(members))
"""
WAIT_GONE = """\
job.wait(timeout=120)
deadline = time.monotonic() + 60
while alive(members) and time.monotonic() < deadline:
    time.sleep(0.5)
print("left after the cancel:", alive(members))
"""


def test_a_cancel_stops_every_rank_and_leaves_no_process(local_oscar, monkeypatch):
    tag = f"oj-cancel-{uuid.uuid4().hex}"
    nb = run_notebook(
        local_oscar,
        monkeypatch,
        "mpi-cancel",
        CONNECT,
        OFFLOAD
        + f" --ntasks 2 --mpi --no-wait -o job --env OJ_CANCEL_TAG={tag}\n"
        + "import time\nfrom mpi4py import MPI\nMPI.COMM_WORLD.Barrier()\ntime.sleep(600)\n",
        f"TAG = {tag!r}\n" + FIND_RANKS,
        "%oscar_cancel {job.name}",
        WAIT_GONE,
    )
    found, cancelled, gone = nb.cells[2:5]
    # two ranks, each with its shim, and mpiexec
    assert stdout(found) == "ranks found: 2 processes: 5\n"
    assert error_text(cancelled) == ""
    assert stdout(gone) == "left after the cancel: []\n"


EVERY_RANK_VALUES = """\
import os
rank = int(os.environ["RANK"])
total = oj_in * 10 + rank
where = (rank, os.environ["OJ_ENV"], os.environ.get("OJ_SECRET") == "s3cret-of-the-ranks")
print("rank", rank, "done")
"""


def test_out_ranks_all_brings_a_list_of_every_ranks_values(local_oscar_0_6_2, monkeypatch):
    # On interLink 0.6.2, where --secret arrives (0.6.1 refuses a --secret cell before sending)
    values_flags = "--ntasks 2 --mpi --out-ranks all"
    nb = run_notebook(
        local_oscar_0_6_2,
        monkeypatch,
        "mpi-out-ranks",
        CONNECT + "\nimport os\nos.environ['OJ_SECRET'] = 's3cret-of-the-ranks'\noj_in = 5",
        OFFLOAD + f" {values_flags} --ranks all --env OJ_ENV=env-value --secret OJ_SECRET "
        "--in oj_in --out total,where\n" + EVERY_RANK_VALUES,
        "print(total, where)",
        # 400 kB a rank: over each rank's share of the log (256 KiB), through its own object
        OFFLOAD + f" {values_flags} --out blob -o big\n"
        "import os\nblob = bytes([int(os.environ['RANK'])]) * 400_000",
        "print([(len(b), b[:1]) for b in blob], len(big.raw_log) < 300_000)",
        "import oscar_jupyter\n"
        "api = oscar_jupyter.offload('import os\\nr = int(os.environ[\"RANK\"]) * 7', "
        "node='local-slurm', time='00:02:00', ntasks=2, mpi=True, out_ranks='all', "
        "outputs=['r'])\nprint(api.result())",
        OFFLOAD + f" {values_flags} --out x\nimport os\nif os.environ['RANK'] == '0':\n    x = 1",
        OFFLOAD + f" {values_flags}\nprint('ran')",
        OFFLOAD + " --out x --out-ranks all\nx = 1\nprint('ran')",
    )
    ran, shown, large, shown_large, python_api, lacking, no_out, one_rank = nb.cells[1:9]
    assert error_text(ran) == ""
    assert "[r0]\x1b[0m rank 0 done" in stream_text(ran)
    assert "[r1]\x1b[0m rank 1 done" in stream_text(ran)
    assert "s3cret-of-the-ranks" not in str(ran.outputs)
    assert stdout(shown) == "[50, 51] [(0, 'env-value', True), (1, 'env-value', True)]\n"
    assert error_text(large) == ""
    # through the bucket: in the log both would take 1 MB, twice (the supervisor's two copies)
    assert stdout(shown_large) == "[(400000, b'\\x00'), (400000, b'\\x01')] True\n"
    assert error_text(python_api) == ""
    assert "{'r': [0, 7]}" in stdout(python_api)
    # a rank that lacks the value fails the cell, named
    assert "OffloadValuesError: --out x: the cell did not define x" in error_text(lacking)
    assert "rank 1 of 2 failed (exit 1); rank 0 ended" in error_text(lacking)
    # refused before sending, with what to change
    assert "--out-ranks all: there are no --out names to bring back" in error_text(no_out)
    assert "--out-ranks all: the cell runs once" in error_text(one_rank)
    assert "ran" not in stream_text(no_out) + stream_text(one_rank)
