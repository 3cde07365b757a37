"""A small subset of the Kubernetes API on the local OSCAR's port, enough for the official
`kubernetes` client: the interLink virtual node (`GET /api/v1/nodes[/{name}]`, with
`labelSelector`), job pods found by label (`GET /api/v1/namespaces/{ns}/pods`, `labelSelector`:
a job's pod carries `job-name=<job>` as the Job controller sets it) and their logs
(`GET /api/v1/namespaces/{ns}/pods/{pod}/log`, `follow`).

The node carries the labels and taint interLink's virtual kubelet sets
(`pkg/virtualkubelet/virtualkubelet.go`); its capacity is the executor's (Slurm's) CPUs and memory
and `nvidia.com/gpu` as configured (0 unless `--node-gpus`).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.web

from .services import MAIN_CONTAINER, VIRTUAL_NODE_TAINTS, virtual_node_labels
from .state import TERMINAL_PHASES

if TYPE_CHECKING:
    from .oscar import LocalOscar

FOLLOW_POLL_S = 0.1
_CREATED = "2025-01-01T00:00:00Z"


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
    resources = oscar.executor.node_resources()
    capacity = {
        "cpu": str(int(resources["cpus"])),
        "memory": f"{int(resources['memory_mib'])}Mi",
        "pods": "110",
        "nvidia.com/gpu": str(oscar.node_gpus),
    }
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


class PodsHandler(_KubeHandler):
    """The namespace's job pods (metadata and phase only), filtered by `labelSelector`."""

    def get(self, namespace: str) -> None:
        from .pod import pod_name

        selector = self.get_query_argument("labelSelector", "")
        items = []
        for job in list(self.oscar.state.jobs.values()):
            if job["namespace"] != namespace:
                continue
            labels = {
                "job-name": job["name"],
                "batch.kubernetes.io/job-name": job["name"],
                "oscar_service": job["service"],
            }
            if not selector_matches(selector, labels):
                continue
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod_name(job["name"], job["pod_uid"]),
                        "namespace": namespace,
                        "uid": job["pod_uid"],
                        "labels": labels,
                    },
                    "status": {"phase": self.oscar.refresh(job)["phase"]},
                }
            )
        self.send(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        )


class PodLogHandler(_KubeHandler):
    """The pod's log as the virtual kubelet serves it (the plugin's `GetLogs.go`: `job.out` and
    `run-<container>.out`, whole files)."""

    async def get(self, namespace: str, pod: str) -> None:
        job = self._job(namespace, pod)
        if job is None:
            self.fail(404, "NotFound", f'pods "{pod}" not found')
            return
        container = self.get_query_argument("container", MAIN_CONTAINER)
        if container != MAIN_CONTAINER:
            self.fail(400, "BadRequest", f"container {container} is not valid for pod {pod}")
            return
        if not job.get("pod_dir"):
            self.fail(
                400,
                "BadRequest",
                f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating',
            )
            return
        follow = self.get_query_argument("follow", "false").lower() == "true"
        self.set_header("Content-Type", "text/plain")
        pod_dir = Path(job["pod_dir"])
        # As the plugin's GetLogs.go: the whole of job.out and run-<container>.out, then, when
        # following, only what run-<container>.out grows by from that offset (job.out may grow
        # when the job ends: sending its growth again would land inside the container's lines).
        self.write(_read(pod_dir / "job.out"))
        container_log = pod_dir / f"run-{MAIN_CONTAINER}.out"
        first = _read(container_log)
        self.write(first)
        await self.flush()
        sent = len(first)
        while follow:
            current = self.oscar.state.jobs.get(job["name"])
            ended = current is None or self.oscar.refresh(current)["phase"] in TERMINAL_PHASES
            grown = _read(container_log, sent)
            if grown:
                self.write(grown)
                await self.flush()
                sent += len(grown)
            if ended:
                break
            await asyncio.sleep(FOLLOW_POLL_S)
        self.finish()

    def _job(self, namespace: str, pod: str) -> dict[str, Any] | None:
        from .pod import pod_name

        for job in self.oscar.state.jobs.values():
            if job["namespace"] == namespace and pod_name(job["name"], job["pod_uid"]) == pod:
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
