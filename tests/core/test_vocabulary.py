"""One vocabulary for every job view: the Python views (timefmt, job_status) and the sidebar
(labextension/src/format.ts, as built into labextension/lib) give the same text for the same
cases (tests/golden/vocabulary.json)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from oscar_jupyter.job_status import status_text
from oscar_jupyter.timefmt import duration, iso_utc, relative, short_id
from oscar_jupyter.usage import core_hours_text, total_line

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests" / "golden" / "vocabulary.json").read_text(encoding="utf-8"))
NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)
FORMAT_JS = ROOT / "labextension" / "lib" / "format.js"


def python_answers() -> dict[str, list[str]]:
    return {
        "duration": [duration(seconds) for seconds, _ in CASES["duration"]],
        "relative": [relative(NOW - timedelta(seconds=ago), NOW) for ago, _ in CASES["relative"]],
        "short_id": [short_id(job) for job, _ in CASES["short_id"]],
        "status_text": [status_text(s, code, by) for s, code, by, _ in CASES["status_text"]],
        "core_hours": [core_hours_text(hours) for hours, _ in CASES["core_hours"]],
        "total_line": [total_line(hours, whose) for hours, whose, _ in CASES["total_line"]],
    }


def sidebar_answers() -> dict[str, list[str]]:
    """The same cases through the sidebar's own module, run by Node."""
    node = shutil.which("node")
    assert node, "Node.js builds and runs the sidebar: scripts/setup.sh installs it"
    assert FORMAT_JS.exists(), "the sidebar is built by scripts/setup.sh (pip install -e .)"
    cases = {
        **CASES,
        "relative": [
            [iso_utc(NOW - timedelta(seconds=ago)), text] for ago, text in CASES["relative"]
        ],
    }
    script = f"""
const f = await import({json.dumps(FORMAT_JS.as_uri())});
const cases = {json.dumps(cases)};
const now = new Date({json.dumps(iso_utc(NOW))});
console.log(JSON.stringify({{
  duration: cases.duration.map(([s]) => f.formatSeconds(s)),
  relative: cases.relative.map(([when]) => f.formatRelative(when, now)),
  short_id: cases.short_id.map(([job]) => f.shortId(job)),
  status_text: cases.status_text.map(([s, code, by]) => f.statusText(s, code, by)),
  core_hours: cases.core_hours.map(([hours]) => f.coreHoursText(hours)),
  total_line: cases.total_line.map(([hours, whose]) => f.totalLine(hours, whose)),
}}));
"""
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("answers", [python_answers, sidebar_answers], ids=["python", "sidebar"])
def test_every_view_says_it_the_same_way(answers):
    got = answers()
    for kind in ("duration", "relative", "short_id", "status_text", "core_hours", "total_line"):
        expected = [case[-1] for case in CASES[kind]]
        assert got[kind] == expected, kind
