"""Jobs end to end on the real single-node Slurm: POST /job -> pod -> job.slurm -> sbatch ->
bubblewrap -> the real faas-supervisor -> the script; status and logs through the API."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest

from oscar_jupyter.local.state import HomeLayout, LocalState

from ..conftest import process_running
from .conftest import job_status, submit, wait_for_status
from .contract import check_response

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

# The first job may wait for the supervisor kit (a venv built with pip on first use).
FIRST_RUN_TIMEOUT = 900
LOG_PATH = "/system/logs/{serviceName}/{jobName}"

STREAMING_SCRIPT = """\
echo "job=$JOB_UUID node=$RESOURCE_ID event=$(cat "$INPUT_FILE_PATH") has-event=${EVENT:+yes}"
i=1
while [ $i -le 6 ]; do echo "line $i"; sleep 0.5; i=$((i + 1)); done
"""
SLOW_IF_ASKED = """\
if [ "$(cat "$INPUT_FILE_PATH")" = slow ]; then sleep 120; fi
echo done
"""


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def job_record(local_oscar, job: str) -> dict:
    return LocalState(HomeLayout(local_oscar.home).state_file).jobs[job]


def in_squeue(job_id: str) -> bool:
    """Whether squeue lists the job as pending, running or completing (or, with the process
    executor, whether its process still runs)."""
    if job_id.startswith("process-"):
        return process_running(int(job_id.removeprefix("process-")))
    result = subprocess.run(
        ["squeue", "--noheader", "-o", "%i", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return job_id in result.stdout.split()


def gone_from_squeue(job_id: str, timeout: float = 15) -> bool:
    """scancel returns at once; Slurm takes a moment to end the job's processes."""
    deadline = time.monotonic() + timeout
    while in_squeue(job_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def server_log(local_oscar) -> str:
    return (local_oscar.home / "server.log").read_text()


def test_a_job_streams_its_log_while_running_and_succeeds(anonymous, api, make_service):
    service = make_service(script=STREAMING_SCRIPT)
    job = f"{service['name']}-stream"
    assert submit(anonymous, service, b64("hello-payload"), job=job).status_code == 201

    # The log is read as the client reads it, from the start: the listing's states arrive
    # through the plugin's 10 s status cache (B9), so "Running" may come late or never.
    texts: list[str] = []
    deadline = time.monotonic() + FIRST_RUN_TIMEOUT
    status = {}
    while time.monotonic() < deadline:
        status = job_status(api, service["name"], job)
        if status["status"] in ("Succeeded", "Failed"):
            break
        response = api.get(f"/system/logs/{service['name']}/{job}")
        text = check_response(response, "GET", LOG_PATH)
        if text.strip() and (not texts or text != texts[-1]):
            texts.append(text)
        time.sleep(0.3)
    assert status["status"] == "Succeeded", status
    partial = [text for text in texts if "line 1" in text and "line 6" not in text]
    assert partial, "the log did not grow while the job ran"
    assert texts[-1].startswith(partial[0][:20])
    for moment in ("creation_time", "start_time", "finish_time"):
        assert status[moment].endswith("Z"), status

    log = api.get(f"/system/logs/{service['name']}/{job}").text
    assert f"job={job} node=local-slurm event=hello-payload has-event=yes" in log
    assert "line 6" in log
    assert log.index("line 1") < log.index("line 6")


def test_deleting_a_running_job_scancels_it_and_removes_its_directory(
    anonymous, api, make_service, local_oscar
):
    service = make_service(script=SLOW_IF_ASKED)
    job = f"{service['name']}-cancel"
    assert submit(anonymous, service, b64("slow"), job=job).status_code == 201
    wait_for_status(api, service["name"], job, {"Running"}, timeout=FIRST_RUN_TIMEOUT)
    record = job_record(local_oscar, job)
    assert in_squeue(record["job_id"])
    assert Path(record["pod_dir"]).is_dir()

    response = api.delete(f"/system/logs/{service['name']}/{job}")
    assert response.status_code == 204
    check_response(response, "DELETE", LOG_PATH)
    assert gone_from_squeue(record["job_id"])
    assert not Path(record["pod_dir"]).exists()
    # B7: no pod any more: logs.go 279-283 panics on a nil error, 500 with no body.
    assert api.get(f"/system/logs/{service['name']}/{job}").status_code == 500
    assert job not in api.get(f"/system/logs/{service['name']}").json()["jobs"]


def test_b3_a_flag_sbatch_rejects_fails_the_job_with_an_empty_log_and_says_why_in_the_pod(
    anonymous, api, make_service, local_oscar
):
    """B3 (OSCAR.md section 13): sbatch's stderr makes the plugin's /create answer 504 and
    remove the job directory (Create.go 258-264); the VK sets the pod Failed, reason
    ProviderFailed, with the text as message (virtualkubelet.go 1673-1736 at 0.6.1). OSCAR's
    listing says Failed; its log route serves the plugin's GetLogs of nothing: empty. Only the
    pod status (the Kubernetes API, admins) says why."""
    service = make_service(annotations={"slurm-job.vk.io/flags": "--time=abc"})
    job = f"{service['name']}-badflag"
    assert submit(anonymous, service, b64("x"), job=job).status_code == 201
    status = wait_for_status(
        api, service["name"], job, {"Succeeded", "Failed"}, timeout=FIRST_RUN_TIMEOUT
    )
    assert status["status"] == "Failed"
    assert set(status) <= {"status", "creation_time", "start_time", "finish_time"}
    response = api.get(f"/system/logs/{service['name']}/{job}")
    assert check_response(response, "GET", LOG_PATH) == ""
    record = job_record(local_oscar, job)
    assert record["pod_dir"] is None and record.get("job_id") is None
    assert not list((local_oscar.home / "jobs").glob(f"*-{record['pod_uid']}"))
    [pod] = api.get(
        "/api/v1/namespaces/oscar-svc/pods", params={"labelSelector": f"job-name={job}"}
    ).json()["items"]
    assert pod["status"]["phase"] == "Failed" and pod["status"]["reason"] == "ProviderFailed"
    message = pod["status"]["message"]
    assert message.startswith("error doing createRequest() in RemoteExecution() return value ")
    assert "error creating pod (HTTP 504): HTTP InterLink session CreatePod#" in message
    assert "call exit status: 500. Body: sbatch: error: Invalid --time specification" in message
    [main] = pod["status"]["containerStatuses"]
    assert main["state"]["terminated"] == {
        "exitCode": 1,
        "reason": "ProviderFailed",
        "message": message,
    }
    assert "Invalid --time specification" in server_log(local_oscar)


def test_a_job_for_another_node_stays_pending_and_the_log_says_why(
    anonymous, api, make_service, local_oscar
):
    service = make_service(interlink_node_name="vega-new-vk")
    job = f"{service['name']}-elsewhere"
    assert submit(anonymous, service, b64("x"), job=job).status_code == 201
    time.sleep(2)
    assert job_status(api, service["name"], job)["status"] == "Pending"
    # B8: a pod with no node has no log location: 200, empty.
    response = api.get(f"/system/logs/{service['name']}/{job}")
    assert (response.status_code, response.text) == (200, "")
    log = server_log(local_oscar)
    assert f"job {job} stays Pending" in log and "'vega-new-vk'" in log


def test_a_service_without_a_node_stays_pending_and_never_reaches_slurm(
    anonymous, api, make_service, local_oscar
):
    """job.go: without interlink_node_name the pod goes to an ordinary node, where a docker://
    image name is invalid: Pending forever, its log empty (B8)."""
    service = make_service(interlink_node_name="")
    job = f"{service['name']}-nonode"
    assert submit(anonymous, service, b64("x"), job=job).status_code == 201
    time.sleep(1.5)
    assert job_status(api, service["name"], job)["status"] == "Pending"
    response = api.get(f"/system/logs/{service['name']}/{job}")
    assert (response.status_code, response.text) == (200, "")
    assert job_record(local_oscar, job).get("job_id") is None
    assert f"service {service['name']} has no interlink_node_name" in server_log(local_oscar)


def test_deleting_jobs_keeps_unfinished_ones_unless_all(anonymous, api, make_service, local_oscar):
    service = make_service(script=SLOW_IF_ASKED)
    name = service["name"]
    fast, slow = f"{name}-fast", f"{name}-slow"
    assert submit(anonymous, service, b64("fast"), job=fast).status_code == 201
    wait_for_status(api, name, fast, {"Succeeded"}, timeout=FIRST_RUN_TIMEOUT)
    assert submit(anonymous, service, b64("slow"), job=slow).status_code == 201
    wait_for_status(api, name, slow, {"Running"}, timeout=120)
    slow_id = job_record(local_oscar, slow)["job_id"]

    response = api.delete(f"/system/logs/{name}")
    assert response.status_code == 204
    check_response(response, "DELETE", "/system/logs/{serviceName}")
    assert list(api.get(f"/system/logs/{name}").json()["jobs"]) == [slow]
    assert api.delete(f"/system/logs/{name}", params={"all": "true"}).status_code == 204
    assert api.get(f"/system/logs/{name}").json()["jobs"] == {}
    assert gone_from_squeue(slow_id)


def test_deleting_a_service_cancels_its_jobs(anonymous, api, local_oscar):
    body = {
        "name": "svc-gone",
        "image": "docker://alpine",
        "script": SLOW_IF_ASKED,
        "interlink_node_name": "local-slurm",
    }
    assert api.post("/system/services", json=body).status_code == 201
    service = api.get("/system/services/svc-gone").json()
    assert submit(anonymous, service, b64("slow"), job="svc-gone-1").status_code == 201
    wait_for_status(api, "svc-gone", "svc-gone-1", {"Running"}, timeout=FIRST_RUN_TIMEOUT)
    record = job_record(local_oscar, "svc-gone-1")
    assert api.delete("/system/services/svc-gone").status_code == 204
    assert gone_from_squeue(record["job_id"])
    assert not Path(record["pod_dir"]).exists()
