"""Virtual nodes of a cluster: OSCAR's `/system/status`, the Kubernetes API, or the profile.

`/system/status` lists only nodes that metrics-server reports (OSCAR's pkg/handlers/status.go),
and interLink's virtual kubelet publishes no metrics: on a real cluster it lists no virtual node.
So `discover_nodes` asks, in order, OSCAR, then the Kubernetes API when a kubeconfig is at hand,
then the profile's own list (`jupyter: {nodes: [vega, leonardo]}`); when none of them knows an
interLink node, node names go unchecked, with one warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import timefmt
from .client import OscarClient, OscarError

# interLink >= 0.4 labels its virtual nodes with the first; older releases with the second.
INTERLINK_LABELS = ("virtual-node.interlink/type=virtual-kubelet", "type=virtual-kubelet")


SOURCES = ("OSCAR", "Kubernetes", "profile")


@dataclass(frozen=True)
class VirtualNode:
    name: str
    status: str
    cpu_total: float  # cores
    cpu_free: float
    memory_total_bytes: int
    memory_free_bytes: int
    gpus: int
    is_interlink: bool
    source: str = "OSCAR"  # where these facts came from: one of SOURCES
    reason: str = ""  # why a node is not Ready (its condition's message), when known

    @classmethod
    def from_profile(cls, name: str) -> VirtualNode:
        """A node the profile names: its name only, resources unknown."""
        return cls(
            name=name,
            status="Unknown",
            cpu_total=0,
            cpu_free=0,
            memory_total_bytes=0,
            memory_free_bytes=0,
            gpus=0,
            is_interlink=True,
            source="profile",
        )

    @property
    def resources_known(self) -> bool:
        return self.source != "profile" and self.cpu_total > 0

    @classmethod
    def from_status(cls, node: dict) -> VirtualNode:
        cpu = node.get("cpu") or {}
        memory = node.get("memory") or {}
        cpu_total = (cpu.get("capacity_cores") or 0) / 1000  # OSCAR reports millicores
        cpu_used = max(cpu.get("usage_cores") or 0, cpu.get("request_cores") or 0) / 1000
        memory_total = memory.get("capacity_bytes") or 0
        memory_used = max(memory.get("usage_bytes") or 0, memory.get("request_bytes") or 0)
        return cls(
            name=node.get("name", ""),
            status=node.get("status", "Unknown"),
            cpu_total=cpu_total,
            cpu_free=max(0.0, cpu_total - cpu_used),
            memory_total_bytes=memory_total,
            memory_free_bytes=max(0, memory_total - memory_used),
            gpus=int(node.get("gpu") or 0),
            is_interlink=bool(node.get("is_interlink")),
        )


def list_nodes(client: OscarClient) -> list[VirtualNode]:
    """The cluster's nodes as `/system/status` reports them (virtual nodes first)."""
    status = client.status()
    nodes = [VirtualNode.from_status(n) for n in (status.get("cluster") or {}).get("nodes") or []]
    return sorted(nodes, key=lambda n: (not n.is_interlink, n.name))


def list_nodes_from_kubernetes(kubeconfig: str) -> list[VirtualNode]:
    """interLink virtual nodes from the Kubernetes API.

    Needs the cluster's kubeconfig (an admin's: OSCAR gives its users no Kubernetes access).
    The kubernetes package is imported here, not at module level, because importing it costs
    about half a second.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    api_client = k8s_config.new_client_from_config(config_file=kubeconfig)
    try:
        api = k8s.CoreV1Api(api_client)
        found: dict[str, VirtualNode] = {}
        for selector in INTERLINK_LABELS:
            for node in api.list_node(label_selector=selector).items:
                if node.metadata is not None and node.metadata.name:
                    found.setdefault(node.metadata.name, _node_from_kubernetes(node))
    finally:
        api_client.close()
    return sorted(found.values(), key=lambda n: n.name)


def _node_from_kubernetes(node: Any) -> VirtualNode:
    from kubernetes.utils import parse_quantity

    capacity = node.status.allocatable or node.status.capacity or {}
    ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
    cpu = float(parse_quantity(capacity.get("cpu", "0")))
    memory = int(parse_quantity(capacity.get("memory", "0")))
    gpus = sum(
        int(parse_quantity(value)) for key, value in capacity.items() if key.endswith("/gpu")
    )
    is_ready = ready is not None and ready.status == "True"
    return VirtualNode(
        name=node.metadata.name,
        status="Ready" if is_ready else "NotReady",
        cpu_total=cpu,
        cpu_free=cpu,  # Kubernetes does not know what the HPC site has free; interLink reports
        memory_total_bytes=memory,  # the site's free resources as the node's capacity
        memory_free_bytes=memory,
        gpus=gpus,
        is_interlink=True,
        source="Kubernetes",
        reason="" if is_ready or ready is None else (ready.message or ready.reason or ""),
    )


@dataclass(frozen=True)
class NodeDiscovery:
    nodes: list[VirtualNode]  # what the source listed (may hold ordinary nodes too)
    source: str | None  # the source that knew an interLink node; None when none did
    warning: str | None = None

    @property
    def interlink_names(self) -> list[str] | None:
        """Names a cell may use, or None when no source knows them (then names go unchecked)."""
        names = [n.name for n in self.nodes if n.is_interlink]
        return names if self.source and names else None


def discover_nodes(
    client: OscarClient, profile_nodes: list[str] | None = None, kubeconfig: str | None = None
) -> NodeDiscovery:
    """The cluster's interLink nodes from the first source that knows any (module docstring).

    `kubeconfig`: the one the profile names (`jupyter: {kubeconfig: PATH}`), never $KUBECONFIG
    or ~/.kube/config, which may be another cluster's (and OSCAR gives its users no Kubernetes
    access: OSCAR.md 13 B5)."""
    problems: list[str] = []
    listed: list[VirtualNode] = []
    try:
        listed = list_nodes(client)
        if any(n.is_interlink for n in listed):
            return NodeDiscovery(listed, "OSCAR")
        problems.append(
            "OSCAR's /system/status lists no interLink node (it shows only nodes "
            "with metrics, and virtual kubelets publish none)"
        )
    except OscarError as err:
        if err.status_code in (None, 401, 403):
            raise  # the cluster is unreachable or refuses us: no other source will say more
        problems.append(f"OSCAR's /system/status failed: {err}")  # e.g. 500 without metrics
    if kubeconfig and os.path.exists(kubeconfig):
        try:
            from_kubernetes = list_nodes_from_kubernetes(kubeconfig)
            if from_kubernetes:
                return NodeDiscovery(from_kubernetes, "Kubernetes")
            problems.append(f"the Kubernetes API of {kubeconfig} lists no interLink node")
        except Exception as err:  # any kube client failure: try the next source
            problems.append(f"the Kubernetes API of {kubeconfig} failed: {err}")
    else:
        problems.append(
            "the profile names no kubeconfig of this cluster (jupyter: {kubeconfig: PATH}; "
            "an admin's: OSCAR gives its users no Kubernetes access)"
            if not kubeconfig
            else f"the profile's kubeconfig {kubeconfig} does not exist"
        )
    if profile_nodes:
        return NodeDiscovery([VirtualNode.from_profile(n) for n in profile_nodes], "profile")
    return NodeDiscovery(
        listed,
        None,
        (
            "no source lists this cluster's interLink nodes (" + "; ".join(problems) + "); node "
            "names go unchecked. Name them in the profile (jupyter: {nodes: [vega]}) to check them."
        ),
    )


def format_bytes(count: int) -> str:
    return timefmt.size(count)
