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
# Slurm's lines when a job went over its --mem. slurmstepd names itself "slurmstepd" or, as Slurm
# 22.05 does, "slurmstepd-<node>".
_SLURM_OOM = re.compile(
    r"^slurmstepd(?:-\S+)?: error: (?:"
    # task/cgroup, the kernel's OOM killer: "Detected 1 oom-kill event(s) in StepId=7.batch. Some
    # of your processes may have been killed by the cgroup out-of-memory handler." (20.11-22.05;
    # "in step 7.batch cgroup." before), "Detected 1 oom_kill event in StepId=7.batch. Some of the
    # step tasks have been OOM Killed." (23.02 on)
    r"Detected \d+ oom[-_]kill event"
    # jobacct_gather's OverMemoryKill: "StepId=7.batch exceeded memory limit (750813184 >
    # 268435456), being killed" ("Job 7 ...", "Step 7.0 ..." in older releases), then "Exceeded job
    # memory limit". Older task/cgroup wrote "Exceeded job memory limit at some point." whenever
    # the limit was reached, killed or not: not an end.
    r"|.*exceeded memory limit \(\d+ > \d+\), being killed"
    r"|Exceeded (?:job|step) memory limit\s*$"
    r")"
    # srun's view of the same: "srun: error: cn01: task 0: Out Of Memory"
    r"|^srun: error: \S+: tasks? [\d,-]+: Out Of Memory"
)
# Cheap tests for a caller that looks at each new piece of a log before parsing it all.
_END_HINTS = (
    "CANCELLED AT",
    "oom-kill event",
    "oom_kill event",
    "exceeded memory limit",
    "Exceeded job memory limit",
    "Exceeded step memory limit",
    "Out Of Memory",
)
_DIAGNOSTIC = re.compile(
    r"^(?:sbatch|srun|salloc|slurmstepd|slurmd|scancel)(?:-\S+)?(?:\[\d+\])?: "  # Slurm's tools
    r"|\*\*\* (?:JOB|STEP) "  # slurmstepd's cancel and time-limit banners
    r"|^(?:FATAL|ERROR) *: "  # singularity / apptainer
    r"|^bwrap: "  # the local OSCAR's singularity stand-in
    r"| - supervisor - (?:ERROR|CRITICAL) - "
)
_NEVER_SHOWN = re.compile(r"EVENT received|INPUT_FILE_PATH=|\bEVENT=")
_TAG = MARKER + "|"  # the runner's tag: the cell's own lines
MAX_LINE_CHARS = 300
MASK = "***"

SlurmEnd = Literal["cancelled", "walltime", "oom"]


def slurm_end(raw_log: str) -> SlurmEnd | None:
    """How Slurm ended the job, when its own lines are in the log: scancel, the time limit, or
    the job going over its --mem ("oom").

    Whichever comes first decides: OverMemoryKill's "exceeded memory limit ..., being killed"
    precedes the CANCELLED banner of the kill it makes, and the cgroup's "Detected 1 oom-kill
    event(s)" is written when the job has ended, after the banner of a job cancelled (by scancel
    or its time limit) for another reason.
    """
    found: SlurmEnd | None = None
    for line in raw_log.splitlines():
        if _TAG in line:  # the cell's own output, which could print anything, is tagged
            continue
        match = _SLURM_CANCELLED.search(line)
        if match and found != "oom":
            found = "walltime" if "TIME LIMIT" in match.group("why") else "cancelled"
        elif found is None and _SLURM_OOM.search(line):
            found = "oom"
    return found


def mentions_slurm_end(text: str) -> bool:
    """Whether `text` (e.g. what a poll added to the log) may hold a line `slurm_end` reads: a
    cheap test before parsing a log of megabytes."""
    return any(hint in text for hint in _END_HINTS)


def out_of_memory_reason(mem: str | None = None) -> str:
    """Why a job Slurm ended for its memory ended, for the notebook: "killed: out of memory
    (--mem 256M)" with the --mem the user wrote; without the parenthesis when it is unknown."""
    mem = (mem or "").strip()
    return "killed: out of memory" + (f" (--mem {mem})" if mem else "")


def sbatch_refusal(raw_log: str) -> str | None:
    """sbatch's own error, when it refused the job (the runner then never starts)."""
    for line in raw_log.splitlines():
        if line.startswith("sbatch: error:") and _TAG not in line:
            return line[len("sbatch: error:") :].strip()[:MAX_LINE_CHARS]
    return None


def never_started_reason(raw_log: str, pod_message: str | None = None) -> str:
    """Why a job that ended without the runner's start line ended, as far as one can tell.

    B3 (reference OSCAR.md section 13): when sbatch writes anything to stderr, the Slurm plugin
    deletes the job's directory and hands the text only to the pod's status (interlink-slurm-
    plugin pkg/slurm/Create.go 249-256; interLink virtualkubelet.go 1674-1725 at 0.6.1): OSCAR
    then says Failed and serves an empty log. `pod_message` is that status message, when a
    kubeconfig of the cluster's own could read it."""
    if pod_message:
        said = re.search(r"sbatch: error: (.+?)(?:\\n|\n|\"|$)", pod_message)
        if said:  # the plugin's error wraps sbatch's own words (Go-quoted)
            return (
                f"the Slurm plugin refused it: sbatch: {said.group(1)[:MAX_LINE_CHARS]} (its "
                "pod's status message); check the --sbatch options and --dry-run"
            )
        return f"the Slurm plugin refused or could not start it: {pod_message[:MAX_LINE_CHARS]}"
    head = (
        "it ended before the job program started"
        + ("" if raw_log.strip() else ", with an empty log")
        + ": the Slurm plugin refused or could not start it (the reason is only in the pod's "
        "status on the cluster, which OSCAR does not show)."
    )
    return (
        f"{head} Likely causes: sbatch refused an option (a partition, account, QOS, --time or "
        "--mem the site does not allow, or an --sbatch word), the image could not be found or "
        "pulled, or the site's interLink or Slurm was unavailable. Check what is sent with "
        "--dry-run, try the cell without its --sbatch options, or ask the site's admins for the "
        "pod's status message"
    )


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
