"""REST handlers of the sidebar under ``<base_url>/oscar-jupyter/api/``.

Every verb is behind Jupyter's own authentication. OSCAR is called from a worker thread, so a slow
cluster never blocks the Jupyter server's event loop. Errors are JSON ``{"message": ...}`` with
the ConfigError or OscarError text, which never holds a secret.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..client import OscarError
from ..config import ConfigError
from ..jobs import CancelRefused
from .backend import JobNotFound, SidebarBackend

API_ROOT = "oscar-jupyter/api"
# Service and job names are DNS-1123; anything else is rejected by OscarClient with a clear message.
_NAME = r"[^/]+"


def http_status_for(error: Exception) -> int:
    """400 for what the user must fix here, 404 for what OSCAR does not know, 502 for OSCAR."""
    if isinstance(error, OscarError):
        if error.status_code == 404:
            return 404
        return 502
    if isinstance(error, CancelRefused):
        return error.status
    if isinstance(error, JobNotFound):
        return 404
    return 400


class SidebarHandler(APIHandler):
    """Runs one backend call off the event loop and answers its result or its error as JSON."""

    def initialize(self, backend: SidebarBackend) -> None:
        self.backend = backend

    @property
    def cluster(self) -> str | None:
        return self.get_query_argument("cluster", None) or None

    @property
    def root_dir(self) -> str | None:
        """The Jupyter root: notebook paths in job labels are made relative to it."""
        root = self.settings.get("server_root_dir")
        return str(root) if root else None

    async def answer(self, call: Callable[..., dict[str, Any]], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, functools.partial(call, *args))
        except (ConfigError, OscarError, ValueError, CancelRefused, JobNotFound) as err:
            self.set_status(http_status_for(err))
            self.finish({"message": str(err), "error": type(err).__name__})
            return
        self.finish(result)


class ClustersHandler(SidebarHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(self.backend.clusters)


class NodesHandler(SidebarHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(self.backend.nodes, self.cluster)


class ConnectionHandler(SidebarHandler):
    """GET connection?notebook=<path relative to the root>: the cluster its kernel connected as."""

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(
            self.backend.connection, self.get_query_argument("notebook", ""), self.root_dir
        )


class JobsHandler(SidebarHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(
            self.backend.jobs,
            self.cluster,
            self.get_query_argument("scope", None) or "all",
            self.root_dir,
        )


class JobHandler(SidebarHandler):
    @tornado.web.authenticated
    async def delete(self, service: str, job: str) -> None:
        await self.answer(self.backend.cancel, self.cluster, service, job)


class JobLogHandler(SidebarHandler):
    @tornado.web.authenticated
    async def get(self, service: str, job: str) -> None:
        text = self.get_query_argument("since", None) or "0"
        try:
            since = int(text)
        except ValueError:
            since = -1
        if since < 0:
            self.set_status(400)
            self.finish(
                {
                    "message": f"since={text!r}: give the number of lines you already have "
                    "(the `next` of the previous answer), 0 or more",
                    "error": "ValueError",
                }
            )
            return
        await self.answer(self.backend.log, self.cluster, service, job, since)


class CleanupHandler(SidebarHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.set_status(400)
            self.finish(
                {
                    "message": 'the body must be a JSON object: {"scope": "notebook", '
                    '"mine" or "jobs", "notebook": path or null, "jobs": names or null, '
                    '"dry_run": true or false}',
                    "error": "ValueError",
                }
            )
            return
        dry_run = body.get("dry_run")
        if not isinstance(dry_run, bool):  # never delete on a request that did not say so
            self.set_status(400)
            self.finish(
                {
                    "message": f"dry_run {json.dumps(dry_run)}: write true (count only) "
                    "or false (delete)",
                    "error": "ValueError",
                }
            )
            return
        notebook = body.get("notebook")
        jobs = body.get("jobs")
        await self.answer(
            self.backend.cleanup,
            self.cluster,
            str(body.get("scope") or ""),
            notebook if isinstance(notebook, str) else None,
            dry_run,
            self.root_dir,
            jobs if isinstance(jobs, list) else None,
        )


class SessionsHandler(SidebarHandler):
    """GET sessions?cluster=[&kernel=]: the persistent sessions of the cluster's user (those one
    Jupyter kernel started, with `kernel`)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        kernel = self.get_query_argument("kernel", None) or None
        await self.answer(self.backend.sessions, self.cluster, kernel)


class SessionHandler(SidebarHandler):
    """DELETE sessions/<job>?cluster=: stop that session of the cluster's user."""

    @tornado.web.authenticated
    async def delete(self, job: str) -> None:
        await self.answer(self.backend.stop_session, self.cluster, job)


def route_table(base_url: str, backend: SidebarBackend) -> list[tuple[str, type, dict]]:
    root = url_path_join(base_url, API_ROOT)
    options = {"backend": backend}
    return [
        (url_path_join(root, "clusters"), ClustersHandler, options),
        (url_path_join(root, "nodes"), NodesHandler, options),
        (url_path_join(root, "connection"), ConnectionHandler, options),
        (url_path_join(root, "jobs"), JobsHandler, options),
        (url_path_join(root, "cleanup"), CleanupHandler, options),
        (url_path_join(root, "sessions"), SessionsHandler, options),
        (url_path_join(root, "sessions", f"({_NAME})"), SessionHandler, options),
        (url_path_join(root, "jobs", f"({_NAME})", f"({_NAME})"), JobHandler, options),
        (url_path_join(root, "jobs", f"({_NAME})", f"({_NAME})", "log"), JobLogHandler, options),
    ]
