"""A real jupyter_server (pytest-jupyter's `jp_fetch`) with the sidebar's server extension, and
a connected oscar-jupyter session on the local OSCAR to submit jobs through the Python API."""

from __future__ import annotations

import pytest

# pytest-jupyter's fixtures and its async-test hooks, for the tests in this folder only.
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from pytest_jupyter.pytest_tornasync import *  # noqa: F403

from oscar_jupyter import session as session_module

NODE = "local-slurm"


@pytest.fixture()
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"oscar_jupyter.server": True}}}


@pytest.fixture()
def oscar_config(local_oscar, monkeypatch):
    """The Jupyter server (same process) reads the local OSCAR's oscar-cli profile file."""
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return local_oscar.profile_path


@pytest.fixture()
def session(oscar_config, monkeypatch):
    """A kernel-like session connected to the local OSCAR; its unfinished jobs are cancelled."""
    monkeypatch.setattr(session_module, "_current", None)
    session_module.connect("local")
    current = session_module.current()
    yield current
    for job in current.jobs.values():
        if not job.is_done():
            job.cancel()
