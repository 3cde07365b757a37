"""The sidebar API for job views that keep their word (issue 22), in a real jupyter_server against
the local OSCAR on real Slurm: which cluster (and so which user) each notebook's kernel connected
as, newest first by submission whatever the queue admits first, the selected finished jobs cleaned
up, and every job's run time as the Python views count it.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from oscar_jupyter import connections, job_records
from oscar_jupyter.display import status_line
from oscar_jupyter.server.backend import SidebarBackend
from oscar_jupyter.session import Session
from oscar_jupyter.usage import usage_text

from .api import call, wait_for_job
from .conftest import NODE

pytestmark = pytest.mark.e2e
SLEEP = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"


@pytest.fixture(autouse=True)
def private_records(tmp_path, monkeypatch):
    """Job logs, records and connections of this test only (the server runs in this process)."""
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(SidebarBackend, "refresh_seconds", 0.3)
    return tmp_path


@pytest.fixture()
def user_sessions(oscar_config):
    """Sessions of the local OSCAR's OIDC users, by name; their jobs are cancelled at the end."""
    made: dict[str, Session] = {}

    def connect(user: str, profile: str) -> Session:
        session = Session()
        session.connect(profile)
        made[user] = session
        return session

    yield connect
    for session in made.values():
        for job in session.jobs.values():
            if not job.is_done():
                job.cancel()
        session.client.close()


async def test_the_connection_route_names_the_cluster_each_notebook_connected_as(
    jp_fetch, jp_root_dir, oscar_config, local_oscar
):
    alice, bob = local_oscar.user_profiles["alice"], local_oscar.user_profiles["bob"]
    # As jupyter_server 2 names them to the kernel (JPY_SESSION_NAME): absolute paths.
    connections.note_connection(str(jp_root_dir / "work" / "a.ipynb"), alice)
    connections.note_connection(str(jp_root_dir / "work" / "b.ipynb"), bob)
    code, a = await call(jp_fetch, "connection", notebook="work/a.ipynb")
    assert code == 200, a
    assert (a["notebook"], a["cluster"], a["profile"]) == ("work/a.ipynb", alice, True)
    code, b = await call(jp_fetch, "connection", notebook="work/b.ipynb")
    assert (b["cluster"], b["profile"]) == (bob, True)

    # Connecting again is a new connection (the sidebar follows it even to the same cluster).
    await asyncio.sleep(0.01)
    connections.note_connection(str(jp_root_dir / "work" / "b.ipynb"), bob)
    code, again = await call(jp_fetch, "connection", notebook="work/b.ipynb")
    assert again["cluster"] == bob and again["connected_at"] > b["connected_at"]

    # Not connected yet: no cluster, and the sidebar keeps its own.
    code, none = await call(jp_fetch, "connection", notebook="work/c.ipynb")
    assert code == 200 and (none["cluster"], none["connected_at"]) == (None, None)
    # An older server names notebooks relative to its root.
    connections.note_connection("old/d.ipynb", alice)
    assert (await call(jp_fetch, "connection", notebook="old/d.ipynb"))[1]["cluster"] == alice
    # Connected through the OSCAR_* environment: a host, no profile the picker could show.
    connections.note_connection(str(jp_root_dir / "e.ipynb"), "oscar.example.org")
    code, env = await call(jp_fetch, "connection", notebook="e.ipynb")
    assert (env["cluster"], env["profile"]) == ("oscar.example.org", False)

    for bad in ("", "/etc/passwd", "../outside.ipynb", "work/../../x.ipynb"):
        code, body = await call(jp_fetch, "connection", notebook=bad)
        assert code == 400 and "relative to the Jupyter root" in body["message"], bad

    # What is kept: the notebook, the profile's name and when; a private file, no secret.
    folder = connections.connections_dir()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    for path in folder.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        kept = json.loads(path.read_text())
        assert set(kept) == {"notebook", "cluster", "connected_at"}
        assert local_oscar.password not in path.read_text()


async def test_oscar_connect_notes_the_notebooks_connection(
    jp_fetch, jp_root_dir, oscar_config, local_oscar, ipshell, monkeypatch
):
    """`%oscar_connect local-bob` in a notebook's kernel is what the sidebar then follows."""
    from oscar_jupyter import session as session_module

    bob = local_oscar.user_profiles["bob"]
    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setenv("JPY_SESSION_NAME", str(jp_root_dir / "bob.ipynb"))
    ipshell.run_line_magic("oscar_connect", bob)
    code, body = await call(jp_fetch, "connection", notebook="bob.ipynb")
    assert (code, body["cluster"], body["profile"]) == (200, bob, True)
    session_module.current().client.close()


async def test_newest_first_is_by_submission_whatever_kueue_admits_first(
    jp_fetch, local_oscar, user_sessions
):
    """alice holds 1 of her 2 CPUs of Kueue quota with X; A (2 CPUs) must wait, B (1 CPU), sent
    after it, is admitted at once: the queue creates B's pod (OSCAR's creation time) before A's,
    yet every view lists B, A, X, by submission."""
    profile = local_oscar.user_profiles["alice"]
    alice = user_sessions("alice", profile)

    def submit(code: str, cpus: int):
        spec = alice.build_spec(dict(node=NODE, time="00:06:00", cpus_per_task=cpus))
        return alice.submit(code, spec)

    x = submit(SLEEP, 1)
    await wait_for_job(jp_fetch, x.name, ("Pending", "Running"), cluster=profile, scope="mine")
    a = submit("print('a')\n", 2)
    b = submit("print('b')\n", 1)
    entry_b = await wait_for_job(
        jp_fetch, b.name, ("Pending", "Running", "Succeeded"), cluster=profile, scope="mine"
    )
    code, listing = await call(jp_fetch, "jobs", cluster=profile, scope="mine")
    assert code == 200, listing
    ours = {x.name: "X", a.name: "A", b.name: "B"}
    entries = [j for j in listing["jobs"] if j["job"] in ours]
    by_name = {ours[j["job"]]: j for j in entries}
    # The queue's view: A waits without a pod, B got its pod after A was submitted.
    assert by_name["A"]["status"] == "Suspended" and by_name["A"]["creation_time"] is None
    assert entry_b["creation_time"] is not None
    # Every view: newest submission first.
    assert [ours[j["job"]] for j in entries] == ["B", "A", "X"]
    times = [j["submitted_time"] for j in entries]
    assert all(times) and times == sorted(times, reverse=True)
    rows = await asyncio.get_running_loop().run_in_executor(None, alice.list_jobs, "mine")
    assert [ours[r.job] for r in rows if r.job in ours] == ["B", "A", "X"]


async def test_a_finished_jobs_run_time_is_the_one_python_counts(jp_fetch, session):
    done = session.submit(
        "import time\ntime.sleep(3)\n", session.build_spec(dict(node=NODE, time="00:02:00"))
    )
    running = session.submit(SLEEP, session.build_spec(dict(node=NODE, time="00:06:00")))
    await asyncio.get_running_loop().run_in_executor(None, done.wait, 120)
    entry = await wait_for_job(jp_fetch, done.name, ("Succeeded",))
    # From the runner's start line to the job's end: the same start and end as the kernel's.
    assert entry["runner_start"] and entry["duration"] is not None
    assert 3 <= entry["duration"] < 30
    seconds = done.state().duration()
    assert seconds is not None and abs(entry["duration"] - seconds) < 3, (entry, seconds)
    # What it used: the same words as the cell's status line, and its core-hours.
    assert done.usage is not None and entry["usage"] is not None, entry
    assert entry["usage"]["text"] == usage_text(done.usage, done.request)
    assert entry["usage"]["text"].startswith("wall 00:00:0")
    assert entry["usage"]["text"].split(" · ")[0] in status_line(done)
    assert entry["request"] == {"cpus": 1, "mem": None, "time": "00:02:00"}
    assert entry["core_hours"] == round(done.usage.wall_seconds / 3600, 4)
    live = await wait_for_job(jp_fetch, running.name, ("Running",))
    assert live["runner_start"] and live["duration"] is not None and live["duration"] >= 0
    code, log = await call(jp_fetch, "jobs", done.service, done.name, "log")
    assert code == 200 and (log["runner_start"], log["duration"]) == (
        entry["runner_start"],
        entry["duration"],
    )


async def test_the_selected_finished_jobs_are_cleaned_up_and_nothing_else(
    jp_fetch, session, local_oscar, user_sessions
):
    spec = session.build_spec(dict(node=NODE, time="00:02:00"))
    one, two, kept = (session.submit("print('x')\n", spec) for _ in range(3))
    live = session.submit(SLEEP, session.build_spec(dict(node=NODE, time="00:06:00")))
    bob = user_sessions("bob", local_oscar.user_profiles["bob"])
    bobs = bob.submit("print('bob')\n", bob.build_spec(dict(node=NODE, time="00:02:00")))
    for job in (one, two, kept):
        await wait_for_job(jp_fetch, job.name, ("Succeeded",))
    await wait_for_job(jp_fetch, live.name, ("Pending", "Running"))
    await asyncio.get_running_loop().run_in_executor(None, bobs.wait, 120)

    chosen = [one.name, two.name, live.name, bobs.name]  # a running job, another user's
    ask = {"scope": "jobs", "jobs": chosen, "dry_run": True}
    code, counted = await call(jp_fetch, "cleanup", method="POST", body=ask)
    assert code == 200, counted
    assert sorted(counted["jobs"]) == sorted([one.name, two.name])
    code, done = await call(jp_fetch, "cleanup", method="POST", body={**ask, "dry_run": False})
    assert (code, sorted(done["deleted"])) == (200, sorted([one.name, two.name]))
    code, listing = await call(jp_fetch, "jobs", scope="all")
    names = {j["job"] for j in listing["jobs"]}
    assert one.name not in names and two.name not in names
    assert {kept.name, live.name, bobs.name} <= names
    assert job_records.load(one.client.endpoint, one.name, session.owner) is None

    for body in (
        {"scope": "jobs", "dry_run": True},
        {"scope": "jobs", "jobs": [], "dry_run": True},
    ):
        code, bad = await call(jp_fetch, "cleanup", method="POST", body=body)
        assert code == 400 and 'give the names of the jobs to clean up in "jobs"' in bad["message"]


def test_connections_are_noted_only_for_a_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    connections.note_connection(None, "local")
    connections.note_connection("", "local")
    assert not connections.connections_dir().exists()
    (tmp_path / "root").mkdir()
    notebook = str(tmp_path / "root" / "n.ipynb")
    connections.note_connection(notebook, "local-alice")
    assert connections.connection_of(notebook) == "local-alice"
    # The same notebook through a symlinked root is the same notebook.
    os.symlink(tmp_path / "root", tmp_path / "link")
    assert connections.connection_of(str(tmp_path / "link" / "n.ipynb")) == "local-alice"
    connections.forget_connection(notebook)
    assert connections.connection_of(notebook) is None
