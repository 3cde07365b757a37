"""OscarClient against a real HTTP server on loopback that answers like OSCAR."""

from __future__ import annotations

import base64
import socket
import threading
import time
from http.server import HTTPServer

import pytest
from fake_oscar_server import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    TOKEN_PATH,
    OscarHandler,
    make_jwt,
)

from oscar_jupyter.client import OscarClient, OscarError
from oscar_jupyter.config import ClusterProfile, ConfigError, Secret, TokenRefreshError

BASIC = "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()


def basic_profile(server, **extra) -> ClusterProfile:
    return ClusterProfile(
        "test", server.url, user=ADMIN_USER, password=Secret(ADMIN_PASSWORD), **extra
    )


@pytest.fixture
def client(fake_oscar):
    with OscarClient(basic_profile(fake_oscar), backoff=0.01) as oscar:
        yield oscar


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- cluster calls and Basic auth ------------------------------------------------------------


def test_health_needs_no_credentials(fake_oscar):
    with OscarClient(ClusterProfile("anon", fake_oscar.url)) as oscar:
        assert oscar.health() == "Ok"
    assert "authorization" not in fake_oscar.seen("GET", "/health")[0].headers


def test_system_calls_send_basic_auth(client, fake_oscar):
    assert client.info()["version"] == "v4.1.2"
    assert client.config()["config"]["interLink_available"] is True
    assert client.status()["cluster"]["nodes_count"] == 1
    for path in ("/system/info", "/system/config", "/system/status"):
        assert fake_oscar.seen("GET", path)[0].headers["authorization"] == BASIC


def test_endpoint_with_a_path_prefix(fake_oscar):
    with OscarClient(ClusterProfile("p", fake_oscar.url + "/prefix")) as oscar:
        with pytest.raises(OscarError) as caught:
            oscar.health()
    assert fake_oscar.requests[-1].path == "/prefix/health"
    assert caught.value.status_code == 404


def test_wrong_password_gives_401_with_the_fix(fake_oscar):
    profile = ClusterProfile("test", fake_oscar.url, user=ADMIN_USER, password=Secret("nope-pw"))
    with OscarClient(profile) as oscar, pytest.raises(OscarError) as caught:
        oscar.list_services()
    error = caught.value
    assert error.status_code == 401 and error.method == "GET"
    assert error.path == "/system/services"
    assert "OSCAR answered 401 on GET /system/services" in str(error)
    assert "OSCAR_USER/OSCAR_PASSWORD" in str(error) and "'oscar'" in str(error)
    assert "nope-pw" not in str(error) + repr(error)


# --- services --------------------------------------------------------------------------------


def test_service_lifecycle(client, fake_oscar):
    client.create_service({"name": "runner-1", "image": "python:3.11", "script": "echo"})
    assert [s["name"] for s in client.list_services()] == ["runner-1"]
    assert client.get_service("runner-1")["image"] == "python:3.11"
    client.update_service({"name": "runner-1", "image": "python:3.12", "script": "echo"})
    assert fake_oscar.services["runner-1"]["image"] == "python:3.12"
    client.delete_service("runner-1")
    assert client.list_services() == []
    post = fake_oscar.seen("POST", "/system/services")[0]
    assert post.headers["authorization"] == BASIC
    assert post.headers["content-type"] == "application/json"


def test_404_carries_the_server_s_text(client):
    with pytest.raises(OscarError) as caught:
        client.get_service("missing")
    assert (
        str(caught.value) == "OSCAR answered 404 on GET /system/services/missing: "
        'The service "missing" does not exist'
    )
    assert caught.value.message == 'The service "missing" does not exist'


def test_400_on_duplicate_create(client, fake_oscar):
    fake_oscar.add_service("dup")
    with pytest.raises(
        OscarError,
        match="400 on POST /system/services: A service with the provided name already exists",
    ):
        client.create_service({"name": "dup", "image": "i", "script": "s"})


def test_bad_names_are_refused_before_any_request(client, fake_oscar):
    for bad in ("", "Upper", "a/b", "x y", "-lead", "../etc"):
        with pytest.raises(ValueError, match="lowercase letters, digits"):
            client.get_service(bad)
    with pytest.raises(ValueError, match="'name' of the definition"):
        client.create_service({"image": "x"})
    with pytest.raises(ValueError, match="at most 63"):
        client.submit_job("svc", b"x", job_id="j" * 64)
    assert fake_oscar.requests == []


def test_service_token_comes_from_the_service_and_is_cached(client, fake_oscar):
    service = fake_oscar.add_service("svc")
    assert client.service_token("svc") == service["token"]
    assert client.service_token("svc") == service["token"]
    assert len(fake_oscar.seen("GET", "/system/services/svc")) == 1


# --- jobs ------------------------------------------------------------------------------------


def test_submit_job_uses_the_service_token_and_names_the_job(client, fake_oscar):
    service = fake_oscar.add_service("svc")
    client.submit_job("svc", b"cHJpbnQoMSkK", job_id="svc-0001")
    post = fake_oscar.seen("POST", "/job/svc")[0]
    assert post.headers["authorization"] == f"Bearer {service['token']}"
    assert post.headers["content-type"] == "application/octet-stream"
    assert post.headers["x-delegated-job-id"] == "svc-0001"
    assert post.body == b"cHJpbnQoMSkK"
    assert fake_oscar.seen("GET", "/system/services/svc")[0].headers["authorization"] == BASIC
    assert "svc-0001" in client.list_jobs("svc")


def test_submit_without_job_id_sends_no_header(client, fake_oscar):
    fake_oscar.add_service("svc")
    client.submit_job("svc", b"e30=")
    assert "x-delegated-job-id" not in fake_oscar.seen("POST", "/job/svc")[0].headers
    assert len(client.list_jobs("svc")) == 1


def test_a_recreated_service_gets_its_new_token(client, fake_oscar):
    fake_oscar.add_service("svc")
    client.submit_job("svc", b"a")
    fresh = fake_oscar.add_service("svc")  # recreated behind our back: new token
    client.submit_job("svc", b"b")
    posts = fake_oscar.seen("POST", "/job/svc")
    assert [p.headers["authorization"] for p in posts][-1] == f"Bearer {fresh['token']}"
    assert len(fake_oscar.services["svc"]) and len(client.list_jobs("svc")) == 2


def test_job_collision_is_a_500_with_the_k8s_text(client, fake_oscar):
    fake_oscar.add_service("svc")
    client.submit_job("svc", b"a", job_id="svc-same")
    with pytest.raises(OscarError) as caught:
        client.submit_job("svc", b"a", job_id="svc-same")
    assert caught.value.status_code == 500
    assert 'jobs.batch "svc-same" already exists' in str(caught.value)


def test_listing_follows_next_page(client, fake_oscar):
    fake_oscar.add_service("svc")
    fake_oscar.jobs["svc"] = {f"svc-{i:02}": {"status": "Succeeded"} for i in range(7)}
    fake_oscar.page_size = 3
    jobs = client.list_jobs("svc")
    assert sorted(jobs) == [f"svc-{i:02}" for i in range(7)]
    pages = [r.query.get("page") for r in fake_oscar.seen("GET", "/system/logs/svc")]
    assert pages == [None, ["3"], ["6"]]


def test_listing_accepts_the_old_bare_map(client, fake_oscar):
    fake_oscar.add_service("svc")
    fake_oscar.legacy_listing = True
    fake_oscar.jobs["svc"] = {"svc-a": {"status": "Running"}, "svc-b": {"status": "Failed"}}
    assert client.list_jobs("svc") == {
        "svc-a": {"status": "Running"},
        "svc-b": {"status": "Failed"},
    }


def test_empty_listing(client, fake_oscar):
    fake_oscar.add_service("svc")
    assert client.list_jobs("svc") == {}


def test_logs_and_deletes(client, fake_oscar):
    fake_oscar.add_service("svc")
    fake_oscar.jobs["svc"] = {
        "svc-a": {"status": "Succeeded"},
        "svc-b": {"status": "Running"},
        "svc-c": {"status": "Pending"},
    }
    fake_oscar.logs[("svc", "svc-a")] = "line 1\n  line 2\n"
    assert client.job_logs("svc", "svc-a") == "line 1\n  line 2\n"
    client.delete_jobs("svc")
    assert sorted(client.list_jobs("svc")) == ["svc-b", "svc-c"]
    client.delete_job("svc", "svc-b")
    assert sorted(client.list_jobs("svc")) == ["svc-c"]
    client.delete_jobs("svc", all=True)
    assert client.list_jobs("svc") == {}
    deletes = fake_oscar.seen("DELETE", "/system/logs/svc")
    assert [d.query for d in deletes] == [{}, {"all": ["true"]}]
    with pytest.raises(OscarError, match='404 on GET /system/logs/svc/svc-a: The job "svc-a"'):
        client.job_logs("svc", "svc-a")


# --- retries ---------------------------------------------------------------------------------


def test_get_is_retried_on_503(client, fake_oscar):
    fake_oscar.failures[("GET", "/system/info")] = [503, 502]
    assert client.info()["version"] == "v4.1.2"
    assert len(fake_oscar.seen("GET", "/system/info")) == 3


def test_get_gives_up_after_the_retries(client, fake_oscar):
    fake_oscar.failures[("GET", "/system/info")] = [503, 503, 504, 503]
    with pytest.raises(OscarError) as caught:
        client.info()
    assert caught.value.status_code == 504
    assert str(caught.value) == "OSCAR answered 504 on GET /system/info: forced 504"
    assert len(fake_oscar.seen("GET", "/system/info")) == 3


def test_post_is_never_retried_on_503(client, fake_oscar):
    fake_oscar.add_service("svc")
    fake_oscar.failures[("POST", "/job/svc")] = [503]
    with pytest.raises(OscarError, match="503 on POST /job/svc"):
        client.submit_job("svc", b"x", job_id="svc-once")
    assert len(fake_oscar.seen("POST", "/job/svc")) == 1
    assert client.list_jobs("svc") == {}
    fake_oscar.failures[("POST", "/system/services")] = [502]
    with pytest.raises(OscarError, match="502 on POST /system/services"):
        client.create_service({"name": "new", "image": "i", "script": "s"})
    assert len(fake_oscar.seen("POST", "/system/services")) == 1


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


def test_get_retries_connect_errors_until_the_server_is_up(fake_oscar):
    """The first attempt is refused; the server comes up during the backoff."""
    port = free_port()
    profile = ClusterProfile("late", f"http://127.0.0.1:{port}")
    handler = type("H", (OscarHandler,), {"state": fake_oscar})

    def start_late() -> None:
        time.sleep(0.15)
        server = HTTPServer(("127.0.0.1", port), handler)
        server.handle_request()
        server.server_close()

    thread = threading.Thread(target=start_late)
    thread.start()
    with OscarClient(profile, retries=4, backoff=0.1) as oscar:
        assert oscar.health() == "Ok"
    thread.join()


def test_timeout_is_reported(fake_oscar):
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with OscarClient(ClusterProfile("slow", url), timeout=0.3, retries=0) as oscar:
            with pytest.raises(OscarError, match=r"no answer within 0.3 s"):
                oscar.info()


def test_non_json_answer(fake_oscar):
    with OscarClient(ClusterProfile("x", fake_oscar.url + "/elsewhere")) as oscar:
        fake_oscar.failures[("GET", "/elsewhere/system/info")] = []
        with pytest.raises(OscarError, match="404 page not found"):
            oscar.info()


# --- OIDC: the Keycloak refresh flow and bearer tokens ---------------------------------------


def oidc_profile(server, **extra) -> ClusterProfile:
    return ClusterProfile("kc", server.url, refresh_token=Secret(server.refresh_token()), **extra)


def test_refresh_token_is_exchanged_on_creation(fake_oscar):
    profile = oidc_profile(fake_oscar)
    with OscarClient(profile) as oscar:
        assert len(fake_oscar.issued) == 1
        oscar.info()
    form = fake_oscar.seen("POST", TOKEN_PATH)[0].body.decode()
    assert "grant_type=refresh_token" in form and "client_id=oscar-client" in form
    assert "scope=openid+profile" in form
    assert (
        fake_oscar.seen("GET", "/system/info")[0].headers["authorization"]
        == f"Bearer {fake_oscar.issued[0]}"
    )


def test_a_401_refreshes_once_and_retries(fake_oscar):
    with OscarClient(oidc_profile(fake_oscar)) as oscar:
        fake_oscar.access_tokens.clear()  # the IdP expired every token
        assert oscar.info()["version"] == "v4.1.2"
        assert len(fake_oscar.issued) == 2
        infos = fake_oscar.seen("GET", "/system/info")
        assert [r.headers["authorization"] for r in infos] == [
            f"Bearer {fake_oscar.issued[0]}",
            f"Bearer {fake_oscar.issued[1]}",
        ]


def test_a_second_401_is_not_retried_forever(fake_oscar):
    with OscarClient(oidc_profile(fake_oscar)) as oscar:
        fake_oscar.failures[("GET", "/system/info")] = [401, 401, 401]
        with pytest.raises(OscarError, match="401 on GET /system/info"):
            oscar.info()
        assert len(fake_oscar.seen("GET", "/system/info")) == 2


def test_an_expiring_token_is_refreshed_before_use(fake_oscar):
    fake_oscar.token_lifetime = 5  # under the client's margin
    with OscarClient(oidc_profile(fake_oscar)) as oscar:
        oscar.info()
        oscar.info()
    assert len(fake_oscar.issued) == 3
    assert len(fake_oscar.seen("GET", "/system/info")) == 2


def test_oidc_job_uses_the_oidc_token_after_a_system_call(fake_oscar):
    service = fake_oscar.add_service("svc")
    with OscarClient(oidc_profile(fake_oscar)) as oscar:
        oscar.submit_job("svc", b"x", job_id="svc-oidc")
    token = fake_oscar.issued[0]
    post = fake_oscar.seen("POST", "/job/svc")[0]
    assert post.headers["authorization"] == f"Bearer {token}" != f"Bearer {service['token']}"
    assert fake_oscar.seen("GET", "/system/config")  # provisions the user first
    assert not fake_oscar.seen("GET", "/system/services/svc")  # no service token needed


def test_explicit_access_token_is_used_as_is(fake_oscar):
    fake_oscar.access_tokens.add("plain-access-token")
    with OscarClient(
        ClusterProfile("t", fake_oscar.url, token=Secret("plain-access-token"))
    ) as oscar:
        oscar.list_services()
    assert (
        fake_oscar.seen("GET", "/system/services")[0].headers["authorization"]
        == "Bearer plain-access-token"
    )
    assert not fake_oscar.seen("POST", TOKEN_PATH)


def test_expired_refresh_token_names_the_fix(fake_oscar):
    profile = ClusterProfile(
        "kc",
        fake_oscar.url,
        refresh_token=Secret(
            make_jwt(
                {
                    "iss": fake_oscar.url + "/realms/test",
                    "azp": "oscar-client",
                    "scope": "openid profile",
                }
            )
        ),
    )
    with pytest.raises(TokenRefreshError) as caught:
        OscarClient(profile)
    text = str(caught.value)
    assert "answered 400: invalid_grant - Token is not active" in text
    assert "oidc_refresh_token" in text and profile.refresh_token.reveal() not in text


def test_refresh_token_that_is_not_a_jwt(fake_oscar):
    with pytest.raises(TokenRefreshError, match="not a JWT"):
        OscarClient(ClusterProfile("kc", fake_oscar.url, refresh_token=Secret("opaque")))


def test_refresh_token_without_issuer(fake_oscar):
    bad = make_jwt({"azp": "x", "scope": "openid"})
    with pytest.raises(TokenRefreshError, match="'iss' claim"):
        OscarClient(ClusterProfile("kc", fake_oscar.url, refresh_token=Secret(bad)))


def test_unreachable_identity_provider(fake_oscar):
    bad = make_jwt(
        {"iss": f"http://127.0.0.1:{free_port()}/realms/x", "azp": "a", "scope": "openid"}
    )
    with pytest.raises(TokenRefreshError, match="Cannot reach the OIDC token endpoint"):
        OscarClient(ClusterProfile("kc", fake_oscar.url, refresh_token=Secret(bad)))


def test_refresh_failing_mid_session_becomes_an_oscar_error(fake_oscar):
    with OscarClient(oidc_profile(fake_oscar)) as oscar:
        fake_oscar.access_tokens.clear()
        fake_oscar.refresh_tokens.clear()  # the refresh token was revoked meanwhile
        with pytest.raises(OscarError) as caught:
            oscar.info()
    assert caught.value.status_code == 401
    assert "getting a new one failed" in str(caught.value)
    assert "invalid_grant" in str(caught.value)


def test_oidc_agent_token_through_oidc_token(fake_oscar, tmp_path, monkeypatch):
    fake_oscar.access_tokens.add("agent-access-token")
    script = tmp_path / "bin" / "oidc-token"
    script.parent.mkdir()
    script.write_text(
        '#!/bin/sh\n[ "$2" = egi ] && echo agent-access-token && exit 0\n'
        'echo "Error: account not loaded" >&2; exit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    with OscarClient(ClusterProfile("ag", fake_oscar.url, oidc_account_name="egi")) as oscar:
        oscar.info()
    assert (
        fake_oscar.seen("GET", "/system/info")[0].headers["authorization"]
        == "Bearer agent-access-token"
    )
    with pytest.raises(TokenRefreshError, match="account not loaded.*oidc-add other"):
        OscarClient(ClusterProfile("ag", fake_oscar.url, oidc_account_name="other"))


def test_oidc_agent_missing(fake_oscar, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="`oidc-token` command is not on PATH.*OSCAR_TOKEN"):
        OscarClient(ClusterProfile("ag", fake_oscar.url, oidc_account_name="egi"))


# --- threads ---------------------------------------------------------------------------------


def test_one_client_serves_a_poller_thread_and_the_main_thread(client, fake_oscar):
    fake_oscar.add_service("svc")
    fake_oscar.jobs["svc"] = {"svc-a": {"status": "Running"}}
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
    assert len(fake_oscar.seen("GET", "/system/services/svc")) == 1


def test_repr_names_the_cluster_not_the_secrets(client):
    assert repr(client) == f"OscarClient(cluster_id='test', endpoint='{client.endpoint}')"
    assert ADMIN_PASSWORD not in repr(client)


# --- TLS -------------------------------------------------------------------------------------


def test_self_signed_certificate_is_refused_with_the_fix(fake_oscar_tls):
    profile = ClusterProfile("tls", fake_oscar_tls.url)
    with OscarClient(profile, retries=0) as oscar, pytest.raises(OscarError) as caught:
        oscar.health()
    assert caught.value.status_code is None
    text = str(caught.value)
    assert "ssl_verify: false" in text and "OSCAR_SSL_VERIFY=false" in text


def test_ssl_verify_false_accepts_the_self_signed_certificate(fake_oscar_tls):
    profile = ClusterProfile(
        "tls",
        fake_oscar_tls.url,
        user=ADMIN_USER,
        password=Secret(ADMIN_PASSWORD),
        ssl_verify=False,
    )
    with OscarClient(profile) as oscar:
        assert oscar.health() == "Ok"
        assert oscar.info()["version"] == "v4.1.2"


def test_expiring_token_that_cannot_be_renewed_is_an_oscar_error(fake_oscar):
    fake_oscar.token_lifetime = 5
    with OscarClient(oidc_profile(fake_oscar)) as oscar:
        fake_oscar.refresh_tokens.clear()
        with pytest.raises(OscarError) as caught:
            oscar.list_services()
    assert caught.value.status_code == 401 and "expired" in str(caught.value)
    assert not fake_oscar.seen("GET", "/system/services")


def test_a_redirect_names_the_address_to_use(client, fake_oscar):
    fake_oscar.redirect_to = "https://oscar.example.org"
    with pytest.raises(OscarError) as caught:
        client.info()
    assert caught.value.status_code == 308
    assert "use that address as the endpoint" in str(caught.value)
    assert "https://oscar.example.org/system/info" in str(caught.value)
