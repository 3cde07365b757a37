"""End to end: Slurm enforces a cell's --mem, and the job's end reads as out of memory.

The local Slurm limits each job to its --mem as a site does (scripts/slurm-cluster.sh: task/cgroup,
else OverMemoryKill), so a cell allocating 700 MB under `--mem 256M` is killed. What the job shows:
the runner's exit code (137: the kernel's OOM killer sent SIGKILL to the cell's Python), the local
OSCAR's record (Failed, OOMKilled, as the interLink Slurm plugin reports a job Slurm ended
OUT_OF_MEMORY), and Slurm's out-of-memory line in the job's log, which `diagnostics.slurm_end()`
reads as "oom". slurmstepd writes that line when the job has ended, after the runner's exit line,
so it is in the log OSCAR serves once the job's phase is terminal, not necessarily in the log the
Job saw when the exit line arrived: the test reads the log once more, as the Job has to.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import oscar_jupyter
from oscar_jupyter.diagnostics import out_of_memory_reason, safe_tail, slurm_end
from oscar_jupyter.local.state import HomeLayout, LocalState

pytestmark = pytest.mark.e2e
NODE = "local-slurm"
MIB = 1024 * 1024
# bytearray(n) writes its n zero bytes: the pages are really used, not just reserved. Held for 5 s:
# OverMemoryKill polls each second, so a shorter spike may escape it (not the cgroup).
HUNGRY = (
    "import time\n"
    "data = bytearray(700 * 1024 * 1024)\n"
    "time.sleep(5)\n"
    "print('allocated', len(data))\n"
)
MODEST = "data = bytearray(100 * 1024 * 1024)\nprint('allocated', len(data))\n"
SIGKILL_EXIT = 128 + 9
BANNER_TIMEOUT_S = 60


@pytest.fixture()
def enforcing(local_oscar) -> str:
    """How the session's Slurm enforces --mem: "cgroup" or "accounting" (the plain process
    executor does not)."""
    if local_oscar.executor != "slurm":
        pytest.skip("the process executor does not limit memory; this needs Slurm")
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    text = conf.read_text() if conf.exists() else ""
    for line in text.splitlines():
        if line.startswith("# --mem enforced by: "):
            return line.split(": ", 1)[1].strip()
    pytest.fail(
        f"the running Slurm's {conf} predates --mem enforcement; restart it: "
        "bash scripts/slurm-cluster.sh stop; bash scripts/slurm-cluster.sh start",
        pytrace=False,
    )


def local_record(local_oscar, job_name: str, timeout: float = BANNER_TIMEOUT_S) -> dict:
    """The local OSCAR's record of the job once it has ended (it saves it when it learns that)."""
    deadline = time.monotonic() + timeout
    while True:
        state = LocalState(HomeLayout(local_oscar.home).state_file)
        record = next((job for job in state.jobs.values() if job.get("name") == job_name), None)
        if record and record.get("phase") in ("Succeeded", "Failed"):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"the local OSCAR has not ended job {job_name}: {record}")
        time.sleep(0.5)


def test_a_cell_over_its_mem_is_killed_and_its_end_reads_out_of_memory(
    connected, local_oscar, enforcing
):
    job = oscar_jupyter.offload(HUNGRY, node=NODE, time="00:05:00", mem="256M", wait=False)

    # The kernel's OOM killer sends SIGKILL to the cell's Python, the biggest process of the job,
    # and the runner reports it; OverMemoryKill kills the whole job, the runner too: no exit line.
    expected_exit = SIGKILL_EXIT if enforcing == "cgroup" else None
    assert job.wait(180) == expected_exit
    assert job.status() == "Failed"
    assert "allocated" not in job.logs()
    record = local_record(local_oscar, job.name)
    assert record["phase"] == "Failed"
    # task/cgroup ends the job OUT_OF_MEMORY, which the plugin reports as OOMKilled; OverMemoryKill
    # ends it FAILED (squeue: F) and the exit code tells.
    assert record["reason"] in ("OOMKilled", f"Error: {SIGKILL_EXIT}"), record

    final_log = job.client.job_logs(job.service, job.name)  # once the job has ended
    assert slurm_end(final_log) == "oom", final_log[-2000:]
    assert out_of_memory_reason(job.spec.mem) == "killed: out of memory (--mem 256M)"
    tail = safe_tail(final_log)
    assert "oom-kill event" in tail or "exceeded memory limit" in tail, tail


def test_a_cell_within_its_mem_still_succeeds(connected, local_oscar, enforcing):
    job = oscar_jupyter.offload(MODEST, node=NODE, time="00:05:00", mem="256M", wait=False)

    assert job.wait(180) == 0
    assert job.status() == "Succeeded"
    assert job.logs() == f"allocated {100 * MIB}\n"
    assert slurm_end(job.raw_log) is None
    assert local_record(local_oscar, job.name)["phase"] == "Succeeded"


def test_a_cell_over_its_memory_fails_saying_so(enforcing, connected, ipshell):
    from oscar_jupyter.jobs import JobFailed

    with pytest.raises(JobFailed) as failed:
        ipshell.run_cell_magic(
            "oscar_offload", f"--node {NODE} --time 00:05:00 --mem 256M -o hungry", HUNGRY
        )
    job = ipshell.user_ns["hungry"]
    assert "killed: out of memory (--mem 256M)" in str(failed.value)
    tail = failed.value.remote_traceback
    assert "oom-kill event" in tail or "memory limit" in tail, tail
    assert job.status() == "Failed" and job.exit_code in (SIGKILL_EXIT, None)
