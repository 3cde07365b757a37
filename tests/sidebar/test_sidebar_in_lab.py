"""The OSCAR sidebar in JupyterLab (headless Chromium, the built extension, the real server
extension, the local OSCAR on real Slurm): it shows the virtual node and a job submitted from
Python, its output in a log panel on "Log", cancels it on "Cancel" (the Slurm job leaves squeue,
the job stays listed as Cancelled), follows the light and dark themes, and polls only while it
is open.

Screenshots: test-artifacts/sidebar-light.png and sidebar-dark.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import oscar_jupyter
from oscar_jupyter import session as session_module
from oscar_jupyter.local.state import HomeLayout, LocalState

from ..conftest import free_port, slurm_job_ids_alive
from ..jupyterlab import jupyterlab, launch_chromium, require_chromium, set_theme
from .conftest import NODE

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
LABEXTENSION = ROOT / "labextension"
PREBUILT = LABEXTENSION / "prebuilt"
SIDEBAR = "#oscar-jupyter-sidebar"
JOBS_URL_PART = "/oscar-jupyter/api/jobs"


def newest_source_mtime() -> float:
    sources = [
        LABEXTENSION / "package.json",
        LABEXTENSION / "tsconfig.json",
        *(LABEXTENSION / "src").rglob("*"),
        *(LABEXTENSION / "style").rglob("*"),
        *(LABEXTENSION / "schema").rglob("*"),
    ]
    return max(path.stat().st_mtime for path in sources if path.is_file())


@pytest.fixture(scope="session")
def built_labextension() -> Path:
    """labextension/prebuilt, rebuilt with jlpm when a source is newer than the build."""
    marker = PREBUILT / "oscar-jupyter" / "package.json"
    if marker.exists() and marker.stat().st_mtime >= newest_source_mtime():
        return PREBUILT
    jlpm = shutil.which("jlpm")
    if jlpm is None:
        pytest.fail(
            "jlpm is missing (it comes with jupyterlab >= 4): pip install jupyterlab", pytrace=False
        )
    steps = [] if (LABEXTENSION / "node_modules").exists() else [[jlpm, "install"]]
    for step in [*steps, [jlpm, "build:prod"]]:
        result = subprocess.run(step, cwd=LABEXTENSION, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(step)} failed in {LABEXTENSION}:\n{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
    return PREBUILT


@pytest.fixture()
def lab(local_oscar, built_labextension, tmp_path):
    """JupyterLab on loopback (as root) with the sidebar's server extension and the build."""
    require_chromium()
    root = tmp_path / "root"
    root.mkdir()
    # The local OSCAR's profile plus a cluster that is down, to switch between in the picker.
    config = yaml.safe_load(local_oscar.profile_path.read_text())
    config["oscar"]["offline"] = {
        "endpoint": f"http://127.0.0.1:{free_port()}",
        "auth_user": "oscar",
        "auth_password": "offline-secret",
    }
    config_path = tmp_path / "oscar-cli.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OSCAR_CLI_CONFIG": str(config_path)}
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        env.pop(name, None)
    with jupyterlab(
        root,
        tmp_path,
        env,
        [
            "--ServerApp.jpserver_extensions=oscar_jupyter.server=True",
            f"--LabApp.extra_labextensions_path={built_labextension}",
        ],
    ) as served:
        yield served


@pytest.fixture()
def running_job(local_oscar, monkeypatch):
    """A job submitted the way a notebook does, printing a line a second; cancelled at the end."""
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setattr(session_module, "_current", None)
    oscar_jupyter.connect("local")
    job = oscar_jupyter.offload(
        "import sys, time\nfor i in range(300):\n    print(f'tick {i}', flush=True)\n"
        "    if i == 1:\n        print('slow batch', file=sys.stderr, flush=True)\n"
        "    time.sleep(1)\n",
        node=NODE,
        time="00:10:00",
        wait=False,
    )
    yield job
    if not job.is_done():
        job.cancel()


def theme_colours(page) -> dict:
    """The sidebar's computed colours next to the theme variables they must come from."""
    return page.evaluate("""() => {
      const css = getComputedStyle(document.body);
      const probe = document.createElement('div');
      document.body.appendChild(probe);
      const resolve = v => { probe.style.backgroundColor = css.getPropertyValue(v);
                             return getComputedStyle(probe).backgroundColor; };
      const sidebar = document.querySelector('#oscar-jupyter-sidebar');
      const badge = sidebar.querySelector('.oj-sidebar-job .oj-sidebar-badge');
      const out = { layout1: resolve('--jp-layout-color1'), brand: resolve('--jp-brand-color1'),
                    panel: getComputedStyle(sidebar).backgroundColor,
                    badge: getComputedStyle(badge).backgroundColor,
                    text: getComputedStyle(sidebar).color };
      probe.style.backgroundColor = '';
      probe.style.color = css.getPropertyValue('--jp-ui-font-color1');
      out.font1 = getComputedStyle(probe).color;
      probe.remove();
      return out; }""")


def test_sidebar_lists_node_and_job_shows_its_log_and_cancels_it(
    lab, running_job, local_oscar, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    job = running_job
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw, tmp_path / "chromium", 1400, 900)
        try:
            page = browser.new_page()
            job_requests: list[float] = []
            page.on(
                "request",
                lambda r: (
                    job_requests.append(time.monotonic())
                    if JOBS_URL_PART in r.url and r.method == "GET"
                    else None
                ),
            )
            page.goto(f"{url}/lab/workspaces/oj-sidebar?reset&token={token}")
            tab = page.locator(f'.jp-SideBar [data-id="{SIDEBAR[1:]}"]')
            expect(tab).to_be_visible(timeout=60_000)
            sidebar = page.locator(SIDEBAR)
            expect(sidebar).to_be_hidden()
            page.wait_for_timeout(4000)
            assert job_requests == [], "the sidebar polls while it is closed"

            tab.click()
            expect(sidebar).to_be_visible()
            expect(sidebar.locator(".oj-sidebar-picker")).to_have_value("local")
            expect(sidebar.locator(".oj-sidebar-endpoint")).to_have_text(local_oscar.endpoint)
            node_row = sidebar.locator(f'.oj-sidebar-node[data-node="{NODE}"]')
            expect(node_row).to_contain_text("Ready")
            row = sidebar.locator(f'.oj-sidebar-job[data-job="{job.name}"]')
            expect(row.locator(".oj-sidebar-status-Running")).to_be_visible(timeout=90_000)
            expect(row).to_contain_text(NODE)
            # Refreshed while open: the duration of the running job grows.
            duration = row.locator(".oj-sidebar-duration")
            first = duration.inner_text()
            expect(duration).not_to_have_text(first, timeout=15_000)

            # "Log" opens a panel with the cell's own output lines, stderr marked, nothing of
            # the wrapper.
            page.wait_for_timeout(2000)
            row.get_by_role("button", name="Log").click()
            panel = page.locator(".oj-logpanel")
            expect(panel.locator(".oj-sidebar-log-stdout").first).to_have_text("tick 0\n")
            expect(panel.locator(".oj-sidebar-log-stderr")).to_have_text("slow batch\n")
            assert "supervisor" not in panel.inner_text()
            page.evaluate("window.jupyterapp.shell.currentWidget.close()")
            expect(panel).to_have_count(0)

            colours = {}
            for theme in ("light", "dark"):
                if theme == "dark":
                    set_theme(page, "dark")
                colours[theme] = theme_colours(page)
                found = colours[theme]
                assert found["panel"] == found["layout1"], found
                assert found["text"] == found["font1"], found
                assert found["badge"] == found["brand"], found
                sidebar.screenshot(path=str(ARTIFACTS / f"sidebar-{theme}.png"))
                page.screenshot(path=str(ARTIFACTS / f"lab-sidebar-{theme}.png"))
                # Nothing is cut off: the sidebar needs no horizontal scrolling.
                overflow = sidebar.evaluate("e => e.scrollWidth - e.clientWidth")
                assert overflow <= 1, f"the sidebar overflows its width by {overflow}px"
            assert colours["light"]["panel"] != colours["dark"]["panel"]

            # Cancel, confirmed in the dialog: the Slurm job leaves squeue, the row stays as
            # Cancelled.
            state = LocalState(HomeLayout(local_oscar.home).state_file)
            slurm_id = str(state.jobs[job.name]["job_id"])
            assert slurm_job_ids_alive([slurm_id]) == [slurm_id]
            row.get_by_role("button", name="Cancel").click()
            page.locator(".jp-Dialog").get_by_role("button", name="Cancel job").click()
            expect(row.locator(".oj-sidebar-status-Cancelled")).to_be_visible(timeout=30_000)
            deadline = time.monotonic() + 20  # scancel is asynchronous (CG state)
            while slurm_job_ids_alive([slurm_id]) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert slurm_job_ids_alive([slurm_id]) == []
            expect(sidebar.locator(".oj-sidebar-error")).to_be_hidden()

            # Another cluster from the picker: it is down, and the sidebar says so.
            picker = sidebar.locator(".oj-sidebar-picker")
            picker.select_option("offline")
            error = sidebar.locator(".oj-sidebar-error")
            expect(error).to_contain_text("Cannot reach OSCAR at http://127.0.0.1:")
            assert "offline-secret" not in sidebar.inner_text()
            expect(sidebar.locator(f'.oj-sidebar-node[data-node="{NODE}"]')).to_have_count(0)
            picker.select_option("local")
            expect(error).to_be_hidden()
            expect(node_row).to_contain_text("Ready")

            # Closed again: no more polling.
            tab.click()
            expect(sidebar).to_be_hidden()
            page.wait_for_timeout(500)
            count = len(job_requests)
            page.wait_for_timeout(7000)
            assert len(job_requests) == count, "the sidebar keeps polling after it was closed"
        finally:
            browser.close()
