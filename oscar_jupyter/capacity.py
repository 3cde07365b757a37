"""A cell's request against the chosen virtual node's capacity, before anything is sent.

What the numbers mean: an interLink virtual node advertises, as its capacity (= allocatable),
what the HPC site offers: the virtual kubelet's configured `Resources` with plugin 0.6.1, or
the site's free CPUs and memory (refreshed every 30 s) with newer plugins. The job's pod asks
for `--cpus-per-task` CPUs (1 without it) and `--mem` (1024Mi without it), and Kubernetes never
places a pod whose request exceeds the node's allocatable: it stays Pending with no message.

Decisions:

* **Refused** (a SpecError naming the numbers): a request over the node's capacity. With a
  static capacity such a job can never start; with a capacity that follows the site's free
  resources it would wait, silently, for the whole site to free up more than it has now.
* **Noted, not refused**: a request over what OSCAR reports free now (only OSCAR's
  `/system/status` says what is in use; the Kubernetes API source gives capacity only). The
  job would queue until resources free up.
* **Not multiplied** by `--nodes` or by sbatch's `--ntasks`: the pod's request, which is what
  Kubernetes compares with the node, is one task's `--cpus-per-task` and `--mem` whatever Slurm
  does with it; the node's capacity is the site's aggregate, not one Slurm node's.
* **GPUs** travel to Slurm as `--gres=gpu:N`; the pod asks Kubernetes for a GPU only where the
  profile says the site schedules them (`gpu_scheduling`). A node that advertises GPUs (its
  configured accelerators) refuses more than it has. A node advertising none refuses `--gpus`
  only where GPUs are scheduled (the pod would stay Pending forever); elsewhere no count is
  advertised (interLink's default is 0), so it is a note: Slurm decides.
* Nothing is checked when the node's resources are unknown (named by the profile only, or not
  listed): no refusal without numbers.
* A large request with the node left at the cluster's default (no --node) is **noted**: nothing
  can check it against the node the cluster picks, but the listed virtual nodes say whether any
  of them could run it (`default_node_notes`).
"""

from __future__ import annotations

import math

from .nodes import VirtualNode, format_bytes
from .spec import DEFAULT_MEMORY, MiB, OffloadSpec, SpecError, parse_memory

GiB = 1024 * MiB
OTHER_NODE = "choose another node: %oscar_nodes"
# How the panel names "no --node": the cluster's default placement.
CLUSTER_DEFAULT = "(cluster default)"
# With the node left at the default, a request above these is noted (a small one is not news).
NOTED_CPUS = 1
NOTED_MEMORY = 4 * GiB


def requested_cpus(spec: OffloadSpec) -> int | None:
    """The CPUs the pod asks for (1 without --cpus-per-task); None when the value is invalid
    (validation reports it)."""
    value = spec.cpus_per_task
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def requested_memory(spec: OffloadSpec) -> int | None:
    """The bytes the pod asks for, rounded up to whole MiB as the service gets them; None when
    --mem is invalid (validation reports it)."""
    try:
        size = parse_memory(spec.mem if spec.mem is not None else DEFAULT_MEMORY)
    except SpecError:
        return None
    return math.ceil(size / MiB) * MiB


def requested_gpus(spec: OffloadSpec) -> int:
    value = spec.gpus
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return 0
    return value


def capacity_problems(spec: OffloadSpec, node: VirtualNode | None) -> list[SpecError]:
    """What `spec` asks for beyond what `node` can ever offer one job (module docstring), one
    SpecError per flag; [] when it fits or the node's resources are unknown."""
    if node is None or not node.resources_known:
        return []
    problems: list[SpecError] = []
    for check in (_cpu_problem, _memory_problem, _gpu_problem):
        problem = check(spec, node)
        if problem is not None:
            problems.append(problem)
    return problems


def capacity_error(spec: OffloadSpec, node: VirtualNode | None) -> SpecError | None:
    """All of `capacity_problems` as one SpecError (named by the first flag), or None."""
    problems = capacity_problems(spec, node)
    if not problems:
        return None
    if len(problems) == 1:
        return problems[0]
    return SpecError(problems[0].flag, "\n".join(str(problem) for problem in problems))


def capacity_notes(spec: OffloadSpec, node: VirtualNode | None) -> list[str]:
    """Soft notes: the request fits the node but not what is free now (it would queue), or
    GPUs asked of a node that advertises none (Slurm decides)."""
    if node is None or not node.resources_known or capacity_problems(spec, node):
        return []
    notes: list[str] = []
    cpus = requested_cpus(spec)
    if cpus is not None and node.cpu_free < cpus <= node.cpu_total:
        notes.append(
            f"node {node.name} has {node.cpu_free:g} of {node.cpu_total:g} CPUs free "
            f"now: a job asking for {_cpus(cpus)} waits until enough are free ({_free_said})"
        )
    memory = requested_memory(spec)
    if memory is not None and node.memory_free_bytes < memory <= node.memory_total_bytes:
        notes.append(
            f"node {node.name} has {format_bytes(node.memory_free_bytes)} of "
            f"{format_bytes(node.memory_total_bytes)} memory free now: a job asking "
            f"for {format_bytes(memory)} waits until enough is free ({_free_said})"
        )
    gpus = requested_gpus(spec)
    if gpus and node.gpus == 0 and not spec.site.schedules_gpus:
        notes.append(
            f"node {node.name} advertises no GPUs; --gpus {gpus} reaches Slurm as "
            f"--gres=gpu:{gpus}, which refuses it if the site's partition has none "
            "(--partition chooses one)"
        )
    return notes


def default_node_notes(spec: OffloadSpec, nodes: list[VirtualNode] | None) -> list[str]:
    """With the node left at CLUSTER_DEFAULT (no --node), a large request is checked against no
    node's capacity: say so, and whether any listed virtual node (`nodes`) could run it at all.
    [] when a node is chosen or the request is small."""
    if spec.node:
        return []
    cpus, memory, gpus = requested_cpus(spec), requested_memory(spec), requested_gpus(spec)
    asked = []
    if spec.cpus_per_task is not None and cpus is not None and cpus > NOTED_CPUS:
        asked.append(f"--cpus-per-task {cpus}")
    if spec.mem is not None and memory is not None and memory > NOTED_MEMORY:
        asked.append(f"--mem {spec.mem}")
    if gpus:
        asked.append(f"--gpus {gpus}")
    if not asked:
        return []
    request = " and ".join(asked)
    where = f"{request} with the node left at {CLUSTER_DEFAULT}"
    known = [n for n in nodes or [] if n.is_interlink and n.resources_known]
    if not known:
        return [
            f"{where}: nothing checks this request against a node's capacity before it is "
            f"sent; choose a node to check it ({OTHER_NODE})"
        ]
    fitting = [n.name for n in known if not capacity_problems(spec, n)]
    if fitting:
        return [
            f"{where}: the node the cluster picks is not checked; "
            f"{', '.join(fitting)} can run it (choose one to be sure)"
        ]
    largest = max(known, key=lambda n: (n.cpu_total, n.memory_total_bytes))
    return [
        f"{where}: no listed virtual node can run it (the largest, {largest.name}, offers "
        f"{_cpus(largest.cpu_total)} and {format_bytes(largest.memory_total_bytes)}); "
        f"the job would wait for resources that never come; ask for less or {OTHER_NODE}"
    ]


_free_said = "what is free comes from OSCAR /system/status; Slurm decides when the job starts"


def _as_said(node: VirtualNode) -> str:
    """Where a node's numbers come from: the virtual node advertises interLink's configured
    capacity with plugin 0.6.1 (interLink virtualkubelet.go: 100 CPU / 3000G by default), not
    necessarily the site's partition (OSCAR.md 13 B13)."""
    return (
        f"(the capacity its virtual node advertises, from {node.source}: the numbers configured in "
        "interLink, 100 CPUs / 3000G unless the site set them, not necessarily those of the "
        "HPC partition)"
    )


def _cpu_problem(spec: OffloadSpec, node: VirtualNode) -> SpecError | None:
    cpus = requested_cpus(spec)
    if cpus is None or cpus <= node.cpu_total:
        return None
    offers = f"node {node.name} offers {_cpus(node.cpu_total)} {_as_said(node)}"
    most = math.floor(node.cpu_total)
    if spec.cpus_per_task is None:  # the default 1 CPU does not fit
        return SpecError(
            "--cpus-per-task",
            f"--cpus-per-task: every job asks for at least 1 CPU and {offers}; {OTHER_NODE}",
        )
    if most < 1:
        return SpecError(
            "--cpus-per-task", f"--cpus-per-task {cpus}: {offers}, less than one; {OTHER_NODE}"
        )
    return SpecError(
        "--cpus-per-task",
        f"--cpus-per-task {cpus}: {offers}; ask for at most "
        f"--cpus-per-task {most} (or {OTHER_NODE})",
    )


def _memory_problem(spec: OffloadSpec, node: VirtualNode) -> SpecError | None:
    memory = requested_memory(spec)
    total = node.memory_total_bytes
    if memory is None or total <= 0 or memory <= total:
        return None
    offers = f"node {node.name} offers {format_bytes(total)} {_as_said(node)}"
    if total < MiB:
        return SpecError("--mem", f"--mem: {offers}, less than 1 MiB; {OTHER_NODE}")
    if spec.mem is None:
        return SpecError(
            "--mem",
            f"--mem: without --mem a job asks for {DEFAULT_MEMORY} "
            f"({format_bytes(memory)}) and {offers}; give at most --mem "
            f"{_largest_memory(total)} (or {OTHER_NODE})",
        )
    return SpecError(
        "--mem",
        f"--mem {spec.mem}: {format_bytes(memory)} asked and {offers}; "
        f"ask for at most --mem {_largest_memory(total)} (or {OTHER_NODE})",
    )


def _gpu_problem(spec: OffloadSpec, node: VirtualNode) -> SpecError | None:
    gpus = requested_gpus(spec)
    if not gpus or gpus <= node.gpus:
        return None
    if node.gpus > 0:
        return SpecError(
            "--gpus",
            f"--gpus {gpus}: node {node.name} has {node.gpus} "
            f"GPU{'' if node.gpus == 1 else 's'}; ask for at most --gpus "
            f"{node.gpus} (or {OTHER_NODE})",
        )
    if spec.site.schedules_gpus:
        return SpecError(
            "--gpus",
            f"--gpus {gpus}: node {node.name} has 0 GPUs, and this "
            "site schedules GPUs through Kubernetes (profile: gpu_scheduling), so "
            f"the job would stay Pending forever; drop --gpus (or {OTHER_NODE})",
        )
    return None  # no GPUs advertised and none scheduled: a note (capacity_notes), Slurm decides


def _cpus(count: float) -> str:
    return f"{count:g} CPU{'' if count == 1 else 's'}"


def _largest_memory(total: int) -> str:
    """The largest --mem that fits `total` bytes, in the largest whole unit (e.g. 2G, 1536M)."""
    if total % GiB == 0:
        return f"{total // GiB}G"
    return f"{total // MiB}M"
