"""Local job records (oscar_jupyter/job_records.py): private, written whole, labelled from the
running cell of a real IPython shell, and never holding more of a cell than its first line."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import IPython
import pytest

from oscar_jupyter import job_records
from oscar_jupyter.job_records import BY_OTHER_VIEW, BY_SIDEBAR, JobLabel, JobRecord
from oscar_jupyter.spec import OffloadSpec

ENDPOINT = "https://oscar.example.org"
OTHER_ENDPOINT = "https://other.example.org"
OWNER = "alice"
SERVICE = OffloadSpec(node="vega").service_name(OWNER, ENDPOINT)
JOB = f"{SERVICE}-aaaaaa-0123456789ab"


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


def a_record(job: str = JOB, **changes) -> JobRecord:
    values = {
        "cluster": "egi",
        "endpoint": ENDPOINT,
        "service": SERVICE,
        "job": job,
        "kernel": "aaaaaa",
        "submitted_at": "2026-12-01T10:00:00Z",
        "label": JobLabel("/home/u/work/train.ipynb", "cell-1", 3, "fit(model)"),
    }
    return JobRecord(**{**values, **changes})


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_records_are_private_files_next_to_the_logs(log_dir):
    job_records.save(a_record())
    folder = job_records.cluster_dir(ENDPOINT)
    assert folder.parent == log_dir.parent / "job-records"
    assert mode(folder.parent) == mode(folder) == 0o700
    [path] = folder.iterdir()
    assert path.name == f"{JOB}.json" and mode(path) == 0o600
    assert job_records.load(ENDPOINT, JOB, OWNER) == a_record()


def test_a_write_is_whole_or_not_at_all():
    job_records.save(a_record())
    path = job_records.cluster_dir(ENDPOINT) / f"{JOB}.json"
    before = path.read_text()
    with pytest.raises(TypeError):  # fails half way through the JSON
        job_records.write_json(path, {"status": "Cancelled", "bad": object()})
    assert path.read_text() == before and json.loads(before)["job"] == JOB
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_label_of_the_running_cell_in_a_real_shell(ipshell, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "/srv/notebooks/run.ipynb")
    parent = {
        "header": {"msg_type": "execute_request"},
        "metadata": {"cellId": "6c9f1a2e-0b7e", "deletedCells": []},
    }
    monkeypatch.setattr(
        ipshell, "kernel", SimpleNamespace(get_parent=lambda: parent), raising=False
    )
    ipshell.user_ns["current_label"] = job_records.current_label
    code = "\n  \n" + "x = compute(" + "a" * 100 + ")\nprint(x)\n"
    ran = ipshell.run_cell(f"label = current_label({code!r})", store_history=True)
    ran.raise_error()
    label = ipshell.user_ns["label"]
    assert label.notebook == "/srv/notebooks/run.ipynb"
    assert (label.cell_id, label.execution_count) == ("6c9f1a2e-0b7e", ran.execution_count)
    assert len(label.first_line) == 80 and label.first_line.startswith("x = compute(aaa")
    assert label.first_line.endswith("…")
    assert label.text(JOB) == f"run.ipynb · [{ran.execution_count}] · {label.first_line}"


@pytest.mark.parametrize(
    "kernel",
    [
        None,  # plain IPython: no kernel
        SimpleNamespace(get_parent=lambda: {}),  # no metadata
        SimpleNamespace(get_parent=lambda: {"metadata": {"cellId": 7}}),  # not a cell id
        SimpleNamespace(get_parent=lambda: (_ for _ in ()).throw(RuntimeError("no parent"))),
    ],
)
def test_what_the_shell_does_not_know_is_none(ipshell, monkeypatch, kernel):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.setattr(ipshell, "kernel", kernel, raising=False)
    label = job_records.current_label("print(1)")  # called from no cell: no cell number
    assert (label.notebook, label.cell_id, label.execution_count) == (None, None, None)
    assert label.first_line == "print(1)"


def test_outside_ipython_the_label_is_the_first_line_only(monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    label = job_records.current_label("\n\n")
    assert label == JobLabel()
    assert label.text(JOB) == JOB  # nothing known: the job id


def test_a_record_keeps_the_first_line_and_no_setting_values(monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", "tok-5ecret-value")
    code = "import os\nkey = os.environ['MY_API_TOKEN']  # tok-5ecret-value\n"
    record = job_records.record_submitted(
        cluster="egi",
        endpoint=ENDPOINT,
        service="oj-0123456789-abcdef01",
        job=JOB,
        kernel="aaaaaa",
        code=code,
    )
    text = (job_records.cluster_dir(ENDPOINT) / f"{JOB}.json").read_text()
    assert record.label.first_line == "import os"
    assert "tok-5ecret-value" not in text and "MY_API_TOKEN" not in text
    assert record.submitted_at.endswith("Z")


def test_marking_a_job_cancelled_keeps_who_did_it_first():
    job_records.save(a_record())
    job_records.mark_final(ENDPOINT, SERVICE, JOB, "Cancelled", cancelled_by="this kernel")
    job_records.mark_final(ENDPOINT, SERVICE, JOB, "Cancelled", cancelled_by="the sidebar")
    record = job_records.load(ENDPOINT, JOB, OWNER)
    assert (record.status, record.cancelled_by) == ("Cancelled", "this kernel")
    assert record.label == a_record().label and record.finished_at
    # A job with no record (submitted elsewhere) gets one, without a label.
    other = JOB[:-1] + "c"
    handle = SimpleNamespace(client=SimpleNamespace(endpoint=ENDPOINT), service=SERVICE, name=other)
    job_records.note_cancelled(handle, "the sidebar")
    assert job_records.load(ENDPOINT, other, OWNER).label == JobLabel()


def test_the_canceller_replaces_a_view_that_only_saw_the_job_gone():
    # A kernel's follower polls between the sidebar's delete and the sidebar's record: its
    # "another view" is a guess, and the sidebar's word replaces it (never the other way round).
    job_records.save(a_record())
    job_records.mark_final(ENDPOINT, SERVICE, JOB, "Cancelled", cancelled_by=BY_OTHER_VIEW)
    job_records.mark_final(ENDPOINT, SERVICE, JOB, "Cancelled", cancelled_by=BY_SIDEBAR)
    job_records.mark_final(ENDPOINT, SERVICE, JOB, "Cancelled", cancelled_by=BY_OTHER_VIEW)
    record = job_records.load(ENDPOINT, JOB, OWNER)
    assert (record.status, record.cancelled_by) == ("Cancelled", BY_SIDEBAR)


def test_listing_and_deleting_per_cluster():
    other_service = OffloadSpec(node="vega").service_name(OWNER, OTHER_ENDPOINT)
    other_job = f"{other_service}-aaaaaa-0123456789ac"
    job_records.save(a_record())
    job_records.save(a_record(other_job, endpoint=OTHER_ENDPOINT, service=other_service))
    job_records.save_log_snapshot(ENDPOINT, JOB, {"lines": [{"stream": "stdout", "text": "x"}]})
    assert list(job_records.records(ENDPOINT, OWNER)) == [JOB]
    assert job_records.load_log_snapshot(ENDPOINT, JOB, OWNER) is not None
    assert job_records.delete(ENDPOINT, JOB, OWNER) is True
    assert job_records.records(ENDPOINT, OWNER) == {}
    assert job_records.load_log_snapshot(ENDPOINT, JOB, OWNER) is None
    assert list(job_records.records(OTHER_ENDPOINT, OWNER)) == [other_job]


def test_each_cluster_user_gets_the_records_of_their_own_services():
    spec = OffloadSpec(node="vega")
    alice, bob = (spec.service_name(owner, ENDPOINT) for owner in ("alice", "bob"))
    job_records.save(a_record(f"{alice}-aaaaaa-000000000001", service=alice))
    job_records.save(a_record(f"{bob}-bbbbbb-000000000002", service=bob))
    assert set(job_records.records(ENDPOINT, "alice")) == {f"{alice}-aaaaaa-000000000001"}
    assert set(job_records.records(ENDPOINT, "bob")) == {f"{bob}-bbbbbb-000000000002"}


def test_another_users_record_is_neither_read_nor_deleted():
    # Two cluster users of one machine account share the records folder: bob's
    # %oscar_cleanup --mine and the sidebar's log route must not reach alice's jobs.
    job_records.save(a_record())
    job_records.mark_final(ENDPOINT, SERVICE, JOB, "Cancelled", cancelled_by="this kernel")
    job_records.save_log_snapshot(ENDPOINT, JOB, {"lines": [{"stream": "stdout", "text": "x"}]})
    assert job_records.load(ENDPOINT, JOB, "bob") is None
    assert job_records.load_log_snapshot(ENDPOINT, JOB, "bob") is None
    assert job_records.records(ENDPOINT, "bob") == {}
    assert job_records.delete(ENDPOINT, JOB, "bob") is False
    assert job_records.load(ENDPOINT, JOB, OWNER).status == "Cancelled"
    assert job_records.load_log_snapshot(ENDPOINT, JOB, OWNER) is not None


def test_a_bad_job_name_never_becomes_a_path():
    with pytest.raises(ValueError, match="is not valid"):
        job_records.save(a_record("../../etc/passwd"))


def test_a_records_error_is_a_warning_never_a_failed_submit(log_dir):
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    (log_dir.parent / "job-records").write_text("not a folder")
    job = SimpleNamespace(client=SimpleNamespace(endpoint=ENDPOINT), service="svc", name=JOB)
    with pytest.warns(RuntimeWarning, match="could not record job"):
        job_records.note_submitted(job, "print(1)", "egi", "aaaaaa")
    with pytest.warns(RuntimeWarning, match="could not record the cancel"):
        job_records.note_cancelled(job, "this kernel")
