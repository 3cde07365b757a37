"""The live job view and the jobs table on DummyComm, fed by real Jobs that poll a loopback OSCAR
log endpoint through a real OscarClient."""

from __future__ import annotations

import html
import time

from oscar_jupyter.display import live_bundle
from oscar_jupyter.widgets import JobsTable, JobView
from oscar_jupyter.widgets.clock import Clock
from oscar_jupyter.widgets.jobview import header_html

from .. import wire

SERVICE = "oj-widgets"


def shown(widget) -> str:
    return html.unescape(widget.value)


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_view_follows_a_job_from_pending_to_its_log_tail(oscar_logs, make_job, session):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0001", time="00:10:00")
    view = JobView(job, tail_lines=3, session=session, watch=False)
    assert "Suspended" in shown(view.header) and "No output yet" in shown(view.tail)
    job.refresh()  # what the poller does each tick
    assert "Pending" in shown(view.header) and "oj-status-Pending" in view.header.value
    endpoint.start(SERVICE, job.name, node="vega", started_ago=65)
    endpoint.print(job.name, "step 1", "step 2", "step 3", "step 4")
    endpoint.print(job.name, "warning: slow", stream="e")
    job.refresh()
    header = shown(view.header)
    assert "Running" in header and "on</span> vega" in header
    assert "00:01:0" in header and "/ 00:10:00" in header  # elapsed against the limit
    tail = shown(view.tail)
    assert "step 1" not in tail and "step 4" in tail and "warning: slow" in tail
    assert "2 earlier line(s)" in tail
    assert '<span class="oj-stderr">warning: slow</span>' in view.tail.value
    assert not view.cancel_button.disabled
    endpoint.finish(SERVICE, job.name, exit_code=0)
    job.refresh()
    assert "Succeeded" in shown(view.header) and "exit code 0" in shown(view.header)
    assert view.cancel_button.disabled


def test_cancel_button_cancels_the_job_on_the_cluster(oscar_logs, make_job, session):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0002")
    endpoint.start(SERVICE, job.name, node="vega")
    job.refresh()
    view = JobView(job, session=session, watch=False)
    view.cancel_button.click()
    assert endpoint.deleted == [job.name]
    assert job.status() == "Cancelled"
    assert "Cancelled" in shown(view.header)
    assert view.cancel_button.disabled


def test_a_refused_cancel_is_shown_in_the_view(oscar_logs, make_job, session):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0003")
    endpoint.start(SERVICE, job.name, node="vega")
    job.refresh()
    endpoint.fail_delete_with = 500
    view = JobView(job, session=session, watch=False)
    view.cancel_button.click()
    message = shown(view.message)
    assert message.startswith(f"Could not cancel {job.name}") and "the cluster said no" in message
    assert "not-a-real-password" not in message
    assert job.status() == "Running" and not view.cancel_button.disabled


def test_full_log_button_shows_every_line(oscar_logs, make_job, session):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0004")
    endpoint.start(SERVICE, job.name, node="vega")
    endpoint.print(job.name, *[f"line {i}" for i in range(50)])
    job.refresh()
    view = JobView(job, tail_lines=5, session=session, watch=False)
    assert "line 0\n" not in shown(view.tail)
    view.log_button.click()
    assert view.full_log.layout.display != "none"
    assert all(f"line {i}\n" in shown(view.full_log) for i in range(50))
    assert view.log_button.description == "Hide log"
    view.log_button.click()
    assert view.full_log.layout.display == "none"


def test_the_shared_poller_thread_updates_the_view_and_prints_nothing(
    oscar_logs, make_job, session, capfd
):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0005")
    view = JobView(job, session=session)  # watch=True: the session's one poller follows it
    assert job in session.poller.watched()
    endpoint.start(SERVICE, job.name, node="vega")
    endpoint.print(job.name, "hello from the cluster")
    wait_until(lambda: "hello from the cluster" in shown(view.tail))
    endpoint.finish(SERVICE, job.name, exit_code=3)
    wait_until(lambda: "Failed" in shown(view.header))
    assert "exit code 3" in shown(view.header)
    out, err = capfd.readouterr()
    assert "hello from the cluster" not in out + err


def test_clock_redraws_elapsed_time_of_a_quiet_job_and_stops_when_done(
    oscar_logs, make_job, session
):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0006", time="01:00:00")
    endpoint.start(SERVICE, job.name, node="vega", started_ago=10)
    job.refresh()
    view = JobView(job, session=session, watch=False)
    clock = Clock(interval=3600)  # ticked by hand
    clock.add(view._tick)
    job.started_at = job.started_at.replace(year=job.started_at.year - 1)  # a long quiet run
    before = view.header.value
    clock.tick()
    assert view.header.value != before and "/ 01:00:00" in shown(view.header)
    endpoint.finish(SERVICE, job.name)
    job.refresh()
    clock.tick()
    assert clock._callbacks == []


def test_jobs_table_lists_follows_and_picks_up_new_jobs(oscar_logs, make_job, session):
    endpoint, _ = oscar_logs
    first = make_job("oj-widgets-0010")
    session.jobs[first.name] = first
    table = JobsTable(session=session, watch=False)
    cells = [shown(c) for c in table.grid.children if hasattr(c, "value")]
    # No record of it here: labelled by its id (and its id is in the label's tooltip).
    assert "Job" in cells and any(f">{first.name}</span>" in c for c in cells)
    assert "1 job(s) in this kernel, 1 not finished" in shown(table.summary)
    row = table._rows[first.name]
    assert "Suspended" in shown(row.status)
    first.refresh()
    assert "Pending" in shown(row.status)
    endpoint.start(SERVICE, first.name, node="vega")
    first.refresh()
    assert "Running" in shown(row.status) and shown(row.node) == "vega"
    second = make_job("oj-widgets-0011")
    session.jobs[second.name] = second
    endpoint.finish(SERVICE, first.name)
    first.refresh()  # any change lets the table notice the new job
    assert second.name in table._rows
    assert "Succeeded" in shown(row.status) and row.cancel_button.disabled
    assert "2 job(s) in this kernel, 1 not finished" in shown(table.summary)
    table._rows[second.name].view_button.click()
    assert isinstance(table.detail_view, JobView) and table.detail_view.job is second
    table._rows[second.name].cancel_button.click()
    assert endpoint.deleted == [second.name]
    assert "Cancelled" in shown(table._rows[second.name].status)
    assert "Cancelled" in shown(table.detail_view.header)


def test_empty_jobs_table_says_how_to_start(session):
    table = JobsTable(session=session, watch=False)
    assert "No jobs in this kernel yet" in shown(table.summary)
    assert table.grid.children == ()


def test_view_shows_the_line_not_ended_yet_as_the_last_line(oscar_logs, make_job, session):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0009", time="00:10:00")
    view = JobView(job, tail_lines=3, session=session, watch=False)
    endpoint.start(SERVICE, job.name, node="vega")
    endpoint.print(job.name, "loading")
    with endpoint.lock:
        endpoint.logs[job.name] += (
            wire.partial(2, "7/30") + "\n" + wire.partial(1, "Name? ", stderr=True) + "\n"
        )
    job.refresh()
    tail = shown(view.tail)
    assert tail.index("loading") < tail.index("7/30") < tail.index("Name? ")
    assert '<span class="oj-stderr">Name? </span>' in view.tail.value
    assert live_bundle(job, 3)["text/plain"].endswith("loading\n7/30\nName? ")  # no widgets
    endpoint.print(job.name, "30/30")
    job.refresh()
    tail = shown(view.tail)
    assert "7/30" not in tail and tail.index("loading") < tail.index("30/30")


def test_an_ended_jobs_view_and_row_say_what_it_used_and_the_core_hours(
    oscar_logs, make_job, session
):
    endpoint, _ = oscar_logs
    job = make_job("oj-widgets-0020", cpus_per_task=8, mem="32G", time="02:00:00")
    session.jobs[job.name] = job
    table = JobsTable(session=session, watch=False)
    endpoint.start(SERVICE, job.name, node="vega")
    job.refresh()
    assert "wall" not in shown(table._rows[job.name].clock)  # not before it ends
    used = {"wall_seconds": 1800.0, "cpu_seconds": 2160.0, "max_rss_kib": 2 * 2**20}
    endpoint.finish(SERVICE, job.name, usage=used)
    job.refresh()
    expected = (
        "wall 00:30:00 of 02:00:00 · CPU 00:36:00 (1.2 of 8 CPUs on average) · peak 2.0 GiB of 32G"
    )
    advice = "used 1.2 of 8 CPUs on average: ask for fewer with --cpus-per-task 2"
    assert f"{expected} · {advice}" in shown(table._rows[job.name].clock)
    assert "4.00 core-hours (cores asked × wall time)" in shown(table.summary)
    header = html.unescape(header_html(job))
    assert expected in header and advice in header
