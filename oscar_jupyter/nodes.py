"""Virtual nodes of a cluster, read from OSCAR's `/system/status`."""

from __future__ import annotations

from dataclasses import dataclass

from .client import OscarClient


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


def list_nodes(client: OscarClient, *, interlink_only: bool = False) -> list[VirtualNode]:
    """The cluster's nodes as `/system/status` reports them (virtual nodes first)."""
    status = client.status()
    nodes = [VirtualNode.from_status(n) for n in (status.get("cluster") or {}).get("nodes") or []]
    if interlink_only:
        nodes = [n for n in nodes if n.is_interlink]
    return sorted(nodes, key=lambda n: (not n.is_interlink, n.name))


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
