"""What the sidebar shows, computed from OSCAR itself (never from server memory), without tornado.

Jobs submitted by any kernel (the magic, `offload()`, the panel) appear here because they are read
back from the runner services' job listings: one services listing plus one job listing per runner
service per refresh, never one request per job (a finished job's log is read once, for its exit
status).
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from ..client import OscarClient, OscarError
from ..config import (
    ClusterProfile,
    ConfigError,
    default_config_path,
    default_profile_name,
    list_profiles,
    load_profile,
)
from ..logs import LogParser
from ..nodes import list_nodes
from ..spec import RUNNER_LABEL

# A sidebar request must not hang a Jupyter server thread for OscarClient's default 30 s.
CLIENT_TIMEOUT_SECONDS = 15.0
# Lines of output sent to the log dialog; a cell that printed more is cut at the front.
MAX_LOG_LINES = 5000
MAX_CACHED_OUTCOMES = 10000


class ClientCache:
    """One OscarClient per cluster name, rebuilt when the profile behind it changes on disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str | None, tuple[ClusterProfile, OscarClient]] = {}

    def get(self, cluster: str | None) -> OscarClient:
        profile = load_profile(cluster)
        with self._lock:
            cached = self._clients.get(cluster)
            if cached is not None and cached[0] == profile:
                return cached[1]
            client = OscarClient(profile, timeout=CLIENT_TIMEOUT_SECONDS)
            self._clients[cluster] = (profile, client)
        if cached is not None:
            cached[1].close()
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for _profile, client in clients:
            client.close()


def is_runner_service(service: dict[str, Any]) -> bool:
    return (service.get("labels") or {}).get(RUNNER_LABEL) == "true"


class SidebarBackend:
    """The five things the sidebar asks for. `cluster` names an oscar-cli profile; None means the
    config file's default cluster (or the `OSCAR_*` environment, as `%oscar_connect` does).

    Raises `ConfigError` (fix the profile), `OscarError` (OSCAR's own message) or `ValueError`
    (a malformed service or job name); messages never hold a secret.
    """

    def __init__(self) -> None:
        self.clients = ClientCache()
        self._outcomes: dict[tuple[str, str, str], int | None] = {}
        self._outcomes_lock = threading.Lock()

    def clusters(self) -> dict[str, Any]:
        path = default_config_path()
        names = list_profiles(path)
        entries = []
        for name in names:
            try:
                profile = load_profile(name, config_path=path)
            except ConfigError as err:
                entries.append({"name": name, "endpoint": None, "error": str(err)})
            else:
                entries.append({"name": name, "endpoint": profile.endpoint,
                                "auth": profile.auth_kind, "error": None})
        default = default_profile_name(path) if names else None
        return {"config_path": str(path), "clusters": entries, "default": default}

    def nodes(self, cluster: str | None) -> dict[str, Any]:
        client = self.clients.get(cluster)
        nodes = list_nodes(client, interlink_only=True)
        return {"cluster": client.profile.cluster_id, "nodes": [asdict(n) for n in nodes]}

    def jobs(self, cluster: str | None) -> dict[str, Any]:
        client = self.clients.get(cluster)
        jobs: list[dict[str, Any]] = []
        for service in client.list_services():
            if not is_runner_service(service):
                continue
            name = service.get("name") or ""
            try:
                listing = client.list_jobs(name)
            except OscarError as err:
                if err.status_code == 404:
                    continue  # deleted between the two calls (`%oscar_cleanup --services`)
                raise
            for job_name, info in listing.items():
                status, exit_code = self._cell_outcome(client, name, job_name, info)
                jobs.append({
                    "service": name,
                    "job": job_name,
                    "node": service.get("interlink_node_name") or None,
                    "status": status,
                    "exit_code": exit_code,
                    "creation_time": info.get("creation_time") or None,
                    "start_time": info.get("start_time") or None,
                    "finish_time": info.get("finish_time") or None,
                })
        # Newest first; a job without a pod yet (no creation time) is the newest of all.
        jobs.sort(key=lambda j: j["creation_time"] or "\uffff", reverse=True)
        return {"cluster": client.profile.cluster_id, "jobs": jobs}

    def _cell_outcome(
        self, client: OscarClient, service: str, job: str, info: dict[str, Any]
    ) -> tuple[str, int | None]:
        """OSCAR says Succeeded even when the cell failed: a finished job's status comes from the
        runner's exit sentinel, read once per job (finished logs do not change) and cached."""
        status = info.get("status") or "Unknown"
        if status not in ("Succeeded", "Failed"):
            return status, None
        key = (client.endpoint, service, job)
        with self._outcomes_lock:
            known = key in self._outcomes
            exit_code = self._outcomes.get(key)
        if not known:
            parser = LogParser()
            try:
                parser.feed(client.job_logs(service, job))
            except OscarError:
                return status, None  # try again next refresh
            exit_code = parser.exit_code
            with self._outcomes_lock:
                if len(self._outcomes) >= MAX_CACHED_OUTCOMES:
                    self._outcomes.clear()
                self._outcomes[key] = exit_code
        if exit_code is None:
            return "Failed", None  # finished without the runner's sentinel: it never ran through
        return ("Succeeded" if exit_code == 0 else "Failed"), exit_code

    def cancel(self, cluster: str | None, service: str, job: str) -> dict[str, Any]:
        client = self.clients.get(cluster)
        client.delete_job(service, job)
        return {"cluster": client.profile.cluster_id, "service": service, "job": job,
                "cancelled": True}

    def log(self, cluster: str | None, service: str, job: str) -> dict[str, Any]:
        client = self.clients.get(cluster)
        parser = LogParser()
        parser.feed(client.job_logs(service, job))
        lines = parser.lines[-MAX_LOG_LINES:]
        return {
            "cluster": client.profile.cluster_id,
            "service": service,
            "job": job,
            "lines": [{"stream": line.stream, "text": line.text} for line in lines],
            "omitted": len(parser.lines) - len(lines),
            "exit_code": parser.exit_code,
            "node": (parser.started or {}).get("node"),
            "traceback": parser.traceback() or None,
        }

    def close(self) -> None:
        self.clients.close()
