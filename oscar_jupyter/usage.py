"""What a job used against what it asked for, and the one-line hint every view gives about it.

The runner measures the usage on the cluster (its `u` record, see `logs.py`); the request is the
job's `--time`, `--cpus-per-task` and `--mem`. Plain values and functions only: the cell's status
line, `%oscar_jobs` and the sidebar's JSON all word it through here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .spec import OffloadSpec, SpecError, parse_memory, parse_time
from .timefmt import duration, size

KiB, MiB, GiB = 1024, 1024**2, 1024**3
# A use at or above this share of its limit is "close to the limit".
CLOSE_TO_LIMIT = 0.85
# A request this many times what was used, at least the floor, is "far too large".
FAR_TOO_MANY_CPUS = 2.0
FAR_TOO_MUCH_MEMORY = 4.0
MEMORY_FLOOR = 2 * GiB
FAR_TOO_LONG = 4.0
TIME_FLOOR = 3600
# Shorter jobs say nothing of their CPUs: starting Python takes a core for a second.
CPU_JUDGED_FROM = 60.0


@dataclass(frozen=True)
class Usage:
    """What the runner measured: wall and CPU seconds (user+sys of the cell's process tree),
    its peak memory (the largest process's RSS), and peak GPU memory where there is a GPU."""

    wall_seconds: float
    cpu_seconds: float
    peak_memory: int  # bytes
    gpu_memory: int | None = None  # bytes
    gpu_total: int | None = None

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> Usage | None:
        """From the runner's usage record (`LogParser.usage`); None when absent or damaged."""
        if not isinstance(data, Mapping):
            return None
        try:
            wall, cpu = float(data["wall_seconds"]), float(data["cpu_seconds"])
            peak = int(data["max_rss_kib"]) * KiB
            gpu = data.get("gpu_memory_mib")
            total = data.get("gpu_total_mib")
            return cls(
                wall,
                cpu,
                peak,
                None if gpu is None else int(gpu) * MiB,
                None if total is None else int(total) * MiB,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def as_record(self) -> dict[str, Any]:
        """The runner's usage record again (job records keep it so)."""
        data: dict[str, Any] = {
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "max_rss_kib": self.peak_memory // KiB,
        }
        if self.gpu_memory is not None:
            data["gpu_memory_mib"] = self.gpu_memory // MiB
            data["gpu_total_mib"] = None if self.gpu_total is None else self.gpu_total // MiB
        return data

    def average_cpus(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True)
class Request:
    """What a job asked for: `--cpus-per-task` (Slurm's default is 1), `--mem` and `--time` as
    written (None: the cluster's default)."""

    cpus: int = 1
    mem: str | None = None
    time: str | None = None

    @classmethod
    def of(cls, spec: OffloadSpec) -> Request:
        # Ranks the runner starts on one node share the node's T x --cpus-per-task CPUs.
        ranks = spec.task_count() if spec.launches_ranks() else 1
        return cls((spec.cpus_per_task or 1) * ranks, spec.mem, spec.time)

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> Request | None:
        if not isinstance(data, Mapping):
            return None
        cpus = data.get("cpus")
        return cls(
            cpus if isinstance(cpus, int) and cpus > 0 else 1,
            data.get("mem") if isinstance(data.get("mem"), str) else None,
            data.get("time") if isinstance(data.get("time"), str) else None,
        )

    def as_record(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "mem": self.mem, "time": self.time}

    def memory_bytes(self) -> int | None:
        try:
            return None if self.mem is None else parse_memory(self.mem)
        except SpecError:
            return None

    def time_seconds(self) -> int | None:
        try:
            return None if self.time is None else parse_time(self.time)
        except SpecError:
            return None


def cpus_word(count: int | float) -> str:
    return "CPU" if count == 1 else "CPUs"


def usage_parts(usage: Usage, request: Request | None) -> list[str]:
    """['wall 00:03:05 of 02:00:00', 'CPU 00:02:10 (0.7 of 1 CPU on average)',
    'peak 312.4 MiB of 8G'] (and GPU memory where measured)."""
    request = request or Request()
    limit = request.time_seconds()
    wall = f"wall {duration(usage.wall_seconds)}"
    parts = [f"{wall} of {duration(limit)}" if limit else wall]
    parts.append(
        f"CPU {duration(usage.cpu_seconds)} ({usage.average_cpus():.1f} of {request.cpus} "
        f"{cpus_word(request.cpus)} on average)"
    )
    peak = f"peak {size(usage.peak_memory)}"
    parts.append(f"{peak} of {request.mem}" if request.mem else peak)
    if usage.gpu_memory is not None:
        gpu = f"GPU memory peak {size(usage.gpu_memory)}"
        parts.append(f"{gpu} of {size(usage.gpu_total)}" if usage.gpu_total else gpu)
    return parts


def usage_text(usage: Usage, request: Request | None) -> str:
    return " · ".join(usage_parts(usage, request))


def _round_up(value: float, step: float) -> float:
    return math.ceil(value / step) * step


def _memory_flag(needed: float) -> str:
    """A --mem value with room above `needed` bytes: whole GiB, or 256 MiB steps below 1 GiB."""
    roomy = needed * 1.5
    if roomy >= GiB:
        return f"{int(_round_up(roomy, GiB) // GiB)}G"
    return f"{int(_round_up(roomy, 256 * MiB) // MiB)}M"


def hint(usage: Usage, request: Request | None) -> str | None:
    """One line when a request was nearly exceeded or far too large (the nearest miss first:
    a job that nearly failed matters more than one that queued longer than it needed); None
    when the request fitted."""
    request = request or Request()
    memory, limit = request.memory_bytes(), request.time_seconds()
    peak = f"peak {size(usage.peak_memory)} of {request.mem}"
    if memory and usage.peak_memory >= CLOSE_TO_LIMIT * memory:
        return f"{peak}: close to the limit, ask for more with --mem"
    if limit and usage.wall_seconds >= CLOSE_TO_LIMIT * limit:
        return (
            f"ran {duration(usage.wall_seconds)} of {duration(limit)}: close to the limit, "
            "ask for more with --time"
        )
    average = usage.average_cpus()
    if (
        request.cpus >= 2
        and usage.wall_seconds >= CPU_JUDGED_FROM
        and request.cpus >= FAR_TOO_MANY_CPUS * max(average, 0.5)
    ):
        fewer = max(1, math.ceil(average))
        return (
            f"used {average:.1f} of {request.cpus} CPUs on average: ask for fewer with "
            f"--cpus-per-task {fewer}"
        )
    if (
        memory
        and memory >= MEMORY_FLOOR
        and memory >= FAR_TOO_MUCH_MEMORY * max(usage.peak_memory, 1)
    ):
        return f"{peak}: ask for less with --mem {_memory_flag(usage.peak_memory)}"
    if limit and limit >= TIME_FLOOR and limit >= FAR_TOO_LONG * max(usage.wall_seconds, 1):
        shorter = duration(_round_up(max(2 * usage.wall_seconds, 600), 300))
        return (
            f"ran {duration(usage.wall_seconds)} of {duration(limit)}: a shorter --time "
            f"({shorter}) waits less in the queue"
        )
    return None


def core_hours(request: Request | None, wall_seconds: float | None) -> float:
    """Cores asked for x wall time, in hours: what the job cost the cluster."""
    if wall_seconds is None:
        return 0.0
    return (request or Request()).cpus * wall_seconds / 3600


def core_hours_text(hours: float) -> str:
    """'0.42 core-hours', '1 core-hour', '12.5 core-hours'."""
    if hours < 10:
        shown = f"{hours:.2f}"
    else:
        shown = f"{hours:.1f}"
    return f"{shown} core-hour" + ("" if shown in ("1.00", "1.0") else "s")


def total_core_hours(jobs: Iterable[tuple[Request | None, float | None]]) -> float:
    return sum(core_hours(request, wall) for request, wall in jobs)


def total_line(hours: float, whose: str) -> str:
    """'Total for this notebook: 1.25 core-hours (cores asked × wall time)'."""
    return f"Total for {whose}: {core_hours_text(hours)} (cores asked × wall time)"


def used_text(usage: Usage | None, request: Request | None) -> str:
    """A listing's "used" cell: the usage and, when there is one, the hint; "" before the end."""
    if usage is None:
        return ""
    advice = hint(usage, request)
    return usage_text(usage, request) + (f" · {advice}" if advice else "")


def usage_json(usage: Usage | None, request: Request | None) -> dict[str, Any] | None:
    """The sidebar's `usage` object (labextension/src/api.ts `IUsage`): the measures and the
    words every view shows."""
    if usage is None:
        return None
    return {
        "wall_seconds": round(usage.wall_seconds, 3),
        "cpu_seconds": round(usage.cpu_seconds, 3),
        "peak_memory": usage.peak_memory,
        "gpu_memory": usage.gpu_memory,
        "text": usage_text(usage, request),
        "hint": hint(usage, request),
    }
