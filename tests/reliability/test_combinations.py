"""The combinations table: every pair of cell features, together in one cell, in a real kernel
(nbclient) against the local OSCAR on the real Slurm, and all of them at once.

A feature that works alone must still work beside every other: `--env` beside `--out`, figures
and `display()` (a review found `--env` switching all three off), `--secret` beside
`--no-wait`, and so on. Each feature is a piece of the cell, its flags, and what the notebook
must show afterwards; a pair's cell is both pieces with both flags."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest

from ..e2e.test_cell_experience import CONNECT, OFFLOAD, client_for, errors, everything, run
from ..e2e.test_cell_experience import notebook as make_notebook
from .table import record

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
TABLE = "features combined in one cell"
SECRET = "s3cret-0f-the-combinations"


@dataclass(frozen=True)
class Feature:
    name: str
    flags: str  # on the %%oscar_offload line
    code: str  # its part of the cell
    prints: str = ""  # a line the cell's output must hold
    out: bool = False  # brings oj_out back (checked in the report cell)
    rich: str = ""  # a MIME type the cell's outputs must hold
    downloads: bool = False  # writes a file that must come back (checked in the report cell)


FEATURES = [
    Feature(
        "--env", "--env OJ_ENV=env-value", "print('env:' + os.environ['OJ_ENV'])", "env:env-value"
    ),
    Feature(
        "--secret",
        "--secret OJ_SECRET",
        "print('secret:' + ('ok' if os.environ.get('OJ_SECRET') == SECRET else 'missing'))",
        "secret:ok",
    ),
    Feature("--in", "--in oj_in", "print('in:', sum(oj_in))", "in: 6"),
    Feature("--out", "--out oj_out", "oj_out = {'answer': 42}", out=True),
    Feature(
        "--mount",
        "--mount {data}:/oj-data:ro",
        "print('mount:' + open('/oj-data/data.txt').read().strip())",
        "mount:mounted",
    ),
    # pre-exec runs on the node before the container (whose environment --containall cleans):
    # what it prints is in the job's raw log.
    Feature("--pre-exec", "--pre-exec 'echo pre-exec-ran'", "", "pre-exec-ran"),
    Feature(
        "figure",
        "",
        "import matplotlib\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
        rich="image/png",
    ),
    Feature(
        "display()",
        "",
        "class Shown:\n    def _repr_html_(self):\n        return '<b>shown</b>'\ndisplay(Shown())",
        rich="text/html",
    ),
    # Through the user's bucket on the cluster's object storage (the local OSCAR's S3 server).
    Feature(
        "--upload",
        "--upload {data}/data.txt:/tmp/oj-up.txt",
        "print('upload:' + open('/tmp/oj-up.txt').read().strip())",
        "upload:mounted",
    ),
    Feature(
        "--download",
        "--download /tmp/oj-down.txt:{data}/down-{index}.txt",
        "open('/tmp/oj-down.txt', 'w').write('downloaded')",
        downloads=True,
    ),
    Feature("--no-wait", "--no-wait", ""),
]
PAIRS = [*itertools.combinations(FEATURES, 2), tuple(FEATURES)]


def cell_of(features: tuple[Feature, ...], index: int, data: str) -> str:
    flags = " ".join(f.flags for f in features if f.flags)
    flags = flags.replace("{data}", data).replace("{index}", str(index))
    code = "\n".join(["import os", f"SECRET = {SECRET!r}"] + [f.code for f in features if f.code])
    return f"{OFFLOAD} -o job_{index} {flags}\n{code}\nprint('end of cell')"


def report_cell(index: int, features: tuple[Feature, ...], data: str) -> str:
    """What the job gave, read from its handle, as one JSON line the test reads."""
    job = f"job_{index}"
    no_wait = any(f.name == "--no-wait" for f in features)
    values = (
        f"{job}.result(240) or {{}}"
        if no_wait
        else "{'oj_out': oj_out} if 'oj_out' in dir() else {}"
    )
    lines = [
        "import json, os",
        f"values = {values}",
        f"down = {data!r} + '/down-{index}.txt'",
        "downloaded = open(down).read() if os.path.exists(down) else None",
        f"texts = [line.text for line in {job}.lines() if not line.bundle]",
        f"mimes = sorted({{m for line in {job}.lines() if line.bundle "
        "for m in line.bundle['data']})",
        f"print(json.dumps({{'values': values, 'texts': texts, 'mimes': mimes, "
        f"'status': {job}.status(), 'pre_exec': 'pre-exec-ran' in {job}.raw_log, "
        "'downloaded': downloaded}))",
    ]
    if any(f.out for f in features) and not no_wait:
        lines.append("del oj_out")
    return "\n".join(lines)


def test_every_pair_of_features_works_in_one_cell(local_oscar_0_6_2, monkeypatch, tmp_path):
    # On interLink 0.6.2, where --secret arrives (on 0.6.1, what sites run, a --secret cell is
    # refused before sending, B4: tests/e2e/test_releases_e2e.py).
    local_oscar = local_oscar_0_6_2
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.txt").write_text("mounted\n")
    data.chmod(0o755)
    setup = (
        f"{CONNECT}\nimport os\nos.environ['OJ_SECRET'] = {SECRET!r}\noj_in = [1, 2, 3]\n"
        "%config OscarMagics.follow_kubernetes = False"
    )
    cells = [setup]
    for index, features in enumerate(PAIRS):
        cells += [cell_of(features, index, str(data)), report_cell(index, features, str(data))]
    nb = run(client_for(make_notebook(*cells), local_oscar, monkeypatch), "combinations")
    failures = []
    for index, features in enumerate(PAIRS):
        name = " + ".join(f.name for f in features) if len(features) < len(FEATURES) else "all"
        offloaded, report = nb.cells[1 + 2 * index], nb.cells[2 + 2 * index]
        problems = check(features, offloaded, report)
        record(TABLE, name, not problems)
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


def check(features: tuple[Feature, ...], offloaded, report) -> list[str]:
    problems = []
    for cell in (offloaded, report):
        if errors(cell):
            problems.append(f"error: {everything(cell)[-300:]}")
    if SECRET in everything(offloaded) or SECRET in everything(report):
        problems.append("the secret's value shows in the notebook")
    if problems:
        return problems
    printed = "".join(o.text for o in report.outputs if o.output_type == "stream")
    reports = [line for line in printed.splitlines() if line.startswith("{")]
    if not reports:
        return [f"the report cell printed no report: {printed[-300:]!r}"]
    result = json.loads(reports[-1])
    no_wait = any(f.name == "--no-wait" for f in features)
    texts = "\n".join(result["texts"])
    shown_mimes = {m for o in offloaded.outputs if o.output_type == "display_data" for m in o.data}
    if result["status"] != "Succeeded":
        problems.append(f"the job ended {result['status']}")
    if "end of cell" not in texts:
        problems.append("the cell did not run to its end")
    for feature in features:
        if feature.name == "--pre-exec":
            if not result["pre_exec"]:
                problems.append("--pre-exec: its command did not run")
        elif feature.prints and feature.prints not in texts:
            problems.append(f"{feature.name}: no {feature.prints!r}")
        if feature.rich and feature.rich not in result["mimes"]:
            problems.append(f"{feature.name}: no {feature.rich} output")
        if feature.rich and not no_wait and feature.rich not in shown_mimes:
            problems.append(f"{feature.name}: {feature.rich} not shown in the cell")
        if feature.downloads and result["downloaded"] != "downloaded":
            problems.append(f"{feature.name}: the file came back as {result['downloaded']!r}")
        if feature.out and result["values"].get("oj_out") != {"answer": 42}:
            problems.append(f"{feature.name}: oj_out came back as {result['values']}")
    return problems
