"""The sidebar API at a real user's scale, in a real jupyter_server against the local OSCAR on real
Slurm: which notebook cell a job came from, cancelled jobs that stay, one upstream listing per
refresh interval however many tabs poll, an incremental log, cleanup, and 500 jobs.

Jobs are submitted through the Python API the way a notebook cell does; the kernel's side of a
cell (its notebook, cell id, execution count) is given as jupyter_server and JupyterLab give it:
`JPY_SESSION_NAME` (the notebook's absolute path) and the execute request's metadata `cellId`.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest

import oscar_jupyter
from oscar_jupyter import job_records
from oscar_jupyter.client import OscarClient
from oscar_jupyter.server.backend import SidebarBackend
from oscar_jupyter.spec import OffloadSpec

from .api import call, wait_for_job
from .conftest import NODE

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def private_records(tmp_path, monkeypatch):
    """Job logs and records of this test only (the server runs in this process)."""
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(SidebarBackend, "refresh_seconds", 0.3)
    return tmp_path


def in_cell(ipshell, monkeypatch, notebook: str, cell_id: str, code: str, **settings):
    """Submit `code` from a cell of `notebook` run by the shell as JupyterLab would run it;
    (the job, the cell's execution count)."""
    monkeypatch.setenv("JPY_SESSION_NAME", notebook)
    parent = {"header": {"msg_type": "execute_request"}, "metadata": {"cellId": cell_id}}
    monkeypatch.setattr(
        ipshell, "kernel", SimpleNamespace(get_parent=lambda: parent), raising=False
    )
    ipshell.user_ns.update(oscar_jupyter=oscar_jupyter, code=code, settings=settings)
    ran = ipshell.run_cell(
        "job = oscar_jupyter.offload(code, wait=False, **settings)", store_history=True
    )
    ran.raise_error()
    return ipshell.user_ns["job"], ran.execution_count


async def test_a_job_is_labelled_with_its_notebook_cell_and_first_line(
    jp_fetch, jp_root_dir, session, ipshell, monkeypatch
):
    notebook = jp_root_dir / "work" / "train.ipynb"
    code = "\n   \ntotal = sum(range(10))   \nprint(total)\n"
    job, count = in_cell(
        ipshell, monkeypatch, str(notebook), "c0ffee-cell", code, node=NODE, time="00:02:00"
    )
    entry = await wait_for_job(jp_fetch, job.name, ("Succeeded",))
    print("\none entry of GET jobs:", json.dumps(entry, ensure_ascii=False))
    assert entry["label"] == {
        "notebook": "work/train.ipynb",
        "cell_id": "c0ffee-cell",
        "execution_count": count,
        "first_line": "total = sum(range(10))",
        "text": f"train.ipynb · [{count}] · total = sum(range(10))",
    }
    assert entry["mine"] is True and entry["recorded"] is False
    assert entry["kernel"] == session.kernel_tag
    assert entry["runner_start"] and entry["runner_start"].endswith("Z")
    # Only the first line of the code is kept on disk, never the rest.
    stored = (job_records.cluster_dir(job.client.endpoint) / f"{job.name}.json").read_text()
    assert "print(total)" not in stored
    # A job submitted elsewhere (no record here) is named by its id.
    other = oscar_jupyter.offload("print(2)\n", node=NODE, time="00:02:00", wait=False)
    job_records.delete(other.client.endpoint, other.name, session.owner)
    entry = await wait_for_job(jp_fetch, other.name, ("Succeeded",))
    assert entry["label"]["text"] == other.name and entry["label"]["notebook"] is None


async def test_a_cancelled_job_stays_listed_as_cancelled_with_its_log(jp_fetch, session):
    job = oscar_jupyter.offload(
        "import time\nfor i in range(3):\n    print('step', i, flush=True)\ntime.sleep(300)\n",
        node=NODE,
        time="00:10:00",
        wait=False,
    )
    deadline = time.monotonic() + 90
    while True:
        code, log = await call(jp_fetch, "jobs", job.service, job.name, "log")
        if code == 200 and log["next"] >= 3:
            break
        assert time.monotonic() < deadline, (code, log)
        await asyncio.sleep(0.3)
    assert log["status"] == "Running" and not log["finished"]

    code, body = await call(jp_fetch, "jobs", job.service, job.name, method="DELETE")
    assert (code, body["cancelled"]) == (200, True)
    code, listing = await call(jp_fetch, "jobs")
    [entry] = [j for j in listing["jobs"] if j["job"] == job.name]
    assert (entry["status"], entry["cancelled_by"]) == ("Cancelled", "the sidebar")
    # OSCAR forgets a deleted job: the entry and its log now come from the local records.
    deadline = time.monotonic() + 30
    while not entry["recorded"]:
        assert time.monotonic() < deadline, entry
        await asyncio.sleep(0.4)
        entry = await wait_for_job(jp_fetch, job.name, ("Cancelled",))
    code, log = await call(jp_fetch, "jobs", job.service, job.name, "log")
    assert code == 200, log
    assert [line["text"] for line in log["lines"]] == ["step 0", "step 1", "step 2"]
    assert (log["status"], log["finished"], log["next"]) == ("Cancelled", True, 3)
    # Still there in a minute: the entry stays until cleaned up.
    code, listing = await call(jp_fetch, "jobs", scope="mine")
    assert job.name in [j["job"] for j in listing["jobs"]]


async def test_three_tabs_polling_make_one_upstream_listing_per_interval(
    jp_fetch, session, monkeypatch
):
    oscar_jupyter.offload("print('hi')\n", node=NODE, time="00:02:00", wait=False)
    interval = 1.0
    monkeypatch.setattr(SidebarBackend, "refresh_seconds", interval)
    calls = []
    original = OscarClient.list_services

    def counted(self, *args, **kwargs):
        calls.append(time.monotonic())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OscarClient, "list_services", counted)
    started = time.monotonic()
    answers = []
    while time.monotonic() - started < 4.5:  # three tabs, each polling every 0.1 s
        round_ = await asyncio.gather(*(call(jp_fetch, "jobs") for _tab in range(3)))
        assert all(code == 200 for code, _ in round_), round_
        answers += [body for _, body in round_]
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    print(f"\n{len(answers)} answers in {elapsed:.1f} s, {len(calls)} upstream listings")
    # One at the start and one per interval after (a refresh takes some time itself).
    assert 3 <= len(calls) <= elapsed / interval + 1
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert min(gaps) >= interval * 0.95, gaps
    assert {a["refresh_seconds"] for a in answers} == {interval}
    assert len({a["refreshed_at"] for a in answers}) == len(calls)


async def test_the_log_route_sends_only_new_lines_and_the_partial_line(jp_fetch, session):
    job = oscar_jupyter.offload(
        "import sys, time\n"
        "for i in range(3):\n    print('line', i, flush=True)\n"
        "sys.stdout.write('progress 10%'); sys.stdout.flush(); time.sleep(0.2)\n"
        "sys.stdout.write('\\rprogress 50%'); sys.stdout.flush()\n"
        "time.sleep(8)\n"
        "print('\\rprogress 100%')\nprint('after', flush=True)\n",
        node=NODE,
        time="00:02:00",
        wait=False,
    )
    deadline = time.monotonic() + 90
    while True:  # the three lines, and the bar's line not ended yet as a terminal shows it
        code, first = await call(jp_fetch, "jobs", job.service, job.name, "log", since="0")
        assert code == 200, first
        if first["partial"].get("stdout") == "progress 50%":
            break
        assert time.monotonic() < deadline and not first["finished"], first
        await asyncio.sleep(0.2)
    assert [line["text"] for line in first["lines"]] == ["line 0", "line 1", "line 2"]
    assert first["next"] == 3 and first["status"] == "Running"

    # Polled from where the last answer ended: each line comes once, in order, however the
    # polls fall against the job's last two prints and its end.
    received, since = [], first["next"]
    while True:
        code, rest = await call(jp_fetch, "jobs", job.service, job.name, "log", since=str(since))
        assert code == 200, rest
        received += [line["text"] for line in rest["lines"]]
        assert received == ["progress 100%", "after"][: len(received)], received
        since = rest["next"]
        if rest["finished"]:
            break
        assert time.monotonic() < deadline, rest
        await asyncio.sleep(0.3)
    assert received == ["progress 100%", "after"]
    assert (rest["next"], rest["status"], rest["exit_code"]) == (5, "Succeeded", 0)
    assert rest["partial"] == {}
    code, nothing = await call(jp_fetch, "jobs", job.service, job.name, "log", since="5")
    assert (code, nothing["lines"], nothing["next"]) == (200, [], 5)
    code, bad = await call(jp_fetch, "jobs", job.service, job.name, "log", since="-2")
    assert code == 400 and "the `next` of the previous answer" in bad["message"]


async def test_cleanup_counts_then_deletes_one_notebooks_finished_jobs(
    jp_fetch, jp_root_dir, session, ipshell, monkeypatch
):
    a, b, sleep = str(jp_root_dir / "a.ipynb"), str(jp_root_dir / "b.ipynb"), "time.sleep(300)"
    a_done, _ = in_cell(ipshell, monkeypatch, a, "a1", "print('a')", node=NODE, time="00:02:00")
    b_done, _ = in_cell(ipshell, monkeypatch, b, "b1", "print('b')", node=NODE, time="00:02:00")
    await wait_for_job(jp_fetch, a_done.name, ("Succeeded",))
    await wait_for_job(jp_fetch, b_done.name, ("Succeeded",))
    # The kernel's handles too: a followed log arrives in the plugin's 4 s steps (B6), and a job
    # deleted before its kernel saw it end reads there as deleted on the cluster (Cancelled).
    for handle in (a_done, b_done):
        await asyncio.to_thread(handle.wait, 60)
    a_cancelled, _ = in_cell(
        ipshell, monkeypatch, a, "a2", f"import time\n{sleep}\n", node=NODE, time="00:10:00"
    )
    a_running, _ = in_cell(
        ipshell, monkeypatch, a, "a3", f"import time\n{sleep}\n", node=NODE, time="00:10:00"
    )
    await wait_for_job(jp_fetch, a_running.name, ("Suspended", "Pending", "Running"))
    a_cancelled.cancel()  # from the kernel this time
    entry = await wait_for_job(jp_fetch, a_cancelled.name, ("Cancelled",))
    assert entry["cancelled_by"] == "this kernel"

    ask = {"scope": "notebook", "notebook": "a.ipynb", "dry_run": True}
    code, counted = await call(jp_fetch, "cleanup", method="POST", body=ask)
    assert code == 200, counted
    assert (counted["count"], sorted(counted["jobs"])) == (
        2,
        sorted([a_done.name, a_cancelled.name]),
    )
    code, mine = await call(jp_fetch, "cleanup", method="POST", body={**ask, "scope": "mine"})
    assert code == 200 and {a_done.name, a_cancelled.name, b_done.name} <= set(mine["jobs"])
    assert a_running.name not in mine["jobs"]

    code, done = await call(jp_fetch, "cleanup", method="POST", body={**ask, "dry_run": False})
    assert code == 200, done
    assert (done["count"], sorted(done["deleted"])) == (2, sorted(counted["jobs"]))
    code, listing = await call(jp_fetch, "jobs")
    names = {j["job"] for j in listing["jobs"]}
    assert a_done.name not in names and a_cancelled.name not in names
    assert {b_done.name, a_running.name} <= names
    assert job_records.load(a_done.client.endpoint, a_done.name, session.owner) is None

    code, bad = await call(
        jp_fetch, "cleanup", method="POST", body={"scope": "everything", "dry_run": True}
    )
    assert code == 400 and "use notebook" in bad["message"]
    code, bad = await call(
        jp_fetch, "cleanup", method="POST", body={"scope": "notebook", "dry_run": True}
    )
    assert code == 400 and "give the notebook's path" in bad["message"]
    code, bad = await call(jp_fetch, "cleanup", method="POST", body={"scope": "mine"})
    assert code == 400 and "dry_run null: write true (count only) or false" in bad["message"]
    assert b_done.name in {j["job"] for j in (await call(jp_fetch, "jobs"))[1]["jobs"]}


async def test_500_jobs_are_listed_quickly(jp_fetch, jp_root_dir, session):
    # Timing and size only: 500 cancelled jobs kept in the local records (as a heavy user's
    # would be), which the API lists along with what OSCAR lists, newest first.
    endpoint = session.client.endpoint
    # A runner service of this user's (the records of other cluster users are not listed).
    service = OffloadSpec(node=NODE, time="00:01:00").service_name(session.owner, endpoint)
    for i in range(500):
        job = f"{service}-abcdef-{i:012x}"
        job_records.save(
            job_records.JobRecord(
                cluster="local",
                endpoint=endpoint,
                service=service,
                job=job,
                kernel="abcdef",
                submitted_at=f"2026-11-30T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
                label=job_records.JobLabel(
                    notebook=str(jp_root_dir / f"nb{i % 7}.ipynb"),
                    cell_id=f"cell-{i}",
                    execution_count=i,
                    first_line=f"train(model, epochs={i})",
                ),
                status="Cancelled",
                cancelled_by="the sidebar",
                finished_at="2026-11-30T23:59:00Z",
            )
        )
    started = time.perf_counter()
    code, body = await call(jp_fetch, "jobs")
    first = time.perf_counter() - started
    started = time.perf_counter()
    code2, again = await call(jp_fetch, "jobs")
    cached = time.perf_counter() - started
    size = len(json.dumps(body))
    print(
        f"\n500 recorded jobs: first answer {first * 1000:.0f} ms, within the interval "
        f"{cached * 1000:.0f} ms, {size / 1024:.0f} KiB"
    )
    assert code == code2 == 200
    # Other tests' real jobs may share this service: take the recorded ones by their kernel tag.
    recorded = [j for j in body["jobs"] if j["job"].startswith(f"{service}-abcdef-")]
    assert len(recorded) == 500
    assert recorded[0]["label"]["text"] == "nb2.ipynb · [499] · train(model, epochs=499)"
    assert recorded[0]["label"]["notebook"] == "nb2.ipynb"
    assert [j["creation_time"] for j in recorded] == sorted(
        (j["creation_time"] for j in recorded), reverse=True
    )
    assert first < 2.0 and cached < 0.5
