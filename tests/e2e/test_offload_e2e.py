"""End to end: the magics and the Python API against the local OSCAR on real Slurm."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from IPython.utils.capture import capture_output

import oscar_jupyter
from oscar_jupyter import session as session_module
from oscar_jupyter.jobs import JobFailed
from oscar_jupyter.spec import SpecError

pytestmark = pytest.mark.e2e
NODE = "local-slurm"


@pytest.fixture()
def ip(ipshell, connected):
    return ipshell


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_lines_arrive_while_the_job_runs(connected):
    code = (
        "import time\nfor i in range(4):\n    print('line', i, flush=True)\n    time.sleep(1.5)\n"
    )
    job = oscar_jupyter.offload(code, node=NODE, time="00:05:00", wait=False)
    arrivals: list[tuple[str, str, float]] = []

    def on_update(job, new_lines):
        for line in new_lines:
            arrivals.append((line.text, job.status(), time.monotonic()))

    assert job.wait(120, on_update=on_update) == 0
    assert [a[0] for a in arrivals] == [f"line {i}" for i in range(4)]
    # The first line was seen while the job was still running, well before the last one.
    assert arrivals[0][1] == "Running"
    assert arrivals[-1][2] - arrivals[0][2] > 3.0
    assert job.status() == "Succeeded"
    assert job.node == NODE
    assert job.logs() == "".join(f"line {i}\n" for i in range(4))


def test_failing_cell_raises_with_the_remote_traceback(ip):
    cell = "def train():\n    raise ValueError('loss is NaN')\n\ntrain()\n"
    with capture_output() as out, pytest.raises(JobFailed) as err:
        ip.run_cell_magic("oscar_offload", f"--node {NODE} --time 00:02:00", cell)
    rendered = "\n".join(err.value._render_traceback_())
    assert "ValueError: loss is NaN" in rendered
    # The editor's lines (%%oscar_offload is line 1), the cell named as IPython names cells.
    assert "train()" in rendered and "<cell>, line 5, in <module>" in rendered
    assert "cell.py" not in rendered
    assert "Traceback" not in out.stderr  # shown once, by the error
    assert err.value.job.exit_code == 1
    assert "Failed" in out.outputs[-1].data["text/plain"]


def test_streamed_lines_appear_once_each_in_order(ip):
    cell = "import sys\nfor i in range(30):\n    print(i)\nprint('err', file=sys.stderr)\n"
    with capture_output() as out:
        ip.run_cell_magic("oscar_offload", f"--node {NODE} --time 00:02:00", cell)
    assert out.stdout == "".join(f"{i}\n" for i in range(30))
    assert out.stderr == "err\n"
    assert "Succeeded" in out.outputs[-1].data["text/plain"]


def test_keyboard_interrupt_cancels_the_slurm_job(ip):
    before = squeue_ids()
    main = threading.get_ident()

    def interrupt_when_running():
        for _ in range(600):
            time.sleep(0.1)
            jobs = list(session_module.current().jobs.values())
            if jobs and jobs[-1].status() == "Running" and squeue_ids() - before:
                break
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    with capture_output(), pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic(
            "oscar_offload", f"--node {NODE} --time 00:05:00", "import time\ntime.sleep(300)\n"
        )
    job = list(session_module.current().jobs.values())[-1]
    assert job.status() == "Cancelled"
    deadline = time.monotonic() + 30
    while squeue_ids() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not (squeue_ids() - before), "the Slurm job is still in squeue"


def test_bad_time_never_reaches_the_server(ip, connected):
    client = connected.client
    before = {s["name"] for s in client.list_services()}
    with pytest.raises(SpecError):
        ip.run_cell_magic("oscar_offload", f"--node {NODE} --time 25:61:00", "print(1)\n")
    assert {s["name"] for s in client.list_services()} == before


def test_unknown_node_is_refused_with_the_known_ones(ip):
    with pytest.raises(SpecError) as err:
        ip.run_cell_magic("oscar_offload", "--node vega --time 00:01:00", "print(1)\n")
    assert NODE in str(err.value)


def test_jobs_logs_and_cleanup_magics(ip, connected):
    with capture_output():
        ip.run_cell_magic(
            "oscar_offload",
            f"--node {NODE} --time 00:02:00 -o done_job",
            "print('kept in the log file')\n",
        )
    job = ip.user_ns["done_job"]
    with capture_output() as jobs_out:
        ip.run_line_magic("oscar_jobs", "")
    table = jobs_out.outputs[0].data["text/plain"]
    short = job.name.rsplit("-", 1)[1]
    assert short in table and "Succeeded" in table and "kept in the log file" in table
    with capture_output() as logs_out:
        ip.run_line_magic("oscar_logs", short)  # the short id the table shows is enough
    assert logs_out.stdout == "kept in the log file\n"
    with capture_output():
        ip.run_line_magic("oscar_cleanup", "")
    assert job.name not in connected.client.list_jobs(job.service)


def test_nodes_magic_shows_the_virtual_node(ip):
    with capture_output() as out:
        ip.run_line_magic("oscar_nodes", "")
    text = out.outputs[0].data["text/plain"]
    assert NODE in text and "yes" in text
    assert "<table>" in out.outputs[0].data["text/html"]


def test_secrets_stay_out_of_outputs(ip, local_oscar):
    with capture_output() as out:
        ip.run_line_magic("oscar_connect", "local")
        ip.run_line_magic("oscar_nodes", "")
    everything = out.stdout + out.stderr + "".join(str(o.data) for o in out.outputs)
    assert local_oscar.password not in everything
    assert local_oscar.password not in repr(session_module.current().profile)
    assert os.environ.get("OSCAR_PASSWORD") is None


def test_a_very_long_output_is_cut_in_the_cell_but_kept_whole(ip):
    ip.run_line_magic("config", "OscarMagics.max_stream_lines = 50")
    try:
        with capture_output() as out:
            ip.run_cell_magic(
                "oscar_offload",
                f"--node {NODE} --time 00:02:00 -o long_job",
                "for i in range(2000):\n    print('row', i)\n",
            )
    finally:
        ip.run_line_magic("config", "OscarMagics.max_stream_lines = 10000")
    job = ip.user_ns["long_job"]
    assert out.stdout.splitlines() == [f"row {i}" for i in range(25)] + [
        f"row {i}" for i in range(1975, 2000)
    ]
    assert f"1950 lines left out (all of them: %oscar_logs {job.name})" in out.stderr
    assert job.logs().splitlines() == [f"row {i}" for i in range(2000)]
    with capture_output() as logs_out:
        ip.run_line_magic("oscar_logs", job.name)
    assert len(logs_out.stdout.splitlines()) == 2000


def test_env_values_reach_the_cell_and_never_the_supervisor(connected, tmp_path):
    # LOG_LEVEL is read by the supervisor: in its environment it killed the job with no output.
    # PYTHONPATH and LD_LIBRARY_PATH only work when set before Python starts.
    (tmp_path / "helper_mod.py").write_text("VALUE = 'imported'\n")
    env = {
        "LOG_LEVEL": "debug",
        "PYTHONPATH": str(tmp_path),
        "LD_LIBRARY_PATH": "/opt/lib",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TRICKY": "a, b='c' $HOME `x`\n\ty",
    }
    code = (
        "import os, helper_mod\n"
        "print(helper_mod.VALUE)\n"
        "for name in ('LOG_LEVEL', 'LD_LIBRARY_PATH', 'PATH', 'TRICKY'):\n"
        "    print(name, repr(os.environ[name]))\n"
    )
    job = oscar_jupyter.offload(
        code, node=NODE, time="00:02:00", env=env, mounts=[f"{tmp_path}:{tmp_path}:ro"]
    )
    assert job.status() == "Succeeded"
    assert [line.text for line in job.lines()] == ["imported"] + [
        f"{name} {env[name]!r}" for name in ("LOG_LEVEL", "LD_LIBRARY_PATH", "PATH", "TRICKY")
    ]


def test_timeout_cancels_and_ends_in_one_line(ip):
    from oscar_jupyter.jobs import JobTimeout

    with capture_output() as out, pytest.raises(JobTimeout) as err:
        ip.run_cell_magic(
            "oscar_offload",
            f"--node {NODE} --time 00:05:00 --timeout 3 -o timed",
            "import time\nprint('up', flush=True)\ntime.sleep(120)\n",
        )
    assert err.value._render_traceback_() == [f"JobTimeout: {err.value}"]
    job = ip.user_ns["timed"]
    assert job.status() == "Cancelled"
    assert "■ Cancelled" in out.outputs[-1].data["text/plain"]


def test_cancel_magic_on_a_finished_job_says_it_had_ended(ip):
    ip.run_cell_magic("oscar_offload", f"--node {NODE} --time 00:02:00 -o done", "print(1)\n")
    name = ip.user_ns["done"].name
    with capture_output() as out:
        ip.run_line_magic("oscar_cancel", name)
    assert out.stdout == f"Job {name} had already ended (Succeeded); nothing to cancel.\n"
    assert ip.user_ns["done"].status() == "Succeeded"


def test_a_secret_reaches_the_cell_but_no_log_listing_or_dry_run(
    ipshell, local_oscar_0_6_2, monkeypatch
):
    """On interLink 0.6.2, which resolves the secrets' envFrom (B4; 0.6.1 refuses the cell:
    tests/e2e/test_releases_e2e.py)."""
    import hashlib
    import json
    import secrets

    ip = ipshell
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar_0_6_2.profile_path))
    monkeypatch.setattr(session_module, "_current", None)
    oscar_jupyter.connect("local")
    connected = session_module.current()

    value = "tok-" + secrets.token_hex(16)
    monkeypatch.setenv("API_TOKEN", value)  # the kernel's environment, never the cell
    cell = (
        "import os, hashlib\nprint(hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest())\n"
    )
    with capture_output() as dry:
        ip.run_cell_magic("oscar_offload", f"--node {NODE} --secret API_TOKEN --dry-run", cell)
    with capture_output() as out:
        ip.run_cell_magic(
            "oscar_offload", f"--node {NODE} --time 00:02:00 --secret API_TOKEN -o sec", cell
        )
    job = ip.user_ns["sec"]
    assert out.stdout == hashlib.sha256(value.encode()).hexdigest() + "\n"
    assert "API_TOKEN" in dry.stdout and value not in dry.stdout
    assert value not in job.raw_log and value not in repr(job.spec)
    stored = json.dumps(connected.require_client().get_service(job.service))
    assert value not in stored  # OSCAR blanks secrets when a service is read
