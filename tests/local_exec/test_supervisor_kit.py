"""The supervisor kit: the real faas-supervisor from PyPI, run inside singularity.py as OSCAR does.

OSCAR's interLink pod: the init container copies /supervisor/* to the shared /data, the main
container runs `echo $EVENT | base64 -d | /data/supervisor` with the service's script and
function_config.yaml bound at /oscar/config.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oscar_jupyter.local.executors import ProcessExecutor, SlurmExecutor
from oscar_jupyter.local.singularity import runtime_command
from oscar_jupyter.local.supervisor_kit import SupervisorKitError, ensure_supervisor_kit

from .conftest import wait_for, write_pod

IMAGE = "docker://ghcr.io/grycap/cowsay"
KIT_IMAGE = "docker://ghcr.io/grycap/oscar-supervisor-kit:latest"
PROGRAM = "print('hello from the cell')\n"
SCRIPT = """\
echo "script starts"
printf '   indented line\\n'
echo "event: $(cat "$INPUT_FILE_PATH")"
echo "host secret: ${HOST_ONLY_SECRET:-unset}"
echo "to stderr" >&2
exit 3
"""


@pytest.fixture(scope="module")
def kit() -> Path:
    return ensure_supervisor_kit()


@pytest.fixture(scope="module")
def singularity(kit, tmp_path_factory) -> str:
    return runtime_command(tmp_path_factory.mktemp("home"), supervisor_kit=kit)[0]


def oscar_pod_files(pod: Path, log_level: str = "DEBUG") -> None:
    """The files the Slurm plugin writes for an OSCAR job pod (SHARED_FS)."""
    config = pod / "configMaps" / "oscar-config"
    config.mkdir(parents=True)
    (config / "script.sh").write_text(SCRIPT)
    (config / "function_config.yaml").write_text(f"name: runner\nlog_level: {log_level}\n")
    (pod / "emptyDirs" / "supervisor-share-data").mkdir(parents=True)
    body = base64.b64encode(PROGRAM.encode()).decode()  # the job body: base64 of the program
    event = base64.b64encode(body.encode()).decode()  # OSCAR puts base64(body) in EVENT
    (pod / "oscar-container_envfile.properties").write_text(
        f"EVENT={event}\nOSCAR_SERVICE_NAME=runner\nJOB_UUID=job-1\n"
    )


def init_container(singularity: str, pod: Path) -> list[str]:
    return [
        singularity,
        "exec",
        "--nv",
        "--no-eval",
        "--containall",
        "--bind",
        f"{pod}/emptyDirs/supervisor-share-data:/data:rw",
        KIT_IMAGE,
        "/bin/sh",
        "-c",
        "cp -r /supervisor/* /data",
    ]


def main_container(singularity: str, pod: Path) -> list[str]:
    config = pod / "configMaps" / "oscar-config"
    return [
        singularity,
        "exec",
        "--nv",
        "--no-eval",
        "--containall",
        "--env-file",
        f"{pod}/oscar-container_envfile.properties",
        "--bind",
        f"{config}/script.sh:/oscar/config/script.sh:ro",
        "--bind",
        f"{config}/function_config.yaml:/oscar/config/function_config.yaml:ro",
        "--bind",
        f"{pod}/emptyDirs/supervisor-share-data:/data:rw",
        IMAGE,
        "/bin/sh",
        "-c",
        "echo $EVENT | base64 -d | /data/supervisor",
    ]


def run_oscar_containers(singularity: str, pod: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOST_ONLY_SECRET="do-not-leak")
    init = subprocess.run(
        init_container(singularity, pod), capture_output=True, env=env, timeout=60
    )
    assert init.returncode == 0, init.stderr
    return subprocess.run(
        main_container(singularity, pod),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        timeout=60,
        text=True,
    )


def test_the_kit_has_an_executable_supervisor_launcher(kit):
    launcher = kit / "supervisor"
    assert os.access(launcher, os.X_OK)
    assert "faassupervisor.supervisor" in launcher.read_text()
    assert ensure_supervisor_kit() == kit  # cached: the second call finds it ready


def test_the_supervisor_logs_each_script_line_at_debug_and_exits_0(singularity, tmp_path):
    oscar_pod_files(tmp_path)

    result = run_oscar_containers(singularity, tmp_path)

    assert result.returncode == 0, result.stdout  # OSCAR: a failing script still "succeeds"
    debug = [
        line.split(" - DEBUG - ", 1)[1]
        for line in result.stdout.splitlines()
        if " - supervisor - DEBUG - " in line
    ]
    expected = [
        "script starts",
        "indented line",
        f"event: {PROGRAM.strip()}",
        "host secret: unset",
        "to stderr",
    ]
    start = debug.index(expected[0])
    assert debug[start : start + len(expected)] == expected
    assert "do-not-leak" not in result.stdout
    assert (tmp_path / "emptyDirs" / "supervisor-share-data" / "supervisor").exists()


def test_at_info_level_the_output_comes_only_once_at_the_end(singularity, tmp_path):
    oscar_pod_files(tmp_path, log_level="INFO")

    result = run_oscar_containers(singularity, tmp_path)

    assert result.returncode == 0, result.stdout
    assert " - DEBUG - " not in result.stdout
    assert "script starts" in result.stdout and "   indented line" in result.stdout


@pytest.mark.parametrize("kind", ["slurm", "process"])
def test_an_oscar_pod_runs_end_to_end_through_the_executor(kind, singularity, tmp_path, request):
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
    executor = SlurmExecutor() if kind == "slurm" else ProcessExecutor()
    pod = tmp_path / "oscar-svc-pod"
    oscar_pod_files(pod)
    write_pod(
        pod,
        {"oscar-container": main_container(singularity, pod)},
        init={"supervisor-container": init_container(singularity, pod)},
    )

    job_id = executor.submit(pod)
    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished, timeout=60)

    log = (pod / "run-oscar-container.out").read_text()
    assert (state.phase, state.exit_code) == ("Succeeded", 0), log
    assert "supervisor - DEBUG - script starts" in log
    assert f"supervisor - DEBUG - event: {PROGRAM.strip()}" in log
    assert (pod / "init-supervisor-container.status").read_text().strip() == "0"


def test_concurrent_first_builds_share_one_kit_and_print_nothing(tmp_path):
    build = (
        "import sys; from pathlib import Path; "
        "from oscar_jupyter.local.supervisor_kit import ensure_supervisor_kit; "
        "kit = ensure_supervisor_kit(Path(sys.argv[1])); "
        "print((kit.parent / 'venv' / 'pyvenv.cfg').stat().st_ino)"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", build, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    assert outputs[0][1] == outputs[1][1] == ""
    assert outputs[0][0] == outputs[1][0]  # the second waited and reused the first's venv
    kit = tmp_path / "supervisor-kit" / "kit"
    event = subprocess.run(
        [str(kit / "supervisor")],
        input=base64.b64encode(b"payload"),
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "SCRIPT": base64.b64encode(b"echo ran").decode(),
            "HOME": str(tmp_path),
        },
        timeout=60,
    )
    assert event.returncode == 0 and b"ran" in event.stdout + event.stderr


def test_a_failed_install_names_pips_own_message(tmp_path, monkeypatch):
    empty = tmp_path / "no-packages"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))

    with pytest.raises(SupervisorKitError) as caught:
        ensure_supervisor_kit(tmp_path / "cache")

    message = str(caught.value)
    assert message.startswith("pip could not install faas-supervisor==1.5.8")
    assert "No matching distribution found for faas-supervisor==1.5.8" in message
    assert not (tmp_path / "cache" / "supervisor-kit" / "ready").exists()


def test_every_name_of_the_same_interpreter_finds_the_same_kit(tmp_path):
    # `python -m pytest` and the `oscar-jupyter` script (python3) must not rebuild each other's kit:
    # a rebuild deletes the venv under running jobs.
    import sys

    link = tmp_path / "another-name-for-python"
    link.symlink_to(sys.executable)
    code = "from oscar_jupyter.local.supervisor_kit import _ready_text; print(_ready_text())"
    texts = {
        subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
        for python in (sys.executable, str(link))
    }
    assert len(texts) == 1, texts
