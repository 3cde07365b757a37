"""How a session names its jobs: X-Delegated-Job-ID, or the listing difference when the header is
lost on the way; and it stops paying for the fallback once the cluster has shown it honours it."""

from __future__ import annotations

import pytest

from oscar_jupyter.client import OscarClient
from oscar_jupyter.config import ClusterProfile, Secret
from oscar_jupyter.session import Session
from oscar_jupyter.spec import OffloadSpec

from .fake_oscar_server import ADMIN_PASSWORD, ADMIN_USER


@pytest.fixture()
def session(fake_oscar, tmp_path, monkeypatch):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    profile = ClusterProfile(
        cluster_id="fake", endpoint=fake_oscar.url, user=ADMIN_USER, password=Secret(ADMIN_PASSWORD)
    )
    session = Session()
    session.client = OscarClient(profile, retries=0)
    yield session
    session.client.close()


def listings(fake_oscar) -> int:
    return sum(
        1 for r in fake_oscar.requests if r.method == "GET" and r.path.startswith("/system/logs/")
    )


def test_the_job_gets_the_name_the_client_chose_and_later_submits_skip_the_listings(
    session, fake_oscar
):
    spec = OffloadSpec(node="vk", time="00:01:00")
    first = session.submit("print(1)", spec)
    assert first.service == spec.service_name(ADMIN_USER, fake_oscar.url)
    assert first.name.startswith(f"{first.service}-{session.kernel_tag}-")
    assert first.name in fake_oscar.jobs[first.service]
    before = listings(fake_oscar)
    second = session.submit("print(2)", spec)
    assert second.name in fake_oscar.jobs[first.service]
    assert listings(fake_oscar) == before  # the header is known to work: no listing needed


def test_a_lost_header_is_made_up_for_by_the_listing_difference(session, fake_oscar):
    fake_oscar.drop_delegated_id = True
    spec = OffloadSpec(node="vk", time="00:01:00")
    jobs = [session.submit(f"print({i})", spec) for i in range(2)]
    server_names = set(fake_oscar.jobs[jobs[0].service])
    assert {job.name for job in jobs} == server_names  # the names OSCAR chose, each found
    assert len(server_names) == 2


def test_connect_warns_when_the_cluster_has_no_interlink(fake_oscar, tmp_path):
    fake_oscar.interlink_available = False
    session = Session()
    report = session.connect(
        endpoint=fake_oscar.url,
        user=ADMIN_USER,
        password=ADMIN_PASSWORD,
        config_path=tmp_path / "none.yaml",
    )
    assert not report.interlink_available
    assert any(
        "interLink_available: false" in w and "ordinary Kubernetes node" in w
        for w in report.warnings
    )
    assert "Warning" in report._repr_markdown_()
    calls = [(r.method, r.path) for r in fake_oscar.requests]
    assert calls[:3] == [("GET", "/health"), ("GET", "/system/info"), ("GET", "/system/config")]
    assert ADMIN_PASSWORD not in repr(report)
