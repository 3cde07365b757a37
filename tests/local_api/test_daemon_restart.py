"""`oscar-jupyter local start|status|stop` and restarts: services and jobs survive, nothing is
left running. Uses its own home, so it does not disturb the session's local OSCAR."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from oscar_jupyter.local import daemon
from oscar_jupyter.local.state import HomeLayout, LocalState

from ..conftest import executor_choice, free_port, process_running, slurm_job_ids_alive
from .conftest import wait_for_status

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

SCRIPT = 'if [ "$(cat "$INPUT_FILE_PATH")" = slow ]; then sleep 120; fi\necho "done $JOB_UUID"\n'


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oscar_jupyter.cli", "local", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def post_job(client: httpx.Client, token: str, job: str, body: str) -> None:
    response = client.post(
        "/job/keep",
        content=base64.b64encode(body.encode()),
        auth=None,
        headers={"Authorization": f"Bearer {token}", "X-Delegated-Job-ID": job},
    )
    assert response.status_code == 201, response.text


def test_cli_start_status_stop_and_a_restart_keeps_services_and_jobs(slurm_cluster, tmp_path):
    home, config = tmp_path / "home", tmp_path / "cli" / "config.yaml"
    port = free_port()
    started = cli(
        "start",
        "--home",
        str(home),
        "--port",
        str(port),
        "--config",
        str(config),
        "--executor",
        executor_choice(),
    )
    assert started.returncode == 0, started.stderr
    endpoint = f"http://127.0.0.1:{port}"
    password = (home / "admin-password").read_text().strip()
    assert f"endpoint:          {endpoint}" in started.stdout
    assert f"executor:          {executor_choice()} (" in started.stdout
    assert password not in started.stdout + started.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    profile = yaml.safe_load(config.read_text())["oscar"]["local"]
    assert profile["endpoint"] == endpoint and profile["auth_user"] == "oscar"
    first_pid = int((home / "server.pid").read_text())

    with httpx.Client(base_url=endpoint, auth=("oscar", password), timeout=30) as client:
        service = {
            "name": "keep",
            "image": "docker://alpine",
            "script": SCRIPT,
            "log_level": "DEBUG",
            "interlink_node_name": "local-slurm",
        }
        assert client.post("/system/services", json=service).status_code == 201
        token = client.get("/system/services/keep").json()["token"]
        post_job(client, token, "keep-fast", "fast")
        wait_for_status(client, "keep", "keep-fast", {"Succeeded"}, timeout=900)
        fast_log = client.get("/system/logs/keep/keep-fast").text
        assert "done keep-fast" in fast_log
        post_job(client, token, "keep-slow", "slow")
        wait_for_status(client, "keep", "keep-slow", {"Running"}, timeout=120)
        # A job that ends while nobody lists it: the stop must settle it, not cancel it.
        post_job(client, token, "keep-unlisted", "fast")
        deadline = time.monotonic() + 120
        while "done keep-unlisted" not in client.get("/system/logs/keep/keep-unlisted").text:
            assert time.monotonic() < deadline, "keep-unlisted never ran"
            time.sleep(0.2)
        unlisted_id = LocalState(HomeLayout(home).state_file).jobs["keep-unlisted"]["job_id"]
        while slurm_job_ids_alive([unlisted_id]) and time.monotonic() < deadline:
            time.sleep(0.2)

    status = cli("status", "--home", str(home))
    assert status.returncode == 0, status.stderr
    assert endpoint in status.stdout and "local-slurm" in status.stdout
    assert "Running" in status.stdout and "Succeeded" in status.stdout
    slow_id = LocalState(HomeLayout(home).state_file).jobs["keep-slow"]["job_id"]

    stopped = cli("stop", "--home", str(home))
    assert stopped.returncode == 0, stopped.stderr
    assert "Cancelled 1 unfinished job(s): keep-slow" in stopped.stdout
    assert not process_running(first_pid)
    deadline = time.monotonic() + 15
    while slurm_job_ids_alive([slow_id]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert slurm_job_ids_alive([slow_id]) == []
    assert cli("status", "--home", str(home)).returncode == 3

    again = daemon.start(
        home=home, port=free_port(), executor=executor_choice(), config_path=config
    )
    try:
        with httpx.Client(base_url=again.endpoint, auth=("oscar", password), timeout=30) as client:
            assert client.get("/system/services/keep").json()["token"] == token
            jobs = client.get("/system/logs/keep").json()["jobs"]
            assert jobs["keep-fast"]["status"] == "Succeeded"
            assert jobs["keep-slow"]["status"] == "Failed"
            assert jobs["keep-unlisted"]["status"] == "Succeeded"  # finished is final
            assert client.get("/system/logs/keep/keep-fast").text == fast_log
        assert yaml.safe_load(config.read_text())["oscar"]["local"]["endpoint"] == again.endpoint
    finally:
        daemon.stop(home=home)
    assert not process_running(again.pid)


def test_a_busy_port_is_a_clear_error(local_oscar, tmp_path):
    busy = int(local_oscar.endpoint.rsplit(":", 1)[1])
    with pytest.raises(daemon.DaemonError, match="OSCAR_JUPYTER_LOCAL_PORT"):
        daemon.start(
            home=tmp_path / "other",
            port=busy,
            executor="process",
            config_path=tmp_path / "config.yaml",
            timeout=60,
        )
    assert daemon.status(home=tmp_path / "other").running is False


def test_start_twice_finds_the_running_server(local_oscar):
    again = daemon.start(home=local_oscar.home, config_path=local_oscar.profile_path)
    assert again.already_running and again.endpoint == local_oscar.endpoint
