"""No password or token ever shows in a repr, a str or an error message, whatever its value."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oscar_jupyter.client import OscarClient, OscarError
from oscar_jupyter.config import (
    ClusterProfile,
    ConfigError,
    Secret,
    TokenRefreshError,
    load_profile,
)
from oscar_jupyter.local.users import unverified_claims

from .local_cluster import ADMIN_USER

# Printable ASCII without spaces (what fits an HTTP header). The "~#" start keeps hypothesis from
# picking a secret that is simply a piece of our own message text, such as "ClusterPro".
secret_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=40
).map(lambda text: "~#" + text)
uses_server = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@given(value=secret_text)
def test_secret_hides_its_value(value):
    secret = Secret(value)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        format(secret),
        repr([secret]),
        repr({"k": secret}),
    ]
    assert all(value not in text for text in shown)
    assert repr(secret) == "Secret('***')"
    assert secret.reveal() == value and secret == Secret(value) and secret != Secret(value + "x")
    assert hash(secret) == hash(Secret(value)) and bool(secret)


def test_empty_secret_is_falsy():
    assert not Secret("")
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


@given(password=secret_text, token=secret_text, refresh=secret_text)
def test_profile_repr_has_no_secret(password, token, refresh):
    profile = ClusterProfile(
        "c",
        "https://c.example.org",
        user="u",
        password=password,
        token=Secret(token),
        refresh_token=Secret(refresh),
    )
    for text in (repr(profile), str(profile), f"{profile}", repr([profile])):
        assert password not in text and token not in text and refresh not in text
    assert profile.password == Secret(password)  # a str is wrapped


@settings(max_examples=50)
@given(password=secret_text, token=secret_text)
def test_config_errors_have_no_secret(password, token):
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("OSCAR_PASSWORD", password)
        mp.setenv("OSCAR_TOKEN", token)
        for kwargs in (
            {"endpoint": "https://x.example.org"},  # password without user
            {"endpoint": "ftp://x", "user": "u"},
            {"endpoint": "https://x", "user": "u", "ssl_verify": "maybe"},
        ):
            with pytest.raises(ConfigError) as caught:
                load_profile(config_path="/nonexistent/c.yaml", **kwargs)
            assert password not in str(caught.value) and token not in str(caught.value)
    finally:
        mp.undo()


# A careless server or IdP that repeats the credentials it refused (the fault injector in front
# of the local OSCAR: OSCAR itself never does).


@uses_server
@given(password=secret_text)
def test_a_server_that_echoes_the_password_does_not_leak_it(cluster, password):
    cluster.faults.echo_credentials = True
    profile = ClusterProfile("c", cluster.url, user=ADMIN_USER, password=Secret(password))
    with OscarClient(profile) as oscar, pytest.raises(OscarError) as caught:
        oscar.info()
    error = caught.value
    assert error.status_code == 401 and "invalid credentials oscar:***" in error.message
    for text in (str(error), repr(error), error.message, repr(error.args)):
        assert password not in text


@uses_server
@given(token=secret_text)
def test_a_server_that_echoes_the_token_does_not_leak_it(cluster, token):
    cluster.faults.echo_credentials = True
    with OscarClient(ClusterProfile("c", cluster.url, token=Secret(token))) as oscar:
        with pytest.raises(OscarError) as caught:
            oscar.list_services()
    assert "token *** is not valid" in str(caught.value)
    assert token not in str(caught.value) + repr(caught.value)


@uses_server
@given(suffix=secret_text)
def test_an_idp_that_echoes_the_refresh_token_does_not_leak_it(cluster, suffix):
    cluster.faults.echo_credentials = True
    claims = unverified_claims(cluster.refresh_token("alice"))  # a refresh token of real size
    refresh = cluster.sign({**claims, "nonce": suffix})
    profile = ClusterProfile("c", cluster.url, refresh_token=Secret(refresh))
    with pytest.raises(TokenRefreshError) as caught:
        OscarClient(profile)
    shown = str(caught.value) + repr(caught.value)
    assert "Token *** is not active" in shown
    assert not any(refresh[i : i + 24] in shown for i in range(0, len(refresh) - 24, 8))
