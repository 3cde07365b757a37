"""Run the generated job.slurm with real bash (no Slurm), a stand-in for singularity.

The stand-in reads the env file, skips the other options and runs the container's command,
so these tests exercise our job.sh helpers the way a Slurm job would: init containers first
and fail-fast, regular containers in parallel, <prefix>-<name>.out/.status files, the job's
exit code = the highest container code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from oscar_jupyter.local.interlink import PluginConfig, prepare

FAKE_SINGULARITY = """#!/bin/bash
shift  # exec | run
while [ $# -gt 0 ]; do
  case "$1" in
    --env-file) set -a; . "$2"; set +a; shift 2 ;;
    --bind) shift 2 ;;
    docker://*) shift; break ;;
    *) shift ;;
  esac
done
exec "$@"
"""


def make_config(tmp_path: Path, release: str = "0.6.1") -> PluginConfig:
    runtime = tmp_path / "fake-singularity"
    runtime.write_text(FAKE_SINGULARITY)
    runtime.chmod(0o755)
    (tmp_path / "jobs").mkdir()
    return PluginConfig(
        data_root=f"{tmp_path}/jobs/", singularity_path=str(runtime), release=release
    )


def container(name: str, script: str, env: dict[str, str] | None = None) -> dict:
    spec = {"name": name, "image": "alpine:3", "command": ["/bin/sh", "-c"], "args": [script]}
    if env:
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return spec


def make_pod(init: list[dict], main: list[dict], annotations: dict | None = None) -> dict:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "annotations": annotations or {},
        },
        "spec": {"initContainers": init, "containers": main},
    }


def run_job(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(directory / "job.slurm")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
    )


def test_containers_run_and_the_highest_exit_code_wins(tmp_path):
    value = 'it\'s $HOME `x` "q", ünï\nline2'
    pod = make_pod(
        [container("setup", "echo ready > /dev/null")],
        [
            container("first", 'printf "%s" "$MSG"; exit 3', {"MSG": value}),
            container("second", "echo second-out; echo second-err >&2"),
        ],
    )
    directory = prepare(pod, configmaps={}, config=make_config(tmp_path))
    result = run_job(directory)
    assert result.returncode == 3, result.stdout + result.stderr
    assert (directory / "run-first.out").read_text().startswith(value)
    second = (directory / "run-second.out").read_text()
    assert "second-out\n" in second and "second-err\n" in second
    assert (directory / "init-setup.status").read_text() == "0\n"
    assert (directory / "run-first.status").read_text() == "3\n"
    assert (directory / "run-second.status").read_text() == "0\n"
    assert "This pod p/u-1 has been submitted to SLURM node" in result.stdout


def test_a_failing_init_container_stops_the_job(tmp_path):
    pod = make_pod(
        [container("setup", "echo broken; exit 7")], [container("main", "echo should-not-run")]
    )
    directory = prepare(pod, configmaps={}, config=make_config(tmp_path))
    result = run_job(directory)
    assert result.returncode == 7
    assert (directory / "init-setup.out").read_text().startswith("broken\n")
    assert (directory / "init-setup.status").read_text() == "7\n"
    assert not (directory / "run-main.out").exists()


@pytest.mark.parametrize(
    ("release", "pre_exec", "job_sh_runs"),
    [
        ("0.6.1", "echo pre-exec-ran", False),
        ("0.6.1", "echo pre-exec-ran\n", True),
        ("0.6.2", "echo pre-exec-ran", True),
        ("0.6.2", "echo pre-exec-ran\n", True),
    ],
)
def test_b1_on_0_6_1_a_pre_exec_swallows_job_sh(tmp_path, release, pre_exec, job_sh_runs):
    """Plugin 0.6.1 writes `prefix + " " + job.sh` (prepare.go 1102-1108): `echo pre-exec-ran`
    prints job.sh's path instead of running it, and the job still exits 0. A pre-exec ending
    in a newline is safe on both releases."""
    pod = make_pod([], [container("main", "echo main-ran")], {"slurm-job.vk.io/pre-exec": pre_exec})
    directory = prepare(pod, configmaps={}, config=make_config(tmp_path, release))
    result = run_job(directory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pre-exec-ran" in result.stdout
    assert (directory / "run-main.out").exists() == job_sh_runs
    swallowed = f"pre-exec-ran {directory}/job.sh\n"
    assert (swallowed in result.stdout) == (not job_sh_runs)
