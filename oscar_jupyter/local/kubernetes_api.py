"""A small subset of the Kubernetes API on the local OSCAR's port, enough for the official
`kubernetes` client: the interLink virtual node (`GET /api/v1/nodes[/{name}]`, with
`labelSelector`), job pods found by label (`GET /api/v1/namespaces/{ns}/pods`, `labelSelector`:
a job's pod carries `job-name=<job>` as the Job controller sets it) and their logs
(`GET /api/v1/namespaces/{ns}/pods/{pod}/log`, `follow`).

The node carries the labels and taint interLink's virtual kubelet sets
(`pkg/virtualkubelet/virtualkubelet.go`); its capacity is the configured one (B13, default 100
CPUs, 3000G, 10000 pods, `nvidia.com/gpu` only with `--node-gpus`), not this machine's: see
virtual_kubelet.py. A pod's status says why the VK failed it (B3: reason `ProviderFailed`).
Pod logs are the plugin's GetLogs, following included (B6, `PodLogHandler`).

Credentials: the admin's Basic account (`<home>/kubeconfig`) and nothing else. On a real OSCAR an
OIDC user has no Kubernetes access at all (reference OSCAR.md section 13, B5: no OSCAR route
exposes the Kubernetes API, and the API server does not trust OSCAR's identity provider), so
this subset answers as a kube-apiserver with its default authentication and RBAC does: any other
credential (an OSCAR user's bearer token, a service token, a wrong password) is 401
`Unauthorized`; no credential at all is the anonymous user (`--anonymous-auth` defaults to true),
to whom RBAC grants none of these resources: 403 `Forbidden`.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.iostream
import tornado.web

from .services import MAIN_CONTAINER, VIRTUAL_NODE_TAINTS, virtual_node_labels
from .state import SUSPENDED
from .virtual_kubelet import FOLLOW_POLL_S

if TYPE_CHECKING:
    from .oscar import LocalOscar

__all__ = ["FOLLOW_POLL_S", "kubernetes_routes", "node_object", "pod_object"]

_CREATED = "2025-01-01T00:00:00Z"


def follow_waiting_message(session: str, path: str) -> str:
    """What the plugin writes into a followed log while `run-<container>.out` does not exist,
    every `FOLLOW_POLL_S` (4 s), with no newline (GetLogs.go 52-55; the session prefix is
    `GetSessionContextMessage`, func.go 197-199; the VK names the session `GetLogs#<0-99999>`,
    interLink `virtualkubelet.go` 2006-2007 at 0.6.1)."""
    return (
        f"HTTP InterLink session {session}: Cannot open in follow mode the container logs "
        f"{path} because it does not exist yet, sleeping before retrying..."
    )


def node_labels(node_name: str) -> dict[str, str]:
    """interLink's node labels (`type` is what releases before 0.4 set; the client asks for
    both)."""
    return {**virtual_node_labels(node_name), "type": "virtual-kubelet"}


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label selector subset: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma = and."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def node_object(oscar: LocalOscar) -> dict[str, Any]:
    capacity = dict(oscar.node_capacity)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": oscar.node_name,
            "uid": f"local-node-{oscar.node_name}",
            "resourceVersion": "1",
            "creationTimestamp": _CREATED,
            "labels": node_labels(oscar.node_name),
            "annotations": {},
        },
        "spec": {"taints": VIRTUAL_NODE_TAINTS},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is ready.",
                    "lastHeartbeatTime": _CREATED,
                    "lastTransitionTime": _CREATED,
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.29.0-vk-interlink",
                "kernelVersion": "",
                "osImage": "",
                "containerRuntimeVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def _status(
    code: int, reason: str, message: str, details: dict[str, str] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        status["details"] = details
    status["code"] = code
    return status


ANONYMOUS = "system:anonymous"


def forbidden_message(verb: str, path: str, user: str = ANONYMOUS) -> tuple[str, dict[str, str]]:
    """RBAC's refusal, worded as the API server words it (`forbidden` in
    `k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`), with the Status
    `details` it sends; `path` is the request's path."""
    parts = path.strip("/").split("/")
    namespace = None
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5:
        namespace, rest = parts[3], parts[4:]
    elif parts[:2] == ["api", "v1"] and len(parts) >= 3:
        rest = parts[2:]
    else:
        return f'forbidden: User "{user}" cannot {verb} path "{path}"', {}
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    full = "/".join([resource, *rest[2:3]])
    if not name:
        verb = "list" if verb == "get" else verb
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    subject = f'{resource} "{name}"' if name else resource
    details = {"name": name, "kind": resource} if name else {"kind": resource}
    return (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{full}" in API group "" '
        f"{scope}",
        details,
    )


class _KubeHandler(tornado.web.RequestHandler):
    def initialize(self, oscar: LocalOscar) -> None:
        self.oscar = oscar

    def prepare(self) -> None:
        """Only the admin's credentials pass (module docstring)."""
        header = self.request.headers.get("Authorization")
        if header is None:
            message, details = forbidden_message("get", self.request.path)
            self.fail(403, "Forbidden", message, details)
        elif not self.oscar.basic_auth_ok(header):
            self.fail(401, "Unauthorized", "Unauthorized")

    def fail(
        self, code: int, reason: str, message: str, details: dict[str, str] | None = None
    ) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(_status(code, reason, message, details)))

    def send(self, document: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))


class NodesHandler(_KubeHandler):
    def get(self) -> None:
        selector = self.get_query_argument("labelSelector", "")
        node = node_object(self.oscar) if self.oscar.interlink_available else None
        items = [node] if node and selector_matches(selector, node["metadata"]["labels"]) else []
        self.send(
            {
                "apiVersion": "v1",
                "kind": "NodeList",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        )


class NodeHandler(_KubeHandler):
    def get(self, name: str) -> None:
        if name != self.oscar.node_name or not self.oscar.interlink_available:
            self.fail(404, "NotFound", f'nodes "{name}" not found')
            return
        self.send(node_object(self.oscar))


def pod_object(oscar: LocalOscar, job: dict[str, Any]) -> dict[str, Any]:
    """The job's pod: metadata, the node it is bound to, and its status as the VK last wrote
    it (phase; reason, message and container states after a failed create)."""
    from .pod import pod_name

    labels = {
        "job-name": job["name"],
        "batch.kubernetes.io/job-name": job["name"],
        "oscar_service": job["service"],
    }
    status: dict[str, Any] = {"phase": oscar.refresh(job)["phase"]}
    status.update(job.get("pod_status") or {})
    spec: dict[str, Any] = {"containers": [{"name": MAIN_CONTAINER}]}
    if oscar.scheduled(job):
        spec["nodeName"] = oscar.node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job["name"], job["pod_uid"]),
            "namespace": job["namespace"],
            "uid": job["pod_uid"],
            "labels": labels,
        },
        "spec": spec,
        "status": status,
    }


class PodsHandler(_KubeHandler):
    """The namespace's job pods, filtered by `labelSelector`. A job Kueue keeps suspended has
    no pod yet."""

    def get(self, namespace: str) -> None:
        selector = self.get_query_argument("labelSelector", "")
        items = []
        for job in list(self.oscar.state.jobs.values()):
            if job["namespace"] != namespace or job["phase"] == SUSPENDED:
                continue
            pod = pod_object(self.oscar, job)
            if selector_matches(selector, pod["metadata"]["labels"]):
                items.append(pod)
        self.send(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        )


class PodLogHandler(_KubeHandler):
    """The pod's log as the virtual kubelet serves it: the plugin's `GetLogs.go` (0.6.1 and
    0.6.2-pre5 alike, line numbers of 0.6.1).

    The answer is `job.out` then `run-<container>.out`, whole files, a missing one read as
    empty (194-221, 314-330), so a pod not started or failed at sbatch (B3: no directory)
    answers 200 with what there is; a pod not scheduled (B8) has no log location: 200, empty,
    not followed. `follow` (B6, 26-149, 302-307) then
    re-reads only `run-<container>.out` from the offset of that first read, every 4 s while
    nothing new comes, and stops after one last read once `run-<container>.status` exists or
    the job is gone (the plugin's JID check, 124-129). While the file does not exist yet, the
    plugin writes `follow_waiting_message` into the stream every 4 s, without a newline, so it
    joins the first line of output (48-64). Deliberate difference: that wait ends when the job
    is deleted (the plugin's loop would go on until the client hangs up)."""

    async def get(self, namespace: str, pod: str) -> None:
        job = self._job(namespace, pod)
        if job is None:
            self.fail(404, "NotFound", f'pods "{pod}" not found')
            return
        container = self.get_query_argument("container", MAIN_CONTAINER)
        if container != MAIN_CONTAINER:
            self.fail(400, "BadRequest", f"container {container} is not valid for pod {pod}")
            return
        follow = self.get_query_argument("follow", "false").lower() == "true"
        self.set_header("Content-Type", "text/plain")
        pod_dir = Path(job["pod_dir"]) if job.get("pod_dir") else None
        container_log = (pod_dir or self._files_path(job)) / f"run-{container}.out"
        first = _read(container_log)
        self.write(_read(pod_dir / "job.out") if pod_dir else b"")
        self.write(first)
        try:
            await self.flush()
            # B8: no node, no log location: the API server answers at once, even when following.
            if follow and self.oscar.scheduled(job):
                await self._follow(job, container_log, len(first))
        except tornado.iostream.StreamClosedError:
            return  # the client hung up
        self.finish()

    async def _follow(self, job: dict[str, Any], container_log: Path, offset: int) -> None:
        session = f"GetLogs#{random.randrange(100000)}"
        while not container_log.exists():
            if self._gone(job):
                return
            self.write(follow_waiting_message(session, str(container_log)))
            await self.flush()
            await asyncio.sleep(self.oscar.follow_poll_s)
        status_file = container_log.with_suffix(".status")
        dead = False
        while True:
            grown = _read(container_log, offset)
            if grown:
                offset += len(grown)
                self.write(grown)
                await self.flush()
                continue
            if dead:
                return
            if self._gone(job) or status_file.exists():
                dead = True  # one last read
            else:
                await asyncio.sleep(self.oscar.follow_poll_s)

    def _gone(self, job: dict[str, Any]) -> bool:
        return self.oscar.state.jobs.get(job["name"]) is not job

    def _files_path(self, job: dict[str, Any]) -> Path:
        """Where the plugin would have put the job's files (`DataRootFolder` + ns-uid)."""
        return Path(f"{self.oscar.plugin_config.data_root}{job['namespace']}-{job['pod_uid']}")

    def _job(self, namespace: str, pod: str) -> dict[str, Any] | None:
        from .pod import pod_name

        for job in self.oscar.state.jobs.values():
            if (
                job["namespace"] == namespace
                and job["phase"] != SUSPENDED
                and pod_name(job["name"], job["pod_uid"]) == pod
            ):
                return job
        return None


def _read(path: Path, offset: int = 0) -> bytes:
    """The bytes of `path` from `offset` on; none while it does not exist."""
    try:
        with open(path, "rb") as source:
            source.seek(offset)
            return source.read()
    except OSError:
        return b""


class KubeNotFound(_KubeHandler):
    def get(self, *_: str) -> None:
        self.fail(404, "NotFound", "the server could not find the requested resource")


def kubernetes_routes(oscar: LocalOscar) -> list[tuple[str, type, dict[str, Any]]]:
    args = {"oscar": oscar}
    return [
        (r"/api/v1/nodes", NodesHandler, args),
        (r"/api/v1/nodes/([^/]+)", NodeHandler, args),
        (r"/api/v1/namespaces/([^/]+)/pods", PodsHandler, args),
        (r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", PodLogHandler, args),
        (r"/api/(.*)", KubeNotFound, args),
    ]
