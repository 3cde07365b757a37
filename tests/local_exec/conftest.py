"""Pod directories shaped like the interLink Slurm plugin's, written by hand, and the executors.

`make_pod(containers, sbatch=[...], mem_mib=...)` writes `job.slurm` (the `#SBATCH` header and a
call to `job.sh`) and `job.sh` (the translation's runInitCtn / runCtn / waitCtns / endScript
helpers: containers in the background, `run-<ctr>.out` and `run-<ctr>.status`, exit with the
highest code). Each container is a shell command run by `bash -c`. Slurm enforces `--mem` (its
cgroup or its accounting kills a job over it: scripts/slurm-cluster.sh), so a pod asks for
POD_MEM_MIB, as the plugin's default pod does, unless the test says otherwise.

`executor` is parametrised over the real Slurm executor and the process executor; the Slurm one
needs the session's `slurm_cluster` (tests/conftest.py), which fails loudly when Slurm can't start.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oscar_jupyter.local.executors import ExecState, ProcessExecutor, SlurmExecutor
from oscar_jupyter.local.interlink import job_sh_functions

Command = str | list[str]  # a shell command for `bash -c`, or an argv
POD_MEM_MIB = 256  # oscar_jupyter/local/pod.py DEFAULT_MEMORY


def _command_line(command: Command) -> str:
    if isinstance(command, str):
        return f"bash -c {shlex.quote(command)}"
    return " ".join(shlex.quote(word) for word in command)


def write_pod(
    pod_dir: Path,
    containers: dict[str, Command],
    sbatch: list[str] | None = None,
    init: dict[str, Command] | None = None,
    mem_mib: int = POD_MEM_MIB,
) -> Path:
    pod_dir.mkdir(parents=True, exist_ok=True)
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={pod_dir.name}",
        f"#SBATCH --output={pod_dir}/job.out",
        *(f"#SBATCH {flag}" for flag in (sbatch or [])),
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --mem={mem_mib}",
    ]
    (pod_dir / "job.slurm").write_text("\n".join(header) + f"\n\n{pod_dir}/job.sh\n")
    body = [
        job_sh_functions(),  # the helper block as the local OSCAR writes it (default release)
        "printf '%s\\n' \"This pod has been submitted to SLURM node ${SLURMD_NODENAME}.\"",
        f"export workingPath={pod_dir}",
        f"export SANDBOX={pod_dir}",
        "",
        *(f"runInitCtn {name} {_command_line(command)}" for name, command in (init or {}).items()),
        *(f"runCtn {name} {_command_line(command)}" for name, command in containers.items()),
        "",
        "waitCtns",
        "endScript",
        "",
    ]
    job_sh = pod_dir / "job.sh"
    job_sh.write_text("\n".join(body))
    job_sh.chmod(0o755)
    return pod_dir


@pytest.fixture
def make_pod(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(
        containers: dict[str, Command],
        sbatch: list[str] | None = None,
        init: dict[str, Command] | None = None,
        mem_mib: int = POD_MEM_MIB,
    ) -> Path:
        return write_pod(tmp_path / f"ns-pod{next(counter)}", containers, sbatch, init, mem_mib)

    return make


@pytest.fixture(params=["slurm", "process"])
def executor(request) -> SlurmExecutor | ProcessExecutor:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
        return SlurmExecutor()
    return ProcessExecutor(kill_grace_s=2)


def wait_for(
    executor, job_id: str, pod_dir: Path, done: Callable[[ExecState], bool], timeout: float = 30
) -> tuple[ExecState, list[str]]:
    """Poll state() until `done`; returns the last state and every phase seen, in order."""
    phases: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = executor.state(job_id, pod_dir)
        if not phases or phases[-1] != state.phase:
            phases.append(state.phase)
        if done(state):
            return state, phases
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {state} after {timeout} s (seen {phases})")
        time.sleep(0.05)


def squeue_active(job_id: str) -> str:
    """What squeue lists for the job among pending/running/completing jobs ('' when none)."""
    return subprocess.run(
        ["squeue", "--noheader", "-o", "%i %t", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
