"""Transfer throughput of oscar-jupyter's storage path against a plain S3 client, to the same
server: the local OSCAR's object store, as `local-alice`.

    .venv/bin/python bench/storage_throughput.py [--mib 256]

Starts a local OSCAR in a temporary home (no job runs), then moves the same bytes up and down
(1) with boto3's own `upload_fileobj`/`download_fileobj` and default settings, (2) through
`oscar_jupyter.storage.UserBucket` (SHA-256 on the way, as the cells do) and (3) as a job does,
through presigned URLs with `cell_program.StorageChannel` (urllib, standard library only).
Goal: ours at least half of the plain client's.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

# bench/ holds a concurrent.py: the repository, not this folder, comes first on the path
sys.path[0] = str(Path(__file__).resolve().parents[1])

from oscar_jupyter import cell_program  # noqa: E402
from oscar_jupyter.client import OscarClient  # noqa: E402
from oscar_jupyter.config import load_profile  # noqa: E402
from oscar_jupyter.local import daemon  # noqa: E402
from oscar_jupyter.storage import UserBucket  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(label: str, size: int, action) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    rate = size / seconds / 1e6
    print(f"  {label:<44} {rate:8.0f} MB/s  ({seconds:.2f} s)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as root:
        config = Path(root) / "config.yaml"
        daemon.start(
            home=Path(root) / "home",
            port=free_port(),
            executor="process",
            config_path=config,
            users=["alice"],
        )
        try:
            client = OscarClient(load_profile("local-alice", config_path=config))
            bucket = UserBucket(client, "bench0")
            plain = bucket.s3  # the same keys, endpoint and bucket, boto3's defaults
            name = bucket.name
            print(f"{args.mib} MiB to {bucket.access.endpoint} (bucket {name})")
            up = {
                "plain boto3 upload_fileobj": timed(
                    "plain boto3 upload_fileobj",
                    size,
                    lambda: plain.upload_fileobj(io.BytesIO(data), name, "plain"),
                ),
                "ours: UserBucket.put (+SHA-256)": timed(
                    "ours: UserBucket.put (+SHA-256)",
                    size,
                    lambda: bucket.put("ours", io.BytesIO(data)),
                ),
            }
            put_url = bucket.presign("job", "PUT", 600)
            up["job: presigned PUT, urllib"] = timed(
                "job: presigned PUT, urllib",
                size,
                lambda: cell_program.StorageChannel({}).send(put_url, io.BytesIO(data), size),
            )
            sink = io.BytesIO()
            down = {
                "plain boto3 download_fileobj": timed(
                    "plain boto3 download_fileobj",
                    size,
                    lambda: plain.download_fileobj(name, "plain", io.BytesIO()),
                ),
                "ours: UserBucket.get": timed(
                    "ours: UserBucket.get", size, lambda: bucket.get("ours", io.BytesIO())
                ),
            }
            import hashlib

            item = {
                "url": bucket.presign("job", "GET", 600),
                "size": size,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            down["job: presigned GET, urllib (+SHA-256)"] = timed(
                "job: presigned GET, urllib (+SHA-256)",
                size,
                lambda: cell_program.StorageChannel({}).fetch(item, sink),
            )
            assert sink.getvalue() == data
            bucket.delete_prefix("")
        finally:
            daemon.stop(home=Path(root) / "home")
    for kind, rates in (("upload", up), ("download", down)):
        base = next(iter(rates.values()))
        worst = min(list(rates.values())[1:]) / base
        print(f"{kind}: ours at worst {worst:.0%} of the plain client (goal: at least 50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
