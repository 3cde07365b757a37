"""Kueue for OIDC users, GPUs, ImagePrefix, a real cluster's /system/status and the Kubernetes
API subset (real HTTP; the official kubernetes client for the latter)."""

from __future__ import annotations

import base64
import stat
import time

import httpx
import pytest

from oscar_jupyter.local import daemon

from ..conftest import executor_choice, free_port
from .conftest import job_status, unique_name, wait_for_status

pytestmark = pytest.mark.slurm

NODE = "local-slurm"


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def create(client: httpx.Client, **fields) -> str:
    body = {
        "name": unique_name("k"),
        "image": "docker://python:3.11-slim",
        "script": "sleep 1\n",
        "interlink_node_name": NODE,
        "log_level": "DEBUG",
        **fields,
    }
    response = client.post("/system/services", json=body)
    assert response.status_code == 201, response.text
    return body["name"]


def post(client: httpx.Client, service: str, job: str) -> None:
    """With the caller's bearer token, or the service token for the Basic admin."""
    headers = {"X-Delegated-Job-ID": job}
    if client.auth is not None and not client.headers.get("Authorization"):
        token = client.get(f"/system/services/{service}").json()["token"]
        response = httpx.post(
            str(client.base_url.join(f"/job/{service}")),
            content=b64("x"),
            headers={**headers, "Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        return
    response = client.post(f"/job/{service}", content=b64("x"), headers=headers)
    assert response.status_code == 201, response.text


def test_kueue_admits_a_users_jobs_within_quota_in_turn(api, alice):
    name = create(alice, cpu="1.5")  # quota cpu 2: one job at a time
    first, second = f"{name}-1", f"{name}-2"
    post(alice, name, first)
    post(alice, name, second)
    time.sleep(0.5)
    assert job_status(alice, name, first)["status"] != "Suspended"
    assert job_status(alice, name, second) == {"status": "Suspended"}
    # B7: a suspended Job has no pod: 500, no body.
    assert alice.get(f"/system/logs/{name}/{second}").status_code == 500
    wait_for_status(alice, name, first, {"Succeeded"}, timeout=120)
    wait_for_status(alice, name, second, {"Succeeded"}, timeout=120)
    alice.delete(f"/system/services/{name}")


def test_a_job_over_the_quota_alone_stays_suspended_and_admin_jobs_never_are(api, alice):
    big = create(alice, cpu="3")
    post(alice, big, f"{big}-1")
    gpu = create(alice, enable_gpu=True)  # GPU quota 0
    post(alice, gpu, f"{gpu}-1")
    time.sleep(2.5)
    assert job_status(alice, big, f"{big}-1") == {"status": "Suspended"}
    assert job_status(alice, gpu, f"{gpu}-1") == {"status": "Suspended"}
    assert alice.get(f"/system/logs/{big}/{big}-1").status_code == 500
    for name in (big, gpu):
        alice.delete(f"/system/services/{name}")


def test_a_gpu_pod_stays_pending_on_a_node_without_gpus(api):
    name = create(api, enable_gpu=True)
    post(api, name, f"{name}-1")
    time.sleep(1.5)
    assert job_status(api, name, f"{name}-1")["status"] == "Pending"
    response = api.get(f"/system/logs/{name}/{name}-1")  # B8: not scheduled, no location
    assert (response.status_code, response.text) == (200, "")
    api.delete(f"/system/services/{name}")


def test_the_kubernetes_client_lists_the_virtual_node(local_oscar):
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    assert stat.S_IMODE(local_oscar.kubeconfig.stat().st_mode) == 0o600
    api_client = k8s_config.new_client_from_config(str(local_oscar.kubeconfig))
    try:
        api = k8s.CoreV1Api(api_client)
        for selector in ("virtual-node.interlink/type=virtual-kubelet", "type=virtual-kubelet"):
            [node] = api.list_node(label_selector=selector).items
            assert node.metadata.name == NODE
            assert "nvidia.com/gpu" not in node.status.capacity  # 0 GPUs: left out (B13)
            assert node.status.capacity["cpu"] == "100"
            assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]
        assert api.list_node(label_selector="kubernetes.io/role=control-plane").items == []
    finally:
        api_client.close()


def test_the_kubernetes_api_takes_the_admins_credentials_only(anonymous, local_oscar):
    """As a kube-apiserver with its defaults: no credential is system:anonymous, whom RBAC
    grants nothing (403); any credential but the admin's is not authenticated (401): OSCAR's
    users have no Kubernetes access (OSCAR.md section 13, B5)."""
    response = anonymous.get("/api/v1/nodes")
    assert response.status_code == 403 and response.json()["reason"] == "Forbidden"
    assert response.json()["message"] == (
        'nodes is forbidden: User "system:anonymous" cannot list resource "nodes" in API '
        'group "" at the cluster scope'
    )
    wrong = httpx.get(f"{local_oscar.endpoint}/api/v1/nodes", auth=("oscar", "not-it"))
    assert wrong.status_code == 401 and wrong.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    with local_oscar.user_client("bob") as bob:
        assert bob.get("/api/v1/nodes").status_code == 401
        assert bob.get(f"/api/v1/nodes/{NODE}").status_code == 401
    admin = httpx.get(f"{local_oscar.endpoint}/api/v1/nodes", auth=("oscar", local_oscar.password))
    assert admin.status_code == 200 and [n["metadata"]["name"] for n in admin.json()["items"]]


def test_bob_cannot_read_alices_pod_log_with_anything_his_profile_holds(
    api, alice, local_oscar, anonymous, monkeypatch
):
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException

    from oscar_jupyter.config import JupyterSettings, load_profile, refresh_access_token
    from oscar_jupyter.follow import kubeconfig_at_hand

    name = create(alice, script="echo only-alice-may-read-this\n")
    job = f"{name}-1"
    post(alice, name, job)
    wait_for_status(api, name, job, {"Succeeded"}, timeout=120)

    # The admin finds the pod and reads its log through the kubeconfig of the `local` profile.
    admin_client = k8s_config.new_client_from_config(str(local_oscar.kubeconfig))
    try:
        core = k8s.CoreV1Api(admin_client)
        [pod] = core.list_namespaced_pod("oscar-svc", label_selector=f"job-name={job}").items
        pod_log = f"/api/v1/namespaces/oscar-svc/pods/{pod.metadata.name}/log"
        log = core.read_namespaced_pod_log(pod.metadata.name, "oscar-svc")
        assert "only-alice-may-read-this" in log
    finally:
        admin_client.close()

    # All bob's profile holds: the endpoint and a refresh token. No kubeconfig.
    monkeypatch.delenv("KUBECONFIG", raising=False)
    profile = load_profile(local_oscar.user_profiles["bob"], config_path=local_oscar.profile_path)
    assert JupyterSettings.of(profile).kubeconfig is None and kubeconfig_at_hand(profile) is None
    refresh = profile.refresh_token.reveal()
    access = refresh_access_token(profile).reveal()
    for header, status in (
        (None, 403),
        (f"Bearer {access}", 401),
        (f"Bearer {refresh}", 401),
        ("Basic " + base64.b64encode(f"bob:{refresh}".encode()).decode(), 401),
    ):
        headers = {"Authorization": header} if header else {}
        for path in (pod_log, "/api/v1/namespaces/oscar-svc/pods"):
            response = anonymous.get(path, headers=headers)
            assert response.status_code == status, (header and header[:12], path)
            assert "only-alice-may-read-this" not in response.text
    forbidden = anonymous.get(pod_log).json()["message"]
    assert forbidden == (
        f'pods "{pod.metadata.name}" is forbidden: User "system:anonymous" cannot get resource '
        '"pods/log" in API group "" in the namespace "oscar-svc"'
    )

    # The official client with a kubeconfig made of bob's token is refused too.
    bobs = k8s.Configuration(host=local_oscar.endpoint)
    bobs.api_key = {"authorization": f"Bearer {access}"}
    with k8s.ApiClient(bobs) as bobs_client:
        with pytest.raises(ApiException) as refused:
            k8s.CoreV1Api(bobs_client).read_namespaced_pod_log(pod.metadata.name, "oscar-svc")
    assert refused.value.status == 401
    alice.delete(f"/system/services/{name}")


@pytest.fixture(scope="module")
def strict_oscar(request, tmp_path_factory):
    """A second local OSCAR: site image prefix, one GPU, /system/status as a real cluster."""
    if executor_choice() != "process":
        request.getfixturevalue("slurm_cluster")
    root = tmp_path_factory.mktemp("strict-oscar")
    started = daemon.start(
        home=root / "home",
        port=free_port(),
        executor=executor_choice(),
        config_path=root / "config.yaml",
        timeout=120,
        users=["carol"],
        node_gpus=1,
        image_prefix="/cvmfs/unpacked.cern.ch/",
        real_status=True,
    )
    password = (root / "home" / "admin-password").read_text().strip()
    with httpx.Client(base_url=started.endpoint, auth=("oscar", password), timeout=30) as client:
        yield client
    daemon.stop(home=root / "home")


def test_real_status_lists_no_virtual_node(strict_oscar):
    status = strict_oscar.get("/system/status").json()
    assert status["cluster"]["nodes"] is None and status["cluster"]["nodes_count"] == 0
    [node] = strict_oscar.get("/api/v1/nodes").json()["items"]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"


def test_a_site_image_prefix_breaks_docker_images_as_on_a_real_site(strict_oscar):
    name = create(strict_oscar, script="echo hi\n")
    post(strict_oscar, name, f"{name}-1")
    info = wait_for_status(strict_oscar, name, f"{name}-1", {"Succeeded", "Failed"}, timeout=120)
    assert info["status"] == "Failed"
    pod_dirs = list((strict_oscar_home(strict_oscar)).glob("jobs/*/job.sh"))
    assert any("/cvmfs/unpacked.cern.ch/docker://python" in p.read_text() for p in pod_dirs)
    strict_oscar.delete(f"/system/services/{name}")


def strict_oscar_home(client: httpx.Client):
    return __import__("pathlib").Path(client.get("/system/info").json()["local"]["home"])
