"""The interrupt table: Ctrl-C at every step of a blocking `%%oscar_offload` cell, each way
(`--on-interrupt cancel` and `detach`), against the local OSCAR on the real Slurm.

Ctrl-C is a real SIGINT sent to this process at the step (while a request is about to leave, or
just after the cluster answered), so the KeyboardInterrupt lands where a user's would. After each
case: the cell ended in one line (or, detached, without an error), nothing of this kernel runs on
the cluster that the user was not told of, and a detached job is still followed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

import oscar_jupyter
from oscar_jupyter import session as session_module
from oscar_jupyter.client import OscarError
from oscar_jupyter.job_status import TERMINAL

from .table import record

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
NODE = "local-slurm"
CELL = "import time\nprint('started', flush=True)\ntime.sleep(90)\nprint('not reached')\n"
TABLE = "interrupt at every step"


def ctrl_c() -> None:
    """A Ctrl-C as the kernel gets one: SIGINT to this process, delivered here."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1.0)  # the KeyboardInterrupt is raised inside this sleep (or deferred)


def inject(client: Any, method: str, when: str, test: Callable[[Any], bool] = lambda _r: True):
    """Ctrl-C once, `before` the first matching call of `client.method` or `after` it answered
    (when `test(answer)` holds)."""
    original = getattr(client, method)
    fired = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when == "before" and not fired:
            fired.append(True)
            ctrl_c()
        answer = original(*args, **kwargs)
        if when == "after" and not fired and test(answer):
            fired.append(True)
            ctrl_c()
        return answer

    setattr(client, method, wrapper)


def started(log: str) -> bool:
    return "|started|@@" in log


# (case, client method, before/after, condition on the answer, whether a job exists by then)
STEPS = [
    ("creating the runner service", "create_service", "before", None, False),
    ("the runner service just created", "create_service", "after", None, False),
    ("sending the job", "submit_job", "before", None, False),
    ("the job just accepted", "submit_job", "after", None, True),
    ("waiting for the job to start", "job_logs", "before", None, True),
    ("the cell running", "job_logs", "after", started, True),
]
CASES = [(*step, mode) for step in STEPS for mode in ("cancel", "detach")]


@pytest.fixture()
def connected(local_oscar, monkeypatch, ipshell):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setattr("oscar_jupyter.session.SENT_JOB_LOOKUP_SECONDS", 5.0)
    oscar_jupyter.connect("local")
    session = session_module.current()
    session.follow_kubernetes = False  # every poll goes through the client under test
    ipshell.run_line_magic("config", "OscarMagics.follow_kubernetes = False")
    yield session
    for job in list(session.jobs.values()):
        if not job.is_done():
            job.cancel()
    for service in {job.service for job in session.jobs.values()}:
        try:
            session.require_client().delete_service(service)
        except OscarError:
            pass


def live_jobs(session: Any, prefix: str) -> dict[str, str]:
    """This user's jobs on the cluster in the runner services named with `prefix`, still
    running or waiting, by name -> status."""
    client = session.require_client()
    found = {}
    for service in client.list_services():
        name = str(service.get("name"))
        if not name.startswith(prefix + "-"):
            continue
        for job, info in client.list_jobs(name).items():
            if info.get("status") not in TERMINAL:
                found[job] = str(info.get("status"))
    return found


@pytest.mark.parametrize(
    ("case", "method", "when", "test", "job_exists", "mode"),
    CASES,
    ids=[f"{c[0]}-{c[-1]}".replace(" ", "-") for c in CASES],
)
def test_ctrl_c_at_every_step_leaves_nothing_unknown_running(
    connected, ipshell, case, method, when, test, job_exists, mode
):
    prefix = f"i{CASES.index((case, method, when, test, job_exists, mode))}"
    inject(connected.require_client(), method, when, test or (lambda _r: True))
    line = f"--node {NODE} --time 00:03:00 --prefix {prefix} --on-interrupt {mode}"
    error: BaseException | None = None
    try:
        ipshell.run_cell_magic("oscar_offload", line, CELL)
    except KeyboardInterrupt as interrupted:
        error = interrupted
    time.sleep(0.5)
    live = live_jobs(connected, prefix)
    watched = {job.name for job in connected.poller.watched()}
    rendered = error._render_traceback_() if hasattr(error, "_render_traceback_") else None
    if mode == "cancel" or not job_exists:
        expected = (
            isinstance(error, KeyboardInterrupt)
            and rendered is not None
            and len(rendered) == 1
            and live == {}
        )
    else:  # detached: the job keeps running, followed, and the cell says so
        expected = len(live) == 1 and set(live) <= watched and set(live) <= set(connected.jobs)
        if error is not None:  # Ctrl-C while sending: one line naming the job
            expected = expected and len(rendered or []) == 1 and next(iter(live)) in rendered[0]
    record(TABLE, f"{case} ({mode})", expected)
    print(f"{case} ({mode}): {rendered or 'no error'}; live: {live}")
    assert error is None or rendered is not None, f"a raw traceback: {error!r}"
    if rendered is not None:
        assert len(rendered) == 1, rendered
    if mode == "cancel" or not job_exists:
        assert isinstance(error, KeyboardInterrupt), "the cell must stop Run All"
        assert live == {}, f"left running: {live}"
    else:
        assert len(live) == 1, f"the detached job should keep running: {live}"
        assert set(live) <= watched and set(live) <= set(connected.jobs)


def test_a_second_ctrl_c_does_not_cut_the_cancel_short(connected, ipshell):
    client = connected.require_client()
    inject(client, "job_logs", "after", started)
    inject(client, "delete_job", "before")  # Ctrl-C again while the cancel is on its way
    line = f"--node {NODE} --time 00:03:00 --prefix i99 --on-interrupt cancel"
    with pytest.raises(KeyboardInterrupt) as interrupted:
        ipshell.run_cell_magic("oscar_offload", line, CELL)
    rendered = interrupted.value._render_traceback_()  # type: ignore[attr-defined]
    live = live_jobs(connected, "i99")
    record(TABLE, "a second Ctrl-C during the cancel", live == {} and len(rendered) == 1)
    assert live == {} and len(rendered) == 1
    assert "cancelled on the cluster" in rendered[0]
