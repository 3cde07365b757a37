"""JupyterLab on loopback for the browser tests (MACHINE.md "Browser tests"): as root, its own
settings (no news toast) and workspaces, stopped with every kernel it started."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright, profile: Path, width: int, height: int):
    """Headless Debian Chromium with a fresh profile (never Playwright's own download)."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height},
    )


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)


@contextmanager
def jupyterlab(
    root: Path, scratch: Path, env: dict[str, str], extra_args: list[str] = ()
) -> Iterator[tuple[str, str]]:
    """Serve `root`; yields (url, token). `scratch` holds its settings, workspaces and log."""
    settings = scratch / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **env,
        "JUPYTERLAB_SETTINGS_DIR": str(scratch / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces"),
    }
    port, token = free_port(), secrets.token_hex(16)
    log_path = scratch / "lab.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",
                f"--port={port}",
                "--ip=127.0.0.1",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
                *extra_args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail("JupyterLab did not start:\n" + log_path.read_text(), pytrace=False)
                time.sleep(0.3)
        try:
            yield url, token
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def open_notebook(page, url: str, token: str, workspace: str, path: str) -> None:
    """Opens `path` in a fresh workspace; returns once its kernel is idle."""
    from playwright.sync_api import expect

    page.goto(f"{url}/lab/workspaces/{workspace}/tree/{path}?reset&token={token}")
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)


def set_theme(page, theme: str) -> None:
    """JupyterLab's light or dark theme, applied."""
    from playwright.sync_api import expect

    name = "JupyterLab Dark" if theme == "dark" else "JupyterLab Light"
    page.evaluate(
        f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{name}'}})"
    )
    expect(
        page.locator(f"body[data-jp-theme-light='{'false' if theme == 'dark' else 'true'}']")
    ).to_have_count(1, timeout=30_000)
    page.wait_for_timeout(1000)
