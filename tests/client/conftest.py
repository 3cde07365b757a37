"""Fixtures for the client tests: the real local OSCAR in-process on loopback (local_cluster.py)
and a clean environment."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from .local_cluster import LocalCluster


@pytest.fixture
def make_cluster(tmp_path):
    """make(**options) -> a running LocalCluster (options go to LocalOscar); stopped at the end."""
    made: list[LocalCluster] = []

    def make(tls: ssl.SSLContext | None = None, **options) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"oscar-{len(made)}", tls=tls, **options)
        cluster.__enter__()
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.__exit__(None, None, None)


@pytest.fixture
def cluster(make_cluster) -> LocalCluster:
    """The local OSCAR with its defaults (pages of 70, Kueue admitting everything)."""
    return make_cluster()


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
def cluster_tls(self_signed_cert, make_cluster) -> LocalCluster:
    """The same server behind TLS with a self-signed certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_cert)
    return make_cluster(tls=context)


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
