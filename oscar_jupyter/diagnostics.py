"""What a job's raw log says about how it ended, and the part of it that is safe to show.

OSCAR's log of a job holds much more than the cell's output: the supervisor logs the whole job
body at DEBUG ("EVENT received: <base64>"), which is the cell's program with its `--env` values.
An error message may therefore quote only lines known to carry no job body: Slurm's own lines
(sbatch, slurmstepd), the container runtime's fatal errors and the supervisor's errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from .runner import MARKER

# slurmstepd writes these into the job's output file (src/slurmd/slurmstepd/req.c in Slurm).
_SLURM_CANCELLED = re.compile(
    r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?P<why>[^*]*)\*\*\*"
)
_DIAGNOSTIC = re.compile(
    r"^(?:sbatch|srun|salloc|slurmstepd|slurmd|scancel)(?:\[\d+\])?: "  # Slurm's tools
    r"|\*\*\* (?:JOB|STEP) "  # slurmstepd's cancel and time-limit banners
    r"|^(?:FATAL|ERROR) *: "  # singularity / apptainer
    r"|^bwrap: "  # the local OSCAR's singularity stand-in
    r"| - supervisor - (?:ERROR|CRITICAL) - "
)
_NEVER_SHOWN = re.compile(r"EVENT received|INPUT_FILE_PATH=|\bEVENT=")
_TAG = MARKER + "|"  # the runner's tag: the cell's own lines
MAX_LINE_CHARS = 300
MASK = "***"

SlurmEnd = Literal["cancelled", "walltime"]


def slurm_end(raw_log: str) -> SlurmEnd | None:
    """How Slurm ended the job, when its own banner is in the log: scancel or the time limit."""
    found: SlurmEnd | None = None
    for line in raw_log.splitlines():
        match = None if _TAG in line else _SLURM_CANCELLED.search(line)
        if match:  # the cell's own output, which could print anything, is tagged and skipped
            found = "walltime" if "TIME LIMIT" in match.group("why") else "cancelled"
    return found


def sbatch_refusal(raw_log: str) -> str | None:
    """sbatch's own error, when it refused the job (the runner then never starts)."""
    for line in raw_log.splitlines():
        if line.startswith("sbatch: error:") and _TAG not in line:
            return line[len("sbatch: error:") :].strip()[:MAX_LINE_CHARS]
    return None


def safe_tail(raw_log: str, hidden_values: Iterable[str] = (), lines: int = 20) -> str:
    """The last diagnostic lines of `raw_log` that are safe to show in an error.

    Only lines of Slurm, the container runtime and the supervisor's errors are kept; a line that
    could carry the job body never is, and any of `hidden_values` (e.g. `--env` values) that
    appears anyway is masked. Long lines are cut.
    """
    hidden = sorted((v for v in hidden_values if len(v) >= 4), key=len, reverse=True)
    kept: list[str] = []
    for line in raw_log.splitlines():
        if _TAG in line or _NEVER_SHOWN.search(line) or not _DIAGNOSTIC.search(line):
            continue
        for value in hidden:
            line = line.replace(value, MASK)
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " …"
        kept.append(line)
    return "\n".join(kept[-lines:])
