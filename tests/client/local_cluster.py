"""The real local OSCAR (`oscar_jupyter.local`: `LocalOscar` behind `server.make_app`), served
in-process on a loopback port for the client tests. Everything OSCAR does (auth, owners, 403s,
listings, pages, logs, deletes, the Keycloak-style token endpoint) is the local OSCAR's own code,
which docs/ARCHITECTURE.md ("The local OSCAR's strictness") ties to OSCAR v4.1.2.

Two parts are the tests' own, and neither answers for OSCAR:

* `ScriptedBatch` stands where Slurm stands (local/executors.py's `Executor` protocol): the pod
  goes through the same translation into a plugin directory, `sbatch` accepts it, and the job
  stays Pending until the test says what it did (`LocalCluster.run` / `finish`), writing the
  container's log (`run-oscar-container.out`) as the supervisor would have.
* `FaultInjector` sits in front of the router and makes the server misbehave on request: forced
  statuses (503s, a 401 on a valid token, a stale 404), a 308 to elsewhere, an ingress that
  drops a header, a careless server or IdP that repeats the credentials it refused. With no
  fault queued it only records each request (`LocalCluster.seen`).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import secrets
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from oscar_jupyter.client import OscarClient
from oscar_jupyter.config import ClusterProfile, Secret
from oscar_jupyter.local import kueue
from oscar_jupyter.local.executors import ExecState
from oscar_jupyter.local.interlink import PluginConfig
from oscar_jupyter.local.oscar import LocalOscar
from oscar_jupyter.local.server import make_app
from oscar_jupyter.local.state import HomeLayout, ensure_admin_password
from oscar_jupyter.local.users import (
    TOKEN_PATH,
    access_token,
    encode,
    ensure_secret,
    issuer,
    refresh_token,
)

ADMIN_USER = "oscar"
NODE = "vk"  # the virtual node's name; runner services ask for it
CONTAINER_LOG = "run-oscar-container.out"  # what the plugin's GetLogs serves after job.out
SETUP_AGENT = "local-cluster-setup"  # the harness's own requests: not recorded
_SETUP = {"User-Agent": SETUP_AGENT}
T = TypeVar("T")

# Slurm's view of a job, as the plugin maps squeue states (local/executors.py).
_SLURM_STATE = {"Pending": "PD", "Running": "R", "Succeeded": "CD", "Failed": "F"}


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int


# --- Slurm's place ------------------------------------------------------------------------


@dataclass
class _BatchJob:
    pod_dir: Path
    phase: str = "Pending"
    exit_code: int | None = None
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ScriptedBatch:
    """The batch system, scripted by the test (module docstring). Thread safe: the server asks
    from its loop and worker threads, the test scripts from its own."""

    kind = "scripted"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _BatchJob] = {}
        self._ids = itertools.count(1)

    def submit(self, pod_dir: Path) -> str:
        with self._lock:
            job_id = f"scripted-{next(self._ids)}"
            self._jobs[job_id] = _BatchJob(Path(pod_dir))
        return job_id

    def state(self, job_id: str, pod_dir: Path) -> ExecState:
        with self._lock:
            job = self._jobs[job_id]
            return ExecState(
                job.phase,
                _SLURM_STATE.get(job.phase),
                job.exit_code,
                job.started_at,
                job.finished_at,
                job.reason,
            )

    def cancel(self, job_id: str, pod_dir: Path | None = None) -> None:
        """scancel: a job that has not ended is cancelled (as the plugin sees `CA`)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.phase in ("Pending", "Running"):
                job.phase, job.exit_code, job.reason = "Failed", 137, "Cancelled"
                job.finished_at = datetime.now(timezone.utc)

    def node_resources(self) -> dict[str, int]:
        return {"cpus": 8, "memory_mib": 16384, "free_cpus": 8, "free_memory_mib": 16384}

    def script(self, job_id: str, phase: str, log: str | None, exit_code: int | None) -> None:
        """The job is now in `phase`; `log` (when given) is its container's whole log so far."""
        with self._lock:
            job = self._jobs[job_id]
            now = datetime.now(timezone.utc)
            if log is not None:
                target = job.pod_dir / CONTAINER_LOG
                temporary = target.with_suffix(".tmp")
                temporary.write_text(log)
                os.replace(temporary, target)
            if phase != "Pending":
                job.started_at = job.started_at or now
            if phase in ("Succeeded", "Failed"):
                job.finished_at = job.finished_at or now
                job.exit_code = exit_code if exit_code is not None else (phase == "Failed") * 1
            job.phase = phase


# --- faults -------------------------------------------------------------------------------


class _ForcedAnswer(tornado.web.RequestHandler):
    """The fault's answer, made once the request's body has been read."""

    def initialize(self, answer: Callable[[Any], tuple[int, str, dict[str, str]]]) -> None:
        self.answer = answer

    def prepare(self) -> None:
        status, text, headers = self.answer(self.request)
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        if text:
            self.set_header("Content-Type", headers.get("Content-Type", "text/plain"))
            self.write(text)
        self.finish()

    def check_xsrf_cookie(self) -> None:
        pass


@dataclass
class FaultInjector:
    """What the server does wrong, set by the test (module docstring)."""

    # (method, path) -> statuses answered, one per request, before the server answers again
    statuses: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    redirect_to: str | None = None  # a 308 for every request, to this base URL
    dropped_headers: set[str] = field(default_factory=set)  # lost on the way in (an ingress)
    echo_credentials: bool = False  # a 401 / an IdP 400 that repeats the credentials sent
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, *statuses: int) -> None:
        with self.lock:
            self.statuses.setdefault((method, path), []).extend(statuses)

    def forced(self, request: Any) -> Callable[[Any], tuple[int, str, dict[str, str]]] | None:
        """How to answer instead of the server (given the request, body read), or None."""
        with self.lock:
            queued = self.statuses.get((request.method, request.path))
            status = queued.pop(0) if queued else None
        if status is not None:
            return lambda _request: (status, f"forced {status}", {})
        if self.redirect_to:
            target = self.redirect_to + request.uri
            return lambda _request: (308, "", {"Location": target})
        if self.echo_credentials and (
            request.path == TOKEN_PATH or request.headers.get("Authorization")
        ):
            return self._echo
        return None

    @staticmethod
    def _echo(request: Any) -> tuple[int, str, dict[str, str]]:
        if request.path == TOKEN_PATH:
            sent = parse_qs(request.body.decode()).get("refresh_token", [""])[0]
            said = json.dumps(
                {"error": "invalid_grant", "error_description": f"Token {sent} is not active"}
            )
            return 400, said, {"Content-Type": "application/json"}
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            return 401, f"invalid credentials {base64.b64decode(auth[6:]).decode()}", {}
        return 401, f"token {auth.removeprefix('Bearer ')} is not valid", {}


# --- the cluster --------------------------------------------------------------------------


class LocalCluster:
    """One local OSCAR on 127.0.0.1 (a free port), in a thread of its own; use as a context
    manager. `requests` holds what the code under test sent (the harness's own set-up calls,
    `admin`, `user_client`, `create_service`, `submit`, are left out). `options` go to
    `LocalOscar` (job_listing_limit, access_token_lifetime, interlink_available, ...)."""

    def __init__(self, home: Path, *, tls: ssl.SSLContext | None = None, **options: Any) -> None:
        self.home = Path(home)
        self.tls = tls
        self.options = {
            "node_name": NODE,
            # Kueue admits every user's jobs at once unless a test says otherwise.
            "kueue_quota": kueue.quota("64", "256Gi", "8"),
            "status_cache_seconds": 0.0,  # a scripted change shows in the next listing
            "real_status": True,  # /system/status as a real cluster's (`local start`'s default)
            **options,
        }
        self.batch = ScriptedBatch()
        self.faults = FaultInjector()
        self.requests: list[Seen] = []
        self._requests_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[tornado.httpserver.HTTPServer] = []
        self._admin: httpx.Client | None = None
        self.oscar: LocalOscar
        self.url = ""
        self.password = ""

    # -- life

    def __enter__(self) -> LocalCluster:
        layout = HomeLayout(self.home)
        layout.create()
        self.password = ensure_admin_password(layout)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        self.oscar = LocalOscar(
            layout,
            password=self.password,
            executor=self.batch,
            executor_reason="scripted by the test",
            runtime_description="none (scripted batch system)",
            plugin_config=PluginConfig(data_root=str(layout.jobs_dir) + "/"),
            supervisor_kit=None,
            oidc_secret=ensure_secret(layout),
            issuer=issuer(self.url),
            **self.options,
        )
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(sockets, started), name="local-oscar", daemon=True
        )
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the in-process local OSCAR did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._admin is not None:
            self._admin.close()
        if self._loop is not None:
            self.call(self._stop_async)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, sockets: list, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self.app = make_app(self.oscar)
        cluster = self

        class Recorder(tornado.web.OutputTransform):
            """Records each request as its answer's first bytes go out (before the client can
            read them, so a test never looks before the record is there)."""

            def __init__(self, request: Any) -> None:
                self.request = request

            def transform_first_chunk(
                self, status_code: int, headers: Any, chunk: bytes, finishing: bool
            ) -> tuple[int, Any, bytes]:
                cluster._record(self.request, status_code)
                return status_code, headers, chunk

        self.app.add_transform(Recorder)
        route = self.app.find_handler
        self.app.find_handler = lambda request, **kwargs: self._route(route, request, **kwargs)
        server = tornado.httpserver.HTTPServer(self.app, ssl_options=self.tls)
        server.add_sockets(sockets)
        self._servers.append(server)
        ticker = tornado.ioloop.PeriodicCallback(self.oscar.tick, 1000)
        ticker.start()
        started.set()
        try:
            loop.run_forever()
        finally:
            ticker.stop()
            loop.close()

    async def _stop_async(self) -> None:
        for server in self._servers:
            server.stop()
        await self.oscar.shutdown()

    def _route(self, route: Callable[..., Any], request: Any, **kwargs: Any) -> Any:
        for name in self.faults.dropped_headers:
            if name in request.headers:
                del request.headers[name]
        answer = self.faults.forced(request)
        if answer is not None:
            return self.app.get_handler_delegate(request, _ForcedAnswer, {"answer": answer})
        return route(request, **kwargs)

    def _record(self, request: Any, status: int) -> None:
        if request.headers.get("User-Agent") == SETUP_AGENT:
            return
        seen = Seen(
            request.method or "",
            request.path,
            parse_qs(request.query),
            {name.lower(): value for name, value in request.headers.get_all()},
            request.body,
            status,
        )
        with self._requests_lock:
            self.requests.append(seen)

    def call(self, function: Callable[[], Any], timeout: float = 30) -> Any:
        """Run `function` on the server's loop thread (where LocalOscar lives); its result."""
        assert self._loop is not None
        done: Future = Future()

        async def run() -> None:
            try:
                result = function()
                if asyncio.iscoroutine(result):
                    result = await result
                done.set_result(result)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                done.set_exception(error)

        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(run()))
        return done.result(timeout)

    def listen_later(self, port: int, delay: float) -> None:
        """Also serve on `port`, from `delay` seconds on (a server that comes up late)."""

        def listen() -> None:
            server = tornado.httpserver.HTTPServer(self.app, ssl_options=self.tls)
            server.add_sockets(tornado.netutil.bind_sockets(port, "127.0.0.1"))
            self._servers.append(server)

        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._loop.call_later(delay, listen))

    # -- what it received

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._requests_lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    # -- people and their credentials

    def basic_profile(self, cluster_id: str = "local-test", **extra: Any) -> ClusterProfile:
        return ClusterProfile(
            cluster_id, self.url, user=ADMIN_USER, password=Secret(self.password), **extra
        )

    def admin_client(self, **kwargs: Any) -> OscarClient:
        return OscarClient(self.basic_profile(), **kwargs)

    @property
    def admin(self) -> httpx.Client:
        """A plain HTTP client with the admin's Basic credentials (for setting things up)."""
        if self._admin is None:
            self._admin = httpx.Client(
                base_url=self.url,
                auth=(ADMIN_USER, self.password),
                headers=_SETUP,
                timeout=30,
                verify=False,
            )
        return self._admin

    def issuer(self) -> str:
        return issuer(self.url)

    def access_token(self, user: str, lifetime: int = 3600) -> str:
        """A valid access token of OIDC user `user` (`sub` `<user>@local`)."""
        return access_token(
            user, iss=self.issuer(), secret=self.oscar.oidc_secret, lifetime=lifetime
        )

    def refresh_token(self, user: str, lifetime: int = 24 * 3600) -> str:
        """A refresh token of `user`, as the local realm issues them (`lifetime` < 0: expired)."""
        return refresh_token(
            user, iss=self.issuer(), secret=self.oscar.oidc_secret, lifetime=lifetime
        )

    def foreign_token(self, user: str, lifetime: int = 3600) -> str:
        """A well-formed access token of `user` this cluster does not accept (another key)."""
        return access_token(user, iss=self.issuer(), secret=b"not-this-cluster", lifetime=lifetime)

    def sign(self, claims: dict[str, Any]) -> str:
        return encode(claims, self.oscar.oidc_secret)

    def user_client(self, user: str) -> httpx.Client:
        """A plain HTTP client with `user`'s bearer token, provisioned; close it."""
        token = self.access_token(user)
        client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", **_SETUP},
            timeout=30,
            verify=False,
        )
        client.get("/system/config").raise_for_status()  # first contact provisions the user
        return client

    def forget_every_session(self) -> None:
        """The identity provider revokes every token (a new realm key): access and refresh
        tokens issued so far are refused from now on."""
        new = secrets.token_urlsafe(32).encode()

        def rotate() -> None:
            self.oscar.oidc_secret = new

        self.call(rotate)

    # -- services and jobs

    def create_service(self, name: str, *, user: str | None = None, **fields: Any) -> dict:
        """Create a service as the admin (or as OIDC `user`); its stored definition."""
        body = {
            "name": name,
            "image": "docker://python:3.11",
            "script": "echo hi\n",
            "interlink_node_name": NODE,
            **fields,
        }
        if user is None:
            self.admin.post("/system/services", json=body).raise_for_status()
        else:
            client = self.user_client(user)
            try:
                client.post("/system/services", json=body).raise_for_status()
            finally:
                client.close()
        return self.admin.get(f"/system/services/{name}").json()

    def submit(self, service: dict, job: str, body: bytes = b"x") -> None:
        """`POST /job` with the service token, naming the job."""
        response = httpx.post(
            f"{self.url}/job/{service['name']}",
            content=body,
            headers={
                "Authorization": f"Bearer {service['token']}",
                "X-Delegated-Job-ID": job,
                **_SETUP,
            },
            verify=False,
        )
        assert response.status_code == 201, response.text

    def job_names(self) -> set[str]:
        """Every job of every service, as the admin lists them."""
        names: set[str] = set()
        for service in self.admin.get("/system/services").json():
            listing = self.admin.get(f"/system/logs/{service['name']}").json()
            names.update(listing.get("jobs") or {})
        return names

    def service_names(self) -> set[str]:
        return {s["name"] for s in self.admin.get("/system/services").json()}

    def job_id(self, job: str, timeout: float = 10) -> str:
        """The batch system's id of `job`, once the server has launched it."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            found = self.call(lambda: (self.oscar.state.jobs.get(job) or {}).get("job_id"))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} was not launched within {timeout} s")
            time.sleep(0.02)

    def run(self, job: str, log: str) -> None:
        """The job's Slurm job runs; its container has written `log` so far."""
        self.batch.script(self.job_id(job), "Running", log, None)

    def finish(
        self, job: str, log: str, *, phase: str = "Succeeded", exit_code: int | None = None
    ) -> None:
        """The batch system reports `phase` (Running: the container is still finishing) and
        the container's log is `log`."""
        self.batch.script(self.job_id(job), phase, log, exit_code)
