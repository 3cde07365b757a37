"""The local OSCAR's state on disk: home layout, services and jobs (atomic JSON), admin password.

Everything the server must remember across `local stop` / `local start` lives in `state.json`;
each write goes to a temporary file in the same folder and is renamed over the old one, so a
crash leaves either the old or the new state, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_atomically

HOME_ENV = "OSCAR_JUPYTER_LOCAL_HOME"
STATE_VERSION = 1

# Job phases as `GET /system/logs/{service}` reports them.
SUSPENDED = "Suspended"
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED})


def default_home() -> Path:
    """`$OSCAR_JUPYTER_LOCAL_HOME`, else `~/.local/share/oscar-jupyter/local`."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "oscar-jupyter" / "local"


@dataclass(frozen=True)
class HomeLayout:
    """Where the local OSCAR keeps its files."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def password_file(self) -> Path:
        return self.root / "admin-password"

    @property
    def pid_file(self) -> Path:
        return self.root / "server.pid"

    @property
    def runtime_file(self) -> Path:
        """Written by the daemon: pid, port and endpoint of the running server."""
        return self.root / "server.json"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def jobs_dir(self) -> Path:
        """The interLink Slurm plugin's `DataRootFolder`."""
        return self.root / "jobs"

    @property
    def bodies_dir(self) -> Path:
        """Bodies of jobs Kueue keeps suspended (their pod is made when they are admitted)."""
        return self.root / "bodies"

    @property
    def kubeconfig_file(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def supervisor_kit_dir(self) -> Path:
        return self.root / "supervisor-kit"

    def create(self) -> None:
        """The home and its jobs folder, private to the user: they hold tokens and job values."""
        for directory in (self.root, self.jobs_dir, self.bodies_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            directory.chmod(0o700)


def ensure_admin_password(layout: HomeLayout) -> str:
    """The admin password of this installation: read it, or create a random one (file mode 0600)."""
    layout.create()
    path = layout.password_file
    if path.exists():
        password = path.read_text().strip()
        if password:
            return password
    password = secrets.token_urlsafe(24)
    write_atomically(path, password + "\n", mode=0o600)
    return password


class StateError(RuntimeError):
    """state.json cannot be read; the message names the file."""


class LocalState:
    """Services and jobs of the local OSCAR, kept in memory and saved to `state.json` on change.

    `services` maps a service name to its public definition (what `GET /system/services/{name}`
    returns); `secrets` holds each service's secret environment values, which OSCAR keeps out of
    the definition; `jobs` maps a job name to its record (see oscar.py for the fields);
    `releases` the interLink and Slurm-plugin releases the server models
    (`{"plugin": "0.6.1", "interlink": "0.6.1"}`, releases.py), written when it starts.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.services: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.provisioned_users: list[str] = []
        self.releases: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise StateError(
                f"cannot read the local OSCAR's state {self.path}: {error}; "
                "move the file away to start with no services and no jobs"
            ) from error
        self.services = dict(data.get("services", {}))
        self.secrets = dict(data.get("secrets", {}))
        self.jobs = dict(data.get("jobs", {}))
        self.provisioned_users = list(data.get("provisioned_users", []))
        self.releases = dict(data.get("releases", {}))

    def save(self) -> None:
        document = {
            "version": STATE_VERSION,
            "services": self.services,
            "secrets": self.secrets,
            "jobs": self.jobs,
            "provisioned_users": self.provisioned_users,
            "releases": self.releases,
        }
        write_atomically(self.path, json.dumps(document, indent=1, sort_keys=True))

    def jobs_of(self, service_name: str) -> list[dict[str, Any]]:
        return [job for job in self.jobs.values() if job["service"] == service_name]

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        return [job for job in self.jobs.values() if job["phase"] not in TERMINAL_PHASES]
