"""The status a user sees, derived from OSCAR's listing and the runner's lines in the log.

The lags and orderings below happen on real interLink clusters (the pod phase trails the Slurm job
by 5-15 s) but cannot be produced on demand by the local OSCAR, so a scripted client plays the two
OSCAR answers a Job reads.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from oscar_jupyter.client import OscarError
from oscar_jupyter.jobs import CancelRefused, Job, JobCancelled, JobFailed
from oscar_jupyter.spec import OffloadSpec

from ..wire import decorated, record


def tagged(kind: str, seq: int, text: str) -> str:
    return decorated(record(kind, seq, text)) + "\n"


START = tagged("s", 0, json.dumps({"node": "vega", "host": "cn01", "job": "j"}))


class ScriptedOscar:
    """Answers list_jobs/job_logs with what a test sets; counts deletes."""

    def __init__(self) -> None:
        self.status = "Suspended"
        self.log: str | None = None
        self.deleted: list[str] = []
        self.ignores_deletes = False  # answers a delete without deleting (another user's job)

    def list_jobs(self, service: str) -> dict:
        if "job-1" in self.deleted and not self.ignores_deletes:
            return {}
        return {"job-1": {"status": self.status}}

    def job_logs(self, service: str, job: str) -> str:
        if self.log is None:
            raise OscarError(404, "GET", f"/system/logs/{service}/{job}", "not found")
        return self.log

    def delete_job(self, service: str, job: str) -> None:
        self.deleted.append(job)


@pytest.fixture()
def oscar():
    return ScriptedOscar()


@pytest.fixture()
def job(oscar, tmp_path):
    return Job(oscar, "svc", "job-1", OffloadSpec(node="vega", time="00:10:00"), log_dir=tmp_path)


def test_waiting_states_pass_through_and_a_missing_log_is_not_an_error(oscar, job):
    assert job.status() == "Suspended"
    oscar.status = "Pending"
    assert job.refresh() == []
    assert job.status() == "Pending"


def test_output_while_the_listing_still_says_pending_means_running(oscar, job):
    oscar.status, oscar.log = "Pending", "slurm preamble\n" + START + tagged("o", 1, "hello")
    new = job.refresh()
    assert [line.text for line in new] == ["hello"]
    assert job.status() == "Running" and job.node == "vega" and job.started_at is not None


def test_the_exit_sentinel_ends_the_job_before_oscar_notices(oscar, job):
    oscar.status = "Running"
    oscar.log = START + tagged("o", 1, "done") + tagged("x", 0, "0")
    job.refresh()
    assert job.status() == "Succeeded" and job.exit_code == 0 and job.is_done()
    assert job.logs() == "done\n"


def test_oscar_succeeded_but_the_cell_failed(oscar, job):
    oscar.status = "Succeeded"
    oscar.log = (
        START
        + tagged("e", 1, "Traceback (most recent call last):")
        + tagged("e", 2, "ValueError: nan")
        + tagged("x", 0, "1")
    )
    job.refresh()
    assert job.status() == "Failed"
    with pytest.raises(JobFailed) as err:
        job.raise_for_status()
    assert "ValueError: nan" in "\n".join(err.value._render_traceback_())


def test_a_job_that_never_started_fails_with_the_end_of_its_log(oscar, job):
    oscar.status = "Failed"
    oscar.log = "sbatch: error: Invalid --time specification\n"
    job.refresh()
    assert job.status() == "Failed" and job.exit_code is None
    with pytest.raises(JobFailed) as err:
        job.raise_for_status()
    assert "Invalid --time specification" in "\n".join(err.value._render_traceback_())


def test_finishing_waits_for_the_sentinel_then_gives_up(oscar, job, monkeypatch):
    oscar.status, oscar.log = "Succeeded", START + tagged("o", 1, "partial")
    job.refresh()
    assert job.status() == "Running"  # the last lines may still be on their way
    monkeypatch.setattr("oscar_jupyter.jobs.SENTINEL_GRACE_SECONDS", -1.0)
    assert job.status() == "Failed"


def test_each_line_is_reported_once_across_growing_logs(oscar, job):
    oscar.status = "Running"
    oscar.log = START + tagged("o", 1, "a")
    assert [ln.text for ln in job.refresh()] == ["a"]
    oscar.log += tagged("o", 2, "b") + "@@OJ|o|3|cut in the mid"
    assert [ln.text for ln in job.refresh()] == ["b"]
    oscar.log = oscar.log[: -len("@@OJ|o|3|cut in the mid")] + tagged("o", 3, "c")
    assert [ln.text for ln in job.refresh()] == ["c"]
    assert job.logs() == "a\nb\nc\n"


def test_cancel_deletes_the_job_and_shows_cancelled(oscar, job):
    oscar.status = "Running"
    job.cancel()
    assert oscar.deleted == ["job-1"] and job.status() == "Cancelled"
    with pytest.raises(JobFailed, match="cancelled"):
        job.raise_for_status()


def test_a_cancel_the_cluster_did_not_carry_out_is_refused_not_shown_as_cancelled(
    oscar, job, monkeypatch
):
    # A delete answered without the job going away (whatever the cluster's answer said): only
    # the job's state afterwards says whether it was cancelled.
    monkeypatch.setattr("oscar_jupyter.jobs.CANCEL_CONFIRM_SECONDS", 0.3)
    oscar.status, oscar.ignores_deletes = "Running", True
    with pytest.raises(CancelRefused, match="still lists it as Running"):
        job.cancel()
    assert job.status() != "Cancelled" and not job.is_done()


def test_a_cancel_of_a_job_not_listed_for_the_caller_is_refused_before_any_delete(oscar, job):
    oscar.list_jobs = lambda service: {}  # another user's service: OSCAR lists nothing for us
    with pytest.raises(CancelRefused, match="not among the jobs OSCAR lists for you"):
        job.cancel()
    assert oscar.deleted == [] and job.status() != "Cancelled"


def test_a_cancel_answered_403_is_refused_with_the_reason(oscar, job):
    oscar.status = "Running"

    def forbidden(service: str, name: str) -> None:
        raise OscarError(403, "DELETE", f"/system/logs/{service}/{name}", "forbidden")

    oscar.delete_job = forbidden
    with pytest.raises(CancelRefused, match="HTTP 403.*not yours"):
        job.cancel()
    assert job.status() != "Cancelled" and not job.is_done()


def test_a_job_deleted_on_the_cluster_is_cancelled_instead_of_waiting_forever(oscar, job):
    oscar.status, oscar.log = "Running", START + tagged("o", 1, "working")
    job.refresh()
    oscar.list_jobs = lambda service: {}
    job.refresh()
    assert job.status() == "Cancelled"
    with pytest.raises(JobCancelled, match="deleted on the cluster"):
        job.raise_for_status()


def test_a_job_whose_service_is_deleted_fails_with_that_reason(oscar, job):
    oscar.status, oscar.log = "Running", START + tagged("o", 1, "working")
    job.refresh()

    def gone(service):
        raise OscarError(404, "GET", f"/system/logs/{service}", "Service not found")

    oscar.list_jobs = gone
    assert job.wait(5) is None  # ends instead of raising the raw 404 or polling forever
    assert job.status() == "Failed"
    with pytest.raises(JobFailed, match="runner service svc was deleted"):
        job.raise_for_status()


SLURM_BANNER = "slurmstepd: error: *** JOB 41 ON cn01 CANCELLED AT 2026-12-01T15:00:00{} ***\n"


@pytest.mark.parametrize(
    ("why", "status", "error", "says"),
    [
        ("", "Cancelled", JobCancelled, "cancelled by Slurm"),
        (" DUE TO TIME LIMIT", "Failed", JobFailed, "walltime exceeded (--time 00:10:00)"),
    ],
)
def test_slurm_ending_the_job_is_named(oscar, job, why, status, error, says):
    oscar.status = "Running"
    oscar.log = START + tagged("o", 1, "working") + SLURM_BANNER.format(why)
    job.refresh()
    oscar.status = "Failed"
    job.refresh()
    assert job.status() == status
    with pytest.raises(error, match=re.escape(says)) as raised:
        job.raise_for_status()
    assert "CANCELLED AT" in raised.value.remote_traceback  # Slurm's own line is shown


def test_a_cell_printing_slurms_banner_is_not_taken_for_slurm(oscar, job):
    oscar.status = "Running"
    oscar.log = START + tagged("o", 1, SLURM_BANNER.format("").strip()) + tagged("x", 0, "0")
    job.refresh()
    assert job.status() == "Succeeded"


def test_the_error_of_a_job_without_sentinel_never_shows_the_job_body(oscar, tmp_path):
    secret = "s3cr3t-token-value"
    spec = OffloadSpec(node="vega", time="00:10:00", env={"API_TOKEN": secret})
    job = Job(oscar, "svc", "job-1", spec, log_dir=tmp_path)
    body = base64.b64encode(f"import os; os.environ['API_TOKEN'] = {secret!r}".encode()).decode()
    oscar.status = "Running"
    oscar.log = (
        START
        + f"2026-11-28 10:00:00,000 - supervisor - DEBUG - EVENT received: {body}\n"
        + f"2026-11-28 10:00:00,000 - supervisor - INFO - value {secret}\n"
        + f"2026-11-28 10:00:01,000 - supervisor - ERROR - killed while holding {secret}\n"
        + "sbatch: error: something Slurm said\n"
    )
    job.refresh()
    oscar.status = "Failed"
    job.refresh()
    job._terminal_seen_at = -1e9  # the sentinel is overdue
    with pytest.raises(JobFailed) as raised:
        job.raise_for_status()
    shown = str(raised.value) + "\n".join(raised.value._render_traceback_())
    assert secret not in shown and body not in shown and "EVENT" not in shown
    assert "sbatch: error: something Slurm said" in shown
    assert "supervisor - ERROR - killed while holding ***" in shown


def test_cancelling_a_finished_job_changes_nothing(oscar, job):
    oscar.status, oscar.log = "Succeeded", START + tagged("x", 0, "0")
    job.refresh()
    assert job.cancel() is False
    assert job.status() == "Succeeded" and oscar.deleted == []


def test_the_kernel_side_log_is_private(oscar, job):
    oscar.status, oscar.log = "Running", START + tagged("o", 1, "private output")
    job.refresh()
    assert job.log_path.stat().st_mode & 0o777 == 0o600
    assert job.log_path.parent.stat().st_mode & 0o777 == 0o700


def test_wait_rides_out_a_dropped_connection_without_losing_a_line(oscar, job):
    oscar.status = "Running"
    answers = iter(
        [
            START + tagged("o", 1, "one"),
            OscarError(None, "GET", "/system/logs/svc/job-1", "connection refused"),
            OscarError(503, "GET", "/system/logs/svc/job-1", "busy"),
            START + tagged("o", 1, "one") + tagged("o", 2, "two") + tagged("x", 0, "0"),
        ]
    )

    def job_logs(service, name):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    oscar.job_logs = job_logs
    seen, errors = [], []

    def on_update(job, lines):
        seen.extend(line.text for line in lines)
        errors.append(job.error)

    from oscar_jupyter.jobs import PollInterval

    assert job.wait(30, on_update=on_update, interval=PollInterval(0.01, 0.02)) == 0
    assert seen == ["one", "two"]
    assert any(e and "connection refused" in e for e in errors) and errors[-1] is None


def test_wait_gives_up_on_an_error_that_will_not_pass(oscar, job):
    def job_logs(service, name):
        raise OscarError(401, "GET", "/system/logs/svc/job-1", "Unauthorized")

    oscar.status, oscar.job_logs = "Running", job_logs
    with pytest.raises(OscarError, match="401"):
        job.wait(5)


def test_the_poll_interval_stays_fast_for_a_while_then_backs_off_and_resets_on_output():
    from oscar_jupyter.jobs import PollInterval

    interval = PollInterval(minimum=0.5, maximum=5.0, factor=2.0, patience=3)
    quiet = [interval.next(changed=False) for _ in range(8)]
    assert quiet == [0.5, 0.5, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert interval.next(changed=True) == 0.5


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"cpus_per_task": 4}, "4 CPUs > 2"),
        ({"mem": "32G"}, "32768Mi of memory > 2Gi"),
        ({}, "your other running jobs may be using it"),
    ],
)
def test_a_suspended_job_says_why_once_it_has_waited(oscar, tmp_path, monkeypatch, settings, says):
    job = Job(oscar, "svc", "job-1", OffloadSpec(node="vega", **settings), log_dir=tmp_path)
    job.refresh()
    assert job.status() == "Suspended" and job.waiting_reason() == ""  # not yet worth a word
    monkeypatch.setattr("oscar_jupyter.waiting.EXPLAIN_WAIT_SECONDS", -1.0)
    assert job.waiting_reason().startswith("suspended by Kueue") and says in job.waiting_reason()


def test_a_pending_job_points_at_the_slurm_queue(oscar, job, monkeypatch):
    monkeypatch.setattr("oscar_jupyter.waiting.EXPLAIN_WAIT_SECONDS", -1.0)
    oscar.status = "Pending"
    job.refresh()
    assert "waits in the site's Slurm queue" in job.waiting_reason()
    oscar.status, oscar.log = "Running", START
    job.refresh()
    assert job.waiting_reason() == ""


def test_the_clock_starts_at_the_runners_start_line_not_at_oscars_times(oscar, job):
    import time as clock

    oscar.status = "Running"
    started = int(clock.time())
    start = tagged("s", 0, json.dumps({"node": "vega", "host": "cn01", "time": str(started)}))
    oscar.log = start
    oscar.list_jobs = lambda service: {
        "job-1": {
            "status": "Running",
            "creation_time": "2026-01-01T00:00:00Z",
            "start_time": "2026-01-01T00:00:00Z",
        }
    }
    job.refresh()
    assert int(job.started_at.timestamp()) == started
    assert job.elapsed() < 5 and job.queued() is not None and job.queued() < 5


def test_a_log_route_that_keeps_failing_is_explained_then_ends_the_job(oscar, job, monkeypatch):
    monkeypatch.setattr("oscar_jupyter.waiting.EXPLAIN_WAIT_SECONDS", -1.0)
    oscar.status = "Running"  # listed as Running, but the log answers 404 (oscar.log is None)
    job.refresh()
    assert job.status() == "Running" and "log route answers 404" in job.waiting_reason()
    monkeypatch.setattr("oscar_jupyter.jobs.MAX_OUTAGE_SECONDS", -1.0)
    job.refresh()
    assert job.status() == "Failed"
    with pytest.raises(JobFailed, match="log route has answered 404"):
        job.raise_for_status()
