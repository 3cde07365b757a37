"""The session table: what a persistent session (issue 20) meets, each driven for real against
the local OSCAR on Slurm. A bad request is refused before anything is sent; Ctrl-C interrupts
the cell and keeps the session and its variables; a session ended from outside (scancel, the
sidebar, a delete from another view, its idle timeout) says so on the next cell, at once, in one
line that holds no secret."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import oscar_jupyter
from oscar_jupyter import remote_session
from oscar_jupyter import session as session_module
from oscar_jupyter.errors import CellInterrupted
from oscar_jupyter.job_records import BY_SIDEBAR
from oscar_jupyter.local.state import HomeLayout, LocalState
from oscar_jupyter.remote_session import RemoteSession, SessionError, UserSessions
from oscar_jupyter.session import Session
from oscar_jupyter.spec import SpecError

from .table import record

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
TABLE = "sessions"
FLAGS = {"node": "local-slurm", "time": "00:10:00", "mem": "1G"}
SECRET = "hunter2-do-not-show-me"


@pytest.fixture()
def connected(local_oscar, monkeypatch):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOCAL_HOME", str(local_oscar.home))
    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setattr(remote_session, "_SESSIONS", {})
    oscar_jupyter.connect("local")
    yield session_module.current()
    for remote in list(remote_session._SESSIONS.values()):
        remote.stop()


def slurm_id(remote: RemoteSession) -> str:
    home = Path(os.environ["OSCAR_JUPYTER_LOCAL_HOME"])
    return str(LocalState(HomeLayout(home).state_file).jobs[remote.job.name]["job_id"])


def nothing_sent(connection: Session, check: Callable[[], None], says: str) -> None:
    """`check` raises, saying `says`, and no job was sent."""
    before = set(connection.jobs)
    with pytest.raises((SessionError, SpecError, UsageError, ValueError)) as refused:
        check()
    assert says in str(refused.value), str(refused.value)
    assert set(connection.jobs) == before


def case_bad_requests_are_refused_before_sending(connection: Session, ipshell) -> None:
    nothing_sent(connection, lambda: oscar_jupyter.start_session("1st", **FLAGS), "session name")
    nothing_sent(
        connection,
        lambda: oscar_jupyter.start_session("s1", **{**FLAGS, "mem": "lots"}),
        "--mem",
    )
    nothing_sent(
        connection,
        lambda: oscar_jupyter.start_session("s1", **FLAGS, uploads=["x.csv"]),
        "go with a session's cells",
    )
    nothing_sent(
        connection,
        lambda: oscar_jupyter.start_session("s1", **FLAGS, ntasks=2, mpi=True),
        "a session runs one Python",
    )
    nothing_sent(
        connection,
        lambda: ipshell.run_cell_magic(
            "oscar_offload", "--session s1 --cpus-per-task 4", "print(1)"
        ),
        "--cpus-per-task cannot go with --session",
    )
    nothing_sent(
        connection,
        lambda: ipshell.run_cell_magic("oscar_offload", "--session nope", "print(1)"),
        "no session nope in this kernel",
    )
    s1 = oscar_jupyter.start_session("s1", **FLAGS)
    number = s1.next_cell
    nothing_sent(connection, lambda: s1.run("print(1)", uploads=["no-such.csv"]), "--upload")
    nothing_sent(connection, lambda: s1.run("print(1)", outputs=["not a name"]), "--out")
    assert s1.next_cell == number and s1.run("v = 1", outputs=["v"]) == {"v": 1}


def case_ctrl_c_interrupts_the_cell_and_keeps_the_session(connection: Session, ipshell) -> None:
    s1 = oscar_jupyter.start_session("s1", **FLAGS)
    s1.run("x = 41")
    seen: list[str] = []

    def ctrl_c_once_it_sleeps() -> None:
        deadline = time.monotonic() + 60
        while "sleeping" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_it_sleeps, daemon=True).start()
    with pytest.raises(CellInterrupted, match="session s1 and its variables are kept"):
        s1.run(
            "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\nprint('woke')",
            sink=lambda lines: seen.extend(line.text for line in lines),
        )
    assert "woke" not in seen
    assert s1.run("y = x + 1", outputs=["y"]) == {"y": 42} and s1.state() == "idle"


def ended_from_outside(end: Callable[[RemoteSession], None], says: str) -> Callable[..., None]:
    def case(connection: Session, ipshell) -> None:
        s1 = oscar_jupyter.start_session("s1", **FLAGS, env={"TOKEN": SECRET})
        s1.run("x = 41")
        end(s1)
        started = time.monotonic()
        with pytest.raises(SessionError) as ended:
            s1.run("print(x)")
        message = str(ended.value)
        assert time.monotonic() - started < 15, "an ended session must not hang the cell"
        assert message.startswith("session s1 has ended (") and says in message, message
        assert "%oscar_session start s1" in message and SECRET not in message
        assert s1.state() == "ended"
        s1.stop()  # what is left goes; the name is free again
        again = oscar_jupyter.start_session("s1", **FLAGS)
        assert again.run("z = 1", outputs=["z"]) == {"z": 1}

    return case


def scancel(remote: RemoteSession) -> None:
    subprocess.run(["scancel", slurm_id(remote)], check=True)


def stop_from_the_sidebar(remote: RemoteSession) -> None:
    view = Session()  # the Jupyter server's own connection as the same user
    view.connect("local")
    UserSessions(view, remote.job.log_path.parent).stop(remote.job.name, BY_SIDEBAR)


def delete_from_another_view(remote: RemoteSession) -> None:
    remote.job.client.delete_job(remote.job.service, remote.job.name)


def idle_timeout(remote: RemoteSession) -> None:
    deadline = time.monotonic() + 60
    while not remote.job.is_done() and time.monotonic() < deadline:
        time.sleep(0.5)
        remote.refresh()


CASES: dict[str, Callable[..., None]] = {
    "bad requests refused before sending": case_bad_requests_are_refused_before_sending,
    "Ctrl-C interrupts the cell, keeps the session": (
        case_ctrl_c_interrupts_the_cell_and_keeps_the_session
    ),
    "scancel: the next cell says so": ended_from_outside(scancel, "cancelled by Slurm"),
    "stopped from the sidebar: the next cell says so": ended_from_outside(
        stop_from_the_sidebar, "cancelled by the sidebar"
    ),
    "deleted from another view: the next cell says so": ended_from_outside(
        delete_from_another_view, "deleted on the cluster"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_session_case(case, connected, ipshell):
    passed = False
    try:
        CASES[case](connected, ipshell)
        passed = True
    finally:
        record(TABLE, case, passed)


def test_idle_timeout_releases_the_allocation_and_says_so(connected):
    passed = False
    try:
        s1 = oscar_jupyter.start_session("idle", idle_minutes=0.05, **FLAGS)
        s1.run("x = 1")
        idle_timeout(s1)
        with pytest.raises(SessionError, match="idle for 0.05 min: its allocation was released"):
            s1.run("print(x)")
        passed = True
    finally:
        record(TABLE, "idle timeout: the next cell says so", passed)
