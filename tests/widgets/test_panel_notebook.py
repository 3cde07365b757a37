"""The panel tutorial in a real kernel through nbclient, against the local OSCAR."""

from __future__ import annotations

import html
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def cell_with(nb, text: str):
    return next(c for c in nb.cells if c.cell_type == "code" and text in c.source)


def stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def widget_states(nb) -> dict[str, dict]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {model_id: model["state"] for model_id, model in state.items()}


def html_values(states: dict[str, dict]) -> str:
    return "\n".join(
        html.unescape(s.get("value", ""))
        for s in states.values()
        if isinstance(s.get("value"), str)
    )


def test_panel_tutorial_renders_and_a_bare_offload_uses_the_panel(local_oscar, monkeypatch):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    nb = nbformat.read(ROOT / "notebooks" / "02-panel.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(nb, ARTIFACTS / "02-panel.executed.ipynb")

    panel_cell = cell_with(nb, "oscar_jupyter.Panel()")
    view = next(o for o in panel_cell.outputs if WIDGET_VIEW in o.get("data", {}))
    assert WIDGET_VIEW in view.data
    states = widget_states(nb)
    assert view.data[WIDGET_VIEW]["model_id"] in states
    shown = html_values(states)
    # The node picker lists the local virtual node with its free resources.
    options = [o for s in states.values() for o in s.get("_options_labels", [])]
    assert any(o.startswith("local-slurm") and "CPUs" in o for o in options)
    # The previewed line and the marked mistake, as the widgets last showed them.
    assert "%%oscar_offload --node local-slurm --time 00:05:00" in shown
    assert "--time 90 minutes:" in stdout(cell_with(nb, '"90 minutes"'))

    assert "hello from the panel" in stdout(cell_with(nb, 'os.environ["GREETING"]'))
    assert stdout(cell_with(nb, "last.spec.node")).split() == [
        "local-slurm",
        "00:05:00",
        "1",
        "512M",
    ]
    # The live view of the --no-wait job ended with its status and its output.
    assert "0 Succeeded" in stdout(cell_with(nb, "job.wait()"))
    assert "background step 3" in shown and "oj-status-Succeeded" in shown
    assert "00:02:00" in shown  # the cell's own --time won over the panel's
