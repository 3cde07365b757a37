"""End to end: two OIDC users (alice, bob) and two kernels of alice on the local OSCAR, which is as
strict as OSCAR about owners (private services, cluster-wide names, owner-filtered listings)."""

from __future__ import annotations

import time

import pytest

from oscar_jupyter.session import Session

pytestmark = pytest.mark.e2e
NODE = "local-slurm"
SETTINGS = dict(node=NODE, time="00:05:00")


@pytest.fixture()
def kernels(local_oscar, monkeypatch):
    """kernel(user) -> a new Session connected as `user`; their unfinished jobs are cancelled."""
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    made: list[Session] = []

    def kernel(user: str) -> Session:
        session = Session()
        session.connect(local_oscar.user_profiles[user])
        made.append(session)
        return session

    yield kernel
    for session in made:
        for job in session.jobs.values():
            if not job.is_done():
                job.cancel()
        session.client.close()


def wait_for(predicate, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_two_users_with_the_same_settings_both_offload(kernels):
    alice, bob = kernels("alice"), kernels("bob")
    assert alice.owner != bob.owner
    jobs = [s.submit("print('hello')\n", s.build_spec(SETTINGS)) for s in (alice, bob)]
    assert jobs[0].service != jobs[1].service
    for job in jobs:
        job.result(180)  # raises unless the cell succeeded
        assert job.exit_code == 0
        assert job.lines()[0].text == "hello"
    # Private services: bob neither sees alice's service nor her jobs.
    assert jobs[0].name not in {r.job for r in bob.list_jobs("all")}
    assert {r.job for r in alice.list_jobs("mine")} >= {jobs[0].name}


def test_cleanup_keeps_a_service_while_another_kernel_of_the_user_runs_a_job(kernels):
    first, second = kernels("alice"), kernels("alice")
    done = first.submit("print(1)\n", first.build_spec(SETTINGS))
    running = second.submit(
        "import time\nprint('up', flush=True)\ntime.sleep(120)\n", second.build_spec(SETTINGS)
    )
    assert done.service == running.service
    done.result(180)
    assert done.exit_code == 0

    def started() -> bool:
        running.refresh()
        return running.status() == "Running"

    wait_for(started, 120)

    assert [r.job for r in first.list_jobs("kernel")] == [done.name]
    mine = {r.job: r for r in first.list_jobs("mine")}
    assert mine[running.name].status == "Running" and not mine[running.name].this_kernel

    report = first.cleanup(services=True)
    assert report.deleted_jobs == [done.name]
    assert running.name in report.kept_services[done.service]
    assert running.name in {r.job for r in second.list_jobs("kernel")}  # untouched

    running.cancel()
    report = first.cleanup(scope="mine", services=True)
    assert report.deleted_services == [done.service]


def test_another_user_can_neither_cancel_a_job_nor_read_or_forget_its_records(
    kernels, local_oscar, monkeypatch, tmp_path
):
    # One machine account, two OSCAR users: the job records folder is shared, OSCAR is not.
    from oscar_jupyter import job_records
    from oscar_jupyter.jobs import CancelRefused, Job
    from oscar_jupyter.server.backend import SidebarBackend

    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    alice, bob = kernels("alice"), kernels("bob")
    running = alice.submit(
        "import time\nprint('working', flush=True)\ntime.sleep(120)\n", alice.build_spec(SETTINGS)
    )
    cancelled = alice.submit(
        "import time\nprint('soon cancelled', flush=True)\ntime.sleep(120)\n",
        alice.build_spec(SETTINGS),
    )
    for job in (running, cancelled):
        wait_for(lambda job=job: job.refresh() is not None and job.status() == "Running")
    sidebar = SidebarBackend()
    alice_profile, bob_profile = (local_oscar.user_profiles[u] for u in ("alice", "bob"))
    assert sidebar.cancel(alice_profile, cancelled.service, cancelled.name)["cancelled"] is True

    # bob's cancel of alice's running job, through the sidebar and through a Job handle built
    # by hand: refused, and alice's job keeps running with no record of a cancel.
    with pytest.raises(CancelRefused):
        sidebar.cancel(bob_profile, running.service, running.name)
    handle = Job(bob.require_client(), running.service, running.name, running.spec)
    with pytest.raises(CancelRefused):
        handle.cancel()
    running.refresh()
    assert running.status() == "Running"
    mine = {row["job"]: row for row in sidebar.jobs(alice_profile, "mine")["jobs"]}
    assert mine[running.name]["status"] == "Running"
    assert mine[running.name]["cancelled_by"] is None
    assert (mine[cancelled.name]["status"], mine[cancelled.name]["cancelled_by"]) == (
        "Cancelled",
        "the sidebar",
    )

    # bob's sidebar does not serve alice's saved output, and bob's cleanup keeps her records.
    seen_by_bob = sidebar.log(bob_profile, cancelled.service, cancelled.name)
    assert "soon cancelled" not in str(seen_by_bob)
    assert cancelled.name not in {row["job"] for row in sidebar.jobs(bob_profile, "all")["jobs"]}
    bob.cleanup(scope="mine")
    endpoint = alice.require_client().endpoint
    kept = job_records.load(endpoint, cancelled.name, alice.owner)
    assert kept is not None and kept.status == "Cancelled"
    seen_by_alice = sidebar.log(alice_profile, cancelled.service, cancelled.name)
    assert [line["text"] for line in seen_by_alice["lines"]] == ["soon cancelled"]
    running.cancel()
