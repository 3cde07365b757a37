"""Persistent sessions (issue 20) against the local OSCAR, real Slurm and its real S3: state kept
between cells, live output, --out values, an error that leaves the session alive, Ctrl-C that
interrupts a cell and keeps its state, stop that leaves no Slurm job and no object; and the
same through the magics in a real kernel (nbclient)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from oscar_jupyter import remote_session
from oscar_jupyter.local.state import HomeLayout
from oscar_jupyter.remote_session import SessionCellError, SessionError

from .test_cell_experience import (
    CONNECT,
    client_for,
    errors,
    everything,
    notebook,
    run,
    streams,
    wait_for_text,
)

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


SESSION = "%%oscar_offload --session s1\n"


def test_session_in_a_real_kernel(local_oscar, monkeypatch):
    nb = notebook(
        CONNECT,
        "%oscar_session start s1 --node local-slurm --time 00:05:00 --mem 1G",
        SESSION + "x = 41",
        SESSION + "print(x + 1)",
        "%%oscar_offload --session s1 --out y\ny = x * 2",
        "print('local', y)",
        SESSION + "z = 1\nraise ValueError('bad ' + str(x))",
        SESSION + "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\nprint('woke')",
        SESSION + "print('alive', x)",
        "%oscar_session start s1 --node local-slurm --time 00:05:00",
        "%%oscar_offload --session nope\nprint(1)",
        "%oscar_session list",
        "%oscar_session stop s1",
        "%oscar_session list",
    )
    client = client_for(nb, local_oscar, monkeypatch)
    failures: list[BaseException] = []

    def interrupt() -> None:
        try:
            wait_for_text(nb.cells[7], "sleeping")
            os.kill(client.km.provisioner.process.pid, signal.SIGINT)
        except BaseException as err:  # reported by the test below
            failures.append(err)

    threading.Thread(target=interrupt, daemon=True).start()
    nb = run(client, "sessions-kernel")
    assert not failures, failures
    cells = nb.cells
    for index in (0, 1, 2, 3, 4, 5, 8, 11, 12):
        assert not errors(cells[index]), (index, everything(cells[index]))
    assert "Session s1 ready: idle on local-slurm" in everything(cells[1])
    assert streams(cells[3], "stdout") == "42\n"
    assert streams(cells[5], "stdout") == "local 82\n"
    [error] = errors(cells[6])
    assert error.ename == "SessionCellError" or "ValueError" in "\n".join(error.traceback)
    shown = "\n".join(error.traceback)
    assert "ValueError: bad 41" in shown and "line 3" in shown, shown
    assert streams(cells[6], "stderr") == ""  # the traceback once, as the error
    [interrupted] = errors(cells[7])
    assert "interrupted; session s1 and its variables are kept" in "\n".join(interrupted.traceback)
    assert "woke" not in everything(cells[7])
    assert streams(cells[8], "stdout") == "alive 41\n"
    [duplicate] = errors(cells[9])
    assert "session s1 already runs" in "\n".join(duplicate.traceback)
    [unknown] = errors(cells[10])
    assert "no session nope in this kernel" in "\n".join(unknown.traceback)
    listed = streams(cells[11], "stdout")
    assert listed.startswith("s1: idle on local-slurm") and "left" in listed, listed
    assert "Session s1 stopped" in streams(cells[12], "stdout")
    assert streams(cells[13], "stdout").startswith("No sessions in this kernel")


def test_attach_after_a_restart_and_other_kernels_and_users_see_nothing(
    local_oscar, connected, no_sessions, monkeypatch
):
    import oscar_jupyter
    from oscar_jupyter import session as session_module

    s1 = oscar_jupyter.start_session("s1", **FLAGS)
    s1.run("x = 41")
    tag = session_module.current().kernel_tag
    # a cell still running when the kernel goes away (its kernel is this thread)
    slow = threading.Thread(
        target=s1.run,
        args=("import time\nprint('before', flush=True)\ntime.sleep(8)\nprint('after')",),
        kwargs={"sink": lambda lines: None},
        daemon=True,
    )
    slow.start()
    deadline = time.monotonic() + 30
    while s1.running != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s1.running == 2

    # another kernel of the same user: its own tag, no session of ours
    monkeypatch.setattr(remote_session, "_SESSIONS", {})
    monkeypatch.setattr(session_module, "_current", None)
    oscar_jupyter.connect("local")
    session_module.current().kernel_tag = "f0f0f0"
    assert remote_session.sessions() == []
    with pytest.raises(SessionError, match="no session s1 of this kernel"):
        oscar_jupyter.attach_session("s1")

    # another user: another bucket
    monkeypatch.setattr(session_module, "_current", None)
    oscar_jupyter.connect("local-alice")
    session_module.current().kernel_tag = tag
    assert remote_session.sessions() == []

    # the same kernel after a restart: the session is found again, state and all
    monkeypatch.setattr(remote_session, "_SESSIONS", {})
    monkeypatch.setattr(session_module, "_current", None)
    oscar_jupyter.connect("local")
    session_module.current().kernel_tag = tag
    [found] = remote_session.sessions()
    assert found.name == "s1" and found.state() == "busy" and found.next_cell == 3
    followed: list[str] = []
    found.follow_running(lambda lines: followed.extend(line.text for line in lines))
    assert followed == ["before", "after"]  # nothing of the cell lost across the restart
    assert found.state() == "idle"
    slow.join(10)
    seen: list[str] = []
    found.run("print(x + 1)", sink=lambda lines: seen.extend(line.text for line in lines))
    assert seen == ["42"]
    found.stop()
    assert found.job.is_done()
    assert list(found.bucket.keys(f"jobs/{found.job.name}/")) == []


def test_idle_timeout_and_a_scancelled_session_say_so_on_the_next_cell(
    local_oscar, connected, no_sessions
):
    import oscar_jupyter

    idle = oscar_jupyter.start_session("idle", idle_minutes=0.05, **FLAGS)  # 3 s
    idle.run("x = 1")
    deadline = time.monotonic() + 30
    while not idle.job.is_done() and time.monotonic() < deadline:
        time.sleep(0.5)
        idle.refresh()
    assert idle.state() == "ended" and idle.closing == "idle"
    with pytest.raises(SessionError, match="idle for 0.05 min: its allocation was released"):
        idle.run("print(x)")
    again = oscar_jupyter.start_session("idle", **FLAGS)  # an ended session frees its name
    assert again.run("v = 7", outputs=["v"]) == {"v": 7}
    assert list(again.bucket.keys(f"jobs/{idle.job.name}/")) == []
    again.stop()

    died = oscar_jupyter.start_session("died", **FLAGS)
    subprocess.run(["scancel", slurm_id_of(local_oscar, died.job.name)], check=True)
    started = time.monotonic()
    with pytest.raises(SessionError, match="session died has ended"):
        died.run("print(1)")
    assert time.monotonic() - started < 10, "a dead session must not hang the cell"
    died.stop()


def test_a_session_poll_parses_only_what_its_log_grew_by(local_oscar, connected, no_sessions):
    """OSCAR serves a job's log only whole (reference OSCAR.md section 3.7), so each poll of a
    session fetches all it ever printed; the kernel's work stays with what is new: the parser
    takes only what the log grew by, and the session only the lines after those it read."""
    import oscar_jupyter

    with oscar_jupyter.start_session("big", **FLAGS) as big:
        big.run(
            "import os\nfor i in range(10000):\n    print(os.urandom(32).hex())",
            sink=lambda lines: None,
        )
        job = big.job
        size, parsed, full = job.log_size, job._parser.chars_parsed, job._parser.full_parses
        fetched, requests = job.log_chars_fetched, job.log_requests
        assert size > 100_000, size
        seen: list[str] = []
        for i in range(10):
            big.run(f"print({i})", sink=lambda lines: seen.extend(line.text for line in lines))
        assert seen == [str(i) for i in range(10)]
        grown = job.log_size - size
        polls = job.log_requests - requests
        assert polls >= 10 and job.log_chars_fetched - fetched >= polls * size  # whole, each time
        assert job._parser.full_parses == full
        # what was parsed: the new text, and the last (unfinished) line again on each poll
        assert job._parser.chars_parsed - parsed <= grown + polls * 4096, (grown, polls)


def test_uploads_and_downloads_go_with_each_session_cell(
    local_oscar, connected, no_sessions, tmp_path, monkeypatch
):
    """--upload before the cell into the session's job, --download after it (also when the cell
    failed), through the same storage channel as any job; the cell's objects go after it."""
    import oscar_jupyter

    data = tmp_path / "data.txt"
    data.write_text("41\n")
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    monkeypatch.chdir(tmp_path)
    flags = {**FLAGS, "time": "00:10:00"}
    with oscar_jupyter.start_session("files", **flags) as s:
        with pytest.raises(SessionError, match="go with a session's cells"):
            oscar_jupyter.start_session("other", uploads=["data.txt"], **flags)
        seen: list[str] = []
        values = s.run(
            "import os\nx = int(open('/tmp/data.txt').read())\n"
            "names = sorted(os.listdir('/tmp/in'))\n"
            "os.makedirs('/tmp/res', exist_ok=True)\n"
            "open('/tmp/res/r.txt', 'w').write(str(x + 1))\nprint('read', x)",
            outputs=["names"],
            uploads=["data.txt", "inputs:/tmp/in"],
            downloads=["/tmp/res:results", "/tmp/res/r.txt"],
            sink=lambda lines: seen.extend(line.text for line in lines),
        )
        assert seen == ["read 41"] and values == {"names": ["a.txt", "b.txt"]}
        assert (tmp_path / "r.txt").read_text() == "42"
        assert (tmp_path / "results" / "r.txt").read_text() == "42"
        # the state stays; a download after a failing cell still comes back
        with pytest.raises(SessionCellError, match="ValueError: after"):
            s.run(
                "open('/tmp/res/r.txt', 'w').write(str(x * 2))\nraise ValueError('after')",
                downloads=["/tmp/res/r.txt:again.txt"],
            )
        assert (tmp_path / "again.txt").read_text() == "82"
        # refused before anything is sent: the cell's number is not used up
        number = s.next_cell
        with pytest.raises(Exception, match="--upload"):
            s.run("print(1)", uploads=["no-such-file.txt"])
        assert s.next_cell == number
        assert list(s.bucket.keys(f"jobs/{s.job.name}/cells/")) == []


def test_upload_and_download_in_a_session_cell_in_a_real_kernel(local_oscar, monkeypatch, tmp_path):
    (tmp_path / "data.txt").write_text("41\n")
    monkeypatch.chdir(tmp_path)
    nb = notebook(
        CONNECT,
        "%oscar_session start s1 --node local-slurm --time 00:10:00 --mem 1G",
        "%%oscar_offload --session s1 --upload data.txt --download /tmp/r.txt\n"
        "x = int(open('/tmp/data.txt').read())\nopen('/tmp/r.txt', 'w').write(str(x + 1))",
        "print(open('r.txt').read())",
        "%%oscar_offload --session s1 --time 00:01:00\nprint(x)",
        "%oscar_session stop s1",
    )
    client = client_for(nb, local_oscar, monkeypatch)
    client.resources = {"metadata": {"path": str(tmp_path)}}
    cells = run(client, "session-transfers").cells
    for index in (0, 1, 2, 3, 5):
        assert not errors(cells[index]), (index, everything(cells[index]))
    assert streams(cells[3], "stdout") == "42\n"
    shown = everything(cells[4])  # a UsageError: one line, refused before sending
    assert "--time cannot go with --session" in shown and "--upload and --download" in shown
