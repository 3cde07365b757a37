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
