"""What a job used, measured on the cluster, as the user sees it in a real kernel (nbclient)
against the local OSCAR on real Slurm: the cell's final status line, `%oscar_jobs` and the job's
record, which outlives the kernel."""

from __future__ import annotations

import json
import re

import pytest

from oscar_jupyter import job_records
from oscar_jupyter.usage import Usage

from .test_cell_experience import CONNECT, client_for, notebook, run, status_text, streams

pytestmark = pytest.mark.e2e
ALLOCATE = "b = bytearray(300 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\nprint('allocated')\n"
PEAK = re.compile(r"peak ([\d.]+) MiB of 1G")


def test_a_cell_that_allocates_300_mb_reports_its_peak_memory(local_oscar, monkeypatch):
    nb = notebook(
        CONNECT,
        "%%oscar_offload --node local-slurm --time 00:05:00 --mem 1G\n" + ALLOCATE,
        "%oscar_jobs",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "usage_300mb")
    cell, listing = nb.cells[1], nb.cells[2]
    assert streams(cell, "stdout") == "allocated\n"
    status = status_text(cell)
    assert status.startswith("✔ Succeeded on local-slurm · wall 00:00:"), status
    assert " of 00:05:00 · CPU 00:00:" in status and "of 1 CPU on average)" in status, status
    peak = PEAK.search(status)
    assert peak, status
    assert 300e6 <= float(peak.group(1)) * 2**20 <= 400e6, status
    table = listing.outputs[-1].data["text/plain"]
    assert peak.group(0) in table
    assert re.search(r"^Total for this kernel's jobs: 0\.\d\d core-hours", table, re.M), table
    # The job's record keeps what it used, for the views after the kernel.
    files = [f for f in job_records.records_root().glob("*/*.json") if ".log." not in f.name]
    records = [job_records.JobRecord.from_json(json.loads(f.read_text())) for f in files]
    # Other tests' jobs share the records folder: this cell's job is known by its first line.
    (record,) = [r for r in records if r.label and r.label.first_line == ALLOCATE.split("\n")[0]]
    assert record.status == "Succeeded"
    usage = Usage.from_record(record.usage)
    assert usage is not None and 300e6 <= usage.peak_memory <= 400e6
    assert record.request == {"cpus": 1, "mem": "1G", "time": "00:05:00"}
