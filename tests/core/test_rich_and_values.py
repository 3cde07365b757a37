"""Figures, display() and --in/--out values through the real runner script and the image's
Python (/usr/bin/python3, the local cluster's image root, with matplotlib from apt)."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import types

import pytest

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser
from oscar_jupyter.spec import OffloadSpec, SpecError
from oscar_jupyter.values import ResultError, decode_result, is_intact, pack_inputs

from ..png import decode_png

IMAGE_PATH = {"PATH": "/usr/bin:/bin"}  # python3 = the image's, not the test's interpreter
IMAGE_PYTHON = subprocess.run(
    ["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
    capture_output=True,
    text=True,
).stdout.strip()


def run_cell(run_runner, code: str, inputs: dict | None = None, outputs: list[str] = (), env=None):
    body = OffloadSpec(env=env or {}).job_body(code, pack_inputs(inputs or {}), list(outputs))
    return run_runner(body, env=IMAGE_PATH, timeout=120)


def shown(result) -> list[tuple[str, object]]:
    """The cell's outputs in order: ("text", line) or (mime types, bundle data)."""
    return [
        (tuple(sorted(line.bundle["data"])), line.bundle) if line.bundle else ("text", line.text)
        for line in result.parser.lines
    ]


def test_display_shows_the_richest_forms_in_order_with_the_text(run_runner):
    code = (
        "class Table:\n"
        "    def _repr_html_(self):\n"
        "        return '<table><tr><td>1</td></tr></table>'\n"
        "    def _repr_markdown_(self):\n"
        "        return '**one**'\n"
        "    def __repr__(self):\n"
        "        return 'Table(1)'\n"
        "print('before')\n"
        "display(Table())\n"
        "print('after', end='')\n"
        "display(Table())\n"
    )
    result = run_cell(run_runner, code)
    assert result.parser.exit_code == 0
    outputs = shown(result)
    assert [kind for kind, _ in outputs] == [
        "text",
        ("text/html", "text/markdown", "text/plain"),
        "text",
        ("text/html", "text/markdown", "text/plain"),
    ]
    assert outputs[0][1] == "before" and outputs[2][1] == "after"
    bundle = outputs[1][1]
    assert bundle["data"]["text/html"] == "<table><tr><td>1</td></tr></table>"
    assert bundle["data"]["text/plain"] == "Table(1)"


def test_plt_show_and_figures_left_open_arrive_as_png_images(run_runner):
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [3, 1, 2])\n"
        "plt.show()\n"
        "print('between')\n"
        "plt.figure(figsize=(2, 1))\n"
        "plt.plot([0, 1])\n"
    )
    result = run_cell(run_runner, code)
    assert result.parser.exit_code == 0, result.raw[-2000:]
    outputs = shown(result)
    assert [kind for kind, _ in outputs] == [
        ("image/png", "text/plain"),
        "text",
        ("image/png", "text/plain"),
    ]
    first = decode_png(base64.b64decode(outputs[0][1]["data"]["image/png"]))
    second = decode_png(base64.b64decode(outputs[2][1]["data"]["image/png"]))
    assert first[0] > 300 and second[0] < first[0]  # two figures, of their own sizes
    assert outputs[0][1]["data"]["text/plain"].startswith("<Figure size")


def test_an_output_over_the_bound_is_left_out_with_a_note(run_runner):
    code = (
        "class Huge:\n"
        "    def _repr_png_(self):\n"
        f"        return b'x' * {runner.MAX_DISPLAY_BYTES}\n"
        "display(Huge())\n"
    )
    result = run_cell(run_runner, code)
    (line,) = result.parser.lines
    assert set(line.bundle["data"]) == {"text/plain"}
    assert "image/png output of 1.3 MB was left out" in line.bundle["notes"][0]
    assert "--mount" in line.bundle["notes"][0]


def test_text_that_the_cell_prints_never_passes_for_a_rich_output(run_runner):
    fake = base64.b64encode(json.dumps({"data": {"text/html": "<b>x</b>"}}).encode()).decode()
    code = (
        "import os\n"
        f"print('\\x1eOJ0123456789abcdef|d|{fake}')\n"
        f"print('@@OJ|d|1|{fake}|@@')\n"
        "print('nonce' in str(os.environ.get('_OJ_RICH')))\n"
    )
    result = run_cell(run_runner, code)
    assert all(line.bundle is None for line in result.parser.lines)
    assert result.text("stdout")[-1] == "False"  # the nonce is not in the cell's environment


def test_values_go_in_and_come_back(run_runner):
    data = {"xs": [1.0, 2.5, -3], "label": "fit", "nested": {"k": (1, 2)}}
    code = "total = sum(data['xs'])\nlabels = [data['label']] * 2\n"
    result = run_cell(run_runner, code, {"data": data}, ["total", "labels"])
    assert result.parser.exit_code == 0, result.raw[-2000:]
    assert decode_result(result.parser.result, ["total", "labels"]) == {
        "total": 0.5,
        "labels": ["fit", "fit"],
    }


def test_a_corrupted_or_missing_result_is_an_error_never_a_value(run_runner):
    result = run_cell(run_runner, "x = 41 + 1\n", outputs=["x"])
    record = json.loads(base64.b64decode(result.parser.result))
    assert decode_result(result.parser.result, ["x"]) == {"x": 42}
    pickled = bytearray(base64.b64decode(record["pickle"]))
    pickled[-3] ^= 1  # one bit flipped in transit
    altered = dict(record, pickle=base64.b64encode(bytes(pickled)).decode())
    with pytest.raises(ResultError, match="arrived corrupted"):
        decode_result(base64.b64encode(json.dumps(altered).encode()).decode(), ["x"])
    cut = dict(record, pickle=record["pickle"][:8])
    with pytest.raises(ResultError, match="arrived corrupted"):
        decode_result(base64.b64encode(json.dumps(cut).encode()).decode(), ["x"])
    with pytest.raises(ResultError, match="arrived damaged"):
        decode_result(result.parser.result[:-10], ["x"])
    with pytest.raises(ResultError, match="without sending back x"):
        decode_result(None, ["x"])


def test_a_result_this_python_cannot_load_names_both_versions(run_runner):
    code = (
        "import sys, types\n"
        "mod = types.ModuleType('only_on_the_cluster')\n"
        "class Model:\n"
        "    pass\n"
        "Model.__module__ = 'only_on_the_cluster'\n"
        "mod.Model = Model\n"
        "sys.modules['only_on_the_cluster'] = mod\n"
        "m = Model()\n"
    )
    result = run_cell(run_runner, code, outputs=["m"])
    with pytest.raises(ResultError) as error:
        decode_result(result.parser.result, ["m"])
    message = str(error.value)
    assert f"Python {IMAGE_PYTHON} on the cluster" in message and "only_on_the_cluster" in message
    assert "install only_on_the_cluster in the notebook's environment" in message


def test_out_errors_are_the_cells_one_line_error(run_runner):
    from oscar_jupyter import errors

    missing = run_cell(run_runner, "x = 1\n", outputs=["x", "y"])
    assert missing.parser.exit_code == 1 and missing.parser.result is None
    tail = missing.text("stderr")[-1]
    assert tail == "OffloadValuesError: --out y: the cell did not define y"
    assert missing.text("stderr")[-2] == runner.TRACEBACK_MARKER
    local = run_cell(run_runner, "def f():\n    return 1\n", outputs=["f"])
    assert "function f is defined in the cell" in local.text("stderr")[-1]
    assert errors.LOCAL_FILENAME  # the magic shows it as CellError (tests/e2e)


def test_inputs_that_cannot_travel_are_refused_before_sending():
    import threading

    with pytest.raises(SpecError, match="--in lock: a lock cannot be pickled"):
        pack_inputs({"lock": threading.Lock()})
    notebook_function = types.FunctionType((lambda: 1).__code__, {"__name__": "__main__"}, "helper")
    notebook_function.__module__ = "__main__"
    notebook_function.__qualname__ = "helper"
    with pytest.raises(
        SpecError, match="--in f: it holds function helper, defined in the notebook"
    ):
        pack_inputs({"f": notebook_function})
    with pytest.raises(SpecError, match="give variable names"):
        pack_inputs({"not a name": 1})
    big = {"blob": os.urandom(runner.MAX_PROGRAM_BYTES)}  # what compression cannot shrink
    with pytest.raises(SpecError) as error:
        OffloadSpec().job_body("print(len(blob))", pack_inputs(big))
    assert error.value.flag == "--in" and "--mount" in str(error.value)


def test_an_input_the_cluster_cannot_load_says_what_it_lacks(run_runner):
    result = run_cell(run_runner, "print(spec)\n", {"spec": OffloadSpec(node="vega")})
    assert result.parser.exit_code == 1
    error = result.text("stderr")[-1]
    assert error.startswith("OffloadValuesError: --in: the cluster could not load")
    assert "No module named 'oscar_jupyter'" in error and "install it in the image" in error
    assert f"Python {IMAGE_PYTHON} on the cluster" in error


# --env makes the program start Python again: the nonce must reach the new interpreter too.
ENV_CELLS = {
    "out": ("import os\ny = int(os.environ['OJ_SCALE']) * 14\n", ["y"]),
    "display": (
        "import os\n"
        "class Bold:\n"
        "    def _repr_html_(self):\n"
        "        return '<b>' + os.environ['OJ_SCALE'] + '</b>'\n"
        "display(Bold())\n",
        [],
    ),
    "figures": (
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nplt.figure()\n",
        [],
    ),
}


@pytest.mark.parametrize("what", sorted(ENV_CELLS))
def test_env_keeps_out_values_display_and_figures(run_runner, what):
    code, outputs = ENV_CELLS[what]
    result = run_cell(run_runner, code, outputs=outputs, env={"OJ_SCALE": "3"})
    assert result.parser.exit_code == 0, result.raw[-2000:]
    if what == "out":
        assert decode_result(result.parser.result, ["y"]) == {"y": 42}
    elif what == "display":
        [(kinds, bundle)] = shown(result)
        assert bundle["data"]["text/html"] == "<b>3</b>"
    else:
        assert [kinds for kinds, _ in shown(result)] == [("image/png", "text/plain")] * 2


def test_display_raw_takes_mime_bundles_as_ipython_does(run_runner):
    code = (
        "display({'text/html': '<i>x</i>', 'text/plain': 'x'}, raw=True)\n"
        "display({'image/png': b'PNG', 'application/json': {'a': [1, 2]}}, raw=True,\n"
        "        metadata={'image/png': {'width': 10}})\n"
        "display('<b>', raw=True)\n"
    )
    result = run_cell(run_runner, code)
    first, second = (line.bundle for line in result.parser.lines[:2])
    assert first["data"] == {"text/html": "<i>x</i>", "text/plain": "x"}
    assert second["data"] == {
        "image/png": base64.b64encode(b"PNG").decode(),  # as Jupyter carries binary data
        "application/json": {"a": [1, 2]},
    }
    assert second["metadata"] == {"image/png": {"width": 10}}
    assert result.parser.exit_code == 1
    assert result.parser.traceback().splitlines()[-1] == (
        "TypeError: display(raw=True) takes mime bundles, dicts of mime type -> data such as "
        "{'text/html': '<b>hi</b>'}; got a str"
    )
    unfit = run_cell(run_runner, "display({'text/plain': object()}, raw=True)\n")
    assert "display(raw=True): the 'text/plain' data is a object" in unfit.parser.traceback()


@pytest.mark.parametrize("ending", ["import os; os._exit(0)", "import sys; sys.exit()"])
def test_a_cell_that_ends_its_process_itself_sends_no_values_and_is_told_so(run_runner, ending):
    result = run_cell(run_runner, f"y = 1\n{ending}\n", outputs=["y"])
    assert result.parser.exit_code == 0 and result.parser.result is None
    with pytest.raises(ResultError, match=r"the cell ended its process itself \(os\._exit\(\)"):
        decode_result(result.parser.result, ["y"], exit_code=result.parser.exit_code)
    with pytest.raises(ResultError, match="log was cut short"):  # no exit record came
        decode_result(None, ["y"])


def test_a_large_result_survives_any_poll_cut_and_a_stream_that_resends_bytes(run_runner):
    result = run_cell(run_runner, "import os\ny = os.urandom(3_000_000)\n", outputs=["y"])
    log = result.log  # the supervisor's DEBUG lines, then its final dump: the record twice
    wanted = decode_result(result.parser.result, ["y"])
    rng = random.Random(1)
    polled, streamed = LogParser(), LogParser()
    previous = 0
    for cut in [*sorted(rng.sample(range(1, len(log)), 60)), len(log)]:
        polled.feed(log[:cut])
        streamed.feed_more(log[previous:cut])
        previous = cut
    for parser in (polled, streamed):
        assert decode_result(parser.result, ["y"]) == wanted and parser.exit_code == 0
    # The local OSCAR's followed log once sent 322 characters of the DEBUG copy twice (job.out,
    # served in front, grew as the container ended). That copy is damaged: the values come from
    # the final dump's copy, and the exit is not taken before it.
    middle = log.index("|r|0|") + 1_000_000
    resent = log[:middle] + log[middle - 322 : middle] + log[middle:]
    parser = LogParser()
    for start in range(0, len(resent), 65536):
        parser.feed_more(resent[start : start + 65536])
        if parser.finished:
            assert is_intact(parser.result)
    assert decode_result(parser.result, ["y"]) == wanted and parser.exit_code == 0


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("for", "for is a Python keyword"),
        ("match", "match is a Python keyword"),
        ("display", "the job's own display() function"),
    ],
)
def test_names_that_cannot_be_the_cells_variables_are_refused_before_sending(name, says):
    from oscar_jupyter.values import check_names

    for flag in ("--in", "--out"):
        with pytest.raises(SpecError) as refused:
            check_names(flag, [name])
        assert refused.value.flag == flag and says in str(refused.value)
