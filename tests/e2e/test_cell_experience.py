"""The cell experience in a real kernel (nbclient) against the local OSCAR: what the user sees."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from oscar_jupyter.runner import TRACEBACK_MARKER

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
OFFLOAD = "%%oscar_offload --node local-slurm --time 00:02:00"
CONNECT = "%load_ext oscar_jupyter\n%oscar_connect local"
RAW_LOG = ("@@OJ", "supervisor -", TRACEBACK_MARKER)


def notebook(*sources: str):
    return new_notebook(
        cells=[new_code_cell(source) for source in sources],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def client_for(nb, local_oscar, monkeypatch) -> NotebookClient:
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    return NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True)


def run(client: NotebookClient, name: str):
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(client.nb, ARTIFACTS / f"{name}.ipynb")
    return client.nb


def streams(cell, name: str) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def errors(cell) -> list:
    return [o for o in cell.outputs if o.output_type == "error"]


def everything(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result", "update_display_data"):
            parts.append(str(out.data))
        elif out.output_type == "error":
            parts.append(out.ename + out.evalue + "\n".join(out.traceback))
    return "\n".join(parts)


def status_text(cell) -> str:
    shown = [o for o in cell.outputs if o.output_type == "display_data"]
    return shown[-1].data["text/plain"] if shown else ""


def test_errors_hints_syntax_and_flags_as_the_user_sees_them(local_oscar, monkeypatch):
    nb = notebook(
        CONNECT,
        OFFLOAD + "\nimport sys\nprint('before', flush=True)\ndef train():\n"
        "    raise ValueError('loss is NaN')\n\ntrain()\n",
        OFFLOAD + "\nprint(data)\n",
        OFFLOAD + "\nimport surely_not_installed_module\n",
        "from oscar_jupyter.session import current\nprint(len(current().jobs))",
        OFFLOAD + "\na = 1\nb = (\n",
        "print(len(current().jobs))",
        "%%oscar_offload --walltime 00:10:00\nprint(1)\n",
        "%%oscar_offload --dry-run --node local-slurm --time 00:02:00 --cpus-per-task 2\nprint(1)",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "cell-experience-errors")
    cells = nb.cells

    failing = cells[1]
    assert len(errors(failing)) == 1
    error = errors(failing)[0]
    rendered = "\n".join(error.traceback)
    count = failing.execution_count
    # The editor's lines: %%oscar_offload is line 1, `train()` line 7, the raise line 5.
    assert f"Cell In[{count}], line 7, in <module>" in rendered
    assert f"Cell In[{count}], line 5, in train" in rendered
    assert rendered.splitlines()[-1] == "ValueError: loss is NaN"
    assert "cell.py" not in rendered and "/tmp/oj-" not in rendered
    assert streams(failing, "stdout") == "before\n"
    assert "Traceback" not in streams(failing, "stderr")  # shown once: in the error
    assert "✖ Failed" in status_text(failing)
    assert error.ename == "CellError"
    assert not any(text in everything(failing) for text in RAW_LOG)

    name_error = "\n".join(errors(cells[2])[0].traceback)
    assert "NameError: name 'data' is not defined" in name_error
    assert name_error.splitlines()[-1].startswith("Hint: the cell runs in a fresh Python")
    assert "--in data" in name_error.splitlines()[-1]
    assert f"Cell In[{cells[2].execution_count}], line 2" in name_error

    missing = "\n".join(errors(cells[3])[0].traceback)
    assert "No module named 'surely_not_installed_module'" in missing
    hint = missing.splitlines()[-1]
    assert hint.startswith("Hint: the cell ran in the image ") and "--image" in hint
    assert "--pre-exec" in hint

    # The syntax error: at once, with the editor's line, and no job was created.
    jobs_before = streams(cells[4], "stdout").strip()
    syntax = errors(cells[5])
    assert len(syntax) == 1
    assert f"Cell In[{cells[5].execution_count}], line 3" in "\n".join(syntax[0].traceback)
    assert "SyntaxError" in syntax[0].traceback[-1]
    assert syntax[0].ename == "SyntaxError"  # as Python names it (except SyntaxError catches it)
    assert len(syntax[0].traceback) <= 4, syntax[0].traceback  # no frames of ours
    assert not [o for o in cells[5].outputs if o.output_type == "display_data"]
    assert streams(cells[6], "stdout").strip() == jobs_before == "3"

    # IPython shows a UsageError as one line on stderr.
    assert streams(cells[7], "stderr").strip() == (
        "UsageError: %%oscar_offload: unknown flag --walltime: did you mean --time?"
    )
    assert "usage:" not in everything(cells[7])

    dry = streams(cells[8], "stdout")
    summary, fdl, script = (
        dry.find("# Summary"),
        dry.find("# Service definition"),
        dry.find("# File "),
    )
    assert 0 <= summary < fdl < dry.find("# Job request") < script
    head = dry[summary:fdl]
    assert "node: local-slurm" in head and "2 CPUs per task" in head
    assert "image: " in head and "--time=00:02:00" in head


def test_long_output_shows_its_head_and_tail(local_oscar, monkeypatch):
    nb = notebook(
        CONNECT + "\n%config OscarMagics.max_stream_lines = 20",
        OFFLOAD + " -o long_job\nfor i in range(500):\n    print('row', i)\n",
        "print(long_job.name)",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "cell-experience-long")
    cell = nb.cells[1]
    assert streams(cell, "stdout").splitlines() == [f"row {i}" for i in range(10)] + [
        f"row {i}" for i in range(490, 500)
    ]
    job = streams(nb.cells[2], "stdout").strip()
    assert f"480 lines left out (all of them: %oscar_logs {job})" in streams(cell, "stderr")
    assert "✔ Succeeded" in status_text(cell)


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def wait_for_text(cell, text: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(text in getattr(o, "text", "") for o in list(cell.outputs)):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared")


def test_ctrl_c_and_scancel_end_as_cancelled_with_one_line(local_oscar, monkeypatch):
    sleeper = (
        "\nimport sys, time\nprint('{0} started', flush=True)\n"
        "print('{0} err', file=sys.stderr, flush=True)\ntime.sleep(120)\n"
    )
    nb = notebook(
        CONNECT,
        "%%oscar_offload --node local-slurm --time 00:05:00" + sleeper.format("A"),
        "%%oscar_offload --node local-slurm --time 00:05:00" + sleeper.format("B"),
        "print('after')",
    )
    client = client_for(nb, local_oscar, monkeypatch)
    failures: list[BaseException] = []

    def act() -> None:
        try:
            before = squeue_ids()
            wait_for_text(nb.cells[1], "A started")
            os.kill(client.km.provisioner.process.pid, signal.SIGINT)
            wait_for_text(nb.cells[2], "B started")
            for job_id in squeue_ids() - before:
                subprocess.run(["scancel", job_id], check=False)
        except BaseException as err:  # reported by the test below
            failures.append(err)

    threading.Thread(target=act, daemon=True).start()
    nb = run(client, "cell-experience-cancel")
    assert not failures, failures
    interrupted, scancelled = nb.cells[1], nb.cells[2]

    assert streams(interrupted, "stdout") == "A started\n"
    assert streams(interrupted, "stderr") == "A err\n"
    assert "■ Cancelled from this kernel" in status_text(interrupted)
    [error] = errors(interrupted)
    assert len(error.traceback) == 1 and error.traceback[0].startswith("KeyboardInterrupt: job ")
    assert not any(text in everything(interrupted) for text in RAW_LOG)

    assert streams(scancelled, "stdout") == "B started\n"
    assert "■ Cancelled by Slurm (scancel on the cluster)" in status_text(scancelled)
    [error] = errors(scancelled)
    assert len(error.traceback) == 1 and error.traceback[0].startswith("JobCancelled: job ")
    assert not any(text in everything(scancelled) for text in RAW_LOG)
    assert re.search(r"Traceback|File \"", everything(scancelled)) is None


def test_a_no_wait_cell_leaves_its_outcome_in_the_saved_notebook(local_oscar, monkeypatch):
    # The live view is widget state, which a saved notebook cannot show without its kernel:
    # when the job ends, the cell's output becomes the notebook's own (status, text, figure,
    # error), as nbviewer or GitHub would show it.
    nb = notebook(
        CONNECT,
        OFFLOAD + " --no-wait -o ok\nimport matplotlib.pyplot as plt\nprint('hello', flush=True)"
        "\nplt.plot([1, 2, 3])\nplt.show()\nprint('bye')",
        OFFLOAD + " --no-wait -o bad\nprint('before')\nraise ValueError('no good')",
        "import time\nok.wait(120)\nbad.wait(120)\ntime.sleep(2)",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "no-wait-saved")
    for cell, expected, status in (
        (nb.cells[1], ["hello", "bye"], "✔ Succeeded"),
        (nb.cells[2], ["before", "ValueError: no good"], "✖ Failed"),
    ):
        shown = [o for o in cell.outputs if o.output_type == "display_data"]
        assert shown, everything(cell)
        final = shown[-1].data
        assert "application/vnd.jupyter.widget-view+json" not in final, final.keys()
        text = final["text/plain"]
        assert text.startswith(status), text
        assert all(piece in text for piece in expected), text
        assert not any(marker in text for marker in RAW_LOG)
    assert '<img src="data:image/png;base64,' in shown_html(nb.cells[1])
    assert "Cell In[" in "".join(o.data["text/plain"] for o in nb.cells[2].outputs if "data" in o)


def shown_html(cell) -> str:
    return "".join(o.data.get("text/html", "") for o in cell.outputs if "data" in o)


def test_a_cell_that_fills_the_containers_tmp_is_told_where_to_write(local_oscar, monkeypatch):
    # /tmp in the container is the session directory, capped at 64 MiB (B11)
    nb = notebook(
        CONNECT,
        OFFLOAD + "\nwith open('/tmp/big.bin', 'wb') as f:\n"
        "    for _ in range(100):\n        f.write(b'0' * 2**20)\n",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "cell-experience-full-tmp")
    rendered = "\n".join(errors(nb.cells[1])[0].traceback)
    assert "No space left on device" in rendered
    advice = rendered.splitlines()[-1]
    assert advice.startswith("Hint: the job's disk is full") and "--mount" in advice
