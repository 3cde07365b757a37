"""Fixtures for the client tests: the fake OSCAR server on loopback and a clean environment."""

from __future__ import annotations

import ssl
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for fake_oscar_server (unique module name)

from fake_oscar_server import FakeOscar, OscarHandler  # noqa: E402


def _serve(tls: ssl.SSLContext | None = None):
    state = FakeOscar()
    handler = type("Handler", (OscarHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return state, server


@pytest.fixture
def fake_oscar():
    state, server = _serve()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def fake_oscar_tls(self_signed_cert):
    """The same server behind TLS with a self-signed certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_cert)
    state, server = _serve(context)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No OSCAR_* variable and no real ~/.oscar-cli leaks into a test."""
    for name in (
        "OSCAR_CLI_CONFIG",
        "OSCAR_ENDPOINT",
        "OSCAR_USER",
        "OSCAR_PASSWORD",
        "OSCAR_TOKEN",
        "OSCAR_SSL_VERIFY",
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
