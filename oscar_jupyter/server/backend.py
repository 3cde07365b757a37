"""What the sidebar shows, computed from OSCAR itself (never from server memory), without tornado.

Jobs submitted by any kernel (the magic, `offload()`, the panel) appear here because they are read
back from the runner services' job listings: one services listing plus one job listing per runner
service per refresh. Each job's status is `Job.status()`, as in the kernel (`ownership.JobTracker`):
a job's log is read while its final state is unknown, then its final state is remembered.
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
from ..nodes import discover_nodes
from ..ownership import (
    JobTracker,
    check_scope,
    is_runner_service,
    kernel_tag_of,
    owner_identity,
    owns_service,
)
from ..session import profile_kubeconfig, profile_node_names

# A sidebar request must not hang a Jupyter server thread for OscarClient's default 30 s.
CLIENT_TIMEOUT_SECONDS = 15.0
# Lines of output sent to the log dialog; a cell that printed more is cut at the front.
MAX_LOG_LINES = 5000


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


class SidebarBackend:
    """The five things the sidebar asks for. `cluster` names an oscar-cli profile; None means the
    config file's default cluster (or the `OSCAR_*` environment, as `%oscar_connect` does).

    Raises `ConfigError` (fix the profile), `OscarError` (OSCAR's own message) or `ValueError`
    (a malformed service or job name); messages never hold a secret.
    """

    def __init__(self) -> None:
        self.clients = ClientCache()
        self.tracker = JobTracker()

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
        """The interLink nodes from the first source that knows them (nodes.discover_nodes):
        OSCAR, the Kubernetes API of the profile's (or the user's) kubeconfig, or the profile's
        list; `source` says which, `warning` why none did."""
        client = self.clients.get(cluster)
        found = discover_nodes(client, profile_node_names(client.profile),
                               profile_kubeconfig(client.profile))
        nodes = [n for n in found.nodes if n.is_interlink] if found.source else []
        return {"cluster": client.profile.cluster_id, "source": found.source,
                "warning": found.warning, "nodes": [asdict(n) for n in nodes]}

    def jobs(self, cluster: str | None, scope: str = "all") -> dict[str, Any]:
        """Jobs of every runner service the profile's user can list ("all"), or of the user's
        own runner services only ("mine"; OIDC users see only their own jobs either way)."""
        if check_scope(scope) == "kernel":
            raise ValueError("scope kernel: the sidebar is no kernel; use mine or all")
        client = self.clients.get(cluster)
        owner, by_sub = owner_identity(client) if scope == "mine" else ("", False)
        jobs: list[dict[str, Any]] = []
        for service in client.list_services():
            if not is_runner_service(service):
                continue
            if scope == "mine" and not by_sub and not owns_service(
                    service, owner, by_sub, client.endpoint):
                continue
            name = service.get("name") or ""
            try:
                listing = client.list_jobs(name)
            except OscarError as err:
                if err.status_code in (403, 404):
                    continue  # deleted between the two calls (`%oscar_cleanup --all`), or not ours
                raise
            states = self.tracker.states(client, name, listing)
            for job_name, info in listing.items():
                state = states[job_name]
                jobs.append({
                    "service": name,
                    "job": job_name,
                    "kernel": kernel_tag_of(name, job_name),
                    "node": state.node or service.get("interlink_node_name") or None,
                    "status": state.status,
                    "exit_code": state.exit_code,
                    "creation_time": info.get("creation_time") or None,
                    "start_time": info.get("start_time") or None,
                    "finish_time": info.get("finish_time") or None,
                })
        # Newest first; a job without a pod yet (no creation time) is the newest of all.
        jobs.sort(key=lambda j: j["creation_time"] or "\uffff", reverse=True)
        return {"cluster": client.profile.cluster_id, "jobs": jobs}

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
