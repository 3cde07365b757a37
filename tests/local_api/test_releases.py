"""What a user sees differ between interLink / Slurm-plugin releases, end to end on the real
Slurm, and the behaviours all releases share (reference OSCAR.md section 13, B1-B14; the
local OSCAR's modules name the upstream file and line of each).

`local_oscar_0_6_1` models 0.6.1 (what sites run), `local_oscar` 0.6.2; `local_oscar_release`
runs a test on both."""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path

import httpx
import pytest

from oscar_jupyter.local import daemon
from oscar_jupyter.local.executors import ExecState
from oscar_jupyter.local.interlink import PluginConfig
from oscar_jupyter.local.oscar import LocalOscar
from oscar_jupyter.local.state import HomeLayout, LocalState

from .conftest import unique_name, wait_for_status

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

FIRST_RUN_TIMEOUT = 900  # the first job may wait for the supervisor kit
NODE = "local-slurm"


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def admin(handle) -> httpx.Client:
    return httpx.Client(base_url=handle.endpoint, auth=(handle.user, handle.password), timeout=60)


def run_job(handle, **service_fields) -> tuple[str, str, dict, str]:
    """Create a service on `handle`'s local OSCAR, run one job to its end; (service, job,
    listing entry, log)."""
    with admin(handle) as api:
        body = {
            "name": unique_name("r"),
            "image": "docker://python:3.11-slim",
            "script": "echo script-ran\n",
            "interlink_node_name": NODE,
            **service_fields,
        }
        assert api.post("/system/services", json=body).status_code == 201
        service = api.get(f"/system/services/{body['name']}").json()
        job = f"{service['name']}-1"
        post_job(handle, service, job)
        info = wait_for_status(
            api, service["name"], job, {"Succeeded", "Failed"}, timeout=FIRST_RUN_TIMEOUT
        )
        log = api.get(f"/system/logs/{service['name']}/{job}").text
        return service["name"], job, info, log


def post_job(handle, service: dict, job: str) -> None:
    """`POST /job` with the service token (the admin client's Basic auth would replace it)."""
    headers = {"Authorization": f"Bearer {service['token']}", "X-Delegated-Job-ID": job}
    response = httpx.post(
        f"{handle.endpoint}/job/{service['name']}", content=b64("x"), headers=headers, timeout=60
    )
    assert response.status_code == 201, response.text


def delete_service(handle, name: str) -> None:
    with admin(handle) as api:
        api.delete(f"/system/services/{name}")


# --- the releases are recorded -------------------------------------------------------------


def test_each_local_oscar_records_the_releases_it_models(local_oscar_release):
    handle = local_oscar_release
    release = handle.plugin_release
    state = json.loads((handle.home / "state.json").read_text())
    assert state["releases"] == {"plugin": release, "interlink": release}
    with admin(handle) as api:
        local = api.get("/system/info").json()["local"]
    assert (local["plugin_release"], local["interlink_release"]) == (release, release)
    assert local["node_capacity"] == {"cpu": "100", "memory": "3000G", "pods": "10000"}
    status = daemon.status(home=handle.home)
    assert (status.plugin_release, status.interlink_release) == (release, release)


def test_a_running_local_oscar_is_not_silently_given_other_releases(local_oscar_0_6_2):
    home = local_oscar_0_6_2.home
    with pytest.raises(daemon.DaemonError, match="models plugin 0.6.2, not 0.6.1; stop it"):
        daemon.start(home=home, config_path=local_oscar_0_6_2.profile_path, plugin_version="0.6.1")
    again = daemon.start(home=home, config_path=local_oscar_0_6_2.profile_path)
    assert again.already_running and again.plugin_release == "0.6.2"


# --- B1: pre-exec ------------------------------------------------------------------------------


def test_b1_a_pre_exec_swallows_job_sh_on_plugin_0_6_1(local_oscar_release):
    """Plugin 0.6.1 writes `pre-exec + " " + job.sh` on one line (prepare.go 1102-1108): the
    Slurm job only echoes job.sh's path, ends 0, and OSCAR says Succeeded although the script
    never ran. 0.6.2 runs it."""
    handle = local_oscar_release
    annotations = {"slurm-job.vk.io/pre-exec": "echo pre-exec-ran"}
    name, job, info, log = run_job(handle, annotations=annotations)
    assert info["status"] == "Succeeded"
    assert "pre-exec-ran" in log
    if handle.plugin_release == "0.6.1":
        assert "pre-exec-ran /" in log and log.rstrip().endswith("/job.sh")
        assert "script-ran" not in log
    else:
        assert "script-ran" in log
    delete_service(handle, name)


def test_b1_a_pre_exec_ending_in_a_newline_runs_on_every_release(local_oscar_release):
    handle = local_oscar_release
    annotations = {"slurm-job.vk.io/pre-exec": "echo pre-exec-ran\n"}
    name, _, info, log = run_job(handle, annotations=annotations)
    assert info["status"] == "Succeeded" and "pre-exec-ran\n" in log and "script-ran" in log
    delete_service(handle, name)


# --- B2: flags ---------------------------------------------------------------------------------


def test_b2_mem_bind_breaks_on_plugin_0_6_1(local_oscar_release):
    """0.6.1's `--mem(?:[ =]\\S+)?` cuts `--mem` out of `--mem-bind=local` (prepare.go 945-954):
    `#SBATCH -bind=local` is `-b ind=local` to sbatch, "Invalid --begin specification", and the
    job fails with an empty log (B3). 0.6.2 passes the flag on whole."""
    handle = local_oscar_release
    annotations = {"slurm-job.vk.io/flags": "--mem-bind=local"}
    name, _, info, log = run_job(handle, annotations=annotations)
    if handle.plugin_release == "0.6.1":
        assert info["status"] == "Failed" and log == ""
    else:
        assert info["status"] == "Succeeded" and "script-ran" in log
    delete_service(handle, name)


# --- B4: secrets --------------------------------------------------------------------------------


def test_b4_service_secrets_are_missing_in_the_job_on_interlink_0_6_1(local_oscar_release):
    handle = local_oscar_release
    name, _, info, log = run_job(
        handle,
        script='echo "secret=${API_KEY:-missing} variable=${PLAIN:-missing}"\n',
        environment={"variables": {"PLAIN": "here"}, "secrets": {"API_KEY": "s3cr3t"}},
    )
    assert info["status"] == "Succeeded"
    expected = "missing" if handle.interlink_release == "0.6.1" else "s3cr3t"
    assert f"secret={expected} variable=here" in log
    delete_service(handle, name)


# --- the same on every release ------------------------------------------------------------------


def test_b11_tmp_in_the_container_is_capped_at_64_mib(local_oscar):
    """--containall's session directory (apptainer.conf `sessiondir max size` 64): a cell that
    writes 100 MB to /tmp gets ENOSPC, as on a site."""
    script = (
        "df -k /tmp | tail -1\n"
        "head -c 100000000 /dev/zero > /tmp/big || echo tmp-is-full\n"
        "rm -f /tmp/big\n"
    )
    name, _, info, log = run_job(local_oscar, script=script)
    assert info["status"] == "Succeeded" and "tmp-is-full" in log
    assert " 65536 " in log
    delete_service(local_oscar, name)


def test_b6_follow_waits_for_the_container_log_with_the_plugins_message(local_oscar):
    """A pod whose Slurm job waits (`--begin`) has no run-<container>.out yet: following its
    log gets the plugin's message (GetLogs.go 52-55), without a newline, every 4 s. The
    stream ends once the job is deleted."""
    with admin(local_oscar) as api:
        body = {
            "name": unique_name("f"),
            "image": "docker://python:3.11-slim",
            "script": "echo late\n",
            "interlink_node_name": NODE,
            "annotations": {"slurm-job.vk.io/flags": "--begin=now+600"},
        }
        assert api.post("/system/services", json=body).status_code == 201
        service = api.get(f"/system/services/{body['name']}").json()
        job = f"{service['name']}-1"
        post_job(local_oscar, service, job)
        deadline = time.monotonic() + 60
        pods: list = []
        while time.monotonic() < deadline and not pods:
            pods = api.get(
                "/api/v1/namespaces/oscar-svc/pods", params={"labelSelector": f"job-name={job}"}
            ).json()["items"]
            record = LocalState(HomeLayout(local_oscar.home).state_file).jobs[job]
            pods = pods if record.get("job_id") else []
            time.sleep(0.2)
        [pod] = pods
        url = f"/api/v1/namespaces/oscar-svc/pods/{pod['metadata']['name']}/log"
        received: list[tuple[float, str]] = []
        with api.stream("GET", url, params={"follow": "true"}) as stream:
            for chunk in stream.iter_text():
                received.append((time.monotonic(), chunk))
                if len(received) == 2:
                    api.delete(f"/system/logs/{body['name']}/{job}")
        api.delete(f"/system/services/{body['name']}")
    text = "".join(chunk for _, chunk in received)
    waiting = [chunk for _, chunk in received if "Cannot open in follow mode" in chunk]
    assert len(waiting) >= 2
    assert waiting[0].startswith("HTTP InterLink session GetLogs#")
    assert waiting[0].endswith(
        "/run-oscar-container.out because it does not exist yet, sleeping before retrying..."
    )
    assert "\n" not in text  # job.out is empty too: the job never started
    assert received[1][0] - received[0][0] > 3.5


def test_b6_followed_output_arrives_in_4_s_bursts(local_oscar):
    script = 'i=1; while [ $i -le 16 ]; do echo "tick $i"; sleep 0.5; i=$((i + 1)); done\n'
    with admin(local_oscar) as api:
        body = {
            "name": unique_name("f"),
            "image": "docker://python:3.11-slim",
            "script": script,
            "interlink_node_name": NODE,
        }
        assert api.post("/system/services", json=body).status_code == 201
        service = api.get(f"/system/services/{body['name']}").json()
        job = f"{service['name']}-1"
        post_job(local_oscar, service, job)
        home = HomeLayout(local_oscar.home)
        deadline = time.monotonic() + FIRST_RUN_TIMEOUT
        while time.monotonic() < deadline:
            record = LocalState(home.state_file).jobs[job]
            if (
                record.get("pod_dir")
                and (Path(record["pod_dir"]) / "run-oscar-container.out").exists()
            ):
                break
            time.sleep(0.1)
        [pod] = api.get(
            "/api/v1/namespaces/oscar-svc/pods", params={"labelSelector": f"job-name={job}"}
        ).json()["items"]
        url = f"/api/v1/namespaces/oscar-svc/pods/{pod['metadata']['name']}/log"
        arrivals: list[tuple[float, str]] = []
        with api.stream("GET", url, params={"follow": "true"}) as stream:
            for chunk in stream.iter_text():
                arrivals.append((time.monotonic(), chunk))
        api.delete(f"/system/services/{body['name']}")
    text = "".join(chunk for _, chunk in arrivals)
    assert "tick 16" in text and "Cannot open in follow mode" not in text
    # Bursts: arrivals closer than 0.5 s belong together; the plugin sleeps 4 s in between.
    bursts = [arrivals[0][0]]
    for moment, _ in arrivals[1:]:
        if moment - bursts[-1] > 0.5:
            bursts.append(moment)
    assert len(bursts) >= 2
    assert all(bursts[i + 1] - bursts[i] > 3.5 for i in range(len(bursts) - 1))


def test_b9_two_jobs_never_change_state_within_one_plugin_cache_period(local_oscar):
    """The plugin's one global status cache (Status.go 125, 472-476): at most one job's state
    is computed per 10 s, so two jobs ending together reach Succeeded at least ~10 s apart."""
    with admin(local_oscar) as api:
        body = {
            "name": unique_name("c"),
            "image": "docker://python:3.11-slim",
            "script": "echo quick\n",
            "interlink_node_name": NODE,
        }
        assert api.post("/system/services", json=body).status_code == 201
        service = api.get(f"/system/services/{body['name']}").json()
        jobs = [f"{body['name']}-a", f"{body['name']}-b"]
        for job in jobs:
            post_job(local_oscar, service, job)
        succeeded: dict[str, float] = {}
        deadline = time.monotonic() + FIRST_RUN_TIMEOUT
        while len(succeeded) < 2 and time.monotonic() < deadline:
            listing = api.get(f"/system/logs/{body['name']}").json()["jobs"]
            for job in jobs:
                if listing[job]["status"] == "Succeeded":
                    succeeded.setdefault(job, time.monotonic())
            time.sleep(0.2)
        api.delete(f"/system/services/{body['name']}")
    assert len(succeeded) == 2
    assert abs(succeeded[jobs[0]] - succeeded[jobs[1]]) > 8


# --- B9 without Slurm: the VK's status loop against the plugin's cache --------------------------


class CountingExecutor:
    kind = "fake"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def state(self, job_id: str, pod_dir: Path) -> ExecState:
        self.asked.append(job_id)
        return ExecState("Running", "R", None, None, None, None)

    def cancel(self, job_id: str, pod_dir: Path | None = None) -> None:
        pass

    def node_resources(self) -> dict[str, int]:
        return {"cpus": 2, "memory_mib": 1024, "free_cpus": 2, "free_memory_mib": 1024}


def test_b9_the_status_loop_asks_for_one_job_per_cache_period_oldest_first(tmp_path):
    layout = HomeLayout(tmp_path)
    layout.create()
    executor = CountingExecutor()
    oscar = LocalOscar(
        layout,
        password="p",
        executor=executor,
        executor_reason="test",
        runtime_description="none",
        plugin_config=PluginConfig(f"{layout.jobs_dir}/"),
    )
    for name in ("a", "b", "c"):
        oscar.state.jobs[name] = {
            "name": name,
            "service": "s",
            "phase": "Pending",
            "job_id": f"id-{name}",
            "pod_dir": str(tmp_path / name),
            "executor": "fake",
        }
    asked = [oscar.status_loop(now=t) for t in (0, 5, 10, 15, 20, 25, 30, 31, 40)]
    # Every 5 s a round; a computation only when 10 s have passed since the last one.
    assert asked == ["a", None, "b", None, "c", None, "a", None, "b"]
    assert executor.asked == ["id-a", "id-b", "id-c", "id-a", "id-b"]
    assert oscar.refresh(oscar.state.jobs["c"])["phase"] == "Running"  # from the loop, cached
    assert len(executor.asked) == 5
    oscar.refresh(oscar.state.jobs["c"], force=True)
    assert executor.asked[-1] == "id-c"
    assert oscar._plugin_status_at != -math.inf
