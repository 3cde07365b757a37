"""Each rank knows where it is (issue 21): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT from the MPI launcher's or Slurm's variables, and oscar_rank()."""

from __future__ import annotations

import pytest

from oscar_jupyter import runner
from oscar_jupyter.cell_program import first_slurm_host, rank_environment

OPEN_MPI_RANK_1 = {
    "OMPI_COMM_WORLD_RANK": "1",
    "OMPI_COMM_WORLD_SIZE": "2",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    "SLURM_JOB_ID": "4242",
}


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [("n1", "n1"), ("gpu[03-05,09],cpu1", "gpu03"), ("a,b[1-2]", "a"), ("x[7]", "x7")],
)
def test_the_first_host_of_a_slurm_node_list(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_open_mpi_ranks_on_one_node_meet_on_loopback():
    assert rank_environment(OPEN_MPI_RANK_1) == {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "24242",  # the same on every rank of the job
    }


def test_hydra_ranks_on_several_nodes_meet_on_the_allocations_first_node():
    found = rank_environment(
        {
            "PMI_RANK": "5",
            "PMI_SIZE": "8",
            "MPI_LOCALRANKID": "1",
            "MPI_LOCALNRANKS": "4",
            "SLURM_JOB_NODELIST": "vega[0101-0102]",
        }
    )
    assert found["RANK"] == "5" and found["WORLD_SIZE"] == "8"
    assert found["LOCAL_RANK"] == "1" and found["LOCAL_WORLD_SIZE"] == "4"
    assert found["MASTER_ADDR"] == "vega0101"


def test_srun_tasks_count_and_a_single_task_job_is_left_alone():
    found = rank_environment({"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_NNODES": "1"})
    assert (found["RANK"], found["WORLD_SIZE"], found["LOCAL_WORLD_SIZE"]) == ("2", "4", "4")
    assert rank_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {}
    assert rank_environment({}) == {}


def test_values_the_cell_set_with_env_are_kept():
    found = rank_environment({**OPEN_MPI_RANK_1, "MASTER_PORT": "12345", "MASTER_ADDR": "h"})
    assert "MASTER_PORT" not in found and "MASTER_ADDR" not in found


def test_the_cell_sees_its_rank_in_its_environment_and_through_oscar_rank(run_runner):
    code = (
        "import os\n"
        "print(os.environ['RANK'], 'of', os.environ['WORLD_SIZE'], os.environ['MASTER_ADDR'])\n"
        "me = oscar_rank()\n"
        "print(me.rank, me.size, me.local_rank, me.local_size, me.is_first)\n"
    )
    result = run_runner(runner.encode_body(runner.build_program(code)), env=OPEN_MPI_RANK_1)
    assert [line.text for line in result.parser.lines] == ["1 of 2 127.0.0.1", "1 2 1 2 False"]
    alone = run_runner(runner.encode_body(runner.build_program("print(oscar_rank())")))
    assert [line.text for line in alone.parser.lines][0].startswith("rank 0 of 1 on ")
