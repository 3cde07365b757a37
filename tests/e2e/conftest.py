"""The e2e tests' session: this process connected to the session's local OSCAR as its admin."""

from __future__ import annotations

import pytest

import oscar_jupyter
from oscar_jupyter import session as session_module


@pytest.fixture()
def connected(local_oscar, monkeypatch):
    """A fresh session connected to the `local` profile; its unfinished jobs are cancelled after."""
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setattr(session_module, "_current", None)
    oscar_jupyter.connect("local")
    yield session_module.current()
    for job in session_module.current().jobs.values():
        if not job.is_done():
            job.cancel()
