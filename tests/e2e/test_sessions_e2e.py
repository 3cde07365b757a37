"""Persistent sessions (issue 20) against the local OSCAR, real Slurm and its real S3: state kept
between cells, live output, --out values, an error that leaves the session alive, Ctrl-C that
interrupts a cell and keeps its state, stop that leaves no Slurm job and no object; and the
same through the magics in a real kernel (nbclient)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from oscar_jupyter import remote_session
from oscar_jupyter.local.state import HomeLayout
from oscar_jupyter.remote_session import SessionCellError, SessionError

from .test_cell_experience import client_for, errors, everything, notebook, run, streams

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

FLAGS = {"node": "local-slurm", "time": "00:05:00", "mem": "1G"}


def slurm_jobs(job_id: str) -> list[str]:
    """squeue's line for the Slurm job, [] once it has left the queue."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == job_id]


def objects_under(session, prefix: str) -> list[str]:
    return list(session.bucket.keys(prefix))


@pytest.fixture()
def no_sessions(monkeypatch):
    monkeypatch.setattr(remote_session, "_SESSIONS", {})
    yield
    for remote in list(remote_session._SESSIONS.values()):
        remote.stop()


def slurm_id_of(local_oscar, job_name: str) -> str:
    """The Slurm job the local OSCAR submitted for an OSCAR job (its state.json)."""
    state = json.loads(HomeLayout(local_oscar.home).state_file.read_text())
    return str(state["jobs"][job_name]["job_id"])


def test_state_output_values_errors_and_stop(local_oscar, connected, no_sessions):
    import oscar_jupyter

    seen: list[str] = []
    with oscar_jupyter.start_session("s1", **FLAGS) as s1:
        assert s1.state() == "idle"
        job = s1.job
        assert s1.run("x = 41") == {}
        s1.run("print(x + 1)", sink=lambda lines: seen.extend(line.text for line in lines))
        assert seen == ["42"]
        values = s1.run("y = x * 2\nimport sys; print('to stderr', file=sys.stderr)", outputs=["y"])
        assert values == {"y": 82}
        with pytest.raises(SessionCellError) as failed:
            s1.run("a = 1\nraise ValueError('bad ' + str(x))", cell_name="cell3", line_offset=1)
        rendered = "\n".join(failed.value._render_traceback_())
        assert "ValueError: bad 41" in rendered
        assert "cell3, line 3" in rendered, rendered
        assert s1.run("z = [x]", outputs=["z"]) == {"z": [41]}  # alive after the error
        # --in values stay remote between cells
        s1.run("big = data * 2", inputs={"data": list(range(5))})
        assert s1.run("n = len(big)", outputs=["n"]) == {"n": 10}
        row = s1.row()
        assert row["state"] == "idle" and row["node"] == "local-slurm"
        assert 0 < row["time_left"] <= 300
        prefix = f"jobs/{job.name}/"
        slurm_job = slurm_id_of(local_oscar, job.name)
        assert slurm_job and slurm_jobs(slurm_job), "the session's Slurm job runs"
    assert job.is_done()
    assert objects_under(s1, prefix) == []
    assert objects_under(s1, f"sessions/{s1.connection.kernel_tag}/") == []
    deadline = time.monotonic() + 30
    while slurm_jobs(slurm_job) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm_jobs(slurm_job) == []
