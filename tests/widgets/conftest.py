"""Widget tests without a browser: ipywidgets on comm's DummyComm, a real OscarClient talking
HTTP on loopback to a small OSCAR job-log endpoint, real Jobs, a real Poller."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest

from oscar_jupyter import session as session_module
from oscar_jupyter.client import OscarClient
from oscar_jupyter.config import ClusterProfile
from oscar_jupyter.jobs import Job
from oscar_jupyter.nodes import VirtualNode
from oscar_jupyter.spec import OffloadSpec

from .. import wire


class JobLogEndpoint:
    """What OSCAR's `/system/logs` answers for a few jobs; tests change it as jobs progress."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listing: dict[str, dict[str, dict]] = {}  # service -> job -> entry
        self.logs: dict[str, str] = {}
        self.deleted: list[str] = []
        self.fail_delete_with: int | None = None

    def add_job(self, service: str, name: str, status: str = "Pending") -> None:
        with self.lock:
            self.listing.setdefault(service, {})[name] = {"status": status}
            self.logs.setdefault(name, "")

    def start(self, service: str, name: str, node: str, started_ago: float = 5.0) -> None:
        start = datetime.now(timezone.utc) - timedelta(seconds=started_ago)
        with self.lock:
            self.listing[service][name].update(
                status="Running", start_time=start.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            stamp = int(start.timestamp())  # the runner's own clock starts the elapsed time
            self.logs[name] += wire.start(node, name, time=str(stamp)) + "\n"

    def print(self, name: str, *lines: str, stream: str = "o") -> None:
        with self.lock:
            seq = self.logs[name].count(f"@@OJ|{stream}|")
            for offset, text in enumerate(lines, start=1):
                self.logs[name] += wire.record(stream, seq + offset, text) + "\n"

    def finish(
        self, service: str, name: str, exit_code: int = 0, usage: dict | None = None
    ) -> None:
        with self.lock:
            if usage is not None:  # what the runner measured, just before its exit record
                self.logs[name] += wire.usage_line(usage) + "\n"
            self.logs[name] += wire.exit_line(exit_code) + "\n"
            entry = self.listing[service][name]
            entry["status"] = "Succeeded"
            entry["finish_time"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handler(endpoint: JobLogEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

        def _answer(self, code: int, body: str = "", kind: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _parts(self) -> list[str] | None:
            if not self.headers.get("Authorization", "").startswith("Basic "):
                self._answer(401, "unauthorized")
                return None
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            if parts[:2] != ["system", "logs"] or len(parts) not in (3, 4):
                self._answer(404, "not found")
                return None
            return parts[2:]

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = self._parts()
            if parts is None:
                return
            with endpoint.lock:
                if len(parts) == 1:
                    body = json.dumps(endpoint.listing.get(parts[0], {}))
                    return self._answer(200, body, "application/json")
                if parts[1] not in endpoint.logs:
                    return self._answer(404, "job not found")
                return self._answer(200, endpoint.logs[parts[1]])

        def do_DELETE(self) -> None:  # noqa: N802
            parts = self._parts()
            if parts is None or len(parts) != 2:
                return
            with endpoint.lock:
                if endpoint.fail_delete_with:
                    return self._answer(endpoint.fail_delete_with, "the cluster said no")
                endpoint.deleted.append(parts[1])
                endpoint.listing.get(parts[0], {}).pop(parts[1], None)
            self._answer(204)

    return Handler


@pytest.fixture()
def oscar_logs():
    """(endpoint, client): a real OscarClient against a loopback HTTP server."""
    endpoint = JobLogEndpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    profile = ClusterProfile(
        cluster_id="widget-tests",
        endpoint=f"http://127.0.0.1:{server.server_port}",
        user="oscar",
        password="not-a-real-password",
    )
    client = OscarClient(profile, retries=0)
    try:
        yield endpoint, client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


@pytest.fixture()
def session(monkeypatch):
    """A fresh real Session as `session.current()`, with two listed nodes and no cluster call."""
    fresh = session_module.Session()
    monkeypatch.setattr(session_module, "_current", fresh)
    listed = [
        VirtualNode("vega", "Ready", 64.0, 12.0, 256 * 2**30, 100 * 2**30, 4, True),
        VirtualNode("leonardo", "NotReady", 32.0, 0.0, 128 * 2**30, 0, 0, True),
        VirtualNode("worker-1", "Ready", 8.0, 6.0, 16 * 2**30, 8 * 2**30, 0, False),
    ]
    fresh.listed_nodes = listed

    def nodes(refresh: bool = True) -> list[VirtualNode]:
        fresh._nodes = list(fresh.listed_nodes)
        fresh._node_names = [n.name for n in fresh._nodes if n.is_interlink]
        fresh.nodes_source = "OSCAR"
        return list(fresh._nodes)

    fresh.nodes = nodes
    return fresh


@pytest.fixture()
def make_job(oscar_logs, tmp_path):
    endpoint, client = oscar_logs

    def make(name: str = "oj-widgets-0001", service: str = "oj-widgets", **spec) -> Job:
        endpoint.add_job(service, name)
        spec.setdefault("node", "vega")
        spec.setdefault("time", "00:10:00")
        # Submitted a while ago, so that a start `started_ago` seconds back is after it.
        submitted = datetime.now(timezone.utc) - timedelta(minutes=10)
        return Job(
            client,
            service,
            name,
            OffloadSpec(**spec),
            log_dir=tmp_path / "logs",
            submitted_at=submitted,
        )

    return make
