"""Jobs outlive their kernel: the kernel says so when it shuts down, and `%oscar_attach` in
another kernel streams the job from its first line and ends with its real state."""

from __future__ import annotations

import re

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

CONNECT = "%load_ext oscar_jupyter\n%oscar_connect local"
SUBMIT = """\
import oscar_jupyter
job = oscar_jupyter.offload(
    "import time\\nfor i in range(8):\\n    print('tick', i, flush=True)\\n    time.sleep(1)\\n",
    node="local-slurm", time="00:05:00", wait=False,
)
print(job.name)
"""


def run(cells: list[str], local_oscar, monkeypatch):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    return nb


def stream(cell, name: str) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def test_a_job_left_running_is_announced_and_attached_from_another_kernel(
    local_oscar, monkeypatch, capfd
):
    first = run([CONNECT, SUBMIT], local_oscar, monkeypatch)
    name = stream(first.cells[1], "stdout").strip()
    assert re.fullmatch(r"[a-z0-9-]+", name), name
    # The first kernel has shut down; its last words went to the server's log (its stderr).
    announced = capfd.readouterr().err
    assert f"job {name} still runs on the cluster" in announced
    assert f"%oscar_attach {name}" in announced

    second = run([CONNECT, f"%oscar_attach {name}"], local_oscar, monkeypatch)
    attached = second.cells[1]
    assert stream(attached, "stdout") == "".join(f"tick {i}\n" for i in range(8))
    statuses = [o.data["text/plain"] for o in attached.outputs if o.output_type == "display_data"]
    assert statuses and statuses[-1].startswith("✔ Succeeded")
    assert not [o for o in attached.outputs if o.output_type == "error"]


def test_attaching_to_a_failed_job_fails_the_cell_like_the_original(local_oscar, monkeypatch):
    submit_failing = SUBMIT.replace("time.sleep(1)\\n", "time.sleep(1)\\nraise SystemExit(3)\\n")
    first = run([CONNECT, submit_failing], local_oscar, monkeypatch)
    name = stream(first.cells[1], "stdout").strip()
    nb = new_notebook(cells=[new_code_cell(CONNECT), new_code_cell(f"%oscar_attach {name}")])
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True)
    client.execute()
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "JobFailed"
    assert "exit code 3" in errors[0].evalue
    assert stream(nb.cells[1], "stdout") == "".join(f"tick {i}\n" for i in range(8))
