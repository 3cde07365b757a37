"""What 50 concurrent --no-wait jobs of one kernel cost the server and the kernel's next cell.

    python bench/concurrent.py [--jobs 50] [--seconds 20] [--max-wait 300]

Starts a private local OSCAR (Slurm must be up: scripts/slurm-cluster.sh start) in a temporary
home, connects to it as a kernel does (oscar_jupyter.connect), submits --jobs cells with
offload(..., wait=False), each printing a line every 0.5 s for --seconds, and while the kernel's
one Poller (and the Kubernetes log followers, where the profile names a kubeconfig) keep them
current, measures in this process:
  requests/s     the HTTP requests the kernel sends (OSCAR calls counted by an httpx event hook
                 on the client, Kubernetes calls by wrapping the kubernetes REST client), per 10 s
                 window after the last submission: p50 and max;
  cell latency   a trivial cell on the main thread (a small pure-Python sum + time.sleep(0)),
                 sampled every 0.1 s while the jobs run, against the same cell before any job
                 (GIL contention with the poller and followers): p50/p95/max in ms (goal < 100);
  totals         listings, log fetches, log characters downloaded (polls) and streamed (follow),
                 jobs running at once (max over the samples), how the jobs ended.
Jobs still unfinished after --max-wait seconds are cancelled; Ctrl-C or an error cancels every
job and the daemon is stopped in any case.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from floor import free_port, pct  # bench/ is sys.path[0] when run as python bench/concurrent.py

CELL = """
import time
for i in range({lines}):
    print(f"line {{i}} {{time.time():.3f}}", flush=True)
    time.sleep(0.5)
"""
WINDOW = 10.0
SAMPLE_EVERY = 0.1


def trivial_cell() -> float:
    """Milliseconds a user's trivial next cell takes on the main thread."""
    t0 = time.perf_counter()
    sum(i * i for i in range(10_000))
    time.sleep(0)
    return (time.perf_counter() - t0) * 1e3


class Requests:
    """Every HTTP request the kernel sends, as (monotonic time, kind)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    def hook_oscar(self, client) -> None:
        def on_request(request) -> None:
            path = request.url.path
            parts = [p for p in path.split("/") if p]
            if request.method == "GET" and parts[:2] == ["system", "logs"]:
                kind = "oscar listing" if len(parts) == 3 else "oscar log"
            elif request.method == "POST" and parts[:1] == ["job"]:
                kind = "oscar submit"
            elif request.method == "DELETE":
                kind = "oscar delete"
            else:
                kind = "oscar other"
            self.sent.append((time.monotonic(), kind))

        client._http.event_hooks["request"].append(on_request)

    def hook_kubernetes(self) -> None:
        """The Kubernetes client (log followers) sends through urllib3; httpx does not."""
        try:
            from urllib3 import poolmanager
        except ImportError:
            return
        original = poolmanager.PoolManager.urlopen
        sent = self.sent

        def urlopen(self, method, url, *args, **kwargs):
            path = url.split("?")[0].rstrip("/")
            kind = (
                "k8s log stream"
                if path.endswith("/log")
                else "k8s pod list"
                if path.endswith("/pods")
                else "k8s other"
            )
            sent.append((time.monotonic(), kind))
            return original(self, method, url, *args, **kwargs)

        poolmanager.PoolManager.urlopen = urlopen

    def between(self, start: float, end: float) -> list[tuple[float, str]]:
        return [(at, kind) for at, kind in list(self.sent) if start <= at < end]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each job prints")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=300.0,
        help="cancel what is still unfinished this long after the last submit",
    )
    args = parser.parse_args()

    import oscar_jupyter
    from oscar_jupyter import session as session_module
    from oscar_jupyter.local import daemon

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"code: {Path(oscar_jupyter.__file__).parent}; {os.cpu_count()} CPUs", flush=True)
    code = CELL.format(lines=int(args.seconds / 0.5))
    requests = Requests()
    requests.hook_kubernetes()
    jobs: list = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home, config = tmp / "home", tmp / "config.yaml"
        os.environ["OSCAR_CLI_CONFIG"] = str(config)
        os.environ["OSCAR_JUPYTER_LOG_DIR"] = str(tmp / "logs")
        daemon.start(home=home, port=free_port(), executor="slurm", config_path=config)
        try:
            oscar_jupyter.connect("local")
            session = session_module.current()
            requests.hook_oscar(session.client)
            baseline = [trivial_cell() for _ in range(100)]
            t_submit = time.monotonic()
            for _ in range(args.jobs):
                jobs.append(
                    oscar_jupyter.offload(code, node="local-slurm", time="00:05:00", wait=False)
                )
            t_steady = time.monotonic()
            print(f"submitted {len(jobs)} jobs in {t_steady - t_submit:.1f} s", flush=True)
            latency: list[float] = []
            running_at_once: list[int] = []
            deadline = t_steady + args.max_wait
            next_report = t_steady + WINDOW
            while time.monotonic() < deadline:
                latency.append(trivial_cell())
                statuses = Counter(job.status() for job in jobs)
                running_at_once.append(statuses["Running"])
                if all(job.is_done() for job in jobs):
                    break
                if time.monotonic() >= next_report:
                    window = requests.between(next_report - WINDOW, next_report)
                    print(
                        f"  t+{next_report - t_steady:4.0f} s: {len(window) / WINDOW:5.1f} req/s,"
                        f" {dict(sorted(statuses.items()))}",
                        flush=True,
                    )
                    next_report += WINDOW
                time.sleep(SAMPLE_EVERY)
            t_end = time.monotonic()
            left = [job for job in jobs if not job.is_done()]
            for job in left:
                job.cancel()
            report(
                args,
                jobs,
                requests,
                baseline,
                latency,
                running_at_once,
                t_submit,
                t_steady,
                t_end,
                len(left),
            )
        except BaseException:
            for job in jobs:
                if not job.is_done():
                    try:
                        job.cancel()
                    except Exception as err:  # keep cancelling the others
                        print(f"cancel {job.name}: {err}", file=sys.stderr)
            raise
        finally:
            daemon.stop(home=home)
    return 0


def report(
    args,
    jobs,
    requests: Requests,
    baseline,
    latency,
    running_at_once,
    t_submit,
    t_steady,
    t_end,
    cancelled: int,
) -> None:
    submit_phase = requests.between(t_submit, t_steady)
    steady = requests.between(t_steady, t_end)
    rates = []
    start = t_steady
    while start + WINDOW <= t_end:
        rates.append(len(requests.between(start, start + WINDOW)) / WINDOW)
        start += WINDOW
    if start < t_end and (not rates or t_end - start >= WINDOW / 2):  # a last partial window
        rates.append(len(requests.between(start, t_end)) / (t_end - start))
    kinds = Counter(kind for _, kind in steady)
    ended = Counter(job.status() for job in jobs)
    polled_chars = sum(job.log_chars_fetched for job in jobs)
    streamed_chars = sum(job._follower.chars for job in jobs if job._follower is not None)
    final_chars = sum(len(job.raw_log) for job in jobs)
    duration = t_end - t_steady
    print(
        f"\n{args.jobs} --no-wait jobs, each printing every 0.5 s for {args.seconds:g} s; "
        f"measured {duration:.0f} s after the last submit "
        f"({'all ended' if not cancelled else f'{cancelled} cancelled at the bound'})"
    )
    print(
        f"{'requests/s to the server':34}p50 {pct(rates, 0.5):6.1f}   max {max(rates or [0]):6.1f}"
        f"   mean {len(steady) / max(duration, 1e-9):6.1f}   ({len(rates)} windows of "
        f"<= {WINDOW:g} s)"
    )
    print(
        f"{'  submitting':34}{len(submit_phase)} requests in {t_steady - t_submit:.1f} s "
        f"({len(submit_phase) / max(t_steady - t_submit, 1e-9):.1f}/s)"
    )
    print(
        f"{'  by kind (after submit)':34}" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    )
    print(
        f"{'trivial cell, idle kernel (ms)':34}p50 {pct(baseline, 0.5):6.2f}   "
        f"p95 {pct(baseline, 0.95):6.2f}   max {max(baseline):6.2f}   (100 samples)"
    )
    print(
        f"{'trivial cell, jobs polled (ms)':34}p50 {pct(latency, 0.5):6.2f}   "
        f"p95 {pct(latency, 0.95):6.2f}   max {max(latency or [0]):6.2f}   "
        f"({len(latency)} samples; goal < 100)"
    )
    print(
        f"{'jobs running at once':34}max {max(running_at_once or [0])}   "
        f"p50 {pct([float(n) for n in running_at_once], 0.5):.0f}   (the rest queue)"
    )
    print(
        f"{'log listings / log fetches':34}{sum(1 for _, k in steady if k == 'oscar listing')}"
        f" / {sum(1 for _, k in steady if k == 'oscar log')}   "
        f"(Job counters: {sum(j.list_requests for j in jobs)} / "
        f"{sum(j.log_requests for j in jobs)})"
    )
    print(
        f"{'log bytes':34}polled {polled_chars / 1e3:.1f} kB, streamed {streamed_chars / 1e3:.1f}"
        f" kB, final logs {final_chars / 1e3:.1f} kB "
        f"({polled_chars / max(final_chars, 1):.1f}x polled)"
    )
    print(f"{'jobs ended':34}" + ", ".join(f"{k} {v}" for k, v in sorted(ended.items())))
    print(f"{'threads in the kernel at the end':34}{threading.active_count()}")


if __name__ == "__main__":
    sys.exit(main())
