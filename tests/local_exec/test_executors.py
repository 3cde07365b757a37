"""SlurmExecutor on the real single-node Slurm, and ProcessExecutor, on hand-written pod dirs."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from oscar_jupyter.local.executors import (
    ExecutorError,
    ProcessExecutor,
    SlurmExecutor,
    SubmitError,
    choose_executor,
    parse_plugin_time,
    parse_slurm_time,
)

from .conftest import pid_alive, squeue_active, wait_for


def test_a_job_runs_and_succeeds_with_its_output_and_times_recorded(executor, make_pod):
    pod = make_pod({"main": "echo hello from the job; sleep 1; echo done"})
    job_id = executor.submit(pod)
    assert (pod / "JobID.jid").read_text() == job_id

    state, phases = wait_for(executor, job_id, pod, lambda s: s.finished)

    assert phases[-2:] == ["Running", "Succeeded"]
    assert state.exit_code == 0 and state.reason == "Completed"
    assert (pod / "run-main.out").read_text().startswith("hello from the job\ndone\n")
    assert "This pod has been submitted to SLURM node" in (pod / "job.out").read_text()
    assert state.started_at <= state.finished_at
    assert 0.9 <= (state.finished_at - state.started_at).total_seconds() < 15
    assert parse_plugin_time((pod / "StartedAt.time").read_text()) == state.started_at
    assert parse_plugin_time((pod / "FinishedAt.time").read_text()) == state.finished_at
    # A later look at a finished job gives the same answer.
    assert executor.state(job_id, pod) == state


def test_a_job_waiting_for_the_node_is_pending_then_runs(slurm_cluster, make_pod):
    executor = SlurmExecutor()
    cpus = executor.node_resources()["cpus"]
    blocker = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--cpus-per-task={cpus}",
            "--mem=1",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        pod = make_pod({"main": "exit 0"})
        job_id = executor.submit(pod)
        first = executor.state(job_id, pod)
        assert first.phase == "Pending" and first.slurm_state == "PD"
        assert first.started_at is None and not (pod / "StartedAt.time").exists()

        state, phases = wait_for(executor, job_id, pod, lambda s: s.finished)
        assert phases[0] == "Pending" and phases[-1] == "Succeeded"
        assert state.slurm_state == "CD"
    finally:
        subprocess.run(["scancel", blocker], check=False)


def test_a_script_exiting_3_fails_with_exit_code_3(executor, make_pod):
    pod = make_pod({"main": "echo about to fail >&2; exit 3"})
    job_id = executor.submit(pod)

    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished)

    assert (state.phase, state.exit_code, state.reason) == ("Failed", 3, "Error: 3")
    assert state.slurm_state == "F"
    assert "about to fail" in (pod / "run-main.out").read_text()


def test_the_highest_container_code_decides(executor, make_pod):
    pod = make_pod({"first": "exit 0", "second": "sleep 0.3; exit 2"})
    job_id = executor.submit(pod)

    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished)

    assert (state.phase, state.exit_code) == ("Failed", 2)
    assert (pod / "run-first.status").read_text().strip() == "0"


def test_cancel_stops_the_job_and_reports_failed_cancelled(executor, make_pod):
    pod = make_pod({"main": "echo $$ > ctr.pid; exec sleep 300"})
    (pod / "job.sh").write_text((pod / "job.sh").read_text().replace("ctr.pid", f"{pod}/ctr.pid"))
    job_id = executor.submit(pod)
    wait_for(executor, job_id, pod, lambda s: s.phase == "Running" and (pod / "ctr.pid").exists())
    container_pid = int((pod / "ctr.pid").read_text())
    assert pid_alive(container_pid)

    started = time.monotonic()
    executor.cancel(job_id, pod)
    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished, timeout=20)

    assert state.phase == "Failed" and state.reason == "Cancelled"
    assert state.exit_code != 0
    deadline = time.monotonic() + 10
    while pid_alive(container_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(container_pid), "the container process survived the cancel"
    assert time.monotonic() - started < 10
    if isinstance(executor, SlurmExecutor):
        assert state.slurm_state == "CA"
        assert squeue_active(job_id) == ""
    executor.cancel(job_id, pod)  # cancelling a finished job again is fine
    executor.cancel(job_id, None)


def test_sbatch_refusing_a_bad_time_gives_its_own_message(executor, make_pod):
    pod = make_pod({"main": "true"}, sbatch=["--time=abc"])

    with pytest.raises(SubmitError, match="Invalid --time specification"):
        executor.submit(pod)
    assert not (pod / "JobID.jid").exists()


def test_sbatch_errors_are_passed_on_word_for_word(slurm_cluster, make_pod):
    pod = make_pod({"main": "true"}, sbatch=["--partition=nope"])

    with pytest.raises(SubmitError) as caught:
        SlurmExecutor().submit(pod)
    assert "invalid partition specified" in str(caught.value).lower()


def test_a_job_slurm_has_forgotten_is_judged_by_its_status_files(slurm_cluster, tmp_path):
    executor = SlurmExecutor()
    never_existed = "987654"
    (tmp_path / "run-main.status").write_text("0\n")
    assert executor.state(never_existed, tmp_path).phase == "Succeeded"

    (tmp_path / "run-side.status").write_text("5\n")
    assert executor.state(never_existed, tmp_path).exit_code == 5

    empty = tmp_path / "empty"
    empty.mkdir()
    lost = executor.state(never_existed, empty)
    assert lost.phase == "Failed" and "no longer knows job 987654" in lost.reason


def test_slurm_node_resources_match_the_machine(slurm_cluster, make_pod):
    resources = SlurmExecutor().node_resources()
    assert resources["cpus"] == os.cpu_count()
    assert 0 <= resources["free_cpus"] <= resources["cpus"]
    meminfo_mib = int(open("/proc/meminfo").readline().split()[1]) // 1024
    assert meminfo_mib - 4096 < resources["memory_mib"] < meminfo_mib
    assert 0 <= resources["free_memory_mib"] <= resources["memory_mib"]


def test_process_executor_kills_a_job_at_its_time_limit(make_pod):
    executor = ProcessExecutor(kill_grace_s=2)
    pod = make_pod({"main": "echo started; sleep 60"}, sbatch=["--time=0:02"])
    started = time.monotonic()
    job_id = executor.submit(pod)

    state, _ = wait_for(executor, job_id, pod, lambda s: s.finished, timeout=20)

    assert 1.5 < time.monotonic() - started < 8
    assert state.phase == "Failed" and state.reason == "SlurmJobTimeout"
    assert state.slurm_state == "TO"


def test_process_executor_survives_its_own_restart(make_pod):
    pod = make_pod({"main": "sleep 1; exit 4"})
    job_id = ProcessExecutor().submit(pod)
    fresh = ProcessExecutor()  # as after a server restart: not the job's parent

    assert fresh.state(job_id, pod).phase == "Running"
    state, _ = wait_for(fresh, job_id, pod, lambda s: s.finished)
    assert (state.phase, state.exit_code) == ("Failed", 4)


def test_process_node_resources():
    resources = ProcessExecutor().node_resources()
    assert resources["cpus"] == os.cpu_count() and resources["memory_mib"] > 0


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("10", 600),
        ("10:30", 630),
        ("1:00:05", 3605),
        ("2-3", 2 * 86400 + 3 * 3600),
        ("1-0:10", 86400 + 600),
        ("1-00:00:01", 86401),
        ("0", 0),
        ("INFINITE", 0),
    ],
)
def test_slurm_time_specifications(text, seconds):
    assert parse_slurm_time(text) == seconds


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-5", "1-a", "", "1.5"])
def test_bad_slurm_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_slurm_time(text)


def test_choose_executor(slurm_cluster, monkeypatch):
    executor, reason = choose_executor()
    assert executor.kind == "slurm" and "slurm" in reason.lower()
    assert choose_executor("process")[0].kind == "process"
    with pytest.raises(ValueError, match="'auto', 'slurm' or 'process'"):
        choose_executor("kubernetes")

    monkeypatch.setenv("PATH", "/nonexistent")
    executor, reason = choose_executor()
    assert executor.kind == "process" and reason == "plain processes: sbatch is not on PATH"
    with pytest.raises(ExecutorError, match="slurm-cluster.sh start"):
        choose_executor("slurm")
