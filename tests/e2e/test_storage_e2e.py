"""Data of any size through alice's bucket, in a real kernel (nbclient) as `local-alice`, against
the local OSCAR on real Slurm and its real S3 server: a 64 MiB --in and a 32 MiB --out value
intact, a 20 MB --upload and a --download written by the cell, checksums equal; the job's objects
gone once collected; no presigned URL or key in the notebook, the log or the dry run."""

from __future__ import annotations

import hashlib
import json
import os
import time

import boto3
import pytest
from botocore.config import Config

from .test_cell_experience import client_for, errors, everything, notebook, run, streams

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

CONNECT_ALICE = "%load_ext oscar_jupyter\n%oscar_connect local-alice"
OFFLOAD = "%%oscar_offload --node local-slurm --time 00:05:00 --mem 1G"


def alice_s3(local_oscar):
    with local_oscar.user_client("alice") as client:
        provider = client.get("/system/config").raise_for_status().json()["minio_provider"]
    s3 = boto3.client(
        "s3",
        endpoint_url=provider["endpoint"],
        aws_access_key_id=provider["access_key"],
        aws_secret_access_key=provider["secret_key"],
        region_name=provider["region"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    return s3, provider


def test_large_values_uploads_and_downloads_as_alice(local_oscar, monkeypatch, tmp_path):
    data = os.urandom(20_000_000)
    (tmp_path / "input.bin").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    nb = notebook(
        CONNECT_ALICE,
        "import os, hashlib\nbig = os.urandom(64 * 1024 * 1024)\n"
        "big_sha = hashlib.sha256(big).hexdigest()",
        OFFLOAD + " --in big --out back,seen_sha,upload_sha -o job"
        f" --upload {tmp_path}/input.bin:/tmp/in/input.bin --download /tmp/result.bin\n"
        "import hashlib\n"
        "seen_sha = hashlib.sha256(big).hexdigest()\n"
        "upload_sha = hashlib.sha256(open('/tmp/in/input.bin', 'rb').read()).hexdigest()\n"
        "back = big[: 32 * 1024 * 1024]\n"
        "open('/tmp/result.bin', 'wb').write(back[:5_000_000])\n"
        "print('cell done', len(big))\n",
        "assert seen_sha == big_sha, 'in'\n"
        "assert back == big[: 32 * 1024 * 1024], 'out'\n"
        "print(upload_sha)\n"
        f"print(hashlib.sha256(open({str(tmp_path / 'result.bin')!r}, 'rb').read()).hexdigest())\n"
        "print(hashlib.sha256(big[:5_000_000]).hexdigest())\n"
        "print(job.service, job.name)",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "storage-large-values")
    elapsed = time.monotonic() - started
    for cell in nb.cells:
        assert not errors(cell), everything(cell)
    assert "cell done 67108864" in everything(nb.cells[2])
    upload_sha, download_sha, expected_download, job_line = streams(nb.cells[3], "stdout").split(
        "\n"
    )[:4]
    assert upload_sha == hashlib.sha256(data).hexdigest()
    assert download_sha == expected_download
    assert elapsed < 90, f"took {elapsed:.0f} s"
    service, job_name = job_line.split()

    s3, provider = alice_s3(local_oscar)
    with local_oscar.user_client("alice") as client:
        mine = [b["bucket_name"] for b in client.get("/system/buckets").json()]
    assert mine, "alice's bucket was made through OSCAR"
    for bucket in mine:
        left = s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job_name}/").get("KeyCount", 0)
        assert left == 0, "the job's objects were not removed after collection"

    # nothing of the presigned URLs or keys in the notebook or the job's log
    saved = json.dumps(nb)
    with local_oscar.user_client("alice") as client:
        log = client.get(f"/system/logs/{service}/{job_name}").text
    for text in (saved, log):
        assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text
        assert provider["access_key"] not in text and provider["secret_key"] not in text


def test_combinations_failed_download_no_wait_secret_env_cleanup_and_dry_run(
    local_oscar_0_6_2, monkeypatch, tmp_path
):
    # On interLink 0.6.2, where --secret arrives (0.6.1 refuses a --secret cell: B4).
    local_oscar = local_oscar_0_6_2
    (tmp_path / "small.txt").write_text("hello from the notebook\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_TOKEN", "s3cr3t-value")
    nb = notebook(
        CONNECT_ALICE,
        "arr = bytes(range(256)) * 40_000",
        # --download on a failed cell: the log it wrote comes back all the same
        OFFLOAD + f" --download /tmp/train.log:{tmp_path}/train.log\n"
        "open('/tmp/train.log', 'w').write('epoch 1 loss nan\\n')\n"
        "raise RuntimeError('diverged')\n",
        # --upload with --env; --secret with a large --in
        OFFLOAD + " --env GREETING=hi --secret API_TOKEN --in arr --out total"
        f" --upload {tmp_path}/small.txt\n"
        "import os\nprint(os.environ['GREETING'], open('/tmp/small.txt').read().strip())\n"
        "print('secret ok' if os.environ.get('API_TOKEN') else 'no secret here')\n"
        "total = sum(arr)\n",
        "print(total == sum(arr))",
        # --in with --no-wait: the values reach the job; result() brings back --out
        OFFLOAD + " --no-wait -o later --in arr --out n\nn = len(arr)\n",
        "print(later.result(timeout=120)['n'])",
        OFFLOAD + " --dry-run --in arr --upload small.txt --download /tmp/x\nprint(1)\n",
        "%oscar_cleanup",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "storage-combinations")
    failed = nb.cells[2]
    assert errors(failed) and "diverged" in everything(failed)
    assert (tmp_path / "train.log").read_text() == "epoch 1 loss nan\n"
    combined = everything(nb.cells[3])
    assert not errors(nb.cells[3]), combined
    assert "hi hello from the notebook" in combined
    assert streams(nb.cells[4], "stdout").strip() == "True"
    assert streams(nb.cells[6], "stdout").strip() == "10240000"
    dry = everything(nb.cells[7])
    assert "nothing was sent" in dry
    s3, provider = alice_s3(local_oscar)
    saved = json.dumps(nb)
    for text in (saved, dry):
        assert "X-Amz-Signature" not in text and provider["access_key"] not in text
        assert "s3cr3t-value" not in text
    assert not errors(nb.cells[8]), everything(nb.cells[8])
    with local_oscar.user_client("alice") as client:
        mine = [b["bucket_name"] for b in client.get("/system/buckets").json()]
    for bucket in [b for b in mine if b.startswith("oscar-jupyter-")]:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys == [], f"objects left after %oscar_cleanup: {keys}"
