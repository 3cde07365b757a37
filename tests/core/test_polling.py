"""What polling asks of OSCAR: listings only when the log cannot tell, and delays that follow
what a log fetch costs. A scripted client counts the calls."""

from __future__ import annotations

import json

import pytest

from oscar_jupyter.client import OscarError
from oscar_jupyter.jobs import Job, PollInterval, poll_jobs
from oscar_jupyter.spec import OffloadSpec

from ..wire import decorated, record


def tagged(kind: str, seq: int, text: str) -> str:
    return decorated(record(kind, seq, text)) + "\n"


START = tagged("s", 0, json.dumps({"node": "vega", "host": "cn01"}))


class CountingOscar:
    """Jobs' logs and one service's listing, counting the calls."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.logs: dict[str, str] = {}
        self.list_calls = 0
        self.log_calls = 0
        self.fetch_delay = 0.0

    def list_jobs(self, service: str) -> dict:
        self.list_calls += 1
        return {name: {"status": status} for name, status in self.status.items()}

    def job_logs(self, service: str, job: str) -> str:
        self.log_calls += 1
        if job not in self.logs:
            raise OscarError(404, "GET", f"/system/logs/{service}/{job}", "not found")
        return self.logs[job]


@pytest.fixture()
def oscar():
    return CountingOscar()


def make_job(oscar: CountingOscar, tmp_path, name: str = "job-1") -> Job:
    oscar.status[name] = "Pending"
    return Job(oscar, "svc", name, OffloadSpec(node="vega"), log_dir=tmp_path)


def test_a_started_job_whose_log_grows_is_never_listed(oscar, tmp_path):
    job = make_job(oscar, tmp_path)
    job.refresh()  # not started: listed, log 404
    assert oscar.list_calls == 1
    oscar.status["job-1"], oscar.logs["job-1"] = "Running", START
    job.refresh()
    assert job.status() == "Running" and oscar.list_calls == 2
    for i in range(1, 20):
        oscar.logs["job-1"] += tagged("o", i, f"line {i}")
        assert [line.text for line in job.refresh()] == [f"line {i}"]
    assert oscar.list_calls == 2  # the log carried the state
    oscar.logs["job-1"] += tagged("x", 0, "0")
    job.refresh()
    assert job.status() == "Succeeded" and oscar.list_calls == 2


def test_a_quiet_started_job_is_listed_to_notice_its_end(oscar, tmp_path):
    job = make_job(oscar, tmp_path)
    oscar.status["job-1"], oscar.logs["job-1"] = "Running", START + tagged("o", 1, "working")
    job.refresh()
    calls = oscar.list_calls
    job.refresh()  # nothing new in the log: only the listing can say the job died or went
    assert oscar.list_calls == calls + 1
    del oscar.status["job-1"]
    job.refresh()
    assert job.status() == "Cancelled"


def test_one_listing_per_service_per_tick_for_all_the_jobs_that_need_one(oscar, tmp_path):
    jobs = [make_job(oscar, tmp_path, f"job-{i}") for i in range(5)]
    poll_jobs(jobs)
    assert oscar.list_calls == 1
    for job in jobs[:3]:
        oscar.status[job.name] = "Running"
        oscar.logs[job.name] = START
    poll_jobs(jobs)
    assert oscar.list_calls == 2
    for job in jobs[:3]:
        oscar.logs[job.name] += tagged("o", 1, "out")
    poll_jobs(jobs)  # the started three grew; the two waiting ones share one listing
    assert oscar.list_calls == 3
    assert [job.status() for job in jobs] == ["Running"] * 3 + ["Pending"] * 2
    assert sum(job.list_requests for job in jobs) == oscar.list_calls  # a shared one counts once


def test_listing_errors_are_ridden_out_per_job(oscar, tmp_path):
    jobs = [make_job(oscar, tmp_path, f"job-{i}") for i in range(2)]

    def busy(service):
        raise OscarError(503, "GET", "/system/logs/svc", "busy")

    oscar.list_jobs = busy
    assert poll_jobs(jobs) is True
    assert all(job.error and "busy" in job.error for job in jobs)
    assert not any(job.is_done() for job in jobs)


def test_the_delay_follows_the_size_of_the_log_and_the_byte_budget(oscar, tmp_path):
    job = make_job(oscar, tmp_path)
    oscar.status["job-1"] = "Running"
    oscar.logs["job-1"] = START + "".join(tagged("o", i, "x" * 60) for i in range(1, 20))
    job.refresh()
    small = job.cost_delay()
    oscar.logs["job-1"] += "".join(tagged("o", i, "x" * 60) for i in range(20, 40_000))
    job.refresh()
    assert job.log_size > 3_000_000
    assert job.cost_delay() == pytest.approx(job.log_size / job.max_log_bytes_per_second, rel=0.01)
    assert job.cost_delay() > small
    job.max_log_bytes_per_second = 10_000_000
    assert job.cost_delay() == pytest.approx(job.log_size / 10_000_000, rel=0.01)
    job.max_log_bytes_per_second = 1_000_000
    delay = job.next_delay(PollInterval(0.1, 2.0), changed=True)
    assert delay == job.poll_interval and delay > 2.0  # the budget holds above the maximum
    assert "MB log on every poll" in job.lag_note


def test_a_slow_server_spaces_the_polls(oscar, tmp_path):
    job = make_job(oscar, tmp_path)
    job.fetch_seconds = 0.5  # as measured by the last fetch
    assert job.next_delay(PollInterval(0.1, 5.0), changed=True) == pytest.approx(2.0)
    assert "takes 0.5 s to serve the log" in job.lag_note
    job.fetch_seconds = 0.005
    assert job.next_delay(PollInterval(0.1, 5.0), changed=True) == pytest.approx(0.1)
    assert job.lag_note == ""


def test_the_interval_backs_off_when_quiet_from_its_floor():
    interval = PollInterval(minimum=0.1, maximum=1.0, factor=2.0, patience=1)
    assert [interval.next(False, floor=0.3) for _ in range(4)] == [0.3, 0.6, 1.0, 1.0]
    assert interval.next(False, floor=3.0) == 3.0
    assert interval.next(True) == 0.1


def test_each_fetch_is_counted_with_its_size(oscar, tmp_path):
    job = make_job(oscar, tmp_path)
    oscar.status["job-1"], oscar.logs["job-1"] = "Running", START
    job.refresh()
    job.refresh()
    assert job.log_requests == 2 and job.log_chars_fetched == 2 * len(START)
    assert job.fetch_seconds >= 0.0


def test_polling_loops_list_a_quiet_job_only_after_a_while(oscar, tmp_path):
    job = make_job(oscar, tmp_path)
    oscar.status["job-1"], oscar.logs["job-1"] = "Running", START
    job.refresh()
    calls = oscar.list_calls
    for _ in range(5):  # a pause between prints: no listing
        job.refresh(quiet_for=60.0)
    assert oscar.list_calls == calls
    job.refresh(quiet_for=0.0)
    assert oscar.list_calls == calls + 1


def test_lines_that_arrive_with_the_exit_line_mid_poll_are_all_reported(oscar, tmp_path):
    # A follower thread may feed the last lines and the exit line between the moment the wait
    # loop takes the lines it reports and the moment it asks whether the job is done.
    job = make_job(oscar, tmp_path)
    oscar.status["job-1"], oscar.logs["job-1"] = "Running", START
    streamed = START + tagged("o", 1, "ran") + tagged("x", 0, "0")
    reported: list[str] = []

    def on_update(job: Job, new_lines: list) -> None:
        reported.extend(line.text for line in new_lines)
        if not job.is_done():
            job._absorb(streamed[len(job.raw_log) :], more=True)  # the follower, just now

    assert job.wait(10, on_update=on_update, interval=PollInterval(0.01, 0.01)) == 0
    assert reported == ["ran"]
