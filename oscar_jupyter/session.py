"""The kernel's connection to one OSCAR cluster and what it offloaded there.

`connect()` checks the cluster once (health, info, config), `offload()` turns a cell into a job of a
runner service, creating the service the first time its configuration is used.
"""

from __future__ import annotations

import atexit
import dataclasses
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .client import OscarClient, OscarError
from .config import ClusterProfile, load_profile
from .jobs import Job, JobTimeout, Poller
from .nodes import VirtualNode, has_kubeconfig, list_nodes, list_nodes_from_kubernetes
from .spec import OffloadSpec

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(OffloadSpec))
RECENT_IMAGES = 8


class NotConnected(RuntimeError):
    pass


@dataclass
class ConnectionReport:
    cluster_id: str
    endpoint: str
    version: str
    auth: str
    interlink_available: bool
    nodes: list[VirtualNode] | None
    warnings: list[str] = field(default_factory=list)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self._repr_markdown_().replace("**", "").replace("`", ""))

    def _repr_markdown_(self) -> str:
        lines = [
            f"Connected to **{self.cluster_id}** at `{self.endpoint}` (OSCAR {self.version}, "
            f"{self.auth} auth)."
        ]
        if self.nodes is not None:
            names = ", ".join(f"`{n.name}`" for n in self.nodes if n.is_interlink) or "none"
            lines.append(f"interLink virtual nodes: {names}.")
        lines += [f"**Warning:** {w}" for w in self.warnings]
        return "\n\n".join(lines)


def profile_defaults(profile: ClusterProfile | None) -> dict[str, Any]:
    """Offload defaults a cluster profile carries: oscar-cli's `memory`, our `jupyter:` block."""
    if profile is None:
        return {}
    raw = dict(profile.defaults or {})
    found: dict[str, Any] = {}
    if raw.get("memory"):
        found["mem"] = raw["memory"]
    jupyter = raw.get("jupyter") or {}
    if isinstance(jupyter, Mapping):
        found.update({k.replace("-", "_"): v for k, v in jupyter.items()})
    return {k: v for k, v in found.items() if k in SPEC_FIELDS}


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; None and empty values do not override."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if value is None or value == "" or value == [] or value == {}:
                continue
            merged[key] = value
    return merged


class Session:
    def __init__(self) -> None:
        self.client: OscarClient | None = None
        self.profile: ClusterProfile | None = None
        self.report: ConnectionReport | None = None
        self.defaults: dict[str, Any] = {}  # the offload panel writes here
        self.jobs: dict[str, Job] = {}
        self.services: set[str] = set()  # runner services this kernel created
        self.used_services: set[str] = set()
        self.recent_images: list[str] = []
        self.poller = Poller()
        self._nodes: list[VirtualNode] | None = None
        self._names_jobs = False  # the cluster honours X-Delegated-Job-ID (learned on 1st submit)

    # -- connection ----------------------------------------------------------------------------

    def connect(self, name: str | None = None, **overrides: Any) -> ConnectionReport:
        profile = load_profile(name, **overrides)
        client = OscarClient(profile)
        try:
            client.health()
            info = client.info()
            config = client.config()
        except OscarError:
            client.close()
            raise
        warnings = []
        interlink = bool((config.get("config") or {}).get("interLink_available"))
        if not interlink:
            warnings.append(
                "this OSCAR reports interLink_available: false, so it ignores a service's node "
                "and runs jobs on an ordinary Kubernetes node, not on the HPC system."
            )
        if self.client is not None:
            self.client.close()
        self.client, self.profile = client, profile
        self._names_jobs = False
        self._nodes, problem = self._discover_nodes(client)
        if problem:
            warnings.append(problem)
        self.report = ConnectionReport(
            cluster_id=profile.cluster_id,
            endpoint=profile.endpoint,
            version=str(info.get("version", "unknown")),
            auth=profile.auth_kind,
            interlink_available=interlink,
            nodes=self._nodes,
            warnings=warnings,
        )
        return self.report

    @staticmethod
    def _discover_nodes(client: OscarClient) -> tuple[list[VirtualNode] | None, str | None]:
        """The cluster's nodes from OSCAR, else from Kubernetes; (None, why) when neither works."""
        try:
            return list_nodes(client), None
        except OscarError as err:
            oscar_problem = str(err)
        if has_kubeconfig():
            try:
                return list_nodes_from_kubernetes(), None
            except Exception as err:  # any kube client failure: fall through to the warning
                return None, (
                    f"could not list the cluster's nodes ({oscar_problem}; Kubernetes: {err}); "
                    "names go unchecked"
                )
        return None, f"could not list the cluster's nodes ({oscar_problem}); names go unchecked"

    def require_client(self) -> OscarClient:
        if self.client is None:
            self.connect()
        assert self.client is not None
        return self.client

    def nodes(self, refresh: bool = True) -> list[VirtualNode]:
        if refresh or self._nodes is None:
            nodes, problem = self._discover_nodes(self.require_client())
            if nodes is None:
                raise RuntimeError(problem)
            self._nodes = nodes
        return list(self._nodes)

    def known_node_names(self) -> list[str] | None:
        """interLink node names, or None when the cluster does not list them (then unchecked)."""
        if self._nodes is None:
            return None
        names = [n.name for n in self._nodes if n.is_interlink]
        return names or None

    # -- offloading ----------------------------------------------------------------------------

    def build_spec(self, flags: Mapping[str, Any], *base: Mapping[str, Any]) -> OffloadSpec:
        """Profile defaults < `base` layers (e.g. traitlets) < the panel's defaults < cell flags."""
        settings = merge_settings(profile_defaults(self.profile), *base, self.defaults, flags)
        unknown = sorted(set(settings) - set(SPEC_FIELDS))
        if unknown:
            raise TypeError(f"unknown offload settings: {', '.join(unknown)}")
        return OffloadSpec(**settings)

    def ensure_service(self, spec: OffloadSpec) -> str:
        client = self.require_client()
        name = spec.service_name()
        if name in self.used_services:
            return name
        try:
            client.get_service(name)
        except OscarError as err:
            if err.status_code != 404:
                raise
            definition = spec.service_definition()
            try:
                client.create_service(definition)
            except OscarError as create_err:
                if "already exists" not in create_err.message:
                    raise
            self.services.add(name)
        self.used_services.add(name)
        return name

    def submit(self, code: str, spec: OffloadSpec) -> Job:
        """Validate, make sure the runner service exists, and send the cell as a job."""
        spec.validate(known_nodes=self.known_node_names())
        body = spec.job_body(code)
        client = self.require_client()
        service = self.ensure_service(spec)
        job_name = f"{service}-{uuid.uuid4()}"
        if self._names_jobs:
            client.submit_job(service, body, job_id=job_name)
        else:
            # Until this OSCAR has shown that it honours X-Delegated-Job-ID, keep what is needed
            # to find the job by difference between two listings if it names the job itself.
            before = set(client.list_jobs(service))
            client.submit_job(service, body, job_id=job_name)
            after = client.list_jobs(service)
            fresh = sorted(set(after) - before)
            if job_name in after:
                self._names_jobs = True
            elif len(fresh) == 1:
                job_name = fresh[0]
            else:
                raise RuntimeError(
                    f"OSCAR accepted the job but named it itself, and {len(fresh)} new jobs of "
                    f"service {service} appeared at once; find it with %oscar_jobs"
                )
        job = Job(client, service, job_name, spec)
        self.jobs[job.name] = job
        self._remember_image(spec.image)
        return job

    def _remember_image(self, image: str) -> None:
        if image in self.recent_images:
            self.recent_images.remove(image)
        self.recent_images.insert(0, image)
        del self.recent_images[RECENT_IMAGES:]

    def cleanup(self, *, services: bool = False) -> tuple[int, int]:
        """Delete finished jobs of this kernel's runner services; with `services`, the services too.

        A job counts as finished when OSCAR says so or when its exit sentinel arrived (OSCAR may
        still say Running for the moment the supervisor needs to exit). Returns (jobs, services)
        deleted. Refuses to delete services while this kernel's jobs still run.
        """
        client = self.require_client()
        if services:
            running = [j.name for j in self.jobs.values() if not j.is_done()]
            if running:
                raise RuntimeError(
                    f"jobs still running: {', '.join(running)}; cancel them first (%oscar_cancel)"
                )
        deleted_jobs = 0
        for service in sorted(self.used_services):
            for name, info in client.list_jobs(service).items():
                known = self.jobs.get(name)
                finished = info.get("status") in ("Succeeded", "Failed") or (
                    known is not None and known.is_done()
                )
                if finished:
                    try:
                        client.delete_job(service, name)
                    except OscarError as err:
                        if err.status_code != 404:
                            raise
                    deleted_jobs += 1
        deleted_services = 0
        if services:
            for service in sorted(self.services):
                client.delete_service(service)
                self.used_services.discard(service)
                deleted_services += 1
            self.services.clear()
        return deleted_jobs, deleted_services

    def find_job(self, name: str) -> Job:
        """A job of this kernel by name (or unique prefix), or one of the runner services' jobs."""
        if name in self.jobs:
            return self.jobs[name]
        matches = [j for n, j in self.jobs.items() if n.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        client = self.require_client()
        for service in sorted(self.used_services) or _runner_services(client):
            if name.startswith(service + "-") and name in client.list_jobs(service):
                return Job(client, service, name, OffloadSpec())
        known = ", ".join(self.jobs) or "none in this kernel"
        raise KeyError(f"no job named {name!r} (jobs: {known})")


def _runner_services(client: OscarClient) -> list[str]:
    return [
        s["name"]
        for s in client.list_services()
        if (s.get("labels") or {}).get("oscar-jupyter/runner") == "true"
    ]


_current: Session | None = None


def current() -> Session:
    global _current
    if _current is None:
        _current = Session()
    return _current


def connect(name: str | None = None, **overrides: Any) -> ConnectionReport:
    """Connect this kernel to a cluster: a cluster of oscar-cli's config, or explicit settings."""
    return current().connect(name, **overrides)


def attach(name: str, *, wait: bool = True, timeout: float | None = None) -> Job:
    """Follow a job submitted from any kernel (or before a restart) as if submitted here.

    Its output is read again from the start; with `wait`, blocks until it ends and raises
    `JobFailed` (or `JobCancelled`) unless the cell succeeded. Ctrl-C stops following; it never
    cancels a job that this call did not submit.
    """
    session = current()
    job = session.find_job(name)
    session.jobs.setdefault(job.name, job)
    if not wait:
        session.poller.watch(job)
        return job
    job.result(timeout)
    return job


def jobs_left_running() -> list[Job]:
    """This kernel's jobs that had not ended when last polled (no network call)."""
    return [] if _current is None else [j for j in _current.jobs.values() if not j.is_done()]


@atexit.register
def _announce_jobs_left_running() -> None:
    # At kernel shutdown the notebook is gone; the kernel's stderr reaches the server's log.
    for job in jobs_left_running():
        print(
            f"oscar-jupyter: job {job.name} still runs on the cluster; get its output back in "
            f"any kernel with %oscar_attach {job.name}",
            file=sys.__stderr__ or sys.stderr,
            flush=True,
        )


def offload(
    code: str,
    *,
    wait: bool = True,
    timeout: float | None = None,
    **settings: Any,
) -> Job:
    """Run `code` as a job on the connected cluster; with `wait`, block until it ends.

    `settings` are `OffloadSpec` fields (node, time, cpus_per_task, mem, ...). Raises `SpecError`
    before anything is sent when a setting is invalid, and `JobFailed` when the code fails remotely.
    """
    session = current()
    job = session.submit(code, session.build_spec(settings))
    if not wait:
        session.poller.watch(job)
        return job
    try:
        job.result(timeout)
    except (KeyboardInterrupt, JobTimeout):
        job.cancel()  # never leave an orphaned job behind an interrupted call
        raise
    return job
