"""Real kernels through nbclient: the quickstart tutorial and --no-wait output routing."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def execute(nb, local_oscar, monkeypatch, name: str, cwd: Path = ROOT / "notebooks"):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(nb, ARTIFACTS / f"{name}.ipynb")
    return nb


def texts(cell, kind: str = "all") -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream" and kind in ("all", out.name):
            parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result") and kind in ("all", "display"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error" and kind in ("all", "error"):
            parts.append(out.ename + ": " + out.evalue + "\n" + "\n".join(out.traceback))
    return "".join(parts)


def widget_texts(nb, cell) -> str:
    """What a --no-wait cell shows of its job: the notebook's own output its live view became
    when the job ended, and every string value of the widgets it still shows, as last synced."""
    own = [
        out.data["text/plain"]
        for out in cell.outputs
        if out.output_type == "display_data"
        and "text/plain" in out.data
        and "application/vnd.jupyter.widget-view+json" not in out.data
    ]
    state = (
        nb.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
    pending = [
        out.data["application/vnd.jupyter.widget-view+json"]["model_id"]
        for out in cell.outputs
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    ]
    seen, texts = set(), []
    while pending:
        model_id = pending.pop()
        if model_id in seen or model_id not in state:
            continue
        seen.add(model_id)
        for value in state[model_id]["state"].values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item.startswith("IPY_MODEL_"):
                    pending.append(item[len("IPY_MODEL_") :])
                elif isinstance(item, str):
                    texts.append(item)
    return "\n".join(own + texts)


def test_quickstart_notebook_runs_against_the_local_oscar(local_oscar, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "01-quickstart.ipynb", as_version=4)
    execute(nb, local_oscar, monkeypatch, "01-quickstart.executed")
    code = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in code if c.source}
    nodes = texts(by_source["%oscar_nodes"])
    assert "local-slurm" in nodes
    first = next(c for c in code if "step {step}" in c.source)
    streamed = texts(first, "stdout")
    assert [ln for ln in streamed.splitlines() if ln.startswith("step")] == [
        f"step {i}: loss={1 / (i + 1):.3f}" for i in range(5)
    ]
    assert "Succeeded" in texts(first, "display")
    failing = next(c for c in code if "loss is NaN" in c.source)
    assert "ValueError: loss is NaN" in texts(failing, "error")
    no_wait = next(c for c in code if "--no-wait" in c.source)
    live = widget_texts(nb, no_wait)
    assert "background step 3" in live and "Succeeded" in live
    meanwhile = next(c for c in code if "meanwhile" in c.source)
    assert "background step" not in texts(meanwhile)


def test_no_wait_output_stays_in_its_own_cell(local_oscar, monkeypatch):
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext oscar_jupyter\n%oscar_connect local"),
            new_code_cell(
                "%%oscar_offload --node local-slurm --time 00:05:00 --no-wait -o job\n"
                "import time\n"
                "for i in range(5):\n"
                "    print('from the cluster', i, flush=True)\n"
                "    time.sleep(1)\n"
            ),
            new_code_cell(
                "import time\nfor i in range(8):\n    print('local', i)\n    time.sleep(1)"
            ),
            new_code_cell("print(job.wait(), job.status())"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    execute(nb, local_oscar, monkeypatch, "no-wait-routing")
    job_cell, local_cell, wait_cell = nb.cells[1], nb.cells[2], nb.cells[3]
    live = widget_texts(nb, job_cell)
    assert all(f"from the cluster {i}" in live for i in range(5))
    assert "Succeeded" in live
    assert "from the cluster" not in texts(local_cell)
    assert "from the cluster" not in texts(wait_cell)
    assert texts(wait_cell).strip() == "0 Succeeded"


def test_results_and_figures_notebook_sends_trains_plots_and_returns(local_oscar, monkeypatch):
    import base64

    from ..png import decode_png

    nb = nbformat.read(ROOT / "notebooks" / "03-results-and-figures.ipynb", as_version=4)
    execute(nb, local_oscar, monkeypatch, "03-results-and-figures.executed")
    code = [c for c in nb.cells if c.cell_type == "code"]
    train = next(c for c in code if "--out w,b,losses" in c.source)
    lines = texts(train, "stdout").splitlines()
    # The \r bar ends as one line, in its last state; the fit is printed after the figure.
    bars = [line for line in lines if line.startswith("training [")]
    assert bars == ["training [" + "#" * 30 + "] epoch 300/300 loss 0.0075"], lines
    figures = [o for o in train.outputs if "image/png" in o.get("data", {})]
    (figure,) = figures
    width, height = decode_png(base64.b64decode(figure.data["image/png"]))
    assert width > 300 and height > 150
    back = texts(next(c for c in code if c.source.startswith("print(f'w = ")))
    assert back.startswith("w = 3.002, b = -0.990") and "300 losses" in back
    table = next(c for c in code if "Residuals" in c.source)
    (html,) = [
        o.data["text/html"]
        for o in table.outputs
        if "text/html" in o.get("data", {}) and "<table>" in o.data["text/html"]
    ]
    assert html.count("<tr>") == 6
    api = next(c for c in code if "outputs=['mean']" in c.source)
    assert texts(api).strip().startswith("{'mean': 1.95")  # sum(ys) / len(ys)
    assert not any("@@OJ" in texts(c) or "supervisor -" in texts(c) for c in code)


def test_storage_notebook_sends_a_data_set_and_brings_back_a_model_and_a_figure(
    local_oscar, monkeypatch, tmp_path
):
    import base64

    from ..png import decode_png

    nb = nbformat.read(ROOT / "notebooks" / "04-data-through-storage.ipynb", as_version=4)
    execute(nb, local_oscar, monkeypatch, "04-data-through-storage.executed", cwd=tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "16 MiB data set" in texts(code[1])
    fit = next(c for c in code if "--download /tmp/fit.png:fit.png" in c.source)
    assert "rows: 233016 coefficients: [1. 2. 3. 4. 5. 6. 7. 8.]" in texts(fit, "stdout")
    shown = code[-1]
    back = "coefficients back in the notebook: [1. 2. 3. 4. 5. 6. 7. 8.]\n"
    assert texts(shown, "stdout") == back
    (figure,) = [o for o in shown.outputs if "image/png" in o.get("data", {})]
    width, height = decode_png(base64.b64decode(figure.data["image/png"]))
    assert width > 300 and height > 150
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any("@@OJ" in texts(c) or "X-Amz-Signature" in texts(c) for c in code)


def test_sessions_notebook_loads_once_uses_three_times_and_stops(local_oscar, monkeypatch):
    import base64

    from ..png import decode_png

    nb = nbformat.read(ROOT / "notebooks" / "05-persistent-sessions.ipynb", as_version=4)
    execute(nb, local_oscar, monkeypatch, "05-persistent-sessions.executed")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "Session s1 ready: idle on local-slurm" in texts(code[1])
    assert texts(code[2], "stdout") == "loaded 200000 rows\n"
    assert texts(code[3], "stdout") == "means: [0. 1. 2. 3.]\n"
    assert texts(code[4], "stdout") == "spread computed on 200000 rows\n"
    (figure,) = [o for o in code[5].outputs if "image/png" in o.get("data", {})]
    width, height = decode_png(base64.b64decode(figure.data["image/png"]))
    assert width > 300 and height > 100
    assert texts(code[6], "stdout") == "spreads back in the notebook: [1. 1. 1. 1.]\n"
    assert texts(code[7], "stdout").startswith("s1: idle on local-slurm")
    assert "Session s1 stopped" in texts(code[8], "stdout")
    assert not any("@@OJ" in texts(c) or "X-Amz-Signature" in texts(c) for c in code)


def _image_has_torch() -> bool:
    """Whether the local cluster's image (the host's /usr) has PyTorch."""
    import subprocess

    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
    return probe.returncode == 0


def test_ranks_notebook_sums_with_mpi4py_trains_where_torch_is_and_shows_a_failing_rank(
    local_oscar, monkeypatch
):
    import re

    nb = nbformat.read(ROOT / "notebooks" / "06-mpi-ranks.ipynb", as_version=4)
    execute(nb, local_oscar, monkeypatch, "06-mpi-ranks.executed")
    code = [c for c in nb.cells if c.cell_type == "code"]
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", texts(c, "stdout")) for c in code]
    # four ranks, each labelled, each with its host and its part, every one with the same total
    for rank in range(4):
        assert re.search(
            rf"^\[r{rank}\] rank {rank} of 4 on \S+: my part \d+, total 500000500000$",
            plain[1],
            re.MULTILINE,
        ), plain[1]
    assert re.search(r"^rank 0 of 4 on \S+ \(local 0 of 4\)$", texts(code[2], "stdout"), re.M)
    assert "rank 1 of 4" not in plain[2]  # rank 0's view
    assert texts(code[3], "stdout") == "squares of the ranks, from rank 0: [0, 1, 4, 9]\n"
    if _image_has_torch():
        weights = re.findall(
            r"^\[r\d\] rank \d of 4 on \S+: .* weights after the step (.*)$", plain[4], re.MULTILINE
        )
        assert len(weights) == 4 and len(set(weights)) == 1  # the same model on every rank
    else:
        assert "PyTorch is not installed in this image" in plain[4]
    failed = texts(code[5], "error")
    assert "RuntimeError: rank 2 found no data to read" in failed
    assert (
        "rank 2 of 4 failed (exit 1); ranks 0, 1, 3 still ran 10 s after rank 2 failed: stopped"
        in failed
    )
    assert "not printed" not in texts(code[5], "stdout")
    assert not any("@@OJ" in texts(c) or "mpiexec was not found" in texts(c) for c in code)
