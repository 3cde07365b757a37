"""`%oscar_jobs` in a real kernel (nbclient) against the local OSCAR on real Slurm: the sidebar's
labels (notebook · [n] · first line), states that stay (a cancelled job), filters and times.

The kernel is told its notebook as jupyter_server tells it (`JPY_SESSION_NAME`, an absolute path).
"""

from __future__ import annotations

import html
import json
import re

import pytest
from nbclient import NotebookClient

from .test_cell_experience import CONNECT, OFFLOAD, notebook, run

pytestmark = pytest.mark.e2e


def shown(cell) -> str:
    """What the user reads: the plain text of the cell's displays and streams."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
    return "\n".join(parts)


def html_of(cell) -> str:
    return "".join(
        o.data.get("text/html", "") for o in cell.outputs if o.output_type == "display_data"
    )


def test_oscar_jobs_shows_labels_states_and_filters(local_oscar, monkeypatch, tmp_path):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "client-logs"))
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "work" / "labels.ipynb"))
    nb = notebook(
        CONNECT,  # [1]
        OFFLOAD + "\n\nprint('labelled job')\n",  # [2]
        OFFLOAD + " --no-wait -o slow\nimport time\ntime.sleep(300)\n",  # [3]
        "import time\nwhile slow.status() not in ('Running', 'Pending'):\n"
        "    time.sleep(0.2)\nslow.cancel()",  # [4]
        "%oscar_jobs",  # [5]
        "%oscar_jobs --hide-finished",  # [6]
        "%oscar_jobs --notebook --ids",  # [7]
        "%oscar_jobs --watch --notebook",  # [8]
        "%oscar_cleanup\n%oscar_jobs",  # [9]
    )
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True)
    nb = run(client, "jobs_labels")
    cells = nb.cells
    for cell in cells[:5]:
        assert not [o for o in cell.outputs if o.output_type == "error"], shown(cell)

    table = shown(cells[4])
    lines = table.splitlines()
    assert lines[0].split() == ["job", "id", "status", "started", "duration", "node", "used"]
    assert len(re.findall(r"  [0-9a-f]{12}  ", table)) == 2  # the short ids the magics take
    assert len(lines) == 4  # the cancelled cell [3] stays listed, with the finished [2]
    assert re.fullmatch(
        r"Total for this kernel's jobs: \d+\.\d\d core-hours \(cores asked × wall time\)", lines[3]
    )
    [cancelled] = [line for line in lines if "labels.ipynb · [3] · import time" in line]
    assert "Cancelled from this kernel" in cancelled
    [done] = [line for line in lines if "labels.ipynb · [2] · print('labelled job')" in line]
    assert "Succeeded" in done and "local-slurm" in done
    # What it used, measured on the cluster; its duration is the measured wall time.
    used = re.search(r"  ([\d:]{8})  local-slurm  wall ([\d:]{8}) of 00:02:00 · CPU ", done)
    assert used and used[1] == used[2], done
    # Local clock time with its relative form; the exact UTC time and the job id as tooltips.
    assert re.search(r"\d\d:\d\d:\d\d \((just now|\d+ s ago|\d+ min ago)\)", done)
    page = html_of(cells[4])
    assert re.search(r"title='started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ UTC'", page)
    assert "title='job oj-" in page and "this kernel" in page

    assert shown(cells[5]) == "No running or waiting jobs from this kernel (--mine: all your jobs)."
    ids = shown(cells[6])
    assert len(re.findall(r"oj-[0-9a-f]{6}-[0-9a-f]+-[0-9a-f]{6}-[0-9a-f]{12}", ids)) == 2

    # The live table shows the same labels (its rows are in the saved widget state).
    state = html.unescape(json.dumps(nb.metadata.get("widgets", {}), ensure_ascii=False))
    assert "labels.ipynb · [2] · print('labelled job')" in state
    assert "labels.ipynb · [3] · import time" in state

    # Cleaning up removes both, the cancelled one (kept only by the records) included.
    after = shown(cells[8])
    assert "Deleted 2 finished job(s) (this kernel's)." in after
    assert "No jobs from this kernel" in after
