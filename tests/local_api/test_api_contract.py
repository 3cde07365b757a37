"""The local OSCAR answers like OSCAR v4.1: paths, status codes, bodies, auth rules.

Every answer is checked against our contract of OSCAR's API (tests/local_api/contract.py).
"""

from __future__ import annotations

import re

import pytest

from .conftest import submit, unique_name
from .contract import check_response

pytestmark = pytest.mark.slurm


def test_health_needs_no_credentials(anonymous):
    response = anonymous.get("/health")
    assert response.status_code == 200 and response.text == "Ok"
    check_response(response, "GET", "/health")


def test_info_names_the_executor_and_container_runtime(api, local_oscar):
    info = check_response(api.get("/system/info"), "GET", "/system/info", allowed_extras=("local",))
    assert info["local"]["executor"] == local_oscar.executor
    assert info["local"]["executor_reason"] and info["local"]["container_runtime"]
    assert local_oscar.executor in info["serverless_backend"]["name"]


def test_config_says_interlink_is_available_and_no_secret_leaks(api, local_oscar):
    response = api.get("/system/config")
    config = check_response(response, "GET", "/system/config")
    assert config["config"]["interLink_available"] is True
    assert "serverless_backend" not in config["config"]  # pure Kube backend: no /run
    assert local_oscar.password not in response.text


def test_status_lists_no_virtual_node_and_kubernetes_lists_it_with_its_configured_capacity(api):
    # A real OSCAR's /system/status shows only nodes with metrics (pkg/handlers/status.go), and a
    # virtual kubelet publishes none: `nodes` is null (B14); the node, with its capacity, is in
    # the Kubernetes API. B13: interLink's configured capacity (virtualkubelet.go 52-56), not
    # this machine's: 100 CPUs, 3000G, 10000 pods, no GPU entry for 0 GPUs.
    status = check_response(api.get("/system/status"), "GET", "/system/status")
    assert status["cluster"]["nodes"] is None and status["cluster"]["nodes_count"] == 0
    node = api.get("/api/v1/nodes/local-slurm").json()
    assert node["metadata"]["labels"]["virtual-node.interlink/type"] == "virtual-kubelet"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "local-slurm"
    assert node["spec"]["taints"][0]["key"] == "virtual-node.interlink/no-schedule"
    assert node["status"]["capacity"] == {"cpu": "100", "memory": "3000G", "pods": "10000"}
    assert node["status"]["allocatable"] == node["status"]["capacity"]


def test_service_create_read_list_update_delete(api, make_service):
    service = make_service(
        annotations={"slurm-job.vk.io/flags": "--time=00:05:00"},
        environment={"variables": {"A": "1"}, "secrets": {"KEY": "hush"}},
    )
    name = service["name"]
    response = api.get(f"/system/services/{name}")
    read = check_response(response, "GET", "/system/services/{serviceName}")
    assert re.fullmatch(r"[0-9a-f]{64}", read["token"])
    assert (read["cpu"], read["memory"], read["log_level"]) == ("0.2", "256Mi", "DEBUG")
    assert read["owner"] == "cluster_admin" and read["namespace"] == "oscar-svc"
    assert read["environment"] == {"variables": {"A": "1"}, "secrets": {"KEY": ""}}
    listing = check_response(api.get("/system/services"), "GET", "/system/services")
    assert name in [s["name"] for s in listing]
    assert "hush" not in api.get("/system/services").text

    update = {"name": name, "image": read["image"], "script": "echo changed\n", "cpu": "1"}
    response = api.put("/system/services", json=update)
    assert response.status_code == 204 and response.content == b""
    check_response(response, "PUT", "/system/services")
    after = api.get(f"/system/services/{name}").json()
    assert after["script"] == "echo changed\n" and after["cpu"] == "1"
    assert after["token"] == read["token"]

    response = api.delete(f"/system/services/{name}")
    assert response.status_code == 204
    check_response(response, "DELETE", "/system/services/{serviceName}")
    response = api.get(f"/system/services/{name}")
    assert response.status_code == 404 and response.content == b""
    check_response(response, "GET", "/system/services/{serviceName}")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"image": "i", "script": "s"}, 400, '"name" is required'),
        ({"name": "a", "script": "s"}, 400, '"image" is required'),
        ({"name": "a", "image": "i"}, 400, '"script" is required'),
        ({"name": "Bad_Name", "image": "i", "script": "s"}, 400, "DNS-1123 label"),
        ({"name": "a" * 40, "image": "i", "script": "s"}, 400, "1 to 39 characters"),
        ({"name": "a", "image": "i", "script": "s", "cpu": 2}, 400, '"cpu" must be a string'),
        (
            {"name": "a", "image": "i", "script": "s", "annotations": {"x": 1}},
            400,
            '"annotations" must be an object of string values',
        ),
        (
            {"name": "a", "image": "i", "script": "s", "enable_gpu": "yes"},
            400,
            '"enable_gpu" must be true or false',
        ),
        ({"name": "a", "image": "i", "script": "s", "memory": "lots"}, 500, '"memory"'),
        ([1, 2], 400, "must be a JSON object"),
    ],
)
def test_invalid_service_definitions_are_refused_with_a_reason(api, body, status, words):
    if isinstance(body, dict) and body.get("name") == "a":
        body["name"] = unique_name("bad")
    response = api.post("/system/services", json=body)
    assert response.status_code == status
    assert words in response.text
    check_response(response, "POST", "/system/services")
    if isinstance(body, dict) and "name" in body:
        assert api.get(f"/system/services/{body['name']}").status_code in (400, 404)


def test_not_json_is_a_bad_request(api):
    response = api.post(
        "/system/services", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.text.startswith("The service specification is not valid")


def test_duplicate_service_is_a_bad_request(api, make_service):
    """create.go `serviceWithSameNameExists`: 400, not 409."""
    service = make_service()
    again = {"name": service["name"], "image": "x", "script": "y"}
    response = api.post("/system/services", json=again)
    assert response.status_code == 400
    assert response.text == "A service with the provided name already exists"


def test_unknown_and_invalid_service_names(api):
    missing = unique_name("missing")
    assert api.get(f"/system/services/{missing}").status_code == 404
    assert api.delete(f"/system/services/{missing}").status_code == 404
    response = api.put("/system/services", json={"name": missing, "image": "i", "script": "s"})
    assert response.status_code == 404
    check_response(response, "PUT", "/system/services")
    response = api.get("/system/services/not%20valid!")
    assert (response.status_code, response.text) == (400, "invalid serviceName")


def test_basic_auth_guards_every_system_route(anonymous, api, make_service, local_oscar):
    service = make_service()
    routes = [
        "/system/info",
        "/system/config",
        "/system/status",
        "/system/services",
        f"/system/services/{service['name']}",
        f"/system/logs/{service['name']}",
    ]
    for route in routes:
        response = anonymous.get(route)
        assert response.status_code == 401, route
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        wrong = anonymous.get(route, auth=(local_oscar.user, local_oscar.password + "x"))
        assert wrong.status_code == 401, route
        bearer = anonymous.get(route, headers={"Authorization": f"Bearer {service['token']}"})
        assert bearer.status_code == 401, route
    assert api.get("/system/info").status_code == 200


def test_job_takes_only_the_services_bearer_token(anonymous, api, make_service):
    service, other = make_service(), make_service()
    url = f"/job/{service['name']}"
    basic = api.build_request("GET", "/health")
    basic = next(api.auth.auth_flow(basic)).headers["Authorization"]
    cases = {
        "no header": {},
        "basic": {"Authorization": basic},
        "other service's token": {"Authorization": f"Bearer {other['token']}"},
        "64-character token": {"Authorization": "Bearer " + "0" * 64},
    }
    for case, headers in cases.items():
        response = anonymous.post(url, content=b"aGk=", headers=headers)
        assert response.status_code == 401, case
        check_response(response, "POST", "/job/{serviceName}")
    assert api.get(f"/system/logs/{service['name']}").json() == {"jobs": {}}


def test_job_small_codes_b14(anonymous, make_service):
    """OSCAR.md section 13, B14 (pkg/handlers/job.go, v4.1.2): an unknown service is an empty
    list, not an error (96-105), so it answers 401 to no Bearer and to any 64-character token
    (108-128), the codes of a bad token; a token that is no JWT makes GetIssuerFromToken fail:
    its 502 is written without a return, the missing issuer's 400 text is appended and gin
    keeps the first status (139-147). OSCAR's swagger declares no 502, so the contract does not
    either."""
    service = make_service()
    missing = f"/job/{unique_name('nope')}"
    for headers in ({}, {"Authorization": f"Bearer {service['token']}"}):
        response = anonymous.post(missing, content=b"aGk=", headers=headers)
        assert (response.status_code, response.content) == (401, b""), headers
    for url in (missing, f"/job/{service['name']}"):
        response = anonymous.post(url, content=b"aGk=", headers={"Authorization": "Bearer abc"})
        assert response.status_code == 502
        assert response.text == (
            "token is malformed: token contains an invalid number of segments"
            "Error getting oidc manager for issuer ''"
        )


def test_job_of_an_unknown_service_with_a_users_token_is_404(anonymous, local_oscar):
    with local_oscar.user_client("alice") as alice:
        alice.get("/system/config")  # provisions alice (oidc.go)
        response = alice.post(f"/job/{unique_name('nope')}", content=b"aGk=")
    assert response.status_code == 404


def test_delegated_job_ids_must_be_valid_and_unique(anonymous, api, make_service):
    service = make_service(interlink_node_name="elsewhere")  # jobs stay Pending: nothing runs
    response = submit(anonymous, service, b"aGk=", job="Not_Valid")
    assert response.status_code == 500 and "DNS-1123" in response.text
    job = f"{service['name']}-first"
    response = submit(anonymous, service, b"aGk=", job=job)
    assert response.status_code == 201 and response.content == b""
    check_response(response, "POST", "/job/{serviceName}")
    response = submit(anonymous, service, b"aGk=", job=job)
    assert response.status_code == 500 and "already exists" in response.text


def test_generated_job_names_keep_short_service_names(anonymous, api, make_service):
    service = make_service(interlink_node_name="elsewhere")
    assert submit(anonymous, service, b"aGk=").status_code == 201
    [job] = api.get(f"/system/logs/{service['name']}").json()["jobs"]
    assert re.fullmatch(re.escape(service["name"]) + r"-[0-9a-f-]{36}", job)


def test_logs_of_unknown_services_are_404_and_the_log_of_an_unknown_job_500(api, make_service):
    service = make_service()
    missing = unique_name("missing")
    job_path = "/system/logs/{serviceName}/{jobName}"
    for method, url, template in [
        ("GET", f"/system/logs/{missing}", "/system/logs/{serviceName}"),
        ("DELETE", f"/system/logs/{missing}", "/system/logs/{serviceName}"),
        ("DELETE", f"/system/logs/{service['name']}/nojob", job_path),
    ]:
        response = api.request(method, url)
        assert response.status_code == 404, url
        check_response(response, method, template)
    # B7 (OSCAR.md section 13; pkg/handlers/logs.go 279-283): no pod and a nil error, whose
    # Error() panics; gin's recovery answers 500 with no body.
    response = api.get(f"/system/logs/{service['name']}/nojob")
    assert (response.status_code, response.content) == (500, b"")
    check_response(response, "GET", job_path)


def test_unknown_routes_and_methods_get_gins_404(api):
    for method, url in [("GET", "/nothing"), ("PATCH", "/system/services"), ("GET", "/job/x")]:
        response = api.request(method, url)
        assert (response.status_code, response.text) == (404, "404 page not found"), url
