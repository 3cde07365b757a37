"""Why a job still waits: said once it has waited long enough to matter.

A start takes a few seconds when all is well; past `EXPLAIN_WAIT_SECONDS` the status line says
what holds the job: OSCAR's Kueue quota (pkg/utils/kueue.go), a GPU the node lacks, the site's
Slurm queue, or a log route that answers 404.
"""

from __future__ import annotations

from .spec import DEFAULT_MEMORY, OffloadSpec, format_memory, parse_memory

EXPLAIN_WAIT_SECONDS = 20.0
# OSCAR's per-user Kueue quota for non-admin users, unless the admins set another
# (pkg/utils/kueue.go: KUEUE_DEFAULT_CPU, KUEUE_DEFAULT_MEMORY; no GPU).
KUEUE_DEFAULT_CPU = 2.0
KUEUE_DEFAULT_MEMORY_BYTES = 2 * 1024**3


def waiting_reason(
    status: str, waited: float, spec: OffloadSpec, *, log_route_failing: bool, basic_auth: bool
) -> str:
    """Why a job in `status` after `waited` seconds still waits; "" when it need not say."""
    if waited < EXPLAIN_WAIT_SECONDS:
        return ""
    if log_route_failing:
        return (
            "OSCAR lists the job as Running but its log route answers 404 (OSCAR turns "
            "any Kubernetes error there into 404); the output will appear once it answers"
        )
    node = spec.node or "the virtual node"
    if status == "Suspended":
        return "OSCAR has not created the job's pod yet" if basic_auth else kueue_reason(spec)
    if status != "Pending":
        return ""
    if spec.gpus and spec.site.schedules_gpus:
        return f"the pod asks for a GPU (enable_gpu): it is Pending until {node} has one free"
    return (
        f"{node} has taken the pod; it waits in the site's Slurm queue (squeue on the site "
        "says why) or for its image to be pulled"
    )


def kueue_reason(spec: OffloadSpec) -> str:
    """Why Kueue holds a non-admin user's job: over the default quota alone, or with others."""
    cpu = float(spec.cpus_per_task or 1)
    memory = parse_memory(spec.mem or DEFAULT_MEMORY)
    over = []
    if cpu > KUEUE_DEFAULT_CPU:
        over.append(f"{cpu:g} CPUs > {KUEUE_DEFAULT_CPU:g}")
    if memory > KUEUE_DEFAULT_MEMORY_BYTES:
        over.append(f"{format_memory(memory)} of memory > 2Gi")
    if over:
        return (
            "suspended by Kueue: this job alone asks more than OSCAR's default per-user "
            f"quota ({', '.join(over)}), so it is never admitted unless the cluster's "
            "admins gave you more; ask for at most 2 CPUs and 2Gi (--cpus-per-task, --mem)"
        )
    return (
        "suspended by Kueue: OSCAR admits a user's jobs while their CPUs and memory fit "
        "a per-user quota (by default 2 CPUs and 2Gi in all); your other running jobs may "
        "be using it (%oscar_jobs --mine)"
    )
