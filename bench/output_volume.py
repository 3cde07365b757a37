"""What a cell's output volume costs on the OSCAR path, against plain sbatch, in one run.

    python bench/output_volume.py [--cases 10k,100k,1M,50MB] [--timeout 300] [--lag-runs 3]

Starts a local OSCAR in a temporary home (Slurm must be up: scripts/slurm-cluster.sh start) with
the real OSCAR supervisor, and runs each case twice: as a plain `sbatch` job (its output file
tailed every 10 ms) and offloaded (`Session.submit` + `Job.wait`, polling OSCAR). The cases:
a cell printing 10k, 100k or 1M short lines ("line <i>"), and a cell printing one 50 MB line
(base64 of random bytes: zlib cannot shrink it much). For each it reports:
  run        the cell's own run time (measured inside the cell, from its first statement to its
             last line written)
  done       seen done: from the cell's first statement to the moment the client sees the job
             end (offloaded: `Job.wait` returns; sbatch: the last line is in the output file)
  sup MB     bytes through the supervisor (what it read from the runner's pipe: its DEBUG lines)
  log MB     the job's final log as OSCAR serves it
  peak MB    the job's peak memory: its Slurm cgroup's max_usage_in_bytes (page cache of the
             log file included) and, in brackets, the largest sum of its processes' RSS sampled
             every 50 ms
  kernel s   CPU time of this process (the kernel's side: polls, parsing, the job's file) from
             submit to done
  ok         every line arrived once and in order (the short lines; the 50 MB line intact)
then the live lag of a slow printer (5 timestamped lines 0.5 s apart, as bench/floor.py): p50
of print -> seen through the pod's log file (the path's floor) and through the client's polls.

Goal (issue 18): for 100k and 1M lines, done <= 3 s + 2 x the raw sbatch run time; each line
once and in order; the slow printer's client lag p50 <= 0.06 s over the log-file floor.

A case that runs past --timeout is cancelled and reported as such (the output path before
issue 18 takes hours for 1M lines). To measure another version of the code, put its package
first: PYTHONPATH=/path/to/old/checkout python bench/output_volume.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import free_port, pct, through_oscar  # noqa: E402  (bench/ is not a package)

SHORT_CELL = """
import sys, time
t0 = time.time()
for i in range({lines}):
    print("line", i)
sys.stdout.flush()
print("bench-done %.6f %.6f" % (t0, time.time() - t0), flush=True)
"""
BIG_LINE_CELL = """
import base64, os, sys, time
t0 = time.time()
line = base64.b64encode(os.urandom({raw})).decode()
sys.stdout.write(line + "\\n")
sys.stdout.flush()
print("bench-done %.6f %.6f %s" % (t0, time.time() - t0, hash(line)), flush=True)
"""
CASES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000, "50MB": -50_000_000}
DONE = re.compile(r"bench-done (\d+\.\d+) (\d+\.\d+)")
DEBUG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - supervisor - DEBUG - ", re.M)
CGROUP = Path("/sys/fs/cgroup/memory/slurm_localhost")


def cell_for(case: str) -> str:
    size = CASES[case]
    if size > 0:
        return SHORT_CELL.format(lines=size)
    return BIG_LINE_CELL.format(raw=-size * 3 // 4)


def check_lines(case: str, texts: list[str]) -> bool:
    """Every line once and in order (the bench-done line last)."""
    size = CASES[case]
    if size > 0:
        return texts[:-1] == [f"line {i}" for i in range(size)] and texts[-1].startswith(
            "bench-done"
        )
    return len(texts) == 2 and len(texts[0]) == -size and texts[1].startswith("bench-done")


class MemorySampler:
    """Samples a Slurm job's memory cgroup (v1) every 50 ms while it exists."""

    def __init__(self, find_job_id) -> None:
        self.find_job_id = find_job_id
        self.cgroup_peak = 0
        self.rss_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        job_id = None
        while not self._stop.is_set():
            job_id = job_id or self.find_job_id()
            if job_id:
                directory = next(iter(CGROUP.glob(f"uid_*/job_{job_id}")), None)
                if directory is not None:
                    self._sample(directory)
            self._stop.wait(0.05)

    def _sample(self, directory: Path) -> None:
        try:
            peak = int((directory / "memory.max_usage_in_bytes").read_text())
            self.cgroup_peak = max(self.cgroup_peak, peak)
            pids = {
                pid
                for procs in directory.rglob("cgroup.procs")
                for pid in procs.read_text().split()
            }
        except (OSError, ValueError):
            return
        rss = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            rss += int(found.group(1)) * 1024 if found else 0
        self.rss_peak = max(self.rss_peak, rss)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        return f"{self.cgroup_peak / 1e6:.0f} [{self.rss_peak / 1e6:.0f}]"


def raw_sbatch(tmp: Path, case: str, timeout: float) -> dict:
    cell = tmp / f"cell-{case}.py"
    cell.write_text(cell_for(case))
    out = tmp / f"raw-{case}-{time.monotonic_ns()}.out"
    cpu0 = time.process_time()
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--output={out}",
            "--time=00:30:00",
            f"--wrap={sys.executable} -u {cell}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    sampler = MemorySampler(lambda: job_id)
    deadline = time.monotonic() + timeout
    offset, tail, found = 0, b"", None
    while found is None and time.monotonic() < deadline:
        if out.exists():
            with out.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            tail = (tail + chunk)[-4096:]
            found = DONE.search(tail.decode("utf-8", "replace"))
        if found is None:
            time.sleep(0.01)
    seen = time.time()
    memory = sampler.stop()
    if found is None:
        subprocess.run(["scancel", job_id], check=False)
        return {"timeout": True}
    t0, run = float(found.group(1)), float(found.group(2))
    texts = out.read_text(errors="replace").splitlines()
    return {
        "run": run,
        "done": seen - t0,
        "sup": 0.0,
        "log": out.stat().st_size,
        "peak": memory,
        "kernel": time.process_time() - cpu0,
        "ok": check_lines(case, texts),
    }


def supervisor_bytes(log: str) -> int:
    """What the supervisor read from the runner's pipe: its DEBUG lines after the EVENT line."""
    total = 0
    for match in DEBUG_PREFIX.finditer(log):
        end = log.find("\n", match.end())
        payload = log[match.end() : end if end >= 0 else len(log)]
        if payload.startswith(("EVENT received", "CONTEXT received", "CONTAINER OUTPUT")):
            continue
        total += len(payload.encode("utf-8")) + 1
    return total


def offloaded(session, spec, home: Path, case: str, timeout: float) -> dict:
    from oscar_jupyter.jobs import JobTimeout

    before = {p.name for p in (home / "jobs").glob("*")} if (home / "jobs").exists() else set()

    def find_job_id() -> str | None:
        fresh = [p.name for p in (home / "jobs").glob("*") if p.name not in before]
        if not fresh:
            return None
        uid = fresh[0][-36:]
        listed = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-n", uid], capture_output=True, text=True
        )
        return listed.stdout.split()[0] if listed.stdout.split() else None

    cpu0 = time.process_time()
    job = session.submit(cell_for(case), spec)
    sampler = MemorySampler(find_job_id)
    try:
        job.wait(timeout)
    except JobTimeout:
        memory = sampler.stop()
        job.cancel()
        return {"timeout": True, "peak": memory}
    seen = time.time()
    kernel = time.process_time() - cpu0
    memory = sampler.stop()
    texts = [line.text for line in job.lines() if line.stream == "stdout"]
    found = DONE.search(texts[-1]) if texts else None
    if found is None:
        return {"timeout": False, "error": f"no bench-done line; exit {job.exit_code}"}
    t0, run = float(found.group(1)), float(found.group(2))
    log = job.raw_log
    return {
        "run": run,
        "done": seen - t0,
        "sup": supervisor_bytes(log),
        "log": len(log.encode("utf-8")),
        "peak": memory,
        "kernel": kernel,
        "ok": check_lines(case, texts) and job.exit_code == 0,
    }


def row(name: str, result: dict, timeout: float) -> str:
    if result.get("timeout"):
        return (
            f"{name:22}  did not end within {timeout:.0f} s (cancelled); peak {result.get('peak')}"
        )
    if "error" in result:
        return f"{name:22}  {result['error']}"
    return (
        f"{name:22}{result['run']:>8.2f}{result['done']:>8.2f}{result['sup'] / 1e6:>9.2f}"
        f"{result['log'] / 1e6:>9.2f}{result['peak']:>14}{result['kernel']:>10.2f}"
        f"{'yes' if result['ok'] else 'NO':>5}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="10k,100k,1M,50MB")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--lag-runs", type=int, default=3)
    args = parser.parse_args()
    cases = [case for case in args.cases.split(",") if case]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")

    import oscar_jupyter
    from oscar_jupyter.jobs import JobTimeout
    from oscar_jupyter.local import daemon
    from oscar_jupyter.session import Session

    print(f"code: {Path(oscar_jupyter.__file__).parent}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home, config = tmp / "home", tmp / "config.yaml"
        daemon.start(home=home, port=free_port(), executor="slurm", config_path=config)
        try:
            os.environ["OSCAR_JUPYTER_LOG_DIR"] = str(tmp / "logs")
            session = Session()
            session.connect("local", config_path=config)
            session.follow_kubernetes = False
            spec = session.build_spec({"node": "local-slurm", "time": "00:30:00", "mem": "4G"})
            session.ensure_service(spec)
            header = (
                f"{'':22}{'run s':>8}{'done s':>8}{'sup MB':>9}{'log MB':>9}"
                f"{'peak MB':>14}{'kernel s':>10}{'ok':>5}"
            )
            print(header)
            goals = []
            for case in cases:
                raw = raw_sbatch(tmp, case, args.timeout)
                print(row(f"{case} raw sbatch", raw, args.timeout), flush=True)
                ours = offloaded(session, spec, home, case, args.timeout)
                print(row(f"{case} offloaded", ours, args.timeout), flush=True)
                if case in ("100k", "1M") and "run" in raw:
                    limit = 3 + 2 * raw["run"]
                    met = "done" in ours and ours["done"] <= limit and ours["ok"]
                    goals.append(f"{case}: done <= {limit:.2f} s: {'met' if met else 'NOT met'}")
            if args.lag_runs > 0:
                from floor import Counting

                counter = Counting(session.client)
                lag, failed = [], 0
                for _ in range(args.lag_runs):
                    try:
                        lag.append(through_oscar(session, spec, home, counter, None))
                    except (AssertionError, JobTimeout) as err:  # the shared cluster's trouble
                        failed += 1
                        print(f"slow printer run failed: {str(err)[:200]}")
                if not lag:
                    return 1
                file_lag = pct([x for r in lag for x in r["file lags"]], 0.5)
                client_lag = pct([x for r in lag for x in r["line lag"]], 0.5)
                over = client_lag - file_lag
                print(
                    f"slow printer, line lag p50 over {len(lag)} runs: pod log file "
                    f"{file_lag:.3f} s, client poll {client_lag:.3f} s (+{over:.3f} s over the "
                    f"floor)" + (f"; {failed} runs failed" if failed else "")
                )
                goals.append(
                    f"slow printer: +{over:.3f} s <= 0.06 s: {'met' if over <= 0.06 else 'NOT met'}"
                )
            for goal in goals:
                print("goal", goal)
        finally:
            daemon.stop(home=home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
