"""How long an offloaded cell takes to show its output, against the local OSCAR on real Slurm.

    python bench/latency.py [--runs 5] [--executor slurm|process]

Starts a local OSCAR in a temporary home (Slurm must be up: scripts/slurm-cluster.sh start),
then offloads small cells and prints, per run and as medians:
  submit     the POST /job call (service exists),
  first line submit -> the first output line seen by the client,
  line lag   time between a line's print() on the node and its arrival in the client,
  total      submit -> the job is seen finished with its exit code.
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

CELL = """
import time
for i in range(5):
    print(f"{time.time():.6f}", flush=True)
    time.sleep(0.5)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_run(session, spec) -> dict[str, float]:
    t0 = time.monotonic()
    wall0 = time.time()
    job = session.submit(CELL, spec)
    submitted = time.monotonic() - t0
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
    assert job.exit_code == 0, job.logs()
    return {
        "submit": submitted,
        "first line": first or float("nan"),
        "line lag": statistics.median(lags),
        "total": time.monotonic() - t0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--executor", default="slurm", choices=["slurm", "process"])
    args = parser.parse_args()

    from oscar_jupyter.local import daemon
    from oscar_jupyter.session import Session

    with tempfile.TemporaryDirectory() as tmp:
        home, config = Path(tmp) / "home", Path(tmp) / "config.yaml"
        t0 = time.monotonic()
        started = daemon.start(
            home=home, port=free_port(), executor=args.executor, config_path=config
        )
        print(f"local OSCAR start: {time.monotonic() - t0:.2f} s ({started.executor})")
        try:
            os.environ["OSCAR_JUPYTER_LOG_DIR"] = str(Path(tmp) / "logs")
            session = Session()
            t0 = time.monotonic()
            session.connect("local", config_path=config)
            print(f"connect: {time.monotonic() - t0:.3f} s")
            spec = session.build_spec({"node": "local-slurm", "time": "00:05:00"})
            t0 = time.monotonic()
            session.ensure_service(spec)
            print(f"create runner service: {time.monotonic() - t0:.3f} s")
            rows = [one_run(session, spec) for _ in range(args.runs)]
        finally:
            daemon.stop(home=home)
    keys = list(rows[0])
    print(f"\n{'run':>4}  " + "  ".join(f"{k:>10}" for k in keys) + "   (seconds)")
    for i, row in enumerate(rows, 1):
        print(f"{i:>4}  " + "  ".join(f"{row[k]:>10.3f}" for k in keys))
    print("median  " + "  ".join(f"{statistics.median(r[k] for r in rows):>10.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
