"""How a session names its jobs: X-Delegated-Job-ID, or the listing difference when the header is
lost on the way; and it stops paying for the fallback once the cluster has shown it honours it."""

from __future__ import annotations

import pytest

from oscar_jupyter.client import OscarClient
from oscar_jupyter.session import Session
from oscar_jupyter.spec import OffloadSpec

from .local_cluster import ADMIN_USER, NODE


@pytest.fixture()
def session(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    session = Session()
    session.client = OscarClient(cluster.basic_profile(), retries=0)
    yield session
    session.client.close()


def listings(cluster) -> int:
    return sum(1 for r in cluster.seen("GET") if r.path.startswith("/system/logs/"))


def test_the_job_gets_the_name_the_client_chose_and_later_submits_skip_the_listings(
    session, cluster
):
    spec = OffloadSpec(node=NODE, time="00:01:00")
    first = session.submit("print(1)", spec)
    assert first.service == spec.service_name(ADMIN_USER, cluster.url)
    assert first.name.startswith(f"{first.service}-{session.kernel_tag}-")
    assert cluster.seen("POST", f"/job/{first.service}")[0].status == 201
    before = listings(cluster)
    second = session.submit("print(2)", spec)
    assert listings(cluster) == before  # the header is known to work: no listing needed
    assert cluster.job_names() == {first.name, second.name}


def test_a_lost_header_is_made_up_for_by_the_listing_difference(session, cluster):
    cluster.faults.dropped_headers.add("X-Delegated-Job-ID")  # an ingress loses it
    spec = OffloadSpec(node=NODE, time="00:01:00")
    jobs = [session.submit(f"print({i})", spec) for i in range(2)]
    server_names = cluster.job_names()
    assert {job.name for job in jobs} == server_names  # the names OSCAR chose, each found
    assert len(server_names) == 2
    # job.go's names: <service, or its first 16 characters when longer than 24>-<uuid>
    assert all(name.startswith(jobs[0].service[:16]) for name in server_names)


def test_connect_warns_when_the_cluster_has_no_interlink(make_cluster, tmp_path):
    cluster = make_cluster(interlink_available=False)  # no virtual kubelet anywhere
    session = Session()
    report = session.connect(
        endpoint=cluster.url,
        user=ADMIN_USER,
        password=cluster.password,
        config_path=tmp_path / "none.yaml",
    )
    assert not report.interlink_available
    assert any(
        "interLink_available: false" in w and "ordinary Kubernetes node" in w
        for w in report.warnings
    )
    assert "Warning" in report._repr_markdown_()
    calls = [(r.method, r.path) for r in cluster.requests]
    assert calls[:3] == [("GET", "/health"), ("GET", "/system/info"), ("GET", "/system/config")]
    assert cluster.password not in repr(report)
