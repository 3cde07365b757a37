"""How fast an offloaded cell's output shows, against the floors of the same Slurm, in one run.

    python bench/floor.py [--runs 5] [--lines 100000] [--no-follow]

Starts a local OSCAR in a temporary home (Slurm must be up: scripts/slurm-cluster.sh start) and
measures, for the same Python cell (5 timestamped lines, 0.5 s apart):
  raw sbatch     the cell as a plain sbatch job, its output file polled every 10 ms: the floor;
  pod log file   the line reaching the job's log file through the local OSCAR (polled every
                 10 ms): the floor of the OSCAR path;
  client poll    what Job.wait sees polling OSCAR;
  client follow  what Job.wait sees following the pod log through the Kubernetes API;
each as p50/p95 of "first line" (submit -> first line) and "line lag" (print -> seen), ours as
a ratio to the matching floor; then HTTP requests and characters per job, and a cell printing
--lines short lines: characters downloaded vs the final log, kernel CPU vs the job's wall time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CELL = """
import time
for i in range(5):
    print(f"{time.time():.6f}", flush=True)
    time.sleep(0.5)
"""
BIG_CELL = """
for i in range({lines}):
    print("line", i)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def watch_file(find, wall0: float, expect: int, timeout: float = 120) -> tuple[float, list[float]]:
    """Poll every 10 ms the file `find()` returns; (first line after wall0, per-line lags)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < expect and time.monotonic() < deadline:
        path = find()
        if path is not None and path.exists():
            now = time.time()
            for raw in path.read_text(errors="replace").splitlines():
                stamp = stamp_of(raw)
                if stamp and stamp not in seen:
                    seen[stamp] = now
        time.sleep(0.01)
    arrivals = sorted(seen.items(), key=lambda item: item[1])
    first = arrivals[0][1] - wall0 if arrivals else float("nan")
    return first, [at - float(stamp) for stamp, at in arrivals]


def stamp_of(raw: str) -> str | None:
    """The timestamp a CELL line carries, in a plain output line or a runner's tagged one."""
    text = raw.rstrip("\r").split("|")[-2] if raw.endswith("|@@") else raw.strip()
    if len(text) == 17 and text[10] == "." and text.replace(".", "").isdigit():
        return text
    return None


def raw_sbatch(tmp: Path) -> dict[str, float | list[float]]:
    cell = tmp / "cell.py"
    cell.write_text(CELL)
    out = tmp / f"raw-{time.monotonic_ns()}.out"
    wall0 = time.time()
    subprocess.run(
        [
            "sbatch",
            "--quiet",
            f"--output={out}",
            "--time=00:05:00",
            f"--wrap={sys.executable} -u {cell}",
        ],
        check=True,
        capture_output=True,
    )
    first, lags = watch_file(lambda: out, wall0, 5)
    return {"first line": first, "line lag": lags}


class Counting:
    """Counts the client's job listings and log fetches (whatever version of the code runs)."""

    def __init__(self, client) -> None:
        self.lists = self.logs = self.chars = 0
        self.lists_after_start = 0  # listings once the job's log had its start line
        self.job = None
        self._list, self._logs = client.list_jobs, client.job_logs
        client.list_jobs, client.job_logs = self.list_jobs, self.job_logs
        self.requests = 0  # every HTTP request to OSCAR
        client._http.event_hooks["request"].append(self._count_request)

    def _count_request(self, request) -> None:
        self.requests += 1

    def list_jobs(self, service):
        self.lists += 1
        if self.job is not None and self.job.started_at is not None:
            self.lists_after_start += 1
        return self._list(service)

    def job_logs(self, service, job):
        self.logs += 1
        text = self._logs(service, job)
        self.chars += len(text)
        return text

    def reset(self, job=None) -> tuple[int, int, int]:
        counts = (self.lists, self.logs, self.chars)
        self.lists = self.logs = self.chars = self.lists_after_start = 0
        self.job = job
        return counts


def through_oscar(session, spec, home: Path, counter: Counting, follow: str | None) -> dict:
    before = set(home.rglob("run-oscar-container.out"))
    found: list[Path] = []

    def pod_log() -> Path | None:
        if not found:
            fresh = set(home.rglob("run-oscar-container.out")) - before
            found.extend(fresh)
        return found[0] if found else None

    file_result: dict = {}
    wall0 = time.time()

    def watch() -> None:
        file_result["first"], file_result["lags"] = watch_file(pod_log, wall0, 5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    counter.reset()
    sent = counter.requests
    job = session.submit(CELL, spec)
    submit_requests = counter.requests - sent
    counter.job = job
    if follow:
        job.follow_with_kubernetes(follow)
    first: float | None = None
    lags: list[float] = []

    def on_update(job, new_lines):
        nonlocal first
        now = time.time()
        for line in new_lines:
            if first is None:
                first = now - wall0
            lags.append(now - float(line.text))

    job.wait(120, on_update=on_update)
    watcher.join()
    assert job.exit_code == 0, (job.status(), job.end_reason(), job.raw_log[-1500:])
    after_start = counter.lists_after_start
    lists, logs, chars = counter.reset()
    return {
        "file first": file_result["first"],
        "file lags": file_result["lags"],
        "first line": first or float("nan"),
        "line lag": lags,
        "lists": lists,
        "logs": logs,
        "chars": chars,
        "lists after start": after_start,
        "submit requests": submit_requests,
    }


def big_cell(session, spec, counter: Counting, lines: int, follow: str | None) -> None:
    counter.reset()
    cpu0, t0 = time.process_time(), time.monotonic()
    job = session.submit(BIG_CELL.format(lines=lines), spec)
    if follow:
        job.follow_with_kubernetes(follow)
    job.wait(600)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    assert job.exit_code == 0 and len(job.lines()) == lines, (job.exit_code, len(job.lines()))
    lists, logs, chars = counter.reset()
    follower = getattr(job, "_follower", None)
    streamed = getattr(follower, "chars", 0) if follower is not None else 0
    final = len(job.raw_log) if not streamed else max(len(job.raw_log), streamed)
    how = "followed (Kubernetes API)" if follow else "polled (OSCAR)"
    print(
        f"\n{lines} lines, {how}: log {final / 1e6:.1f} MB; downloaded "
        f"{(chars + streamed) / 1e6:.1f} MB ({(chars + streamed) / final:.1f}x the log: "
        f"{chars / 1e6:.1f} MB in {logs} log fetches, {streamed / 1e6:.1f} MB streamed) + "
        f"{lists} listings; submit->done {wall:.1f} s, job ran {job.elapsed():.1f} s; kernel CPU "
        f"{cpu:.1f} s ({100 * cpu / max(job.elapsed(), 1e-3):.0f}% of the job's wall time)"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--no-follow", action="store_true")
    args = parser.parse_args()

    import oscar_jupyter
    from oscar_jupyter.jobs import Job
    from oscar_jupyter.local import daemon
    from oscar_jupyter.session import Session

    print(f"code: {Path(oscar_jupyter.__file__).parent}")
    can_follow = hasattr(Job, "follow_with_kubernetes") and not args.no_follow
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home, config = tmp / "home", tmp / "config.yaml"
        started = daemon.start(home=home, port=free_port(), executor="slurm", config_path=config)
        try:
            os.environ["OSCAR_JUPYTER_LOG_DIR"] = str(tmp / "logs")
            session = Session()
            session.connect("local", config_path=config)
            counter = Counting(session.client)
            session.follow_kubernetes = False  # each mode explicitly: poll rows poll
            spec = session.build_spec({"node": "local-slurm", "time": "00:05:00"})
            session.ensure_service(spec)
            floors = [raw_sbatch(tmp) for _ in range(args.runs)]
            polled = [through_oscar(session, spec, home, counter, None) for _ in range(args.runs)]
            kubeconfig = str(started.kubeconfig) if can_follow and started.kubeconfig else None
            followed = (
                [through_oscar(session, spec, home, counter, kubeconfig) for _ in range(args.runs)]
                if kubeconfig
                else []
            )
            report(floors, polled, followed)
            big_cell(session, spec, counter, args.lines, None)
            if kubeconfig:
                big_cell(session, spec, counter, args.lines, kubeconfig)
        finally:
            daemon.stop(home=home)
    return 0


def report(floors: list[dict], polled: list[dict], followed: list[dict]) -> None:
    def firsts(rows, key="first line"):
        return [row[key] for row in rows]

    def lags(rows, key="line lag"):
        return [lag for row in rows for lag in row[key]]

    rows = [
        ("raw sbatch (floor)", firsts(floors), lags(floors), None),
        (
            "pod log file (path floor)",
            firsts(polled, "file first"),
            lags(polled, "file lags"),
            None,
        ),
        ("client poll", firsts(polled), lags(polled), (firsts(floors), lags(floors))),
    ]
    if followed:
        rows.append(
            ("client follow", firsts(followed), lags(followed), (firsts(floors), lags(floors)))
        )
    print(f"\n{'':28}{'first line p50':>15}{'p95':>8}{'line lag p50':>14}{'p95':>8}   (s)")
    for name, first, lag, floor in rows:
        line = f"{name:28}{pct(first, 0.5):>15.3f}{pct(first, 0.95):>8.3f}"
        line += f"{pct(lag, 0.5):>14.3f}{pct(lag, 0.95):>8.3f}"
        if floor:
            line += (
                f"   x{pct(first, 0.5) / pct(floor[0], 0.5):.2f} / "
                f"x{pct(lag, 0.5) / max(1e-3, pct(floor[1], 0.5)):.0f} of the floor (p50)"
            )
        print(line)
    path_first, path_lag = firsts(polled, "file first"), lags(polled, "file lags")
    print(
        f"{'':28}client poll vs path floor: first line "
        f"x{pct(firsts(polled), 0.5) / pct(path_first, 0.5):.2f}, line lag "
        f"+{pct(lags(polled), 0.5) - pct(path_lag, 0.5):.3f} s (p50)"
    )
    for name, group in (("poll", polled), ("follow", followed)):
        if group:
            print(
                f"per job ({name}): {statistics.mean(r['logs'] for r in group):.1f} log fetches,"
                f" {statistics.mean(r['lists'] for r in group):.1f} listings "
                f"({sum(r['lists after start'] for r in group)} in all once the start line "
                f"had arrived), "
                f"{statistics.mean(r['submit requests'] for r in group):.1f} requests to "
                f"submit, "
                f"{statistics.mean(r['chars'] for r in group) / 1e3:.1f} kB of log downloaded"
            )


if __name__ == "__main__":
    sys.exit(main())
