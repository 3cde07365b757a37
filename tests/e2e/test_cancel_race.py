"""Who cancelled a job, when the kernel's own poll sees the job gone before the cancel has said
so (local OSCAR, real Slurm). Under load the full suite met both orders: a kernel's follower
polled between the delete and the end of the cancel, and the job read "Cancelled from another
view" in `%oscar_jobs` and in the sidebar. Here the poll is made to land in that gap every time."""

from __future__ import annotations

import time

import pytest

import oscar_jupyter
from oscar_jupyter import job_records
from oscar_jupyter.client import OscarClient
from oscar_jupyter.job_records import BY_KERNEL, BY_SIDEBAR
from oscar_jupyter.server.backend import SidebarBackend

pytestmark = pytest.mark.e2e

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"


def running_job():
    job = oscar_jupyter.offload(SLEEPER, node="local-slurm", time="00:03:00", wait=False)
    deadline = time.monotonic() + 120
    while job.status() != "Running":
        assert time.monotonic() < deadline, job.status()
        job.refresh()
        time.sleep(0.3)
    return job


def poll_until_gone(job) -> None:
    """What the kernel's follower does: polls, here until OSCAR no longer lists the job."""
    deadline = time.monotonic() + 20
    while job.name in job.client.list_jobs(job.service):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job.refresh()


def test_the_canceller_is_named_when_a_poll_sees_the_job_gone_first(
    connected, monkeypatch, tmp_path
):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    by_kernel, by_sidebar = running_job(), running_job()
    real_delete = OscarClient.delete_job

    def delete_then_poll(client, service, name):
        real_delete(client, service, name)
        poll_until_gone(by_kernel if name == by_kernel.name else by_sidebar)

    monkeypatch.setattr(OscarClient, "delete_job", delete_then_poll)

    # This kernel's cancel: its own poll in the middle does not make it another view's.
    assert by_kernel.cancel() is True
    assert (by_kernel.status(), by_kernel.state().cancelled_by) == ("Cancelled", BY_KERNEL)
    endpoint = by_kernel.client.endpoint
    owner = connected.owner
    assert job_records.load(endpoint, by_kernel.name, owner).cancelled_by == BY_KERNEL

    # The sidebar's cancel: the kernel saw the job gone first and guessed "another view"; the
    # sidebar's word replaces the guess, in the record and in the kernel's own view of the job.
    answer = SidebarBackend().cancel("local", by_sidebar.service, by_sidebar.name)
    assert answer["cancelled"] is True
    assert job_records.load(endpoint, by_sidebar.name, owner).cancelled_by == BY_SIDEBAR
    by_sidebar.refresh()
    assert (by_sidebar.status(), by_sidebar.state().cancelled_by) == ("Cancelled", BY_SIDEBAR)
