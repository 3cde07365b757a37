"""OIDC-style users of the local OSCAR and OSCAR v4.1.2's ownership rules (real HTTP).

alice and bob come from the session's local OSCAR (tests/conftest.py): profiles `local-alice`
and `local-bob` hold only an endpoint and a refresh token, exchanged at the local Keycloak-style
token endpoint for access tokens.
"""

from __future__ import annotations

import base64
import stat

import httpx
import pytest
import yaml

from oscar_jupyter.local.users import unverified_claims

from .conftest import job_status, unique_name, wait_for_status
from .contract import check_response

pytestmark = pytest.mark.slurm

SCRIPT = "echo hi\n"


def create(client: httpx.Client, **fields) -> str:
    body = {
        "name": unique_name("u"),
        "image": "docker://python:3.11-slim",
        "script": SCRIPT,
        "interlink_node_name": "vega-elsewhere",
        **fields,
    }  # never reaches Slurm
    response = client.post("/system/services", json=body)
    assert response.status_code == 201, response.text
    return body["name"]


def test_user_profiles_hold_only_endpoint_and_refresh_token(local_oscar):
    config = yaml.safe_load(local_oscar.profile_path.read_text())["oscar"]
    assert local_oscar.user_profiles == {"alice": "local-alice", "bob": "local-bob"}
    for name in local_oscar.user_profiles.values():
        # No kubeconfig: OSCAR users have no Kubernetes access (OSCAR.md section 13, B5).
        assert set(config[name]) == {"endpoint", "oidc_refresh_token", "ssl_verify"}
    # The admin's profile names the admin's kubeconfig (the only credential it accepts).
    assert config["local"]["jupyter"] == {"kubeconfig": str(local_oscar.kubeconfig)}
    entry = config["local-alice"]
    claims = unverified_claims(entry["oidc_refresh_token"])
    assert claims["iss"] == f"{local_oscar.endpoint}/realms/local"
    assert stat.S_IMODE(local_oscar.profile_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((local_oscar.home / "oidc-secret").stat().st_mode) == 0o600


def test_access_tokens_are_jwts_with_the_expected_claims(local_oscar):
    token = local_oscar.user_token("alice")
    claims = unverified_claims(token)
    assert len(token) != 64  # 64 characters would be a service token (job.go)
    assert claims["sub"] == "alice@local" and claims["preferred_username"] == "alice"
    assert claims["iss"] == f"{local_oscar.endpoint}/realms/local" and claims["exp"] > 0
    assert token not in (local_oscar.home / "server.log").read_text()


def test_bad_tokens_are_refused(anonymous, local_oscar):
    token = local_oscar.user_token("alice")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (
        anonymous.get("/system/services", headers={"Authorization": f"Bearer {forged}"}).status_code
        == 401
    )
    url = "/realms/local/protocol/openid-connect/token"
    response = anonymous.post(url, data={"grant_type": "refresh_token", "refresh_token": "x.y.z"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_owner_visibility_and_403s(api, alice, bob):
    name = create(alice)
    service = check_response(
        alice.get(f"/system/services/{name}"), "GET", "/system/services/{serviceName}"
    )
    assert service["owner"] == "alice@local" and service["visibility"] == "private"
    response = bob.get(f"/system/services/{name}")
    assert response.status_code == 403
    assert response.text == "User bob@local doesn't have permision to get this service"
    assert name not in [s["name"] for s in bob.get("/system/services").json()]
    assert name in [s["name"] for s in alice.get("/system/services").json()]
    assert name in [s["name"] for s in api.get("/system/services").json()]  # admin sees all
    update = {"name": name, "image": "docker://python:3.11-slim", "script": "echo b\n"}
    response = bob.put("/system/services", json=update)
    assert response.status_code == 403 and "modify this service" in response.text
    # delete.go looks in the caller's own namespace: another owner's service is not found.
    assert bob.delete(f"/system/services/{name}").status_code == 404
    assert alice.delete(f"/system/services/{name}").status_code == 204


def test_the_job_routes_of_a_service_the_caller_may_not_use(alice, bob):
    """pkg/handlers/logs.go: getAuthorizedService writes nothing for a caller who may not use
    the service, so the listing, the log and delete-all answer gin's default, 200 with an empty
    body; the job delete handler writes 403 itself (517-520). Nothing is deleted."""
    name = create(alice)  # private
    job = f"{name}-hers"
    headers = {"X-Delegated-Job-ID": job}
    assert alice.post(f"/job/{name}", content=b"x", headers=headers).status_code == 201
    for response in (
        bob.get(f"/system/logs/{name}"),  # logs.go 69-72
        bob.get(f"/system/logs/{name}/{job}"),  # logs.go 262-265
        bob.delete(f"/system/logs/{name}", params={"all": "true"}),  # logs.go 200-203
    ):
        assert (response.status_code, response.content) == (200, b""), response.request.url
    response = bob.delete(f"/system/logs/{name}/{job}")
    assert response.status_code == 403
    assert response.text == "You do not have permission to access this service"
    assert list(alice.get(f"/system/logs/{name}").json()["jobs"]) == [job]  # still there
    assert alice.delete(f"/system/services/{name}").status_code == 204


def test_deleting_a_job_of_a_missing_service_is_403_even_for_the_admin(api, bob):
    # logs.go 517-520: getAuthorizedService set 404 without writing; the handler's 403 wins.
    for client in (api, bob):
        response = client.delete("/system/logs/no-such-service/no-such-job")
        assert response.status_code == 403
        assert response.text == "You do not have permission to access this service"
    # The other job routes keep getAuthorizedService's 404 (logs.go 568-569).
    assert api.get("/system/logs/no-such-service").status_code == 404
    assert api.get("/system/logs/no-such-service/no-such-job").status_code == 404
    assert api.delete("/system/logs/no-such-service").status_code == 404


def test_another_users_job_in_a_service_both_may_use(api, alice, bob):
    """A public service of alice: bob may use it, so logs.go lets him read and delete her jobs;
    only the listing looks at the owner label (74-85). Log: 275-277; delete: 526-541;
    delete-all: 213-220."""
    name = create(alice, visibility="public", interlink_node_name="local-slurm")
    first, second = f"{name}-1", f"{name}-2"
    body = base64.b64encode(b"{}")  # an interLink pod runs `echo $EVENT | base64 -d | ...`
    for job in (first, second):
        headers = {"X-Delegated-Job-ID": job}
        assert alice.post(f"/job/{name}", content=body, headers=headers).status_code == 201
    for job in (first, second):
        wait_for_status(api, name, job, {"Succeeded"}, timeout=120)
    assert bob.get(f"/system/logs/{name}").json()["jobs"] == {}  # not his: not listed
    hers = alice.get(f"/system/logs/{name}/{first}")
    assert hers.status_code == 200 and hers.text
    theirs = bob.get(f"/system/logs/{name}/{first}")
    assert (theirs.status_code, theirs.text) == (200, hers.text)
    assert bob.delete(f"/system/logs/{name}/{first}").status_code == 204
    assert set(alice.get(f"/system/logs/{name}").json()["jobs"]) == {second}
    assert bob.delete(f"/system/logs/{name}").status_code == 204  # every user's succeeded jobs
    assert alice.get(f"/system/logs/{name}").json()["jobs"] == {}
    assert alice.delete(f"/system/services/{name}").status_code == 204


def test_public_and_restricted_services(alice, bob):
    public = create(alice, visibility="public")
    restricted = create(alice, visibility="restricted", allowed_users=["bob@local"])
    assert bob.get(f"/system/services/{public}").status_code == 200
    assert bob.get(f"/system/services/{restricted}").status_code == 200
    listed = [s["name"] for s in bob.get("/system/services").json()]
    assert public in listed and restricted in listed
    for name in (public, restricted):
        assert alice.delete(f"/system/services/{name}").status_code == 204


def test_names_are_unique_across_owners(alice, bob):
    name = create(alice)
    response = bob.post("/system/services", json={"name": name, "image": "x", "script": "y"})
    assert response.status_code == 400
    assert response.text == "A service with the provided name already exists"
    alice.delete(f"/system/services/{name}")


def test_job_owners_and_listing_filter(anonymous, api, alice, local_oscar):
    name = create(alice, visibility="public")
    token = alice.get(f"/system/services/{name}").json()["token"]
    by_alice, by_token = f"{name}-alice", f"{name}-token"
    assert (
        alice.post(
            f"/job/{name}", content=b"x", headers={"X-Delegated-Job-ID": by_alice}
        ).status_code
        == 201
    )
    assert (
        anonymous.post(
            f"/job/{name}",
            content=b"x",
            headers={"Authorization": f"Bearer {token}", "X-Delegated-Job-ID": by_token},
        ).status_code
        == 201
    )
    with local_oscar.user_client("bob") as bob:
        bob.get("/system/config")
        assert bob.get(f"/system/logs/{name}").json()["jobs"] == {}  # public, but not his jobs
    # job.go labels only OIDC submissions with the owner; service-token jobs have no label.
    assert list(alice.get(f"/system/logs/{name}").json()["jobs"]) == [by_alice]
    assert set(api.get(f"/system/logs/{name}").json()["jobs"]) == {by_alice, by_token}
    alice.delete(f"/system/services/{name}")


def test_a_job_with_an_oidc_token_needs_a_provisioned_user(local_oscar, alice):
    name = create(alice, visibility="public")
    # The session's own users are provisioned by now; a token from another issuer is 400.
    with httpx.Client(base_url=local_oscar.endpoint, timeout=30) as client:
        claims_token = local_oscar.user_token("bob")
        header, payload, signature = claims_token.split(".")
        import json

        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["iss"] = "https://elsewhere.example/realms/x"
        other = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        response = client.post(
            f"/job/{name}",
            content=b"x",
            headers={"Authorization": f"Bearer {header}.{other}.{signature}"},
        )
        assert response.status_code == 400 and "elsewhere.example" in response.text
    alice.delete(f"/system/services/{name}")


def test_job_listing_pages_at_70(api, make_service, anonymous):
    service = make_service(interlink_node_name="vega-elsewhere")  # Pending, never on Slurm
    headers = {"Authorization": f"Bearer {service['token']}"}
    for index in range(71):
        job = f"{service['name']}-{index:03d}"
        response = anonymous.post(
            f"/job/{service['name']}", content=b"x", headers={**headers, "X-Delegated-Job-ID": job}
        )
        assert response.status_code == 201
    first = check_response(
        api.get(f"/system/logs/{service['name']}"), "GET", "/system/logs/{serviceName}"
    )
    assert len(first["jobs"]) == 70 and first["remaining_jobs"] == 1
    second = api.get(f"/system/logs/{service['name']}", params={"page": first["next_page"]}).json()
    assert list(second["jobs"]) == [f"{service['name']}-070"] and "next_page" not in second
    assert job_status(api, service["name"], f"{service['name']}-000")["status"] == "Pending"


def test_deleting_a_service_deletes_its_suspended_and_pending_jobs(api, alice, local_oscar):
    from oscar_jupyter.local.state import HomeLayout, LocalState

    name = create(alice, cpu="64")  # over alice's quota: Suspended
    job = f"{name}-big"
    assert (
        alice.post(f"/job/{name}", content=b"x", headers={"X-Delegated-Job-ID": job}).status_code
        == 201
    )
    assert alice.delete(f"/system/services/{name}").status_code == 204
    assert job not in LocalState(HomeLayout(local_oscar.home).state_file).jobs
    assert not (local_oscar.home / "bodies" / job).exists()
