"""Run the Slurm plugin's per-pod directories: on real Slurm, or as a plain process.

Both executors take a pod directory holding ``job.slurm`` (which calls ``job.sh``) and report the
pod the way interLink's Slurm plugin does: the Slurm state decides Pending / Running / finished, the
``run-<ctr>.status`` files written by ``job.sh`` decide the exit codes, and ``StartedAt.time`` /
``FinishedAt.time`` record when the job was first seen running and finished.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

JOB_SCRIPT = "job.slurm"
JOB_OUTPUT = "job.out"
JOB_ID_FILE = "JobID.jid"
STARTED_FILE = "StartedAt.time"
FINISHED_FILE = "FinishedAt.time"
COMMAND_TIMEOUT_S = 30

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"


class ExecutorError(Exception):
    """The batch system could not be asked (controller down, command missing)."""


class SubmitError(ExecutorError):
    """The job was refused; the message is the batch system's own text (sbatch's stderr)."""


@dataclass
class ExecState:
    phase: str  # "Pending" | "Running" | "Succeeded" | "Failed"
    slurm_state: str | None
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime | None
    reason: str | None

    @property
    def finished(self) -> bool:
        return self.phase in (SUCCEEDED, FAILED)


class Executor(Protocol):
    kind: str

    def submit(self, pod_dir: Path) -> str: ...

    def state(self, job_id: str, pod_dir: Path) -> ExecState: ...

    def cancel(self, job_id: str, pod_dir: Path | None = None) -> None: ...

    def node_resources(self) -> dict[str, int]: ...


# --- the plugin's files ----------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def format_plugin_time(moment: datetime) -> str:
    """Go's ``time.Time.String()`` layout, as the plugin writes ``StartedAt.time``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def parse_plugin_time(text: str) -> datetime | None:
    parts = text.split()
    if len(parts) < 3:
        return None
    day, clock, offset = parts[:3]
    if "." in clock:
        whole, fraction = clock.split(".", 1)
        clock = f"{whole}.{fraction[:6]:0<6}"
    else:
        clock += ".000000"
    try:
        return datetime.strptime(f"{day} {clock} {offset}", "%Y-%m-%d %H:%M:%S.%f %z")
    except ValueError:
        return None


def _read_time(pod_dir: Path, name: str) -> datetime | None:
    try:
        return parse_plugin_time((pod_dir / name).read_text())
    except OSError:
        return None


def _record_time(pod_dir: Path, name: str, moment: datetime | None = None) -> datetime:
    """Write the time file once; later calls return the first recorded time."""
    existing = _read_time(pod_dir, name)
    if existing is not None:
        return existing
    moment = moment or _now()
    _write_atomic(pod_dir / name, format_plugin_time(moment))
    return moment


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def container_exit_codes(pod_dir: Path) -> dict[str, int]:
    """Exit codes from the ``run-<ctr>.status`` and ``init-<ctr>.status`` files of ``job.sh``."""
    codes: dict[str, int] = {}
    for path in sorted(pod_dir.glob("*.status")):
        if not path.name.startswith(("run-", "init-")):
            continue
        match = re.search(r"-?\d+", _read_text(path))
        if match:
            codes[path.name[: -len(".status")]] = int(match.group())
    return codes


_RUN_CTN_RE = re.compile(r"^runCtn (\S+) ", re.MULTILINE)


def pod_containers(pod_dir: Path) -> list[str]:
    """The pod's (non-init) containers, from the ``runCtn NAME ...`` lines of its ``job.sh``."""
    return _RUN_CTN_RE.findall(_read_text(pod_dir / "job.sh"))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _finish(
    pod_dir: Path,
    slurm_state: str | None,
    fallback_code: int | None,
    reason_for_failure: str | None,
    finished_at: datetime | None = None,
) -> ExecState:
    """The final ExecState: Succeeded iff the job ended normally and every container code is 0."""
    codes = container_exit_codes(pod_dir)
    if fallback_code is not None:
        # Status.go's getExitCode: a container that left no run-/init-<ctr>.status (Slurm killed
        # the job before job.sh wrote it: a cancel, OverMemoryKill) gets Slurm's exit code.
        for name in pod_containers(pod_dir):
            if f"run-{name}" not in codes and f"init-{name}" not in codes:
                codes[f"run-{name}"] = fallback_code
    exit_code = max(codes.values()) if codes else fallback_code
    finished = _record_time(pod_dir, FINISHED_FILE, finished_at)
    started = _read_time(pod_dir, STARTED_FILE) or _record_time(pod_dir, STARTED_FILE, finished)
    if reason_for_failure is None and exit_code == 0:
        return ExecState(SUCCEEDED, slurm_state, 0, started, finished, "Completed")
    if reason_for_failure is None:
        reason_for_failure = f"Error: {exit_code}" if exit_code is not None else "Error"
    return ExecState(FAILED, slurm_state, exit_code, started, finished, reason_for_failure)


def _wait_status_to_exit_code(raw: int) -> int:
    """squeue's exit_code is the raw wait status: 768 is exit 3, 15 is killed by SIGTERM."""
    if raw & 0x7F:
        return 128 + (raw & 0x7F)
    return (raw >> 8) & 0xFF


# --- Slurm ----------------------------------------------------------------------------------------

# The plugin's state regex: first match anywhere in squeue's output decides.
# (interlink-hq/interlink-slurm-plugin, pkg/slurm/Status.go, StatusHandler: `statePattern`, and its
# `switch stateMatch` for the cases below.)
_STATE_RE = re.compile(r"(CD|CG|F|OOM|PD|PR|R|ST|S|TO)")
_SUBMITTED_RE = re.compile(r"Submitted batch job (\d+)")
_FAILURE_REASONS = {
    "TO": "SlurmJobTimeout",
    # OUT_OF_MEMORY (squeue's compact state OOM: task/cgroup saw an oom-kill in the job):
    # Status.go's `case "OOM"` ends every container with Reason ReasonOOMKilled ("OOMKilled"), its
    # exit code from run-<ctr>.status (137 when the kernel killed the container's process).
    "OOM": "OOMKilled",
    "CA": "Cancelled",
    "F": None,  # FAILED: the exit code tells
    "NF": "NodeFail",
    "BF": "BootFail",
    "DL": "DeadlineReached",
    "PR": "Preempted",
}


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as error:
        raise ExecutorError(
            f"{argv[0]} not found on PATH; install Slurm (scripts/slurm-cluster.sh install)"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise ExecutorError(
            f"{' '.join(argv[:2])} did not answer within {COMMAND_TIMEOUT_S} s; "
            "is the Slurm controller up? (scripts/slurm-cluster.sh status)"
        ) from error


class SlurmExecutor:
    """sbatch / squeue / scancel, with the interLink Slurm plugin's state mapping."""

    kind = "slurm"

    def submit(self, pod_dir: Path) -> str:
        pod_dir = Path(pod_dir)
        result = _run(["sbatch", str(pod_dir / JOB_SCRIPT)], cwd=pod_dir)
        if result.stderr.strip() or result.returncode != 0:
            raise SubmitError(result.stderr.strip() or f"sbatch exited {result.returncode}")
        match = _SUBMITTED_RE.search(result.stdout)
        if not match:
            raise SubmitError(f"sbatch printed no job id: {result.stdout.strip()!r}")
        job_id = match.group(1)
        _write_atomic(pod_dir / JOB_ID_FILE, job_id)
        return job_id

    def state(self, job_id: str, pod_dir: Path) -> ExecState:
        pod_dir = Path(pod_dir)
        result = _run(
            [
                "squeue",
                "--noheader",
                "-a",
                "--states=all",
                "-O",
                "exit_code,StateCompact",
                "-j",
                str(job_id),
            ]
        )
        output = result.stdout.replace("\n", " ")
        if result.stderr.strip() or not output.strip():
            return self._state_without_squeue(job_id, pod_dir, result.stderr.strip())
        state_match = _STATE_RE.search(output)
        words = output.split()
        compact = words[-1] if words else None
        raw_code = int(words[0]) if words and words[0].isdigit() else None

        matched = state_match.group(1) if state_match else None
        if matched in ("PD", "S"):
            return ExecState(PENDING, compact, None, None, None, None)
        if matched in ("R", "CG"):
            started = _record_time(pod_dir, STARTED_FILE)
            return ExecState(RUNNING, compact, None, started, None, None)
        fallback = _wait_status_to_exit_code(raw_code) if raw_code is not None else None
        failure = None
        if compact != "CD":
            failure = _FAILURE_REASONS.get(compact or "", f"Slurm state {compact}")
        return _finish(pod_dir, compact, fallback, failure)

    def _state_without_squeue(self, job_id: str, pod_dir: Path, stderr: str) -> ExecState:
        """squeue has forgotten the job (MinJobAge) or cannot be asked: the .status files decide."""
        if container_exit_codes(pod_dir):
            return _finish(pod_dir, None, None, None)
        forgotten = not stderr or "Invalid job id" in stderr
        if not forgotten:
            raise ExecutorError(f"squeue could not report job {job_id}: {stderr}")
        return _finish(
            pod_dir, None, None, f"Slurm no longer knows job {job_id} and it left no exit status"
        )

    def cancel(self, job_id: str, pod_dir: Path | None = None) -> None:
        """scancel; a job that already ended is not an error."""
        result = _run(["scancel", str(job_id)])
        stderr = result.stderr.strip()
        if result.returncode != 0 and "Invalid job id" not in stderr:
            raise ExecutorError(f"scancel {job_id} failed: {stderr or result.returncode}")

    def node_resources(self) -> dict[str, int]:
        fields = "CPUs:12,CPUsState:24,Memory:12,AllocMem:12"
        result = _run(["sinfo", "--noheader", "-N", "-O", fields])
        if result.returncode != 0:
            raise ExecutorError(f"sinfo failed: {result.stderr.strip()}")
        totals = {"cpus": 0, "memory_mib": 0, "free_cpus": 0, "free_memory_mib": 0}
        for line in result.stdout.splitlines():
            words = line.split()
            if len(words) < 4:
                continue
            cpus, cpu_states, memory, allocated = words[:4]
            allocated_cpus = int(cpu_states.split("/")[0])
            totals["cpus"] += int(cpus)
            totals["free_cpus"] += int(cpus) - allocated_cpus
            totals["memory_mib"] += int(memory)
            totals["free_memory_mib"] += int(memory) - int(allocated)
        return totals


# --- plain process ----------------------------------------------------------------------------

PROCESS_MARKER = "oscar-jupyter-process-job"
PROCESS_EXIT_FILE = "ProcessJob.exit"
PROCESS_TIMEOUT_FILE = "ProcessJob.timeout"
PROCESS_CANCELLED_FILE = "ProcessJob.cancelled"
KILL_GRACE_S = 5

# The wrapper leads its own process group (the job and the watchdog are in it). It survives the
# SIGTERM that cancel and the deadline send to the group, so it can still record the job's exit
# code; SIGKILL after a grace period ends stragglers (and the wrapper, which state() allows for).
_PROCESS_WRAPPER = r"""
limit=$1 grace=$2
trap 'cancelled=1' TERM INT
bash ./job.slurm >job.out 2>&1 </dev/null &
job=$!
watchdog=
if [ "$limit" -gt 0 ]; then
    (
        sleep "$limit" & sleeper=$!
        trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
        wait "$sleeper" || exit 0
        trap '' TERM
        : >ProcessJob.timeout
        kill -TERM 0
        sleep "$grace"
        kill -KILL 0
    ) &
    watchdog=$!
fi
while :; do
    wait "$job"
    code=$?
    kill -0 "$job" 2>/dev/null || break
done
[ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
echo "$code" >.ProcessJob.exit.tmp && mv -f .ProcessJob.exit.tmp ProcessJob.exit
"""

_SBATCH_TIME_RE = re.compile(r"^(?:--time(?:=|\s+)|-t\s*)(\S+)")


def sbatch_directives(job_script: str) -> list[str]:
    """The ``#SBATCH`` words of a batch script (sbatch reads them up to the first command)."""
    directives: list[str] = []
    for line in job_script.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            directives.append(stripped[len("#SBATCH") :].strip())
        elif stripped and not stripped.startswith("#"):
            break
    return directives


def parse_slurm_time(text: str) -> int:
    """Seconds from a Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``); 0 = none.

    Raises ValueError for anything sbatch would refuse.
    """
    if text.upper() in ("INFINITE", "UNLIMITED"):
        return 0
    days = 0
    rest = text
    if "-" in text:
        day_text, rest = text.split("-", 1)
        if not day_text.isdigit():
            raise ValueError(text)
        days = int(day_text)
    parts = rest.split(":")
    if not all(part.isdigit() for part in parts) or len(parts) > 3:
        raise ValueError(text)
    numbers = [int(part) for part in parts]
    if "-" in text:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 1:
        hours, minutes, seconds = 0, numbers[0], 0
    elif len(numbers) == 2:
        hours, (minutes, seconds) = 0, numbers
    else:
        hours, minutes, seconds = numbers
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def time_limit_seconds(job_script: str) -> int:
    """The ``#SBATCH --time`` limit in seconds (0 = none); SubmitError as sbatch's if invalid."""
    limit = 0
    for directive in sbatch_directives(job_script):
        match = _SBATCH_TIME_RE.match(directive)
        if match:
            try:
                limit = parse_slurm_time(match.group(1))
            except ValueError:
                raise SubmitError("sbatch: error: Invalid --time specification") from None
    return limit


class ProcessExecutor:
    """The same pod directories run as a detached ``bash job.slurm`` (no Slurm on this machine)."""

    kind = "process"

    def __init__(self, kill_grace_s: float = KILL_GRACE_S) -> None:
        self.kill_grace_s = kill_grace_s
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def submit(self, pod_dir: Path) -> str:
        pod_dir = Path(pod_dir)
        try:
            script = (pod_dir / JOB_SCRIPT).read_text()
        except OSError as error:
            missing = pod_dir / JOB_SCRIPT
            raise SubmitError(f"sbatch: error: Unable to open file {missing}") from error
        limit = time_limit_seconds(script)
        for stale in (PROCESS_EXIT_FILE, PROCESS_TIMEOUT_FILE, PROCESS_CANCELLED_FILE):
            (pod_dir / stale).unlink(missing_ok=True)
        environment = dict(os.environ, SLURMD_NODENAME=os.uname().nodename)
        child = subprocess.Popen(
            ["sh", "-c", _PROCESS_WRAPPER, PROCESS_MARKER, str(limit), str(int(self.kill_grace_s))],
            cwd=pod_dir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._children[child.pid] = child
        job_id = f"process-{child.pid}"
        _write_atomic(pod_dir / JOB_ID_FILE, job_id)
        _record_time(pod_dir, STARTED_FILE)
        return job_id

    def state(self, job_id: str, pod_dir: Path) -> ExecState:
        pod_dir = Path(pod_dir)
        pid = _pid_of(job_id)
        exit_file = pod_dir / PROCESS_EXIT_FILE
        if not exit_file.exists() and self._wrapper_alive(pid):
            return ExecState(RUNNING, "R", None, _read_time(pod_dir, STARTED_FILE), None, None)
        finished_at = None
        code: int | None = None
        if exit_file.exists():
            text = _read_text(exit_file).strip()
            code = int(text) if text.lstrip("-").isdigit() else None
            finished_at = datetime.fromtimestamp(exit_file.stat().st_mtime, timezone.utc)
        if (pod_dir / PROCESS_TIMEOUT_FILE).exists():
            return _finish(
                pod_dir, "TO", code if code is not None else 137, "SlurmJobTimeout", finished_at
            )
        if (pod_dir / PROCESS_CANCELLED_FILE).exists():
            return _finish(
                pod_dir, "CA", code if code is not None else 137, "Cancelled", finished_at
            )
        if code is None:
            return _finish(
                pod_dir, None, None, f"job process {pid} ended without leaving an exit status"
            )
        return _finish(pod_dir, "CD" if code == 0 else "F", code, None, finished_at)

    def cancel(self, job_id: str, pod_dir: Path | None = None) -> None:
        """SIGTERM to the job's process group, SIGKILL after the grace period; idempotent."""
        pid = _pid_of(job_id)
        exit_file = Path(pod_dir) / PROCESS_EXIT_FILE if pod_dir else None
        if (exit_file and exit_file.exists()) or not self._wrapper_alive(pid):
            return
        if pod_dir:
            (Path(pod_dir) / PROCESS_CANCELLED_FILE).touch()
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace_s
        while time.monotonic() < deadline:
            if (exit_file and exit_file.exists()) or not self._wrapper_alive(pid):
                break
            time.sleep(0.05)
        else:
            _signal_group(pid, signal.SIGKILL)
        # Stragglers that ignored SIGTERM after the job script ended share the group.
        _signal_group(pid, signal.SIGKILL)
        self._reap(pid)

    def node_resources(self) -> dict[str, int]:
        cpus = os.cpu_count() or 1
        memory = _meminfo_mib("MemTotal")
        return {
            "cpus": cpus,
            "memory_mib": memory,
            "free_cpus": max(0, cpus - self._running_count()),
            "free_memory_mib": _meminfo_mib("MemAvailable") or memory,
        }

    def _running_count(self) -> int:
        return sum(1 for pid in list(self._children) if self._wrapper_alive(pid))

    def _reap(self, pid: int) -> None:
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            del self._children[pid]

    def _wrapper_alive(self, pid: int) -> bool:
        self._reap(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            return False
        # Empty while the kernel is still exec'ing it; another command line is a reused pid.
        return not cmdline or PROCESS_MARKER.encode() in cmdline


def _pid_of(job_id: str) -> int:
    match = re.fullmatch(r"process-(\d+)", str(job_id))
    if not match:
        raise ExecutorError(f"{job_id!r} is not a process job id (expected process-<pid>)")
    return int(match.group(1))


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _meminfo_mib(field: str) -> int:
    for line in _read_text(Path("/proc/meminfo")).splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) // 1024
    return 0


# --- choosing -----------------------------------------------------------------------------------


def slurm_answers() -> tuple[bool, str]:
    """(True, version) when sbatch is on PATH and the controller answers; else (False, why)."""
    if shutil.which("sbatch") is None:
        return False, "sbatch is not on PATH"
    try:
        ping = _run(["scontrol", "ping"])
    except ExecutorError as error:
        return False, str(error)
    if ping.returncode != 0 or "is UP" not in ping.stdout:
        detail = (ping.stderr or ping.stdout).strip().splitlines()
        why = f" ({detail[-1]})" if detail else ""
        return False, f"the Slurm controller does not answer{why}"
    version = _run(["sbatch", "--version"]).stdout.strip() or "slurm"
    return True, version


def choose_executor(preference: str = "auto") -> tuple[SlurmExecutor | ProcessExecutor, str]:
    """The executor to use and a human reason; ``preference`` is "auto", "slurm" or "process"."""
    if preference == "process":
        return ProcessExecutor(), "plain processes (asked for)"
    if preference not in ("auto", "slurm"):
        raise ValueError(f"unknown executor {preference!r}; choose 'auto', 'slurm' or 'process'")
    ok, detail = slurm_answers()
    if ok:
        return SlurmExecutor(), f"{detail} on this machine (sbatch on PATH, controller answers)"
    if preference == "slurm":
        raise ExecutorError(
            f"Slurm was asked for but {detail}; start it with 'scripts/slurm-cluster.sh start' "
            "or choose the 'process' executor"
        )
    return ProcessExecutor(), f"plain processes: {detail}"
