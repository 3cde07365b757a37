"""OSCAR's own Python client (oscar-python) works against the local OSCAR, as against a real one:
service create/read/delete, an asynchronous job with the service token, its listing and its log."""

from __future__ import annotations

import json
import time

import pytest
from oscar_python.client import Client

from .conftest import unique_name

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]


def test_oscar_python_runs_a_job_on_the_local_oscar(local_oscar):
    client = Client(
        options={
            "cluster_id": "local",
            "endpoint": local_oscar.endpoint,
            "user": local_oscar.user,
            "password": local_oscar.password,
            "ssl": False,
        }
    )
    assert client.health_check().status_code == 200
    name = unique_name("py")
    created = client.create_service(
        {
            "name": name,
            "image": "docker://python:3.12-slim",
            "log_level": "DEBUG",
            "script": 'echo "got $(cat "$INPUT_FILE_PATH")"\n',
            "interlink_node_name": "local-slurm",
        }
    )
    assert created.status_code == 201, created.text
    try:
        assert json.loads(client.get_service(name).text)["name"] == name
        assert name in [s["name"] for s in json.loads(client.list_services().text)]
        assert client.run_service(name, input="hello", async_call=True).status_code == 201
        deadline, jobs = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            jobs = json.loads(client.list_jobs(name).text)["jobs"]
            if jobs and all(j["status"] in ("Succeeded", "Failed") for j in jobs.values()):
                break
            time.sleep(0.5)
        [(job, info)] = jobs.items()
        assert info["status"] == "Succeeded", info
        assert "got hello" in client.get_job_logs(name, job).text
    finally:
        client.remove_service(name)
    assert name not in [s["name"] for s in json.loads(client.list_services().text)]
