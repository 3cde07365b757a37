"""Fixtures shared by the whole suite.

`slurm_cluster`  the real single-node Slurm (`scripts/slurm-cluster.sh start`); fails loudly when
                 it cannot start. Skipped only with OSCAR_JUPYTER_EXECUTOR=process, the mode for
                 machines without Slurm. It is left running: other sessions may use it.
`local_oscar`    one local OSCAR for the session, started with `daemon.start` in a temporary home
                 on a free port, its `local` profile (admin, Basic) and the OIDC profiles
                 `local-alice`, `local-bob` in a temporary oscar-cli config (`user_token()`,
                 `user_client()` give a user's bearer token / client); at the end
                 it is stopped and the fixture checks that no server process and no job is left.
                 It models interLink and its Slurm plugin 0.6.1, what sites run (the
                 default of `oscar-jupyter local start`).
`local_oscar_0_6_2`  a second one modelling interLink and the plugin 0.6.2 (started only when a
                 test asks for it).
`local_oscar_release`  parametrized over both: a test taking it runs once per release
                 (`handle.plugin_release` says which).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from oscar_jupyter.local import daemon
from oscar_jupyter.local.state import HomeLayout, LocalState

REPO = Path(__file__).resolve().parents[1]
EXECUTOR_ENV = "OSCAR_JUPYTER_EXECUTOR"
SESSION_USERS = ("alice", "bob")  # OIDC-style users of the session's local OSCAR


def executor_choice() -> str:
    """`slurm` unless the suite was told to use plain processes."""
    return os.environ.get(EXECUTOR_ENV, "slurm")


@dataclass(frozen=True)
class LocalOscarHandle:
    endpoint: str
    user: str
    password: str
    home: Path
    profile_path: Path
    executor: str
    users: tuple[str, ...] = ()
    user_profiles: dict[str, str] = field(default_factory=dict)  # user -> profile name
    kubeconfig: Path | None = None
    plugin_release: str = "0.6.1"  # the interLink Slurm plugin release it models
    interlink_release: str = "0.6.1"

    def __repr__(self) -> str:  # keeps the password out of pytest's failure reports
        return f"LocalOscarHandle(endpoint={self.endpoint!r}, home={str(self.home)!r})"

    def user_token(self, user: str) -> str:
        """A fresh access token of `user`, through the profile's refresh flow (config.py)."""
        from oscar_jupyter.config import load_profile, refresh_access_token

        profile = load_profile(self.user_profiles[user], config_path=self.profile_path)
        return refresh_access_token(profile).reveal()

    def user_client(self, user: str, **kwargs: Any) -> httpx.Client:
        """An httpx client sending `user`'s bearer token (close it, or use it in `with`)."""
        headers = {"Authorization": f"Bearer {self.user_token(user)}"}
        return httpx.Client(base_url=self.endpoint, headers=headers, timeout=30, **kwargs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    if executor_choice() == "process":
        pytest.skip(f"{EXECUTOR_ENV}=process: the suite runs without Slurm")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(
            "scripts/slurm-cluster.sh start failed; the Slurm tests need it "
            f"(or set {EXECUTOR_ENV}=process):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


def slurm_job_ids_alive(job_ids: list[str]) -> list[str]:
    """Those of `job_ids` that squeue still lists as pending, running or completing."""
    if not job_ids:
        return []
    result = subprocess.run(
        ["squeue", "--noheader", "-o", "%i", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a server whose parent exited is reaped by init a bit later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def server_pid(home: Path) -> int | None:
    """The running server of `home`, as daemon.py sees it."""
    return daemon._running_pid(HomeLayout(home))


RELEASES = ("0.6.1", "0.6.2")  # what oscar_jupyter.local.releases models


def _run_local_oscar(request, tmp_path_factory, release: str) -> Iterator[LocalOscarHandle]:
    """Start a local OSCAR modelling interLink and its plugin `release`, hand it out, stop it
    and check that nothing is left."""
    executor = executor_choice()
    if executor != "process":
        request.getfixturevalue("slurm_cluster")
    root = tmp_path_factory.mktemp(f"local-oscar-{release}")
    home = root / "home"
    profile_path = root / "oscar-cli" / "config.yaml"
    started = daemon.start(
        home=home,
        port=free_port(),
        executor=executor,
        config_path=profile_path,
        timeout=120,
        users=list(SESSION_USERS),
        plugin_version=release,
        interlink_version=release,
    )
    assert (started.plugin_release, started.interlink_release) == (release, release)
    handle = LocalOscarHandle(
        endpoint=started.endpoint,
        user="oscar",
        password=(home / "admin-password").read_text().strip(),
        home=home,
        profile_path=profile_path,
        executor=started.executor,
        users=SESSION_USERS,
        user_profiles=started.user_profiles,
        kubeconfig=started.kubeconfig,
        plugin_release=release,
        interlink_release=release,
    )
    yield handle
    pid = started.pid
    daemon.stop(home=home)
    assert server_pid(home) is None and not process_running(pid), "server still runs"
    state = LocalState(HomeLayout(home).state_file)
    job_ids = [job["job_id"] for job in state.jobs.values() if job.get("job_id")]
    if executor != "process":
        deadline = time.monotonic() + 15  # scancel is asynchronous: jobs pass through CG
        while slurm_job_ids_alive(job_ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slurm_job_ids_alive(job_ids) == [], "Slurm jobs left behind after stop"


@pytest.fixture(scope="session")
def local_oscar(request, tmp_path_factory) -> Iterator[LocalOscarHandle]:
    """The session's local OSCAR: interLink and its Slurm plugin 0.6.1 (module docstring)."""
    yield from _run_local_oscar(request, tmp_path_factory, "0.6.1")


@pytest.fixture(scope="session")
def local_oscar_0_6_1(local_oscar) -> LocalOscarHandle:
    return local_oscar


@pytest.fixture(scope="session")
def local_oscar_0_6_2(request, tmp_path_factory) -> Iterator[LocalOscarHandle]:
    """A second local OSCAR modelling interLink and the plugin 0.6.2 (the plugin's 0.6.2-pre5)."""
    yield from _run_local_oscar(request, tmp_path_factory, "0.6.2")


@pytest.fixture(scope="session", params=RELEASES, ids=lambda release: f"release-{release}")
def local_oscar_release(request) -> LocalOscarHandle:
    """`local_oscar` (0.6.1) and `local_oscar_0_6_2` in turn."""
    name = "local_oscar" if request.param == "0.6.1" else "local_oscar_0_6_2"
    return request.getfixturevalue(name)


@pytest.fixture()
def ipshell():
    """The test process's one IPython shell, with the extension loaded."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or __import__("IPython").get_ipython()
    shell.run_line_magic("load_ext", "oscar_jupyter")
    return shell
