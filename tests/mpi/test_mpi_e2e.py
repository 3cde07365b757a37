"""Multi-rank cells in a real kernel (nbclient) against the local OSCAR (issue 21).

The local OSCAR models interLink's Slurm plugin 0.6.1, which ignores slurm-job.vk.io/mpi-flags
(pkg/slurm/prepare.go 961-966 assign the mpiexec words to a loop copy), so more than one rank is
refused before anything is sent, with what to add or why; one task under --mpi runs.
"""

from __future__ import annotations

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
        OFFLOAD + " --ntasks 2 --mpi --oversubscribe\nprint('ran as two ranks')",
        OFFLOAD + " --nodes 2 --ntasks 1 --mpi\nprint('ran')",
    )
    two_nodes, two_ranks, bad_layout = nb.cells[1:4]
    assert "--nodes 2: 2 nodes without --mpi" in error_text(two_nodes)
    assert "add --mpi to run the cell as one rank per task" in error_text(two_nodes)
    assert "ignores slurm-job.vk.io/mpi-flags" in error_text(two_ranks)
    assert "jupyter: {mpi_flags: true}" in error_text(two_ranks)
    assert "fewer tasks than --nodes 2" in error_text(bad_layout)
    for cell in (two_nodes, two_ranks, bad_layout):
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
