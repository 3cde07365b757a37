"""The local OSCAR's files: atomic, private, kept across restarts."""

from __future__ import annotations

import stat

import pytest

from oscar_jupyter.local import daemon
from oscar_jupyter.local.state import HomeLayout, LocalState, StateError, ensure_admin_password


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_admin_password_is_random_private_and_kept(tmp_path):
    first, other = HomeLayout(tmp_path / "a"), HomeLayout(tmp_path / "b")
    password = ensure_admin_password(first)
    assert len(password) >= 24
    assert mode(first.password_file) == 0o600
    assert ensure_admin_password(first) == password
    assert ensure_admin_password(other) != password


def test_state_survives_a_reload_and_is_private(tmp_path):
    path = tmp_path / "state.json"
    state = LocalState(path)
    state.services["svc"] = {"name": "svc", "token": "t" * 64}
    state.secrets["svc"] = {"API_KEY": "s3cr3t"}
    state.jobs["svc-1"] = {"name": "svc-1", "service": "svc", "phase": "Running"}
    state.save()
    assert mode(path) == 0o600
    again = LocalState(path)
    assert again.services == state.services and again.secrets == state.secrets
    assert [job["name"] for job in again.unfinished_jobs()] == ["svc-1"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_damaged_state_file_names_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match=str(path)):
        LocalState(path)


def test_port_comes_from_the_environment_and_bad_values_name_the_variable(monkeypatch):
    monkeypatch.delenv(daemon.PORT_ENV, raising=False)
    assert daemon.resolve_port() == 8765
    monkeypatch.setenv(daemon.PORT_ENV, "9123")
    assert daemon.resolve_port() == 9123
    assert daemon.resolve_port(9200) == 9200
    monkeypatch.setenv(daemon.PORT_ENV, "abc")
    with pytest.raises(daemon.DaemonError, match=daemon.PORT_ENV):
        daemon.resolve_port()
    with pytest.raises(daemon.DaemonError, match="1 to 65535"):
        daemon.resolve_port(70000)


def test_status_of_a_home_where_nothing_runs(tmp_path):
    assert daemon.status(home=tmp_path).running is False
    assert daemon.stop(home=tmp_path).was_running is False
