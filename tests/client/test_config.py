"""Cluster profiles from oscar-cli's file, the environment and explicit arguments."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from oscar_jupyter.config import (
    ClusterProfile,
    ConfigError,
    Secret,
    default_config_path,
    default_profile_name,
    list_profiles,
    load_profile,
    save_profile,
)

SEVERAL = """\
# written by oscar-cli
oscar:
  zeta:
    endpoint: https://zeta.example.org/
    auth_user: oscar
    auth_password: zeta-pass-1
    ssl_verify: true
    memory: 512Mi
    log_level: INFO
    jupyter:
      node: vega-vk
      time: "01:00:00"
  alpha:
    endpoint: https://alpha.example.org
    oidc_refresh_token: eyJ.refresh.alpha
    ssl_verify: false
    memory: 256Mi
    log_level: DEBUG
  mid:
    endpoint: http://127.0.0.1:8080
    auth_user: admin
    auth_password: mid-pass-2
    ssl_verify: true
    site_note: keep me
default: zeta
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def several(clean_environment) -> Path:
    return write(clean_environment / ".oscar-cli" / "config.yaml", SEVERAL)


# --- reading ---------------------------------------------------------------------------------


def test_default_path_is_oscar_cli_s_and_the_variable_moves_it(
    clean_environment, monkeypatch, tmp_path
):
    assert default_config_path() == clean_environment / ".oscar-cli" / "config.yaml"
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "other.yaml"))
    assert default_config_path() == tmp_path / "other.yaml"


def test_several_clusters_in_file_order_and_the_default(several):
    assert list_profiles() == ["zeta", "alpha", "mid"]
    assert default_profile_name() == "zeta"


def test_the_default_cluster_with_basic_auth_and_its_offload_defaults(several):
    profile = load_profile()
    assert profile.cluster_id == "zeta"
    assert profile.endpoint == "https://zeta.example.org"  # trailing slash dropped
    assert profile.auth_kind == "basic"
    assert profile.user == "oscar"
    assert profile.password == Secret("zeta-pass-1")
    assert profile.ssl_verify is True
    assert profile.defaults == {
        "memory": "512Mi",
        "log_level": "INFO",
        "jupyter": {"node": "vega-vk", "time": "01:00:00"},
    }


def test_a_named_cluster_with_a_refresh_token_and_ssl_verify_false(several):
    profile = load_profile("alpha")
    assert profile.auth_kind == "refresh-token"
    assert profile.refresh_token == Secret("eyJ.refresh.alpha")
    assert profile.user is None and profile.password is None
    assert profile.ssl_verify is False
    assert profile.defaults == {"memory": "256Mi", "log_level": "DEBUG"}


def test_a_json_file_reads_the_same(tmp_path):
    path = write(tmp_path / "config.json", json.dumps(yaml.safe_load(SEVERAL)))
    assert list_profiles(path) == ["zeta", "alpha", "mid"]
    assert load_profile(config_path=path) == load_profile(
        config_path=write(tmp_path / "c.yml", SEVERAL)
    )


def test_a_single_cluster_without_default_is_the_default(tmp_path):
    path = write(tmp_path / "c.yaml", "oscar:\n  only:\n    endpoint: http://h:1\n")
    assert default_profile_name(path) == "only"
    assert load_profile(config_path=path).cluster_id == "only"
    assert load_profile(config_path=path).auth_kind == "none"


def test_no_file_means_no_profiles(tmp_path):
    assert list_profiles(tmp_path / "missing.yaml") == []
    assert default_profile_name(tmp_path / "missing.yaml") is None


# --- precedence ------------------------------------------------------------------------------


def test_environment_overrides_the_default_cluster(several, monkeypatch):
    monkeypatch.setenv("OSCAR_USER", "envuser")
    monkeypatch.setenv("OSCAR_PASSWORD", "env-pass")
    monkeypatch.setenv("OSCAR_SSL_VERIFY", "no")
    profile = load_profile()
    assert (profile.user, profile.password, profile.ssl_verify) == (
        "envuser",
        Secret("env-pass"),
        False,
    )
    assert profile.cluster_id == "zeta" and profile.endpoint == "https://zeta.example.org"


def test_a_named_cluster_ignores_the_environment(several, monkeypatch):
    # Variables meant for another cluster must not replace or redirect this one's credentials.
    monkeypatch.setenv("OSCAR_ENDPOINT", "https://elsewhere.example.org")
    monkeypatch.setenv("OSCAR_USER", "envuser")
    monkeypatch.setenv("OSCAR_PASSWORD", "env-pass")
    monkeypatch.setenv("OSCAR_SSL_VERIFY", "no")
    profile = load_profile("mid")
    assert profile.cluster_id == "mid" and profile.endpoint == "http://127.0.0.1:8080"
    assert profile.user != "envuser" and profile.password != Secret("env-pass")
    assert profile.ssl_verify is True


def test_explicit_arguments_override_the_environment(several, monkeypatch):
    monkeypatch.setenv("OSCAR_USER", "envuser")
    monkeypatch.setenv("OSCAR_PASSWORD", "env-pass")
    monkeypatch.setenv("OSCAR_SSL_VERIFY", "false")
    monkeypatch.setenv("OSCAR_TOKEN", "env-token")
    profile = load_profile(
        "mid", user="argu", password="arg-pass", ssl_verify=True, token=Secret("arg-token")
    )
    assert (profile.user, profile.password, profile.ssl_verify, profile.token) == (
        "argu",
        Secret("arg-pass"),
        True,
        Secret("arg-token"),
    )
    assert profile.auth_kind == "token"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("TRUE", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("No", False),
    ],
)
def test_ssl_verify_words(word, expected, monkeypatch):
    monkeypatch.setenv("OSCAR_SSL_VERIFY", word)
    assert load_profile(endpoint="https://x.example.org").ssl_verify is expected


def test_endpoint_from_the_environment_without_any_file(monkeypatch):
    monkeypatch.setenv("OSCAR_ENDPOINT", "https://oscar.example.org:8443/")
    monkeypatch.setenv("OSCAR_TOKEN", "tok")
    profile = load_profile()
    assert profile.endpoint == "https://oscar.example.org:8443"
    assert profile.cluster_id == "oscar.example.org:8443"
    assert profile.auth_kind == "token"


def test_another_endpoint_does_not_inherit_the_default_cluster_s_password(several, monkeypatch):
    monkeypatch.setenv("OSCAR_ENDPOINT", "https://elsewhere.example.org")
    profile = load_profile()
    assert profile.password is None and profile.user is None
    assert profile.endpoint == "https://elsewhere.example.org"


def test_the_same_endpoint_keeps_the_default_cluster_s_credentials(several, monkeypatch):
    monkeypatch.setenv("OSCAR_ENDPOINT", "https://ZETA.example.org")
    profile = load_profile()
    assert profile.cluster_id == "zeta" and profile.password == Secret("zeta-pass-1")


def test_a_named_cluster_takes_an_endpoint_override(several):
    profile = load_profile("mid", endpoint="http://127.0.0.1:9999")
    assert profile.endpoint == "http://127.0.0.1:9999" and profile.user == "admin"


def test_empty_environment_variables_count_as_unset(several, monkeypatch):
    monkeypatch.setenv("OSCAR_USER", "")
    monkeypatch.setenv("OSCAR_ENDPOINT", "")
    assert load_profile().user == "oscar"


# --- errors name the fix ---------------------------------------------------------------------


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        load_profile(*args, **kwargs)
    return str(caught.value)


def test_no_file_and_no_endpoint(clean_environment):
    text = error_of()
    assert str(clean_environment / ".oscar-cli" / "config.yaml") in text
    assert "OSCAR_ENDPOINT" in text and "oscar-cli cluster add" in text
    assert "oscar-jupyter local start" in text


def test_unknown_cluster_lists_the_known_ones(several):
    text = error_of("nope")
    assert "'nope'" in text and "zeta, alpha, mid" in text and "config.yaml" in text


def test_named_cluster_without_a_file(tmp_path):
    text = error_of("prod", config_path=tmp_path / "none.yaml")
    assert "none.yaml" in text and "does not exist" in text and "endpoint=" in text


@pytest.mark.parametrize("bad", ["ftp://x.org", "oscar.example.org", "http://", "https:///p"])
def test_endpoint_must_be_http_from_the_environment(bad, monkeypatch):
    monkeypatch.setenv("OSCAR_ENDPOINT", bad)
    text = error_of()
    assert "$OSCAR_ENDPOINT" in text and "http://" in text and "https://" in text


def test_endpoint_must_be_http_in_the_file(tmp_path):
    path = write(tmp_path / "c.yaml", "oscar:\n  x:\n    endpoint: oscar.example.org\n")
    text = error_of(config_path=path)
    assert "oscar.x.endpoint" in text and "c.yaml" in text and "https://" in text


def test_endpoint_argument_is_named(clean_environment):
    assert "the endpoint argument" in error_of(endpoint="www.example.org")


def test_credentials_inside_the_endpoint_are_refused(clean_environment):
    text = error_of(endpoint="https://u:hunter2@x.example.org")
    assert "OSCAR_USER" in text and "hunter2" not in text


def test_password_without_user(monkeypatch):
    monkeypatch.setenv("OSCAR_PASSWORD", "lonely-pass")
    text = error_of(endpoint="https://x.example.org")
    assert "OSCAR_USER" in text and "$OSCAR_PASSWORD" in text and "lonely-pass" not in text


def test_user_without_password(clean_environment):
    text = error_of(endpoint="https://x.example.org", user="someone")
    assert "OSCAR_PASSWORD" in text and "'someone'" in text


def test_bad_ssl_verify_word(monkeypatch):
    monkeypatch.setenv("OSCAR_SSL_VERIFY", "maybe")
    text = error_of(endpoint="https://x.example.org")
    assert "$OSCAR_SSL_VERIFY" in text and "true or false" in text and "'maybe'" in text


def test_bad_ssl_verify_in_the_file(tmp_path):
    path = write(
        tmp_path / "c.yaml", "oscar:\n  x:\n    endpoint: http://h\n    ssl_verify: sometimes\n"
    )
    text = error_of(config_path=path)
    assert "oscar.x" in text and "ssl_verify" in text and "c.yaml" in text


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = write(tmp_path / "c.yaml", "oscar:\n  x:\n    endpoint: [unclosed\n")
    text = error_of(config_path=path)
    assert "c.yaml" in text and "not valid YAML" in text and "line" in text


def test_invalid_json_says_json_because_of_the_name(tmp_path):
    path = write(tmp_path / "config", "oscar:\n  x: {}\n")
    text = error_of(config_path=path)
    assert "not valid JSON" in text and ".yaml" in text


def test_cluster_without_endpoint(tmp_path):
    path = write(tmp_path / "c.yaml", "oscar:\n  x:\n    auth_user: a\n")
    text = error_of("x", config_path=path)
    assert "oscar.x" in text and "endpoint" in text and "https://" in text


def test_several_clusters_and_no_default(tmp_path):
    path = write(
        tmp_path / "c.yaml", "oscar:\n  a: {endpoint: 'http://a'}\n  b: {endpoint: 'http://b'}\n"
    )
    text = error_of(config_path=path)
    assert "a, b" in text and "oscar-cli cluster default" in text


def test_default_names_a_missing_cluster(tmp_path):
    path = write(tmp_path / "c.yaml", "oscar:\n  a: {endpoint: 'http://a'}\ndefault: gone\n")
    text = error_of(config_path=path)
    assert "default: gone" in text and "c.yaml" in text


def test_file_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path / "c.yaml", "- just\n- a list\n")
    assert "'oscar:'" in error_of(config_path=path)


def test_jupyter_block_must_be_a_mapping(tmp_path):
    path = write(tmp_path / "c.yaml", "oscar:\n  a:\n    endpoint: http://a\n    jupyter: vega\n")
    assert "oscar.a" in error_of(config_path=path) and "jupyter" in error_of(config_path=path)


def test_profile_validates_itself():
    with pytest.raises(ConfigError, match="cluster id is empty"):
        ClusterProfile("", "https://x.org")
    with pytest.raises(ConfigError, match="no user"):
        ClusterProfile("x", "https://x.org", password=Secret("p"))
    with pytest.raises(ConfigError, match="https://"):
        ClusterProfile("x", "x.org")


# --- saving ----------------------------------------------------------------------------------


def test_save_keeps_other_clusters_their_order_and_unknown_keys(several):
    raw = yaml.safe_load(several.read_text())
    raw["oscar"]["zeta"]["site_flag"] = 7
    raw["extra_top_level"] = {"k": "v"}
    several.write_text(yaml.safe_dump(raw, sort_keys=False))

    changed = ClusterProfile(
        "zeta",
        "https://zeta2.example.org",
        user="oscar",
        password=Secret("new-pass"),
        defaults={"memory": "1Gi"},
    )
    added = ClusterProfile(
        "local", "http://127.0.0.1:8765", user="oscar", password=Secret("local-pass")
    )
    save_profile(changed)
    path = save_profile(added)

    saved = yaml.safe_load(path.read_text())
    assert list(saved["oscar"]) == ["zeta", "alpha", "mid", "local"]
    assert saved["extra_top_level"] == {"k": "v"}
    assert saved["oscar"]["mid"]["site_note"] == "keep me"
    assert saved["oscar"]["alpha"] == raw["oscar"]["alpha"]
    assert saved["oscar"]["zeta"]["site_flag"] == 7
    assert saved["oscar"]["zeta"]["auth_password"] == "new-pass"
    assert saved["oscar"]["zeta"]["memory"] == "1Gi"
    assert "jupyter" not in saved["oscar"]["zeta"]  # the profile has no jupyter block now
    assert saved["default"] == "zeta"
    assert load_profile("local") == added


def test_save_round_trips_every_field(tmp_path):
    profile = ClusterProfile(
        "r",
        "https://r.example.org",
        user="u",
        password=Secret("p"),
        refresh_token=Secret("a.b.c"),
        oidc_account_name="egi",
        ssl_verify=False,
        defaults={"log_level": "DEBUG", "jupyter": {"node": "n1"}},
    )
    path = save_profile(profile, config_path=tmp_path / "c.yaml")
    assert load_profile("r", config_path=path) == profile
    entry = yaml.safe_load(path.read_text())["oscar"]["r"]
    assert entry["oidc_refresh_token"] == "a.b.c" and entry["oidc_account_name"] == "egi"
    assert entry["ssl_verify"] is False


def test_save_make_default_and_first_cluster_becomes_default(tmp_path):
    path = tmp_path / "sub" / "dir" / "config.yaml"
    save_profile(ClusterProfile("one", "http://one"), config_path=path)
    save_profile(ClusterProfile("two", "http://two"), config_path=path)
    assert default_profile_name(path) == "one"
    save_profile(ClusterProfile("two", "http://two"), config_path=path, make_default=True)
    assert default_profile_name(path) == "two"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_save_writes_mode_0600_atomically(several):
    several.chmod(0o644)
    save_profile(ClusterProfile("mid", "http://127.0.0.1:8080", user="admin", password=Secret("x")))
    assert stat.S_IMODE(several.stat().st_mode) == 0o600
    assert sorted(p.name for p in several.parent.iterdir()) == ["config.yaml"]  # no temp files


def test_save_json_file_stays_json(tmp_path):
    path = write(
        tmp_path / "config.json",
        json.dumps({"oscar": {"a": {"endpoint": "http://a", "z": 1}}, "default": "a"}),
    )
    save_profile(ClusterProfile("b", "http://b", user="u", password=Secret("p")), config_path=path)
    data = json.loads(path.read_text())
    assert list(data["oscar"]) == ["a", "b"] and data["oscar"]["a"]["z"] == 1
    assert data["oscar"]["b"]["auth_password"] == "p" and data["default"] == "a"


def test_save_refuses_defaults_it_cannot_place(tmp_path):
    with pytest.raises(ConfigError, match=r"defaults\['jupyter'\]"):
        save_profile(
            ClusterProfile("a", "http://a", defaults={"node": "x"}), config_path=tmp_path / "c.yaml"
        )


def test_save_does_not_store_a_short_lived_access_token(tmp_path):
    path = save_profile(
        ClusterProfile("a", "http://a", token=Secret("short-lived-tok")),
        config_path=tmp_path / "c.yaml",
    )
    assert "short-lived-tok" not in path.read_text()
