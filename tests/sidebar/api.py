"""Calling the sidebar's REST API from a test's jupyter_server (pytest-jupyter's `jp_fetch`)."""

from __future__ import annotations

import asyncio
import json
import time

from tornado.httpclient import HTTPClientError

API = ("oscar-jupyter", "api")


async def call(
    jp_fetch, *path: str, method: str = "GET", body: dict | None = None, **params: str
) -> tuple[int, dict]:
    """(status, JSON body) of one API call; error answers are returned, not raised."""
    try:
        response = await jp_fetch(
            *API,
            *path,
            method=method,
            params=params or None,
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as err:
        assert err.response is not None, err
        return err.code, json.loads(err.response.body)
    return response.code, json.loads(response.body)


async def wait_for_job(
    jp_fetch, name: str, statuses: tuple[str, ...], timeout: float = 300, **params: str
) -> dict:
    """The job's sidebar entry once its status is one of `statuses`; the Slurm is shared, so
    a job may wait behind others' for minutes."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        code, body = await call(jp_fetch, "jobs", **params)
        assert code == 200, body
        entry = next((j for j in body["jobs"] if j["job"] == name), None)
        seen = entry and entry["status"]
        if entry is not None and entry["status"] in statuses:
            return entry
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {name} never reached {statuses} (last seen: {seen})")
