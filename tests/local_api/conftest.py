"""Clients and service factories for the local OSCAR's API tests (see tests/conftest.py)."""

from __future__ import annotations

import itertools
import time
import uuid

import httpx
import pytest

from .contract import check_response

_counter = itertools.count(1)


@pytest.fixture
def api(local_oscar):
    """A client with the admin's Basic credentials."""
    with httpx.Client(
        base_url=local_oscar.endpoint, auth=(local_oscar.user, local_oscar.password), timeout=30
    ) as client:
        yield client


def _user(local_oscar, name: str):
    with local_oscar.user_client(name) as client:
        client.get("/system/config")  # first contact provisions the user (oidc.go)
        yield client


@pytest.fixture
def alice(local_oscar):
    """A client with OIDC user alice's bearer token."""
    yield from _user(local_oscar, "alice")


@pytest.fixture
def bob(local_oscar):
    yield from _user(local_oscar, "bob")


@pytest.fixture
def anonymous(local_oscar):
    with httpx.Client(base_url=local_oscar.endpoint, timeout=30) as client:
        yield client


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_service(api):
    """Create a service (checked against the contract) and return its stored definition."""
    created: list[str] = []

    def make(**fields) -> dict:
        body = {
            "name": unique_name(),
            "image": "docker://python:3.11-slim",
            "script": "echo hello\n",
            "log_level": "DEBUG",
            "interlink_node_name": "local-slurm",
            **fields,
        }
        response = api.post("/system/services", json=body)
        assert response.status_code == 201, response.text
        check_response(response, "POST", "/system/services")
        created.append(body["name"])
        return api.get(f"/system/services/{body['name']}").json()

    yield make
    for name in created:
        api.delete(f"/system/services/{name}")


def submit(client: httpx.Client, service: dict, body: bytes = b"", job: str | None = None):
    headers = {"Authorization": f"Bearer {service['token']}"}
    if job:
        headers["X-Delegated-Job-ID"] = job
    return client.post(f"/job/{service['name']}", content=body, headers=headers)


def job_status(api: httpx.Client, service: str, job: str) -> dict:
    response = api.get(f"/system/logs/{service}")
    listing = check_response(response, "GET", "/system/logs/{serviceName}")
    return listing["jobs"].get(job, {})


def wait_for_status(api, service: str, job: str, wanted: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        info = job_status(api, service, job)
        if info.get("status") in wanted:
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not reach {wanted} in {timeout} s; last {info}")
