"""The fault table (faults.yaml): a running job is cancelled, deleted or killed on the cluster,
and the blocking call ends with one clear state and message that holds no secret."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import oscar_jupyter
from oscar_jupyter import jobs as jobs_module
from oscar_jupyter import session as session_module
from oscar_jupyter.jobs import Job
from oscar_jupyter.local.state import HomeLayout, LocalState

from .table import record

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
NODE = "local-slurm"
CASES = yaml.safe_load((Path(__file__).with_name("faults.yaml")).read_text())
SECRET = "hunter2-do-not-show-me"
CELL = "import time\nprint('started', flush=True)\ntime.sleep(120)\nprint('not reached')\n"


def _slurm_job_id(job: Job) -> str:
    """The Slurm job of an offloaded cell, from the local OSCAR's state."""
    home = Path(os.environ["OSCAR_JUPYTER_LOCAL_HOME"])
    return LocalState(HomeLayout(home).state_file).jobs[job.name]["job_id"]


def _supervisor_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"faassupervisor" in cmdline:
                pids.append(int(proc.name))
    return pids


def _job_supervisor(job: Job) -> int:
    for pid in _supervisor_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if job.name.encode() in environ:
            return pid
    raise AssertionError(f"no supervisor process of job {job.name}")


ACTIONS: dict[str, Callable[[Job], None]] = {
    "scancel": lambda job: subprocess.run(["scancel", _slurm_job_id(job)], check=True),
    "delete_job": lambda job: job.client.delete_job(job.service, job.name),
    "delete_service": lambda job: job.client.delete_service(job.service),
    "kill_supervisor": lambda job: os.kill(_job_supervisor(job), signal.SIGKILL),
}


@pytest.fixture()
def connected(local_oscar, monkeypatch):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOCAL_HOME", str(local_oscar.home))
    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setattr(jobs_module, "SENTINEL_GRACE_SECONDS", 3.0)
    oscar_jupyter.connect("local")
    yield session_module.current()
    for job in session_module.current().jobs.values():
        if not job.is_done():
            job.cancel()


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_a_fault_ends_the_job_clearly(connected, case):
    expect = case["expect"]
    # A service of its own (distinct env), so deleting it touches no other test's jobs.
    job = oscar_jupyter.offload(
        CELL,
        node=NODE,
        time="00:05:00",
        wait=False,
        env={"API_TOKEN": SECRET, "CASE": case["case"].replace(" ", "_").replace(",", "")},
    )

    def act_once_started() -> None:
        deadline = time.monotonic() + 120
        while not any(line.text == "started" for line in job.lines()):
            assert time.monotonic() < deadline, f"{job.name} never started: {job.raw_log[-2000:]}"
            time.sleep(0.2)
        ACTIONS[case["action"]](job)

    actor = threading.Thread(target=act_once_started)
    actor.start()
    error_type = getattr(oscar_jupyter.jobs, expect["error"])
    with pytest.raises(error_type) as raised:
        job.result(timeout=180)
    actor.join()
    rendered = "\n".join(raised.value._render_traceback_())
    body = base64.b64encode(job.spec.job_body("")).decode()[:40]
    ok = (
        job.status() == expect["status"]
        and type(raised.value) is error_type
        and expect["says"] in rendered
        and expect.get("shows", "") in rendered
        and SECRET not in rendered
        and "EVENT" not in rendered
        and body not in rendered
        and "not reached" not in job.logs()
    )
    record("faults", case["case"], ok)
    assert job.status() == expect["status"], rendered
    assert type(raised.value) is error_type, rendered
    assert expect["says"] in rendered
    assert expect.get("shows", "") in rendered
    assert SECRET not in rendered and "EVENT" not in rendered and body not in rendered
    assert job.lines()[0].text == "started"  # the output streamed so far stays
