"""The sidebar API's persistent sessions (issue 20), in a real jupyter_server against the local
OSCAR on real Slurm: each user sees only their own sessions (alice and bob both run one named s1),
with state, node, time left and idle time as the kernel counts them; Stop ends the session, its
Slurm job and its objects, another user's cannot be stopped, and the kernel that used it is told
on its next cell that the sidebar stopped it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from oscar_jupyter import remote_session
from oscar_jupyter.local.state import HomeLayout
from oscar_jupyter.ownership import kernel_tag_of_kernel_id
from oscar_jupyter.remote_session import SessionError
from oscar_jupyter.server.backend import SidebarBackend
from oscar_jupyter.session import Session

from .api import call
from .conftest import NODE

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
BOB_KERNEL = "0f3c9a52-8d0e-4c1b-9a57-6b2f1e4d7c30"  # a Jupyter kernel id


@pytest.fixture(autouse=True)
def private_records(tmp_path, monkeypatch):
    """Job logs and records of this test only (the server runs in this process)."""
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(SidebarBackend, "refresh_seconds", 0.3)
    return tmp_path


@pytest.fixture()
def user_session(oscar_config, local_oscar, monkeypatch):
    """Starts a session as a local OSCAR user, as that user's kernel would (each its own
    kernel: the kernels' session tables kept apart); every session is stopped at the end."""
    made: list[tuple[dict, remote_session.RemoteSession]] = []

    def start(user: str, name: str, kernel_id: str | None = None) -> remote_session.RemoteSession:
        connection = Session()
        if kernel_id is not None:  # as a kernel the Jupyter server started with that id
            connection.kernel_tag = kernel_tag_of_kernel_id(kernel_id)
        connection.connect(local_oscar.user_profiles[user])
        table: dict = {}
        monkeypatch.setattr(remote_session, "_SESSIONS", table)
        spec = connection.build_spec({"node": NODE, "time": "00:05:00", "mem": "1G"})
        remote = remote_session.start(name, spec, connection=connection, timeout=300)
        made.append((table, remote))
        return remote

    yield start
    for table, remote in made:
        monkeypatch.setattr(remote_session, "_SESSIONS", table)
        if table.get(remote.name) is remote:
            remote.stop()
        if remote.connection.client is not None:
            remote.connection.client.close()


def slurm_alive(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    return job_id in out.split()


def slurm_id_of(local_oscar, job_name: str) -> str:
    state = json.loads(HomeLayout(local_oscar.home).state_file.read_text())
    return str(state["jobs"][job_name]["job_id"])


async def test_each_user_sees_and_stops_only_their_own_sessions(
    jp_fetch, local_oscar, user_session
):
    alice, bob = local_oscar.user_profiles["alice"], local_oscar.user_profiles["bob"]
    a1 = user_session("alice", "s1")
    a1.run("x = 41")
    b1 = user_session("bob", "s1", kernel_id=BOB_KERNEL)

    code, seen = await call(jp_fetch, "sessions", cluster=alice)
    assert code == 200, seen
    [row] = seen["sessions"]
    assert (row["name"], row["job"], row["state"], row["node"]) == ("s1", a1.job.name, "idle", NODE)
    assert row["idle"] is not None and row["idle"] >= 0
    # counted from the session's start, not from when the server first looked at it
    ran = time.time() - a1.job.started_at.timestamp()
    assert ran > 1 and 0 < row["time_left"] <= 300 - ran + 1, (row, ran)
    assert row["cells"] == 1 and row["ended"] is None
    code, seen_by_bob = await call(jp_fetch, "sessions", cluster=bob)
    assert [r["job"] for r in seen_by_bob["sessions"]] == [b1.job.name]
    # The sessions one Jupyter kernel started (what JupyterLab asks when that kernel stops).
    code, of_kernel = await call(jp_fetch, "sessions", cluster=bob, kernel=BOB_KERNEL)
    assert [r["job"] for r in of_kernel["sessions"]] == [b1.job.name]
    code, of_other = await call(jp_fetch, "sessions", cluster=alice, kernel=BOB_KERNEL)
    assert (code, of_other["sessions"]) == (200, [])
    code, bad = await call(jp_fetch, "sessions", cluster=bob, kernel="../x")
    assert code == 400 and "give a Jupyter kernel id" in bad["message"], bad
    # what the answers hold: no session token, no password, no presigned URL
    for secret in (a1.token, b1.token, local_oscar.password, "X-Amz-Signature"):
        assert secret not in str(seen) + str(seen_by_bob)

    # A cell running in alice's session: busy in the sidebar, no idle time.
    slow = threading.Thread(
        target=a1.run,
        args=("import time\ntime.sleep(4)",),
        kwargs={"sink": lambda lines: None},
        daemon=True,
    )
    slow.start()
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline and state != "busy":
        code, seen = await call(jp_fetch, "sessions", cluster=alice)
        state = seen["sessions"][0]["state"]
    assert state == "busy" and seen["sessions"][0]["idle"] is None
    slow.join(30)

    # alice cannot stop bob's session; it goes on.
    code, refused = await call(jp_fetch, "sessions", b1.job.name, method="DELETE", cluster=alice)
    assert code == 404 and "no session with job" in refused["message"], refused
    b1.run("y = 1")

    # alice stops her own: gone from the list, its Slurm job ends, its objects go.
    slurm_job = slurm_id_of(local_oscar, a1.job.name)
    code, stopped = await call(jp_fetch, "sessions", a1.job.name, method="DELETE", cluster=alice)
    assert code == 200 and stopped["stopped"] and stopped["name"] == "s1", stopped
    code, seen = await call(jp_fetch, "sessions", cluster=alice)
    assert seen["sessions"] == []
    assert list(a1.bucket.keys(f"jobs/{a1.job.name}/")) == []
    deadline = time.monotonic() + 30
    while slurm_alive(slurm_job) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not slurm_alive(slurm_job)
    # Her kernel's next cell says who stopped it, at once.
    started = time.monotonic()
    with pytest.raises(SessionError, match=r"session s1 has ended \(cancelled by the sidebar"):
        a1.run("print(x)")
    assert time.monotonic() - started < 15
    # bob's is untouched.
    code, seen_by_bob = await call(jp_fetch, "sessions", cluster=bob)
    assert [(r["job"], r["state"]) for r in seen_by_bob["sessions"]] == [(b1.job.name, "idle")]


async def test_a_user_without_sessions_gets_an_empty_list(jp_fetch, local_oscar, oscar_config):
    code, seen = await call(jp_fetch, "sessions", cluster=local_oscar.user_profiles["bob"])
    assert code == 200 and isinstance(seen["sessions"], list), seen
    code, seen = await call(jp_fetch, "sessions", "no-such-job", method="DELETE")
    assert code == 404 and "no session with job no-such-job" in seen["message"]
