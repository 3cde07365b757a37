"""End to end: a job's log followed through the local OSCAR's Kubernetes API on real Slurm."""

from __future__ import annotations

import time

import pytest

import oscar_jupyter
from oscar_jupyter.logs import LogParser

pytestmark = pytest.mark.e2e
NODE = "local-slurm"


def test_followed_lines_arrive_while_the_job_runs_and_match_the_polled_log(connected, local_oscar):
    code = (
        "import sys, time\nfor i in range(4):\n    print('line', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n    time.sleep(1.0)\n"
    )
    job = oscar_jupyter.offload(code, node=NODE, time="00:05:00", wait=False)
    assert job.follow_with_kubernetes(str(local_oscar.kubeconfig))
    arrivals: list[tuple[str, str, bool]] = []

    def on_update(job, new_lines):
        for line in new_lines:
            arrivals.append((line.text, job.status(), job.following))

    assert job.wait(120, on_update=on_update) == 0
    stdout = [text for text, _, _ in arrivals if text.startswith("line")]
    assert stdout == [f"line {i}" for i in range(4)]
    assert arrivals[0][1] == "Running" and any(following for _, _, following in arrivals)
    assert job._follower is not None and job._follower.chars > 0 and job._follower.error is None
    # The stream brought the same lines as OSCAR's whole log does
    polled = LogParser()
    polled.feed(job.client.job_logs(job.service, job.name))
    assert job.lines() == polled.lines and job.exit_code == polled.exit_code == 0
    assert job.logs() == "".join(line.text + "\n" for line in polled.lines)


def test_a_follower_that_cannot_reach_the_cluster_leaves_polling_in_charge(connected, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\nusers: [{name: x, user: {}}]\n"
    )
    connected.follow_kubernetes = False  # not the profile's kubeconfig: this test's own
    job = oscar_jupyter.offload("print('polled anyway')", node=NODE, time="00:05:00", wait=False)
    assert job.follow_with_kubernetes(str(kubeconfig))
    deadline = time.monotonic() + 30
    while job._follower.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job.following and job._follower.error
    assert job.wait(120) == 0
    assert [line.text for line in job.lines()] == ["polled anyway"]


def test_without_a_kubeconfig_nothing_changes(connected, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    connected.follow_kubernetes = False
    job = oscar_jupyter.offload("print(1)", node=NODE, time="00:05:00", wait=False)
    assert job.follow_with_kubernetes() is False and not job.following
    assert job.wait(120) == 0


def test_offload_follows_by_itself_when_the_profile_names_a_kubeconfig(connected):
    # The local profile names the local OSCAR's kubeconfig (jupyter: {kubeconfig: ...}).
    job = oscar_jupyter.offload("print('streamed')", node=NODE, time="00:05:00", wait=False)
    assert job._follower is not None
    assert job.wait(120) == 0 and [line.text for line in job.lines()] == ["streamed"]


def test_a_job_that_ends_between_two_of_the_follows_reads_still_shows_its_output(
    connected, monkeypatch
):
    """The plugin's follow reads every 4 s (B6): a short job can end, and OSCAR's listing say
    so, while the stream is still open and has brought none of its log. Its lines and exit
    then come from OSCAR's whole log, read once."""
    from oscar_jupyter.jobs import Job

    monkeypatch.setattr(Job, "following", property(lambda job: True))  # open till the end
    job = oscar_jupyter.offload("print('quick')", node=NODE, time="00:05:00", wait=False)
    assert job._follower is not None
    job.feed_stream = lambda text, follower: None  # type: ignore[method-assign]  # brings nothing
    assert job.wait(120) == 0
    assert [line.text for line in job.lines()] == ["quick"] and job.status() == "Succeeded"


def test_a_no_wait_job_that_ends_between_the_follows_reads_shows_its_output_too(
    connected, monkeypatch
):
    """The same for a job nobody waits on: the background poll that sees it end (then it is
    polled no more) reads the whole log, and gives the lines to whoever watches."""
    from oscar_jupyter.jobs import Job

    monkeypatch.setattr(Job, "following", property(lambda job: True))  # open till the end
    job = oscar_jupyter.offload("print('quick')", node=NODE, time="00:05:00", wait=False)
    assert job._follower is not None
    job.feed_stream = lambda text, follower: None  # type: ignore[method-assign]  # brings nothing
    brought: list[str] = []
    deadline = time.monotonic() + 120
    while not job.is_done() and time.monotonic() < deadline:
        brought += [line.text for line in job.refresh()]  # as the kernel's poller does
        time.sleep(0.2)
    assert brought == ["quick"] and job.status() == "Succeeded" and job.exit_code == 0
