"""The sidebar's REST API in a real jupyter_server against the local OSCAR on real Slurm.

Jobs are submitted the way a notebook does (`oscar_jupyter.offload(..., wait=False)`); the API
must find them in OSCAR, show their parsed output, and cancel them on Slurm.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import yaml
from tornado.httpclient import HTTPClientError

import oscar_jupyter
from oscar_jupyter.local.state import HomeLayout, LocalState

from ..conftest import free_port, slurm_job_ids_alive
from .api import call, wait_for_job
from .conftest import NODE

pytestmark = pytest.mark.e2e


def slurm_job_id(local_oscar, job_name: str) -> str:
    state = LocalState(HomeLayout(local_oscar.home).state_file)
    return str(state.jobs[job_name]["job_id"])


async def test_clusters_lists_the_profiles_and_default_without_secrets(
    jp_fetch, oscar_config, local_oscar
):
    code, body = await call(jp_fetch, "clusters")
    assert code == 200
    assert body["default"] == "local"
    assert body["config_path"] == str(oscar_config)
    entries = {e["name"]: e for e in body["clusters"]}
    assert entries["local"] == {
        "name": "local",
        "endpoint": local_oscar.endpoint,
        "auth": "basic",
        "error": None,
    }
    for name in local_oscar.user_profiles.values():  # the OIDC users' profiles
        assert entries[name]["endpoint"] == local_oscar.endpoint
        assert entries[name]["auth"] == "refresh-token" and entries[name]["error"] is None
    assert local_oscar.password not in json.dumps(body)


async def test_a_broken_profile_is_listed_with_what_to_fix(jp_fetch, tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "oscar": {
                    "good": {
                        "endpoint": "https://oscar.example.org",
                        "auth_user": "u",
                        "auth_password": "hunter2-secret",
                    },
                    "broken": {"auth_user": "u"},
                },
                "default": "good",
            }
        )
    )
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    code, body = await call(jp_fetch, "clusters")
    assert code == 200
    entries = {e["name"]: e for e in body["clusters"]}
    assert entries["good"]["endpoint"] == "https://oscar.example.org"
    assert "has no 'endpoint'" in entries["broken"]["error"]
    assert "hunter2-secret" not in json.dumps(body)


async def test_nodes_shows_the_local_virtual_node(jp_fetch, oscar_config):
    code, body = await call(jp_fetch, "nodes")
    assert code == 200, body
    assert body["cluster"] == "local"
    [node] = body["nodes"]
    assert node["name"] == NODE and node["status"] == "Ready" and node["is_interlink"]
    assert node["cpu_total"] >= 1 and 0 <= node["cpu_free"] <= node["cpu_total"]
    assert node["memory_total_bytes"] > 0
    # The cluster can be named explicitly too.
    assert await call(jp_fetch, "nodes", cluster="local") == (200, body)


async def test_a_notebook_job_is_listed_and_its_log_is_the_cells_output(jp_fetch, session):
    job = oscar_jupyter.offload(
        "import sys\nprint('hello from the cluster')\nprint('  indented')\n"
        "print('a warning', file=sys.stderr)\n",
        node=NODE,
        time="00:02:00",
        wait=False,
    )
    entry = await wait_for_job(jp_fetch, job.name, ("Succeeded", "Failed"))
    assert entry["service"] == job.service and entry["node"] == NODE
    assert (entry["status"], entry["exit_code"]) == ("Succeeded", 0)
    assert entry["creation_time"]
    # The runner's exit decides the status at once; OSCAR's start and finish times follow with
    # its phase (through interLink, seconds later).
    deadline = time.monotonic() + 60
    while not (entry["start_time"] and entry["finish_time"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        entry = await wait_for_job(jp_fetch, job.name, ("Succeeded",))
    assert entry["start_time"] and entry["finish_time"]

    code, log = await call(jp_fetch, "jobs", job.service, job.name, "log")
    assert code == 200, log
    # stdout and stderr travel through separate pipes: their order is kept within each stream.
    by_stream = {
        stream: [line["text"] for line in log["lines"] if line["stream"] == stream]
        for stream in ("stdout", "stderr")
    }
    assert by_stream == {
        "stdout": ["hello from the cluster", "  indented"],
        "stderr": ["a warning"],
    }
    assert len(log["lines"]) == 3
    assert log["exit_code"] == 0 and log["node"] == NODE and log["omitted"] == 0
    # Parsed output only: none of the Slurm preamble or supervisor lines.
    assert "supervisor" not in json.dumps(log) and "@@OJ" not in json.dumps(log)


async def test_a_failing_cell_shows_its_exit_status_and_traceback(jp_fetch, session):
    job = oscar_jupyter.offload(
        "raise ValueError('loss is NaN')\n", node=NODE, time="00:02:00", wait=False
    )
    entry = await wait_for_job(jp_fetch, job.name, ("Succeeded", "Failed"))
    # OSCAR calls the pod Succeeded; the list shows what the cell did.
    assert (entry["status"], entry["exit_code"]) == ("Failed", 1)
    code, log = await call(jp_fetch, "jobs", job.service, job.name, "log")
    assert code == 200
    assert log["exit_code"] == 1
    assert "ValueError: loss is NaN" in log["traceback"]


async def test_a_job_shows_its_kernel_and_the_status_the_kernel_sees(jp_fetch, session):
    job = oscar_jupyter.offload("raise SystemExit(4)\n", node=NODE, time="00:02:00", wait=False)
    entry = await wait_for_job(jp_fetch, job.name, ("Succeeded", "Failed"))
    await asyncio.get_running_loop().run_in_executor(None, job.wait, 60)
    assert (entry["status"], entry["exit_code"]) == (job.status(), job.exit_code) == ("Failed", 4)
    assert entry["kernel"] == session.kernel_tag
    code, body = await call(jp_fetch, "jobs", scope="mine")
    assert code == 200 and job.name in [j["job"] for j in body["jobs"]]
    code, body = await call(jp_fetch, "jobs", scope="kernel")
    assert code == 400 and "the sidebar is no kernel" in body["message"]


async def test_cancel_stops_the_slurm_job_and_the_job_stays_listed_as_cancelled(
    jp_fetch, session, local_oscar
):
    job = oscar_jupyter.offload(
        "import time\nprint('start', flush=True)\ntime.sleep(300)\n",
        node=NODE,
        time="00:10:00",
        wait=False,
    )
    await wait_for_job(jp_fetch, job.name, ("Running",))
    slurm_id = slurm_job_id(local_oscar, job.name)
    assert slurm_job_ids_alive([slurm_id]) == [slurm_id]

    code, body = await call(jp_fetch, "jobs", job.service, job.name, method="DELETE")
    assert code == 200, body
    assert body["cancelled"] is True

    code, listing = await call(jp_fetch, "jobs")
    [entry] = [j for j in listing["jobs"] if j["job"] == job.name]
    assert (entry["status"], entry["cancelled_by"]) == ("Cancelled", "the sidebar")
    deadline = time.monotonic() + 20  # scancel is asynchronous (CG state)
    while slurm_job_ids_alive([slurm_id]) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert slurm_job_ids_alive([slurm_id]) == []


async def test_unknown_cluster_is_a_400_naming_the_known_ones(jp_fetch, oscar_config):
    code, body = await call(jp_fetch, "jobs", cluster="nope")
    assert code == 400
    assert "'nope' is not in" in body["message"] and "known clusters: local" in body["message"]
    assert body["error"] == "ConfigError"


async def test_unknown_job_is_a_404_with_oscars_message(jp_fetch, session):
    job = oscar_jupyter.offload("print(1)\n", node=NODE, time="00:02:00", wait=False)
    code, body = await call(jp_fetch, "jobs", job.service, "no-such-job", "log")
    # OSCAR v4.1.2 answers 500 without a body for a job without a pod (the local OSCAR of
    # main answers 404): either way the sidebar says there is no such job.
    assert code == 404
    assert body["message"].startswith(
        (f"No job no-such-job in service {job.service}", "OSCAR answered 404 on GET /system/logs/")
    )
    code, body = await call(jp_fetch, "jobs", job.service, "no-such-job", method="DELETE")
    assert code == 404


async def test_a_malformed_job_name_is_a_400_before_oscar_is_asked(jp_fetch, oscar_config):
    code, body = await call(jp_fetch, "jobs", "runner", "Not_A_Name", "log")
    assert code == 400
    assert "Job name 'Not_A_Name' is not valid" in body["message"]


async def test_wrong_password_is_a_502_without_the_password(
    jp_fetch, tmp_path, monkeypatch, local_oscar
):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "oscar": {
                    "bad": {
                        "endpoint": local_oscar.endpoint,
                        "auth_user": "oscar",
                        "auth_password": "wrong-pass-7f3a",
                    }
                },
                "default": "bad",
            }
        )
    )
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    code, body = await call(jp_fetch, "jobs")
    assert code == 502
    assert body["message"].startswith("OSCAR answered 401")
    assert "wrong-pass-7f3a" not in json.dumps(body)


async def test_fixing_the_profile_file_needs_no_jupyter_restart(
    jp_fetch, tmp_path, monkeypatch, local_oscar
):
    config = tmp_path / "config.yaml"
    entry = {
        "endpoint": local_oscar.endpoint,
        "auth_user": "oscar",
        "auth_password": "typo",
        "jupyter": {"kubeconfig": str(local_oscar.kubeconfig)},
    }
    config.write_text(yaml.safe_dump({"oscar": {"local": entry}}))
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    assert (await call(jp_fetch, "nodes"))[0] == 502
    entry["auth_password"] = local_oscar.password
    config.write_text(yaml.safe_dump({"oscar": {"local": entry}}))
    code, body = await call(jp_fetch, "nodes")
    assert code == 200 and body["nodes"][0]["name"] == NODE
    assert body["source"] == "Kubernetes"  # /system/status lists no virtual node, as for real


async def test_without_any_cluster_the_error_says_how_to_add_one(jp_fetch, tmp_path, monkeypatch):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    code, body = await call(jp_fetch, "clusters")
    assert (code, body["clusters"], body["default"]) == (200, [], None)
    code, body = await call(jp_fetch, "jobs")
    assert code == 400
    assert "oscar-cli cluster add" in body["message"]
    assert "oscar-jupyter local start" in body["message"]


async def test_an_unreachable_cluster_is_a_502_that_says_so(jp_fetch, tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "oscar": {
                    "gone": {
                        "endpoint": f"http://127.0.0.1:{free_port()}",
                        "auth_user": "oscar",
                        "auth_password": "s3cret-gone",
                    }
                }
            }
        )
    )
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    code, body = await call(jp_fetch, "nodes")
    assert code == 502
    assert body["message"].startswith("Cannot reach OSCAR at http://127.0.0.1:")
    assert "s3cret-gone" not in json.dumps(body)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "clusters"),
        ("GET", "nodes"),
        ("GET", "connection?notebook=a.ipynb"),
        ("GET", "jobs"),
        ("DELETE", "jobs/svc/job"),
        ("GET", "jobs/svc/job/log"),
    ],
)
async def test_every_route_needs_jupyters_auth(
    http_server_client, jp_base_url, oscar_config, method, path
):
    # No token and no cookie: the request of a page from another site, or of a stranger.
    with pytest.raises(HTTPClientError) as err:
        await http_server_client.fetch(
            f"{jp_base_url}oscar-jupyter/api/{path}", method=method, allow_nonstandard_methods=True
        )
    assert err.value.code == 403
