"""A trivial cell in a persistent session against a fresh job, in one run (issue 20's goal).

    python bench/session_latency.py [--cells 30] [--jobs 3] [--user alice] [--executor slurm]

Starts a local OSCAR in a temporary home (Slurm must be up: scripts/slurm-cluster.sh start),
connects as its admin (Basic) or, with --user, as that OIDC user (whose polls OSCAR's identity
provider calls cost: at most one a second), starts a session and measures the round trip of
--cells trivial cells (`run("n = n + 1")`: the cell object PUT, the job's poll, the markers in the
log, the notebook's poll), then the submit-to-done time of --jobs fresh offloaded cells (`pass`)
with the same resources. Prints p50/p95 of each and their ratio (goal: session p50 <= 0.3 s
and <= 0.3x a fresh job), and checks that the session kept its state across the cells.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/ holds a concurrent.py: the repository, not this folder, comes first on the path
sys.path[0] = str(Path(__file__).resolve().parents[1])

import oscar_jupyter  # noqa: E402
from oscar_jupyter.local import daemon  # noqa: E402

FLAGS = {"node": "local-slurm", "time": "00:10:00", "mem": "1G"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def show(label: str, values: list[float]) -> None:
    print(
        f"  {label:<34} p50 {pct(values, 0.5):7.3f} s   p95 {pct(values, 0.95):7.3f} s   "
        f"mean {statistics.mean(values):7.3f} s   (n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--user", default=None, help="an OIDC user (default: the Basic admin)")
    parser.add_argument("--executor", default="slurm", choices=("slurm", "process"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        config = Path(root) / "config.yaml"
        home = Path(root) / "home"
        daemon.start(
            home=home,
            port=free_port(),
            executor=args.executor,
            config_path=config,
            users=[args.user] if args.user else None,
        )
        os.environ["OSCAR_CLI_CONFIG"] = str(config)
        os.environ["OSCAR_JUPYTER_LOG_DIR"] = str(Path(root) / "logs")
        try:
            oscar_jupyter.connect(f"local-{args.user}" if args.user else "local")
            who = args.user or "admin (Basic)"
            print(f"local OSCAR, {args.executor}, as {who}")
            started = time.monotonic()
            with oscar_jupyter.start_session("bench", **FLAGS) as session:
                print(f"  session start (submit to ready)     {time.monotonic() - started:7.3f} s")
                session.run("n = 0")
                cells = []
                for _ in range(args.cells):
                    began = time.perf_counter()
                    session.run("n = n + 1")
                    cells.append(time.perf_counter() - began)
                kept = session.run("m = n", outputs=["m"])["m"]
                assert kept == args.cells, f"state lost: n = {kept}"
                show("session: trivial cell round trip", cells)
            jobs = []
            for _ in range(args.jobs):
                began = time.perf_counter()
                oscar_jupyter.offload("pass", **FLAGS)
                jobs.append(time.perf_counter() - began)
            show("fresh job: submit to done", jobs)
            ratio = pct(cells, 0.5) / pct(jobs, 0.5)
            print(f"  session p50 / fresh job p50           {ratio:7.3f}x  (goal <= 0.3x)")
            print(f"  state kept across {args.cells} cells: yes")
        finally:
            from oscar_jupyter import session as connection

            connection.current().cleanup(scope="kernel", services=True)
            daemon.stop(home=home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
