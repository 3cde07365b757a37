"""OscarClient against the real local OSCAR on loopback (local_cluster.py): OSCAR v4.1.2's answers,
with a fault injector for the misbehaviours (retries, redirects, forced 401s)."""

from __future__ import annotations

import base64
import socket
import threading

import httpx
import pytest

from oscar_jupyter.client import OscarClient, OscarError, is_no_pod_answer
from oscar_jupyter.config import ClusterProfile, ConfigError, Secret, TokenRefreshError
from oscar_jupyter.local.users import CLIENT_ID, TOKEN_PATH, unverified_claims

from ..wire import cell_log
from .local_cluster import ADMIN_USER


@pytest.fixture
def client(cluster):
    with cluster.admin_client(backoff=0.01) as oscar:
        yield oscar


def basic(cluster) -> str:
    return "Basic " + base64.b64encode(f"{ADMIN_USER}:{cluster.password}".encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- cluster calls and Basic auth ------------------------------------------------------------


def test_health_needs_no_credentials(cluster):
    with OscarClient(ClusterProfile("anon", cluster.url)) as oscar:
        assert oscar.health() == "Ok"
    assert "authorization" not in cluster.seen("GET", "/health")[0].headers


def test_system_calls_send_basic_auth(client, cluster):
    assert client.info()["version"] == cluster.admin.get("/system/info").json()["version"]
    assert client.config()["config"]["interLink_available"] is True
    assert not client.status()["cluster"]["nodes"]  # a real cluster's: no metrics, null
    for path in ("/system/info", "/system/config", "/system/status"):
        assert cluster.seen("GET", path)[0].headers["authorization"] == basic(cluster)


def test_endpoint_with_a_path_prefix(cluster):
    with OscarClient(ClusterProfile("p", cluster.url + "/prefix")) as oscar:
        with pytest.raises(OscarError) as caught:
            oscar.health()
    assert cluster.requests[-1].path == "/prefix/health"
    assert caught.value.status_code == 404 and caught.value.message == "404 page not found"


def test_wrong_password_gives_401_with_the_fix(cluster):
    profile = ClusterProfile("test", cluster.url, user=ADMIN_USER, password=Secret("nope-pw"))
    with OscarClient(profile) as oscar, pytest.raises(OscarError) as caught:
        oscar.list_services()
    error = caught.value
    assert error.status_code == 401 and error.method == "GET"
    assert error.path == "/system/services"
    assert "OSCAR answered 401 on GET /system/services" in str(error)
    assert "OSCAR_USER/OSCAR_PASSWORD" in str(error) and "'oscar'" in str(error)
    assert "nope-pw" not in str(error) + repr(error)


# --- services --------------------------------------------------------------------------------


def test_service_lifecycle(client, cluster):
    definition = {"name": "runner-1", "image": "python:3.11", "script": "echo"}
    client.create_service(definition)
    assert [s["name"] for s in client.list_services()] == ["runner-1"]
    assert client.get_service("runner-1")["image"] == "python:3.11"
    client.update_service({**definition, "image": "python:3.12"})
    assert cluster.admin.get("/system/services/runner-1").json()["image"] == "python:3.12"
    client.delete_service("runner-1")
    assert client.list_services() == []
    post = cluster.seen("POST", "/system/services")[0]
    assert post.headers["authorization"] == basic(cluster)
    assert post.headers["content-type"] == "application/json"


def test_a_404_without_text_says_not_found(client):
    # OSCAR's read.go answers a missing service with a bare 404 (no body).
    with pytest.raises(OscarError) as caught:
        client.get_service("missing")
    assert str(caught.value) == "OSCAR answered 404 on GET /system/services/missing: Not Found"


def test_an_error_carries_the_server_s_text(cluster):
    cluster.create_service("alices", user="alice")
    profile = ClusterProfile("bob", cluster.url, token=Secret(cluster.access_token("bob")))
    with OscarClient(profile) as bob, pytest.raises(OscarError) as caught:
        bob.get_service("alices")
    assert caught.value.status_code == 403
    assert caught.value.message == "User bob@local doesn't have permision to get this service"
    assert "lack access to this resource" in str(caught.value)


def test_another_users_private_service_as_the_client_sees_it(cluster):
    """OSCAR v4.1.2 (docs/ARCHITECTURE.md, strictness table): reading it is 403, deleting it 404
    (delete.go looks in the caller's own namespace); its jobs' listing, a job's log and
    delete-all are 200 with an empty body, deleting one of its jobs is 403."""
    service = cluster.create_service("alices", user="alice")
    cluster.submit(service, "alices-1")
    profile = ClusterProfile("bob", cluster.url, token=Secret(cluster.access_token("bob")))
    with OscarClient(profile, retries=0) as bob:
        with pytest.raises(OscarError) as read:
            bob.get_service("alices")
        with pytest.raises(OscarError) as delete:
            bob.delete_service("alices")
        assert (read.value.status_code, delete.value.status_code) == (403, 404)
        assert bob.list_jobs("alices") == {}
        assert bob.job_logs("alices", "alices-1") == ""
        bob.delete_jobs("alices", all=True)  # answered 200, deletes nothing
        with pytest.raises(OscarError) as delete_job:
            bob.delete_job("alices", "alices-1")
        assert delete_job.value.status_code == 403
    assert cluster.service_names() == {"alices"} and cluster.job_names() == {"alices-1"}


def test_400_on_duplicate_create(client, cluster):
    cluster.create_service("dup")
    with pytest.raises(
        OscarError,
        match="400 on POST /system/services: A service with the provided name already exists",
    ):
        client.create_service({"name": "dup", "image": "i", "script": "s"})


def test_bad_names_are_refused_before_any_request(client, cluster):
    for bad in ("", "Upper", "a/b", "x y", "-lead", "../etc"):
        with pytest.raises(ValueError, match="lowercase letters, digits"):
            client.get_service(bad)
    with pytest.raises(ValueError, match="'name' of the definition"):
        client.create_service({"image": "x"})
    with pytest.raises(ValueError, match="at most 63"):
        client.submit_job("svc", b"x", job_id="j" * 64)
    assert cluster.requests == []


def test_service_token_comes_from_the_service_and_is_cached(client, cluster):
    service = cluster.create_service("svc")
    assert client.service_token("svc") == service["token"]
    assert client.service_token("svc") == service["token"]
    assert len(cluster.seen("GET", "/system/services/svc")) == 1


# --- jobs ------------------------------------------------------------------------------------


def test_submit_job_uses_the_service_token_and_names_the_job(client, cluster):
    service = cluster.create_service("svc")
    client.submit_job("svc", b"cHJpbnQoMSkK", job_id="svc-0001")
    post = cluster.seen("POST", "/job/svc")[0]
    assert post.headers["authorization"] == f"Bearer {service['token']}"
    assert post.headers["content-type"] == "application/octet-stream"
    assert post.headers["x-delegated-job-id"] == "svc-0001"
    assert post.body == b"cHJpbnQoMSkK"
    assert cluster.seen("GET", "/system/services/svc")[0].headers["authorization"] == basic(cluster)
    assert "svc-0001" in client.list_jobs("svc")


def test_submit_without_job_id_sends_no_header(client, cluster):
    cluster.create_service("svc")
    client.submit_job("svc", b"e30=")
    assert "x-delegated-job-id" not in cluster.seen("POST", "/job/svc")[0].headers
    [name] = client.list_jobs("svc")
    assert name.startswith("svc-")  # job.go: <service>-<uuid>


def test_a_recreated_service_gets_its_new_token(client, cluster):
    cluster.create_service("svc")
    client.submit_job("svc", b"a")
    cluster.admin.delete("/system/services/svc").raise_for_status()  # and its job with it
    fresh = cluster.create_service("svc")  # recreated behind our back: a new token
    client.submit_job("svc", b"b")
    posts = cluster.seen("POST", "/job/svc")
    assert [p.status for p in posts] == [201, 401, 201]
    assert posts[-1].headers["authorization"] == f"Bearer {fresh['token']}"
    assert len(client.list_jobs("svc")) == 1


def test_job_collision_is_a_500_with_the_k8s_text(client, cluster):
    cluster.create_service("svc")
    client.submit_job("svc", b"a", job_id="svc-same")
    with pytest.raises(OscarError) as caught:
        client.submit_job("svc", b"a", job_id="svc-same")
    assert caught.value.status_code == 500
    assert 'jobs.batch "svc-same" already exists' in str(caught.value)


def test_listing_follows_next_page(make_cluster):
    cluster = make_cluster(job_listing_limit=3)
    service = cluster.create_service("svc")
    for i in range(7):
        cluster.submit(service, f"svc-{i:02}")
    with cluster.admin_client() as client:
        jobs = client.list_jobs("svc")
    assert sorted(jobs) == [f"svc-{i:02}" for i in range(7)]
    pages = [r.query.get("page") for r in cluster.seen("GET", "/system/logs/svc")]
    assert len(pages) == 3 and pages[0] is None and all(pages[1:])


def test_listing_accepts_the_bare_map_of_oscar_before_3_6_4():
    """OSCAR before v3.6.4 answered the listing with the bare map of jobs (no pages)."""
    bare = {"svc-a": {"status": "Running"}, "svc-b": {"status": "Failed"}}

    def oscar_3_6_3(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/system/logs/svc"
        return httpx.Response(200, json=bare)

    profile = ClusterProfile("old", "http://oscar.example.org")
    with OscarClient(profile, transport=httpx.MockTransport(oscar_3_6_3)) as oscar:
        assert oscar.list_jobs("svc") == bare


def test_empty_listing(client, cluster):
    cluster.create_service("svc")
    assert client.list_jobs("svc") == {}


def test_logs_and_deletes(client, cluster):
    service = cluster.create_service("svc")
    for name in ("svc-a", "svc-b", "svc-c"):
        cluster.submit(service, name)
    cluster.finish("svc-a", "line 1\n  line 2\n")
    cluster.run("svc-b", "")  # svc-c stays Pending in the Slurm queue
    assert client.job_logs("svc", "svc-a") == "line 1\n  line 2\n"
    client.delete_jobs("svc")  # the succeeded ones only
    assert sorted(client.list_jobs("svc")) == ["svc-b", "svc-c"]
    client.delete_job("svc", "svc-b")
    assert sorted(client.list_jobs("svc")) == ["svc-c"]
    client.delete_jobs("svc", all=True)
    assert client.list_jobs("svc") == {}
    deletes = cluster.seen("DELETE", "/system/logs/svc")
    assert [d.query for d in deletes] == [{}, {"all": ["true"]}]
    assert [d.status for d in deletes] == [204, 204]
    # A deleted job has no pod: OSCAR v4.1.2 panics into a 500 there (reference OSCAR.md
    # section 13, B7), the local OSCAR answers 404; either way the client raises.
    with pytest.raises(OscarError, match="on GET /system/logs/svc/svc-a"):
        client.job_logs("svc", "svc-a")


def test_deleting_a_job_of_a_service_that_is_gone_is_a_403(client, cluster):
    # logs.go MakeDeleteJobHandler writes 403 whenever getAuthorizedService fails.
    with pytest.raises(OscarError) as caught:
        client.delete_job("gone", "gone-1")
    assert caught.value.status_code == 403
    assert caught.value.message == "You do not have permission to access this service"


# --- retries (the fault injector forces the failures) ----------------------------------------


def test_get_is_retried_on_503(client, cluster):
    cluster.faults.answer("GET", "/system/info", 503, 502)
    assert client.info()["local"]["executor"] == "scripted"
    assert [r.status for r in cluster.seen("GET", "/system/info")] == [503, 502, 200]


def test_get_gives_up_after_the_retries(client, cluster):
    cluster.faults.answer("GET", "/system/info", 503, 503, 504, 503)
    with pytest.raises(OscarError) as caught:
        client.info()
    assert caught.value.status_code == 504
    assert str(caught.value).startswith(
        "OSCAR answered 504 on GET /system/info: forced 504; 504 comes from the proxy in front "
        "of OSCAR (the cluster's ingress), not from OSCAR: OSCAR did not answer it in time, or "
        "is restarting"
    )
    assert "retried already" in str(caught.value)
    assert len(cluster.seen("GET", "/system/info")) == 3


def test_a_502_says_it_is_the_proxy_in_front_of_oscar(client, cluster):
    cluster.faults.answer("GET", "/system/info", 502, 502, 502)
    with pytest.raises(OscarError) as caught:
        client.info()
    assert caught.value.status_code == 502
    assert "502 comes from the proxy in front of OSCAR" in str(caught.value)


def test_the_empty_500_of_a_job_without_a_pod_is_named_as_such(client, cluster):
    """B7: OSCAR's log handler panics for a job that has no pod (logs.go 279-283): an empty
    500, which the client reads as "no pod (yet, or any more)", not as a failure."""
    cluster.create_service("svc")
    with pytest.raises(OscarError) as caught:
        client.job_logs("svc", "svc-never-was")
    assert caught.value.status_code == 500
    assert is_no_pod_answer(caught.value)
    assert "the log of a job that has no pod" in str(caught.value)
    cluster.faults.answer("GET", "/system/info", 500)
    with pytest.raises(OscarError) as other:
        client.info()
    assert not is_no_pod_answer(other.value)  # elsewhere a 500 stays an error


def test_post_is_never_retried_on_503(client, cluster):
    cluster.create_service("svc")
    cluster.faults.answer("POST", "/job/svc", 503)
    with pytest.raises(OscarError, match="503 on POST /job/svc"):
        client.submit_job("svc", b"x", job_id="svc-once")
    assert len(cluster.seen("POST", "/job/svc")) == 1
    assert client.list_jobs("svc") == {}
    cluster.faults.answer("POST", "/system/services", 502)
    with pytest.raises(OscarError, match="502 on POST /system/services"):
        client.create_service({"name": "new", "image": "i", "script": "s"})
    assert len(cluster.seen("POST", "/system/services")) == 1
    assert "new" not in cluster.service_names()


def test_unreachable_endpoint_says_what_to_check():
    port = free_port()
    profile = ClusterProfile("gone", f"http://127.0.0.1:{port}")
    with OscarClient(profile, backoff=0.01) as oscar, pytest.raises(OscarError) as caught:
        oscar.info()
    error = caught.value
    assert error.status_code is None and error.method == "GET" and error.path == "/system/info"
    text = str(error)
    assert f"Cannot reach OSCAR at http://127.0.0.1:{port}" in text
    assert "check that the endpoint is right" in text and "oscar-jupyter local status" in text


def test_get_retries_connect_errors_until_the_server_is_up(cluster):
    """The first attempt is refused; the server comes up (on another port) during the backoff."""
    port = free_port()
    cluster.listen_later(port, delay=0.15)
    with OscarClient(
        ClusterProfile("late", f"http://127.0.0.1:{port}"), retries=4, backoff=0.1
    ) as oscar:
        assert oscar.health() == "Ok"


def test_timeout_is_reported():
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with OscarClient(ClusterProfile("slow", url), timeout=0.3, retries=0) as oscar:
            with pytest.raises(OscarError, match=r"no answer within 0.3 s"):
                oscar.info()


def test_a_404_page_is_not_taken_for_json(cluster):
    with OscarClient(ClusterProfile("x", cluster.url + "/elsewhere")) as oscar:
        with pytest.raises(OscarError, match="404 page not found"):
            oscar.info()


# --- OIDC: the Keycloak refresh flow and bearer tokens ---------------------------------------


def oidc_profile(cluster, user: str = "alice", **extra) -> ClusterProfile:
    return ClusterProfile(
        "kc", cluster.url, refresh_token=Secret(cluster.refresh_token(user)), **extra
    )


def test_refresh_token_is_exchanged_on_creation(cluster):
    with OscarClient(oidc_profile(cluster)) as oscar:
        assert len(cluster.seen("POST", TOKEN_PATH)) == 1
        oscar.info()
    form = cluster.seen("POST", TOKEN_PATH)[0].body.decode()
    assert "grant_type=refresh_token" in form and f"client_id={CLIENT_ID}" in form
    assert "scope=openid+profile+email+offline_access" in form
    sent = cluster.seen("GET", "/system/info")[0].headers["authorization"]
    claims = unverified_claims(sent[len("Bearer ") :])
    assert claims["sub"] == "alice@local" and claims["typ"] == "Bearer"


def test_a_401_refreshes_once_and_retries(cluster):
    """The IdP revoked the access token the client holds (OSCAR answers 401): one refresh, one
    retry with the new token."""
    revoked = cluster.foreign_token("alice")
    profile = oidc_profile(cluster, token=Secret(revoked))
    with OscarClient(profile) as oscar:
        assert not cluster.seen("POST", TOKEN_PATH)  # the token is used as long as it works
        assert oscar.info()["version"]
    infos = cluster.seen("GET", "/system/info")
    assert [r.status for r in infos] == [401, 200]
    assert infos[0].headers["authorization"] == f"Bearer {revoked}"
    assert infos[1].headers["authorization"] != infos[0].headers["authorization"]
    assert len(cluster.seen("POST", TOKEN_PATH)) == 1


def test_a_second_401_is_not_retried_forever(cluster):
    with OscarClient(oidc_profile(cluster)) as oscar:
        cluster.faults.answer("GET", "/system/info", 401, 401, 401)
        with pytest.raises(OscarError, match="401 on GET /system/info"):
            oscar.info()
        assert len(cluster.seen("GET", "/system/info")) == 2


def test_an_expiring_token_is_refreshed_before_use(make_cluster):
    cluster = make_cluster(access_token_lifetime=5)  # under the client's margin
    with OscarClient(oidc_profile(cluster)) as oscar:
        oscar.info()
        oscar.info()
    assert len(cluster.seen("POST", TOKEN_PATH)) == 3
    assert [r.status for r in cluster.seen("GET", "/system/info")] == [200, 200]


def test_oidc_job_uses_the_oidc_token_after_a_system_call(cluster):
    service = cluster.create_service("svc", user="alice")  # hers: she may send it jobs
    before = len(cluster.requests)
    with OscarClient(oidc_profile(cluster)) as oscar:
        oscar.submit_job("svc", b"x", job_id="svc-oidc")
        assert list(oscar.list_jobs("svc")) == ["svc-oidc"]  # labelled with its owner
    calls = [(r.method, r.path, r.status) for r in cluster.requests[before:]]
    assert calls == [
        ("POST", TOKEN_PATH, 200),
        ("GET", "/system/config", 200),  # provisions the user first (job.go needs it)
        ("POST", "/job/svc", 201),  # no service token needed, so no read of the service
        ("GET", "/system/logs/svc", 200),
    ]
    post = cluster.seen("POST", "/job/svc")[0]
    assert (
        post.headers["authorization"]
        == cluster.seen("GET", "/system/config")[-1].headers["authorization"]
    )
    assert post.headers["authorization"] != f"Bearer {service['token']}"


def test_explicit_access_token_is_used_as_is(cluster):
    token = cluster.access_token("alice")
    with OscarClient(ClusterProfile("t", cluster.url, token=Secret(token))) as oscar:
        oscar.list_services()
    assert cluster.seen("GET", "/system/services")[0].headers["authorization"] == f"Bearer {token}"
    assert not cluster.seen("POST", TOKEN_PATH)


def test_expired_refresh_token_names_the_fix(cluster):
    profile = ClusterProfile(
        "kc", cluster.url, refresh_token=Secret(cluster.refresh_token("alice", lifetime=-60))
    )
    with pytest.raises(TokenRefreshError) as caught:
        OscarClient(profile)
    text = str(caught.value)
    assert "answered 400: invalid_grant - Token is not active" in text
    assert "oidc_refresh_token" in text and profile.refresh_token.reveal() not in text


def test_refresh_token_that_is_not_a_jwt(cluster):
    with pytest.raises(TokenRefreshError, match="not a JWT"):
        OscarClient(ClusterProfile("kc", cluster.url, refresh_token=Secret("opaque")))


def test_refresh_token_without_issuer(cluster):
    bad = cluster.sign({"azp": "x", "scope": "openid"})
    with pytest.raises(TokenRefreshError, match="'iss' claim"):
        OscarClient(ClusterProfile("kc", cluster.url, refresh_token=Secret(bad)))


def test_unreachable_identity_provider(cluster):
    bad = cluster.sign(
        {"iss": f"http://127.0.0.1:{free_port()}/realms/x", "azp": "a", "scope": "openid"}
    )
    with pytest.raises(TokenRefreshError, match="Cannot reach the OIDC token endpoint"):
        OscarClient(ClusterProfile("kc", cluster.url, refresh_token=Secret(bad)))


def test_refresh_failing_mid_session_becomes_an_oscar_error(cluster):
    with OscarClient(oidc_profile(cluster)) as oscar:
        cluster.forget_every_session()  # access and refresh tokens revoked meanwhile
        with pytest.raises(OscarError) as caught:
            oscar.info()
    assert caught.value.status_code == 401
    assert "getting a new one failed" in str(caught.value)
    assert "invalid_grant - Invalid refresh token" in str(caught.value)


def test_oidc_agent_token_through_oidc_token(cluster, tmp_path, monkeypatch):
    token = cluster.access_token("alice")
    script = tmp_path / "bin" / "oidc-token"
    script.parent.mkdir()
    script.write_text(
        f'#!/bin/sh\n[ "$2" = egi ] && echo {token} && exit 0\n'
        'echo "Error: account not loaded" >&2; exit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    with OscarClient(ClusterProfile("ag", cluster.url, oidc_account_name="egi")) as oscar:
        oscar.info()
    assert cluster.seen("GET", "/system/info")[0].headers["authorization"] == f"Bearer {token}"
    assert cluster.seen("GET", "/system/info")[0].status == 200
    with pytest.raises(TokenRefreshError, match="account not loaded.*oidc-add other"):
        OscarClient(ClusterProfile("ag", cluster.url, oidc_account_name="other"))


def test_oidc_agent_missing(cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="`oidc-token` command is not on PATH.*OSCAR_TOKEN"):
        OscarClient(ClusterProfile("ag", cluster.url, oidc_account_name="egi"))


# --- threads ---------------------------------------------------------------------------------


def test_one_client_serves_a_poller_thread_and_the_main_thread(client, cluster):
    service = cluster.create_service("svc")
    cluster.submit(service, "svc-a")
    cluster.run("svc-a", cell_log("svc-a", ["up"], exit_code=None))
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            for _ in range(30):
                assert "svc-a" in client.list_jobs("svc")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    for i in range(30):
        client.submit_job("svc", b"x", job_id=f"svc-m{i}")
    poller.join()
    assert errors == []
    assert len(client.list_jobs("svc")) == 31
    assert len(cluster.seen("GET", "/system/services/svc")) == 1


def test_repr_names_the_cluster_not_the_secrets(client, cluster):
    assert repr(client) == f"OscarClient(cluster_id='local-test', endpoint='{client.endpoint}')"
    assert cluster.password not in repr(client)


# --- TLS -------------------------------------------------------------------------------------


def test_self_signed_certificate_is_refused_with_the_fix(cluster_tls):
    profile = ClusterProfile("tls", cluster_tls.url)
    with OscarClient(profile, retries=0) as oscar, pytest.raises(OscarError) as caught:
        oscar.health()
    assert caught.value.status_code is None
    text = str(caught.value)
    assert "ssl_verify: false" in text and "OSCAR_SSL_VERIFY=false" in text


def test_ssl_verify_false_accepts_the_self_signed_certificate(cluster_tls):
    with OscarClient(cluster_tls.basic_profile("tls", ssl_verify=False)) as oscar:
        assert oscar.health() == "Ok"
        assert oscar.info()["local"]["executor"] == "scripted"


def test_expiring_token_that_cannot_be_renewed_is_an_oscar_error(make_cluster):
    cluster = make_cluster(access_token_lifetime=5)
    with OscarClient(oidc_profile(cluster)) as oscar:
        cluster.forget_every_session()
        with pytest.raises(OscarError) as caught:
            oscar.list_services()
    assert caught.value.status_code == 401 and "expired" in str(caught.value)
    assert not cluster.seen("GET", "/system/services")


def test_a_redirect_names_the_address_to_use(client, cluster):
    cluster.faults.redirect_to = "https://oscar.example.org"
    with pytest.raises(OscarError) as caught:
        client.info()
    assert caught.value.status_code == 308
    assert "use that address as the endpoint" in str(caught.value)
    assert "https://oscar.example.org/system/info" in str(caught.value)
