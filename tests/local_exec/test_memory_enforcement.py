"""--mem enforced by the local Slurm, and what a job's log says when it was over it.

The diagnostics read Slurm's own lines (samples from real sites' job outputs and from this
machine's Slurm 22.05, both ways scripts/slurm-cluster.sh can enforce --mem); the executor test
runs pods over and within their --mem on the real Slurm.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oscar_jupyter.diagnostics import (
    mentions_slurm_end,
    out_of_memory_reason,
    safe_tail,
    slurm_end,
)
from oscar_jupyter.local import executors
from oscar_jupyter.local.executors import SlurmExecutor
from oscar_jupyter.runner import MARKER

from .conftest import wait_for

JOB_SH = (
    "This pod ns-pod0/0f0e has been submitted to SLURM node cn01.\n"
    "2026-12-02T19:13:30+00:00 container oscar-container runs as pid 22217\n"
)
START = f"{MARKER}|s|0|{{}}|@@\n"

# This machine, task/cgroup (cgroup v1): the kernel's OOM killer; Slurm ends the job OUT_OF_MEMORY.
HERE_CGROUP = (
    "slurmstepd-localhost: error: Detected 1 oom-kill event(s) in StepId=720001.batch. "
    "Some of your processes may have been killed by the cgroup out-of-memory handler.\n"
)
# This machine, jobacct_gather/linux with OverMemoryKill: Slurm kills the step; the job ends FAILED.
HERE_ACCOUNTING = (
    "slurmstepd-localhost: error: StepId=710000.batch exceeded memory limit "
    "(750813184 > 268435456), being killed\n"
    "slurmstepd-localhost: error: *** JOB 710000 ON localhost CANCELLED AT "
    "2026-12-02T19:09:29 ***\n"
    "slurmstepd-localhost: error: StepId=710000.batch exceeded memory limit "
    "(750813184 > 268435456), being killed\n"
    "slurmstepd-localhost: error: Exceeded job memory limit\n"
    "slurmstepd-localhost: error: Exceeded job memory limit\n"
)
# Real sites' job outputs.
SITE_LINES = [
    # 23.02 on, task/cgroup
    "slurmstepd: error: Detected 1 oom_kill event in StepId=18835145.batch. "
    "Some of the step tasks have been OOM Killed.",
    "slurmstepd: error: Detected 2 oom_kill events in StepId=7.0. "
    "Some of the step tasks have been OOM Killed.",
    # 20.11 - 22.05, task/cgroup
    "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=14604003.batch. "
    "Some of your processes may have been killed by the cgroup out-of-memory handler.",
    # before 20.11
    "slurmstepd: error: Detected 3 oom-kill event(s) in step 1234.batch cgroup. "
    "Some of your processes may have been killed by the cgroup out-of-memory handler.",
    # a MULTIPLE_SLURMD build names its node
    "slurmstepd-ideafix03: error: Detected 1 oom_kill event in StepId=4833316.0. "
    "Some of the step tasks have been OOM Killed.",
    # OverMemoryKill, older wording
    "slurmstepd: error: Job 1234 exceeded memory limit (1048576 > 524288), being killed",
    "slurmstepd: error: Exceeded job memory limit",
    # srun's own view of a step's tasks
    "srun: error: holy8a24101: task 0: Out Of Memory",
]


@pytest.mark.parametrize("line", SITE_LINES)
def test_real_sites_out_of_memory_lines_are_read_as_oom(line):
    log = JOB_SH + START + f"{MARKER}|x|0|137|@@\n" + line + "\n"
    assert mentions_slurm_end(line)
    assert slurm_end(log) == "oom"
    assert line in safe_tail(log)  # Slurm's own line is shown with the error


@pytest.mark.parametrize("lines", [HERE_CGROUP, HERE_ACCOUNTING], ids=["cgroup", "accounting"])
def test_this_machines_out_of_memory_lines_are_read_as_oom(lines):
    log = JOB_SH + START + lines
    assert mentions_slurm_end(lines)
    # OverMemoryKill's own CANCELLED banner is not a cancel: its "being killed" line comes first.
    assert slurm_end(log) == "oom"
    assert lines.splitlines()[0] in safe_tail(log)


def test_a_cancel_before_an_oom_event_stays_a_cancel():
    # The cgroup's line is written when the job ends, after the banner of a cancel or a time limit.
    for why, end in (("", "cancelled"), (" DUE TO TIME LIMIT", "walltime")):
        banner = f"slurmstepd: error: *** JOB 41 ON cn01 CANCELLED AT 2026-12-01T15:00:00{why} ***"
        banner += "\n"
        assert slurm_end(JOB_SH + START + banner + HERE_CGROUP) == end


def test_lines_that_are_not_an_out_of_memory_end():
    quiet = [
        # older task/cgroup wrote these whenever the limit was reached, killed or not
        "slurmstepd: error: Exceeded step memory limit at some point.",
        "slurmstepd: error: Exceeded job memory limit at some point.",
        "2026-12-02 19:13:31,024 - supervisor - INFO - Detected 1 oom-kill event(s)",
    ]
    for line in quiet:
        assert slurm_end(JOB_SH + START + line + "\n") is None, line
    # The cell's own output is tagged: printing Slurm's line does not make it Slurm's.
    printed = f"{MARKER}|o|1|{HERE_CGROUP.strip()}|@@\n{MARKER}|x|0|0|@@\n"
    assert slurm_end(JOB_SH + START + printed) is None
    assert not mentions_slurm_end("@@OJ|o|1|epoch 3: loss 0.25|@@\n")


@pytest.mark.parametrize(
    ("mem", "says"),
    [
        ("256M", "killed: out of memory (--mem 256M)"),
        ("2G", "killed: out of memory (--mem 2G)"),
        ("1.5Gi", "killed: out of memory (--mem 1.5Gi)"),
        (None, "killed: out of memory"),
        ("", "killed: out of memory"),
    ],
)
def test_the_reason_names_the_mem_as_written(mem, says):
    assert out_of_memory_reason(mem) == says


def test_a_container_killed_before_its_status_gets_slurms_exit_code(make_pod):
    # As the plugin's getExitCode (Status.go): OverMemoryKill or a cancel kills job.sh before it
    # writes run-<ctr>.status; the init container's 0 must not make the job a success.
    pod = make_pod({"main": "true"}, init={"setup": "true"})
    (pod / "init-setup.status").write_text("0\n")
    assert executors.pod_containers(pod) == ["main"]

    state = executors._finish(pod, "F", 137, None)

    assert (state.phase, state.exit_code, state.reason) == ("Failed", 137, "Error: 137")


# --- on the real Slurm ----------------------------------------------------------------------

# Held for 5 s: OverMemoryKill polls each second, so a shorter spike may escape it (not the cgroup).
HUNGRY = [
    "python3",
    "-c",
    "import time; data = bytearray(300 * 1024 * 1024); time.sleep(5); print('allocated')",
]
MODEST = ["python3", "-c", "data = bytearray(20 * 1024 * 1024); print('allocated')"]


def enforcement() -> str:
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    for line in conf.read_text().splitlines():
        if line.startswith("# --mem enforced by: "):
            return line.split(": ", 1)[1].strip()
    pytest.fail(
        f"the running Slurm's {conf} predates --mem enforcement; restart it: "
        "bash scripts/slurm-cluster.sh stop; bash scripts/slurm-cluster.sh start",
        pytrace=False,
    )


def test_a_pod_over_its_mem_is_killed_out_of_memory(slurm_cluster, make_pod):
    how = enforcement()
    executor = SlurmExecutor()
    pod = make_pod({"main": HUNGRY}, mem_mib=128)
    job_id = executor.submit(pod)

    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished, timeout=60)

    assert state.phase == "Failed"
    assert "allocated" not in (pod / "run-main.out").read_text()
    if how == "cgroup":  # the kernel killed the cell's Python; Slurm ends the job OUT_OF_MEMORY
        assert (state.slurm_state, state.reason, state.exit_code) == ("OOM", "OOMKilled", 137)
    else:  # OverMemoryKill killed the whole job (SIGKILL): FAILED, no container status left
        assert (state.slurm_state, state.exit_code) == ("F", 137)
    log = (pod / "job.out").read_text()
    assert slurm_end(log) == "oom", log


def test_a_pod_within_its_mem_succeeds(slurm_cluster, make_pod):
    enforcement()
    executor = SlurmExecutor()
    pod = make_pod({"main": MODEST}, mem_mib=128)
    job_id = executor.submit(pod)

    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished, timeout=60)

    assert (state.phase, state.slurm_state, state.exit_code) == ("Succeeded", "CD", 0)
    assert (pod / "run-main.out").read_text().startswith("allocated\n")
    assert slurm_end((pod / "job.out").read_text()) is None
