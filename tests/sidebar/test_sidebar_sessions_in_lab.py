"""Persistent sessions in the sidebar (issue 20), in JupyterLab in headless Chromium against the
local OSCAR on real Slurm, as a user meets them: two notebooks connected as alice and bob each
start a session; the Sessions section lists only the session of the user whose notebook is in
front (name, state, node, time left, idle time, cells), Stop asks first, then ends it (its card
goes), and the notebook's next cell in that session says the sidebar stopped it. A kernel that
restarts leaves its session running, and JupyterLab asks whether to keep it or stop it.

Screenshot: test-artifacts/sidebar-sessions.png.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from ..jupyterlab import launch_chromium, open_notebook
from .conftest import NODE
from .lab import sidebar_lab
from .test_sidebar_in_lab import built_labextension  # noqa: F401 (a fixture)
from .test_sidebar_scale_in_lab import focus_notebook
from .test_sidebar_views_in_lab import picker_shows, run_all, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SIDEBAR = "#oscar-jupyter-sidebar"
START = f"%oscar_session start {{}} --node {NODE} --time 00:05:00 --mem 1G"
ALICE_CELLS = [
    "%load_ext oscar_jupyter\n%oscar_connect local-alice",
    START.format("s1"),
    "%%oscar_offload --session s1\nx = 41",
]
BOB_CELLS = ["%load_ext oscar_jupyter\n%oscar_connect local-bob", START.format("bob1")]
CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")


def api(url: str, token: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(
        f"{url}/oscar-jupyter/api/{path}",
        headers={"Authorization": f"token {token}"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


@pytest.fixture()
def sessions_lab(local_oscar, built_labextension, tmp_path):  # noqa: F811
    notebooks = {"alice.ipynb": ALICE_CELLS, "bob.ipynb": BOB_CELLS}
    with sidebar_lab(local_oscar, built_labextension, tmp_path, notebooks) as served:
        try:
            yield served
        finally:  # a session left by a failed step: stopped, so no test after sees it
            url, token = served
            for profile in local_oscar.user_profiles.values():
                for row in api(url, token, f"sessions?cluster={profile}")["sessions"]:
                    api(url, token, f"sessions/{row['job']}?cluster={profile}", "DELETE")


def run_in_kernel(page, code: str) -> str:
    """Runs `code` in the kernel of the notebook in front; its error's text ('' if none)."""
    return page.evaluate(
        """async code => {
          const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
          const future = kernel.requestExecute({code});
          let error = '';
          future.onIOPub = msg => {
            if (msg.header.msg_type === 'error')
              error = msg.content.ename + ': ' + msg.content.evalue
                + '\\n' + msg.content.traceback.join('\\n');
          };
          await future.done;
          return error; }""",
        code,
    )


def test_the_sidebar_lists_each_users_sessions_and_stops_one(sessions_lab, local_oscar, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, token = sessions_lab
    alice, bob = local_oscar.user_profiles["alice"], local_oscar.user_profiles["bob"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw, tmp_path / "chromium", 1400, 900)
        try:
            page = browser.new_page()
            open_notebook(page, url, token, "oj-sessions", "alice.ipynb")
            run_all(page)
            wait_idle(page, "alice.ipynb", timeout=300_000)
            focus_notebook(page, "bob.ipynb")
            run_all(page)
            wait_idle(page, "bob.ipynb", timeout=300_000)

            page.locator('.jp-SideBar [data-id="oscar-jupyter-sidebar"]').click()
            sidebar = page.locator(SIDEBAR)
            expect(sidebar).to_be_visible()
            cards = sidebar.locator(".oj-sidebar-session")

            # bob's notebook in front: bob's session only.
            picker_shows(sidebar, bob)
            expect(cards).to_have_count(1, timeout=30_000)
            bob1 = cards.first
            expect(bob1).to_have_attribute("data-session", "bob1")
            expect(bob1).to_have_attribute("data-state", "idle")
            expect(bob1.locator(".oj-sidebar-name")).to_have_text("bob1")

            # alice's notebook in front: alice's session only, as her kernel counts it.
            focus_notebook(page, "alice.ipynb")
            picker_shows(sidebar, alice)
            s1 = sidebar.locator('.oj-sidebar-session[data-session="s1"]')
            expect(s1).to_have_count(1, timeout=30_000)
            expect(cards).to_have_count(1)
            expect(s1).to_have_attribute("data-state", "idle")
            expect(s1.locator(".oj-sidebar-session-node .oj-sidebar-value")).to_have_text(NODE)
            left = s1.locator(".oj-sidebar-session-left .oj-sidebar-value").text_content()
            assert left and CLOCK.match(left) and "00:00:00" < left <= "00:05:00", left
            idle = s1.locator(".oj-sidebar-session-idle .oj-sidebar-value").text_content()
            assert idle and CLOCK.match(idle), idle
            expect(s1.locator(".oj-sidebar-session-cells .oj-sidebar-value")).to_have_text("1")
            sidebar.screenshot(path=str(ARTIFACTS / "sidebar-sessions.png"))

            # Stop asks first; "Keep it" keeps it.
            stop = s1.get_by_role("button", name="Stop")
            stop.click()
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("Stop session s1?")
            dialog.get_by_role("button", name="Keep it").click()
            expect(dialog).to_have_count(0)
            expect(s1).to_have_count(1)
            # Stop: the card goes once its Slurm job has ended.
            stop.click()
            dialog.get_by_role("button", name="Stop session").click()
            expect(cards).to_have_count(0, timeout=60_000)
            expect(sidebar.locator(".oj-sidebar-sessionlist")).to_have_text(
                "No sessions. Start one with %oscar_session start NAME."
            )
            # The notebook's next cell in it says so, at once.
            error = run_in_kernel(page, "%%oscar_offload --session s1\nprint(x)")
            assert "session s1 has ended (cancelled by the sidebar" in error, error
            assert "%oscar_session start s1" in error

            # bob's session is still there. His kernel restarts: the session keeps its
            # allocation, and JupyterLab asks whether to keep it or stop it.
            focus_notebook(page, "bob.ipynb")
            picker_shows(sidebar, bob)
            expect(cards).to_have_count(1, timeout=30_000)
            expect(bob1).to_have_attribute("data-state", "idle")
            page.evaluate("""() => window.jupyterapp.shell.currentWidget
                                     .sessionContext.session.kernel.restart()""")
            toast = page.locator(".Toastify__toast", has_text="still holds its allocation")
            expect(toast).to_have_count(1, timeout=30_000)
            expect(toast).to_contain_text(
                f"bob.ipynb's kernel restarted: session bob1 still holds its allocation on {NODE} ("
            )
            expect(toast).to_contain_text(" left). Keep it or stop it?")
            assert "alice" not in (toast.text_content() or "")  # only that kernel's sessions
            expect(cards).to_have_count(1)  # the restart itself stopped nothing
            toast.get_by_role("button", name="Stop bob1").click()
            expect(cards).to_have_count(0, timeout=60_000)
            assert api(url, token, f"sessions?cluster={bob}")["sessions"] == []
        finally:
            browser.close()
