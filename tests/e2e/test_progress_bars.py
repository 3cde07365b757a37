"""Lines not ended yet in a real kernel (nbclient) against the local OSCAR: a `\\r` progress bar
is shown in place while it runs and ends as one line in the cell's saved output."""

from __future__ import annotations

import re

import pytest
from nbclient import NotebookClient

from .test_cell_experience import CONNECT, OFFLOAD, RAW_LOG, client_for, notebook, run, streams

pytestmark = pytest.mark.e2e

# Long enough to be seen mid-way through the plugin's follow, which brings the log in 4 s steps
# (B6: GetLogs.go re-reads run-<container>.out every 4 s), not only by a poll's.
PROGRESS = (
    OFFLOAD
    + """
import sys, time
print("start")
for i in range(90):
    print(f"\\r{i + 1}/90", end="", flush=True)
    time.sleep(0.1)
print()
sys.stderr.write("Name? "); sys.stderr.flush()
time.sleep(9)
sys.stderr.write("Ada\\n")
print("end")
"""
)


def test_progress_bar_shows_in_place_and_ends_as_one_line(local_oscar, monkeypatch):
    client: NotebookClient = client_for(notebook(CONNECT, PROGRESS), local_oscar, monkeypatch)
    shown: list[str] = []  # every text/plain the cell's displays showed while it ran
    process_message = client.process_message

    def recording(msg: dict, cell, cell_index: int):
        if cell_index == 1 and msg["msg_type"] in ("display_data", "update_display_data"):
            shown.append(msg["content"].get("data", {}).get("text/plain", ""))
        return process_message(msg, cell, cell_index)

    client.process_message = recording  # type: ignore[method-assign]
    nb = run(client, "progress-bars")
    cell = nb.cells[1]
    assert streams(cell, "stdout") == "start\n90/90\nend\n"
    assert streams(cell, "stderr") == "Name? Ada\n"
    everything = "".join(o.get("text", "") for o in cell.outputs)
    assert "\r" not in everything and not any(text in everything for text in RAW_LOG)
    # while it ran, the bar and the prompt were shown before their newline
    assert any(re.fullmatch(r"\d+/90", text) for text in shown), shown
    assert "Name? " in shown, shown
    # the displays of lines not ended yet are empty once the lines ended
    partial = [o for o in cell.outputs if o.output_type == "display_data"][1:]
    assert partial and all(o.data.get("text/plain") == "" for o in partial)


SESSION_BODY = PROGRESS.removeprefix(OFFLOAD)


@pytest.mark.slurm
def test_a_session_cells_progress_bar_shows_in_place_too(local_oscar, monkeypatch):
    """The same bar and prompt in a persistent session's cell (issue 20): live as in any cell."""
    nb = notebook(
        CONNECT,
        "%oscar_session start bars --node local-slurm --time 00:10:00 --mem 1G",
        "%%oscar_offload --session bars" + SESSION_BODY,
        "%oscar_session stop bars",
    )
    client: NotebookClient = client_for(nb, local_oscar, monkeypatch)
    shown: list[str] = []
    process_message = client.process_message

    def recording(msg: dict, cell, cell_index: int):
        if cell_index == 2 and msg["msg_type"] in ("display_data", "update_display_data"):
            shown.append(msg["content"].get("data", {}).get("text/plain", ""))
        return process_message(msg, cell, cell_index)

    client.process_message = recording  # type: ignore[method-assign]
    nb = run(client, "session-progress-bars")
    cell = nb.cells[2]
    assert streams(cell, "stdout") == "start\n90/90\nend\n"
    assert streams(cell, "stderr") == "Name? Ada\n"
    everything = "".join(o.get("text", "") for o in cell.outputs)
    assert "\r" not in everything and not any(text in everything for text in RAW_LOG)
    assert any(re.fullmatch(r"\d+/90", text) for text in shown), shown
    assert "Name? " in shown, shown
    partial = [o for o in cell.outputs if o.output_type == "display_data"]
    assert partial and all(o.data.get("text/plain") == "" for o in partial)
    assert "Session bars stopped" in streams(nb.cells[3], "stdout")
