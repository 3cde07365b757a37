"""Ownership on a shared OSCAR, against the real local OSCAR (local_cluster.py: owners, 403s,
400 duplicate, owner-filtered and paged listings, as OSCAR v4.1.2): runner services named per
owner, jobs named per kernel, `%oscar_jobs` and `%oscar_cleanup` scoped to the kernel or the user,
and one status per job in every view. Jobs end as the test scripts them (the batch system's
place), with the runner's wire lines built by tests/wire.py."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml
from IPython.utils.capture import capture_output

from oscar_jupyter import session as session_module
from oscar_jupyter.client import OscarClient
from oscar_jupyter.config import ClusterProfile, Secret
from oscar_jupyter.jobs import Job
from oscar_jupyter.server.backend import SidebarBackend
from oscar_jupyter.session import Session
from oscar_jupyter.spec import RUNNER_LABEL, OffloadSpec

from ..wire import cell_log
from .local_cluster import ADMIN_USER, NODE

SPEC = dict(node=NODE, time="00:05:00")
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.fixture(autouse=True)
def private_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))


@pytest.fixture()
def sessions(cluster):
    """make(who) -> a new Session (a kernel) of `who`: "admin" (basic auth) or an OIDC user
    (`sub` `<who>@local`)."""
    made: list[Session] = []

    def make(who: str = "admin") -> Session:
        if who == "admin":
            profile = cluster.basic_profile()
        else:
            token = Secret(cluster.access_token(who))
            profile = ClusterProfile(cluster_id="local-test", endpoint=cluster.url, token=token)
        session = Session()
        session.client, session.profile = OscarClient(profile, retries=0), profile
        made.append(session)
        return session

    yield make
    for session in made:
        session.client.close()


def finish(
    cluster,
    job: Job | str,
    exit_code: int | None = 0,
    phase: str = "Succeeded",
) -> None:
    """The job ran: the batch system says `phase`, the log holds the runner's start line, one
    line of output and the exit sentinel (none when `exit_code` is None)."""
    name = job if isinstance(job, str) else job.name
    cluster.finish(name, cell_log(name, ["done"], exit_code=exit_code), phase=phase)


def run(cluster, job: Job) -> None:
    """The job's runner has started and still runs."""
    cluster.run(job.name, cell_log(job.name, exit_code=None))


def owner_of(cluster, service: str) -> str:
    return cluster.admin.get(f"/system/services/{service}").json()["owner"]


# -- 1. runner services named per owner -------------------------------------------------------


def test_two_oidc_users_with_the_same_settings_both_offload(sessions, cluster):
    alice, bob = sessions("alice"), sessions("bob")
    assert (alice.owner, bob.owner) == ("alice@local", "bob@local")
    job_a = alice.submit("print(1)", OffloadSpec(**SPEC))
    job_b = bob.submit("print(1)", OffloadSpec(**SPEC))
    assert job_a.service != job_b.service
    assert owner_of(cluster, job_a.service) == "alice@local"
    assert owner_of(cluster, job_b.service) == "bob@local"
    for job in (job_a, job_b):
        assert job.name in cluster.job_names()
        assert len(job.service) <= 39 and K8S_NAME.fullmatch(job.service)
        labels = cluster.admin.get(f"/system/services/{job.service}").json()["labels"]
        assert labels[RUNNER_LABEL] == "true"


def test_the_name_hashes_owner_and_endpoint_and_is_stable(sessions, cluster):
    spec = OffloadSpec(**SPEC)
    alice = sessions("alice")
    name = alice.ensure_service(spec)
    assert name == spec.service_name("alice@local", cluster.url)
    assert name != spec.service_name("alice", "https://other.example.org")
    assert name.startswith("oj-") and len(name) <= 30
    assert sessions("alice").ensure_service(spec) == name  # another kernel of alice: same one


def test_a_name_owned_by_someone_else_moves_on_to_the_next_candidate(sessions, cluster):
    spec = OffloadSpec(**SPEC)
    first = spec.service_name("alice@local", cluster.url)
    second = spec.service_name("alice@local", cluster.url, salt=1)
    third = spec.service_name("alice@local", cluster.url, salt=2)
    cluster.create_service(first, user="mallory")  # private: 403 for alice
    cluster.create_service(second, user="mallory", visibility="public")  # readable, not hers
    alice = sessions("alice")
    assert alice.ensure_service(spec) == third
    assert owner_of(cluster, third) == "alice@local"
    assert alice.submit("print(1)", spec).service == third
    reads = [
        (r.path.rsplit("/", 1)[-1], r.status) for r in cluster.seen("GET") if "/services/" in r.path
    ]
    assert reads[:3] == [(first, 403), (second, 200), (third, 404)]


def test_already_exists_after_a_404_is_another_kernel_creating_it(sessions, cluster):
    spec = OffloadSpec(**SPEC)
    alice = sessions("alice")
    name = spec.service_name("alice@local", cluster.url)
    # The other kernel's create lands between our read (404) and our create (400): the fault
    # injector replays the 404 our read would have got a moment earlier.
    cluster.create_service(name, user="alice", labels={RUNNER_LABEL: "true"})
    cluster.faults.answer("GET", f"/system/services/{name}", 404)
    assert alice.ensure_service(spec) == name
    calls = [
        (r.method, r.status) for r in cluster.requests if r.path.startswith("/system/services")
    ]
    assert calls == [("GET", 404), ("POST", 400), ("GET", 200)]
    assert name not in alice.services  # not created by this kernel


def test_basic_auth_users_get_names_of_their_own(cluster, sessions):
    spec = OffloadSpec(**SPEC)
    admin = sessions("admin")
    assert admin.owner == ADMIN_USER
    assert admin.ensure_service(spec) == spec.service_name(ADMIN_USER, cluster.url)


# -- 2. jobs named per kernel; scopes ---------------------------------------------------------


def test_job_names_carry_the_kernel_tag_within_kubernetes_limits(sessions):
    one, two = sessions(), sessions()
    assert one.kernel_tag != two.kernel_tag and re.fullmatch(r"[0-9a-f]{6}", one.kernel_tag)
    job = one.submit("print(1)", OffloadSpec(**{**SPEC, "prefix": "a-long-prefix"}))
    assert len(job.name) <= 63 and K8S_NAME.fullmatch(job.name)
    assert job.name.startswith(f"{job.service}-{one.kernel_tag}-")


def two_kernels_and_another_user(sessions):
    k1, k2, bob = sessions("alice"), sessions("alice"), sessions("bob")
    spec = OffloadSpec(**SPEC)
    jobs = {
        "k1": [k1.submit("print(1)", spec), k1.submit("print(2)", spec)],
        "k2": [
            k2.submit("print(3)", spec),
            k2.submit("print(4)", OffloadSpec(**{**SPEC, "time": "00:09:00"})),
        ],
        "bob": [bob.submit("print(5)", spec)],
    }
    return k1, k2, bob, jobs


def test_list_jobs_scopes_kernel_mine_and_all(sessions):
    k1, k2, bob, jobs = two_kernels_and_another_user(sessions)
    names = {key: {j.name for j in value} for key, value in jobs.items()}
    kernel = k1.list_jobs("kernel")
    assert {r.job for r in kernel} == names["k1"]
    assert all(r.this_kernel and r.kernel_tag == k1.kernel_tag for r in kernel)
    mine = k1.list_jobs("mine")
    assert {r.job for r in mine} == names["k1"] | names["k2"]
    assert {r.kernel_tag for r in mine if not r.this_kernel} == {k2.kernel_tag}
    assert {r.job for r in k1.list_jobs("all")} == names["k1"] | names["k2"]  # bob's: private
    assert {r.job for r in bob.list_jobs("mine")} == names["bob"]
    with pytest.raises(ValueError, match="kernel, mine, all"):
        k1.list_jobs("everything")


def test_an_admin_sees_mine_and_all_apart(sessions):
    admin, alice = sessions("admin"), sessions("alice")
    own = admin.submit("print(1)", OffloadSpec(**SPEC))
    hers = alice.submit("print(1)", OffloadSpec(**SPEC))
    assert {r.job for r in admin.list_jobs("mine")} == {own.name}
    assert {r.job for r in admin.list_jobs("all")} == {own.name, hers.name}


def test_a_restarted_kernel_finds_its_jobs_by_their_tag(sessions):
    before = sessions()
    job = before.submit("print(1)", OffloadSpec(**SPEC))
    after = sessions()
    after.kernel_tag = before.kernel_tag  # the same connection file after a restart
    assert [r.job for r in after.list_jobs()] == [job.name]


def test_listings_follow_pages_of_seventy(sessions, cluster):
    k1 = sessions()
    job = k1.submit("print(1)", OffloadSpec(**SPEC))
    service = cluster.admin.get(f"/system/services/{job.service}").json()
    for i in range(80):  # sent by this kernel before, say
        name = f"{job.service}-{k1.kernel_tag}-{i:012x}"
        cluster.submit(service, name)
        finish(cluster, name)
    rows = k1.list_jobs()
    assert len(rows) == 81
    listings = cluster.seen("GET", f"/system/logs/{job.service}")
    assert [r.query.get("page") is None for r in listings[-2:]] == [True, False]


def test_cleanup_deletes_only_this_kernels_finished_jobs(sessions, cluster):
    k1, k2, bob, jobs = two_kernels_and_another_user(sessions)
    for group in jobs.values():
        for job in group:
            finish(cluster, job)
    report = k1.cleanup()
    assert sorted(report.deleted_jobs) == sorted(j.name for j in jobs["k1"])
    assert cluster.job_names() == {j.name for j in jobs["k2"] + jobs["bob"]}
    report = k2.cleanup(scope="mine")
    assert sorted(report.deleted_jobs) == sorted(j.name for j in jobs["k2"])
    assert cluster.job_names() == {j.name for j in jobs["bob"]}


def test_cleanup_skips_unfinished_jobs_and_uses_the_runners_exit(sessions, cluster):
    k1 = sessions()
    done, running, sentinel_first = (
        k1.submit(f"print({i})", OffloadSpec(**SPEC)) for i in range(3)
    )
    finish(cluster, done, exit_code=1)
    run(cluster, running)
    finish(cluster, sentinel_first, phase="Running")  # exit sentinel ahead of OSCAR's phase
    assert sorted(k1.cleanup().deleted_jobs) == sorted([done.name, sentinel_first.name])
    assert cluster.job_names() == {running.name}


def test_a_service_is_kept_while_another_kernels_job_runs(sessions, cluster):
    k1, k2 = sessions(), sessions()
    mine = k1.submit("print(1)", OffloadSpec(**SPEC))
    theirs = k2.submit("print(2)", OffloadSpec(**SPEC))
    finish(cluster, mine)
    run(cluster, theirs)
    report = k1.cleanup(services=True)
    assert report.deleted_jobs == [mine.name] and report.deleted_services == []
    assert theirs.name in report.kept_services[mine.service]
    assert "still running or waiting" in report.kept_services[mine.service]
    assert mine.service in cluster.service_names() and theirs.name in cluster.job_names()

    finish(cluster, theirs)
    report = k1.cleanup(services=True)
    assert report.deleted_services == [mine.service] and report.kept_services == {}
    assert report.jobs_deleted_with_services == 1  # k2's finished job went with it
    assert mine.service not in cluster.service_names() and cluster.job_names() == set()
    assert any("with 1 finished job(s) of other kernels" in line for line in report.lines())


def test_the_next_offload_after_a_cleanup_creates_the_service_again(sessions, cluster):
    k1 = sessions()
    job = k1.submit("print(1)", OffloadSpec(**SPEC))
    finish(cluster, job)
    assert k1.cleanup(services=True).deleted_services == [job.service]
    again = k1.submit("print(2)", OffloadSpec(**SPEC))
    assert again.service == job.service and job.service in cluster.service_names()


# -- 3. one status per job in every view ------------------------------------------------------


@pytest.fixture()
def sidebar(cluster, tmp_path, monkeypatch):
    config = tmp_path / "oscar-cli.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "oscar": {
                    "local-test": {
                        "endpoint": cluster.url,
                        "auth_user": ADMIN_USER,
                        "auth_password": cluster.password,
                    }
                },
                "default": "local-test",
            }
        )
    )
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    backend = SidebarBackend()
    yield backend
    backend.close()


def test_every_view_shows_the_runners_status(sessions, cluster, sidebar):
    k1, k2 = sessions(), sessions()
    spec = OffloadSpec(**SPEC)
    failed_cell = k2.submit("raise SystemExit(3)", spec)  # OSCAR: Succeeded
    ended_early = k2.submit("print(1)", spec)  # sentinel in, OSCAR still Running
    finish(cluster, failed_cell, exit_code=3, phase="Succeeded")
    finish(cluster, ended_early, exit_code=0, phase="Running")
    expected = {}
    for job in (failed_cell, ended_early):
        handle = Job(k1.client, job.service, job.name, OffloadSpec())
        handle.refresh()
        expected[job.name] = handle.status()
    assert expected == {failed_cell.name: "Failed", ended_early.name: "Succeeded"}

    magic_rows = {r.job: r.status for r in k1.list_jobs("mine")}
    sidebar_rows = {j["job"]: j["status"] for j in sidebar.jobs(None)["jobs"]}
    assert magic_rows == sidebar_rows == expected
    entry = next(j for j in sidebar.jobs(None)["jobs"] if j["job"] == failed_cell.name)
    assert (entry["exit_code"], entry["kernel"]) == (3, k2.kernel_tag)


def test_final_states_are_remembered_and_logs_read_only_until_then(sessions, cluster, sidebar):
    k1 = sessions()
    done, running = (k1.submit(f"print({i})", OffloadSpec(**SPEC)) for i in range(2))
    finish(cluster, done)
    run(cluster, running)
    other = sessions()
    sidebar.refresh_seconds = 0  # every call is a refresh (the sidebar caches for 5 s)
    listed_before = len(cluster.seen("GET", f"/system/logs/{done.service}"))
    for _ in range(3):
        other.list_jobs("mine")
        sidebar.jobs(None)
    log_reads = {
        name: len(cluster.seen("GET", f"/system/logs/{done.service}/{name}"))
        for name in (done.name, running.name)
    }
    assert log_reads == {done.name: 2, running.name: 6}  # once per view for the finished one
    listings = len(cluster.seen("GET", f"/system/logs/{done.service}")) - listed_before
    assert listings == 6  # one listing per service per refresh


def test_a_job_found_running_is_timed_from_its_runners_start(sessions, cluster, sidebar):
    from datetime import datetime, timezone

    job = sessions().submit("print(1)", OffloadSpec(**SPEC))
    created = cluster.admin.get(f"/system/logs/{job.service}").json()["jobs"][job.name]
    created_at = datetime.fromisoformat(created["creation_time"].replace("Z", "+00:00"))
    started = int(created_at.timestamp())  # the runner started as the pod was accepted
    cluster.run(job.name, cell_log(job.name, exit_code=None, time=str(started)))
    time.sleep(1.1)  # so that "now" is another second than the runner's start
    (listed,) = [j for j in sidebar.jobs(None)["jobs"] if j["job"] == job.name]
    runner_start = datetime.fromisoformat(listed["runner_start"].replace("Z", "+00:00"))
    assert runner_start == datetime.fromtimestamp(started, timezone.utc)  # not "now"


def test_sidebar_mine_scope_for_basic_auth(sessions, sidebar):
    own = sessions().submit("print(1)", OffloadSpec(**SPEC))
    hers = sessions("alice").submit("print(1)", OffloadSpec(**SPEC))
    assert {j["job"] for j in sidebar.jobs(None, "mine")["jobs"]} == {own.name}
    assert {j["job"] for j in sidebar.jobs(None)["jobs"]} == {own.name, hers.name}


# -- the magics: parse and delegate -----------------------------------------------------------


@pytest.fixture()
def ip(ipshell, monkeypatch):
    monkeypatch.setattr(session_module, "_current", None)
    return ipshell


def test_oscar_jobs_and_cleanup_magics_follow_the_scopes(ip, sessions, cluster, monkeypatch):
    k1, k2 = sessions(), sessions()
    monkeypatch.setattr(session_module, "_current", k1)
    mine = k1.submit("print(1)", OffloadSpec(**SPEC))
    theirs = k2.submit("print(2)", OffloadSpec(**SPEC))
    finish(cluster, mine)
    finish(cluster, theirs, exit_code=1)

    def shown(line: str) -> str:
        with capture_output() as out:
            ip.run_line_magic("oscar_jobs", line)
        return json.dumps([o.data for o in out.outputs]) + out.stdout

    kernel, everything = shown(""), shown("--mine")
    assert mine.name in kernel and theirs.name not in kernel and "this kernel" in kernel
    assert mine.name in everything and theirs.name in everything
    assert k2.kernel_tag in everything and "Failed" in everything
    with capture_output() as out:
        ip.run_line_magic("oscar_cleanup", "--all")
    assert "Deleted 1 finished job(s) (this kernel's)." in out.stdout
    assert "Deleted runner service(s)" in out.stdout  # k2's job had ended: nothing was running
    assert mine.service not in cluster.service_names()


def test_the_jobs_table_shows_the_same_status_in_every_scope(sessions, cluster):
    from oscar_jupyter.widgets import JobsTable

    k1, k2 = sessions(), sessions()
    mine = k1.submit("print(1)", OffloadSpec(**SPEC))
    theirs = k2.submit("raise SystemExit(2)", OffloadSpec(**SPEC))
    finish(cluster, mine, phase="Running")
    finish(cluster, theirs, exit_code=2)
    kernel = JobsTable(session=k1, watch=False)
    assert set(kernel._rows) == {mine.name}
    table = JobsTable(session=k1, watch=False, scope="mine")
    statuses = {name: row.job.status() for name, row in table._rows.items()}
    assert statuses == {r.job: r.status for r in k1.list_jobs("mine")}
    assert statuses == {mine.name: "Succeeded", theirs.name: "Failed"}
    assert "Failed" in table._rows[theirs.name].status.value
    assert "2 job(s) of yours, 0 not finished" in table.summary.value
