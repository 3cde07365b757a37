"""Kueue as OSCAR v4.1.2 sets it up for non-admin owners: each user has a ClusterQueue with a
nominal quota (`KUEUE_DEFAULT_CPU` 2, `KUEUE_DEFAULT_MEMORY` 2Gi, GPU 0 unless the cluster has
GPUs; `pkg/utils/kueue.go` `ensureClusterQueue`); a job of such a service is created suspended
(`pkg/handlers/job.go`) and admitted while the pod's limits (`pkg/types/service.go`
`CreateResources`: cpu, memory, `nvidia.com/gpu` 1 with `enable_gpu`) of the user's admitted,
unfinished jobs stay within the quota. Kueue's default queueing strategy is BestEffortFIFO: in
creation order, a job that does not fit does not hold back a later one that does. A job that alone
exceeds the quota stays suspended forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .interlink import parse_quantity

DEFAULT_CPU = "2"
DEFAULT_MEMORY = "2Gi"
DEFAULT_GPU = "0"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Resources:
    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)  # bytes
    gpu: Decimal = Decimal(0)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def within(self, quota: Resources) -> bool:
        return self.cpu <= quota.cpu and self.memory <= quota.memory and self.gpu <= quota.gpu

    def describe(self) -> str:
        return f"cpu {self.cpu}, memory {int(self.memory)} bytes, {GPU_RESOURCE} {self.gpu}"


def quota(
    cpu: str = DEFAULT_CPU, memory: str = DEFAULT_MEMORY, gpu: str = DEFAULT_GPU
) -> Resources:
    """A per-user quota from Kubernetes quantities; ValueError names the wrong one."""
    return Resources(
        parse_quantity(cpu, what="Kueue cpu quota"),
        parse_quantity(memory, what="Kueue memory quota"),
        parse_quantity(gpu, what="Kueue GPU quota"),
    )


def pod_limits(service: dict[str, Any]) -> Resources:
    """What Kueue counts for one job of `service` (OSCAR's defaults 0.2 CPU, 256Mi)."""
    return Resources(
        parse_quantity(service.get("cpu") or "0.2", what="service cpu"),
        parse_quantity(service.get("memory") or "256Mi", what="service memory"),
        Decimal(1) if service.get("enable_gpu") else Decimal(0),
    )


def admissions(
    waiting: Iterable[tuple[str, str, Resources]],
    in_use: dict[str, Resources],
    limits: Resources,
) -> list[str]:
    """Names of the waiting jobs (name, queue, needs; in creation order) Kueue admits now, given
    what each queue's admitted unfinished jobs use."""
    used = dict(in_use)
    admitted = []
    for name, queue, needs in waiting:
        total = used.get(queue, Resources()) + needs
        if total.within(limits):
            used[queue] = total
            admitted.append(name)
    return admitted
