"""scripts/slurm-cluster.sh on this machine's real Slurm."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from oscar_jupyter.local.executors import SlurmExecutor, SubmitError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-cluster.sh"
RESTART_ENV = "OSCAR_JUPYTER_TEST_SLURM_RESTART"


def cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def slurmctld_pid() -> str:
    return Path("/run/slurm/slurmctld.pid").read_text().strip()


def test_status_reports_the_node_and_exits_0_when_up(slurm_cluster):
    result = cluster("status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "slurm: up" in result.stdout
    assert any(
        line.startswith("node") and "localhost" in line for line in result.stdout.splitlines()
    )
    memory = [
        line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith("memory ")
    ]
    assert memory in (["--mem enforced by cgroup"], ["--mem enforced by accounting"]), result.stdout


def test_start_when_running_changes_nothing(slurm_cluster):
    before = slurmctld_pid()
    started = time.monotonic()
    result = cluster("start")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout
    assert slurmctld_pid() == before
    assert time.monotonic() - started < 5


def test_the_node_matches_the_machine_and_impossible_jobs_are_refused(slurm_cluster, tmp_path):
    config = Path("/etc/slurm/slurm.conf").read_text()
    assert f"CPUs={os.cpu_count()} " in config
    job = tmp_path / "job.slurm"
    job.write_text(f"#!/bin/bash\n#SBATCH --cpus-per-task={os.cpu_count() + 1}\ntrue\n")
    with pytest.raises(SubmitError, match="More processors requested than permitted"):
        SlurmExecutor().submit(tmp_path)


def test_no_daemon_keeps_the_start_lock(slurm_cluster):
    # A daemon that inherited the lock's descriptor would block every later start and stop.
    lock = "/run/slurm/slurm-cluster.lock"
    holders = []
    for pidfile in ("/run/munge/munged.pid", "/run/slurm/slurmctld.pid", "/run/slurm/slurmd.pid"):
        pid = Path(pidfile).read_text().strip()
        fds = Path(f"/proc/{pid}/fd")
        if any(os.path.realpath(fd) == lock for fd in fds.iterdir()):
            holders.append(pidfile)
    assert holders == []
    result = cluster("status")
    assert result.returncode == 0


def test_unknown_commands_show_the_usage():
    result = cluster("restart")
    assert result.returncode == 2 and "usage:" in result.stderr


@pytest.mark.skipif(
    os.environ.get(RESTART_ENV) != "1",
    reason=f"stops the shared Slurm; set {RESTART_ENV}=1 (CI, or a lone machine)",
)
def test_stop_cancels_jobs_and_start_brings_the_node_back(slurm_cluster, tmp_path):
    job = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pids = {
        name: Path(f"/run/{path}").read_text().strip()
        for name, path in [
            ("munged", "munge/munged.pid"),
            ("slurmctld", "slurm/slurmctld.pid"),
            ("slurmd", "slurm/slurmd.pid"),
        ]
    }

    stopped = cluster("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids.values())
    down = cluster("status")
    assert down.returncode != 0 and "slurm: down" in down.stdout

    started = cluster("start")

    assert started.returncode == 0, started.stderr
    assert "started (node localhost IDLE" in started.stdout
    assert SlurmExecutor().state(job, tmp_path).slurm_state == "CA"  # tmp_path: its pod dir
