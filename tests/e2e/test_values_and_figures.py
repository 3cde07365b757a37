"""Values in and out, figures and rich outputs, in a real kernel (nbclient) against the local
OSCAR: what the notebook holds after the cells ran."""

from __future__ import annotations

import base64

import pytest

from ..png import decode_png
from .test_cell_experience import CONNECT, OFFLOAD, RAW_LOG, client_for, errors, everything, run
from .test_cell_experience import notebook as make_notebook

pytestmark = pytest.mark.e2e

FIT = """\
import matplotlib.pyplot as plt
print("fitting", len(xs), "points")
n = len(xs)
mx, my = sum(xs) / n, sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
intercept = my - slope * mx
plt.plot(xs, ys, "o")
plt.show()
class Summary:
    def _repr_html_(self):
        return "<b>slope</b> %.2f" % slope
display(Summary())
print("done")
"""


def rich_or_text(cell) -> list[tuple[str, object]]:
    """The cell's outputs past its status line: ("stream", text) / ("display", data)."""
    shown = []
    for out in cell.outputs[1:]:  # [0] is the job's status line, updated in place
        if out.output_type == "stream":
            shown.append(("stream", out.text))
        elif out.output_type == "display_data" and set(out.data) - {"text/plain"}:
            shown.append(("display", dict(out.data)))
    return shown


def test_values_round_trip_and_figures_show_in_order(local_oscar, monkeypatch):
    nb = make_notebook(
        CONNECT,
        "xs = [0.0, 1.0, 2.0, 3.0]\nys = [1.0, 3.0, 5.0, 7.0]",
        f"{OFFLOAD} --in xs,ys --out slope,intercept\n{FIT}",
        "print(slope, intercept)",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "values-and-figures")
    offloaded, after = nb.cells[2], nb.cells[3]
    assert not errors(offloaded), everything(offloaded)
    shown = rich_or_text(offloaded)
    kinds = [kind for kind, _ in shown]
    assert kinds == ["stream", "display", "display", "stream"], shown
    assert shown[0][1] == "fitting 4 points\n" and shown[3][1] == "done\n"
    width, height = decode_png(base64.b64decode(shown[1][1]["image/png"]))
    assert width > 300 and height > 200
    assert shown[2][1]["text/html"] == "<b>slope</b> 2.00"
    assert after.outputs[0].text == "2.0 1.0\n"
    assert not any(marker in everything(offloaded) for marker in RAW_LOG)


def test_values_that_cannot_travel_are_refused_at_once_with_one_error(local_oscar, monkeypatch):
    nb = make_notebook(
        CONNECT,
        f"{OFFLOAD} --in nowhere\nprint(nowhere)",
        "import threading\nlock = threading.Lock()\ndef helper():\n    return 1",
        f"{OFFLOAD} --in lock\nprint(lock)",
        f"{OFFLOAD} --in helper\nprint(helper())",
        f"{OFFLOAD} --out result\nx = 1",
    )
    nb = run(client_for(nb, local_oscar, monkeypatch), "values-refused")
    missing, _, lock, helper, undefined = nb.cells[1:]
    for cell, text in (
        (missing, "--in nowhere: the notebook has no variable nowhere"),
        (lock, "--in lock: a lock cannot be pickled"),
        (helper, "--in helper: it holds function helper, defined in the notebook"),
    ):
        (error,) = errors(cell)
        assert text in error.evalue, error.evalue
        assert len(cell.outputs) == 1  # refused before sending: no status line, no job
    (error,) = errors(undefined)
    assert error.traceback == ["OffloadValuesError: --out result: the cell did not define result"]
    assert "OffloadValuesError" not in "".join(
        o.text for o in undefined.outputs if o.output_type == "stream"
    )
