"""Job views that keep their word (issue 22), in JupyterLab in headless Chromium against the local
OSCAR on real Slurm, as a user meets them:

- Two notebooks connected as two users (alice and bob, `%oscar_connect local-alice` /
  `local-bob`): the sidebar's cluster follows the notebook in front, so "This notebook" lists that
  notebook's jobs, and follows it again when the notebook connects again.
- alice holds one of her two CPUs of Kueue quota; a 2-CPU job sent next must wait while a 1-CPU
  job sent after it starts at once. The list stays in submission order, newest first.
- bob's cell sends a sweep of six jobs: one group row with counts by state, opening to its jobs by
  short id (the whole id in the tooltip and copied on a click), sorted by state or duration,
  found by a text filter, and selected all at once to cancel, then to clean up.
- A Cancel button in a cell's output (the HTML a --no-wait job's view renders) cancels its job
  through the server while the kernel is busy with another cell: "Cancelling…" at once.

No step depends on the queue's timing: the tests pass with other jobs queued on the same Slurm.

Screenshots: test-artifacts/sidebar-sweep-{light,dark}.png, sidebar-follows-alice.png.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell

from oscar_jupyter.local.state import HomeLayout, LocalState

from ..conftest import slurm_job_ids_alive
from ..jupyterlab import launch_chromium, open_notebook, set_theme
from .conftest import NODE
from .lab import notebook, sidebar_lab
from .test_sidebar_in_lab import built_labextension  # noqa: F401 (a fixture)
from .test_sidebar_scale_in_lab import check_rows_fit, focus_notebook, shown_jobs

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SIDEBAR = "#oscar-jupyter-sidebar"
OFFLOAD = f"%%oscar_offload --node {NODE} --time 00:06:00"
SLEEPS = "import time\ntime.sleep(300)\n"
# alice: X holds 1 of her 2 CPUs; A (2 CPUs) waits in Kueue; B (1 CPU), sent last, starts.
ALICE_CELLS = [
    "%load_ext oscar_jupyter\n%oscar_connect local-alice",
    f"{OFFLOAD} --cpus-per-task 1 --no-wait\nlabel = 'hold-x'\n{SLEEPS}",
    f"{OFFLOAD} --cpus-per-task 2 --no-wait\nlabel = 'big-a'\nprint('a')\n",
    f"{OFFLOAD} --cpus-per-task 1 --no-wait\nlabel = 'small-b'\nprint('b')\n",
]
# bob: a sweep of six jobs from one cell; with 2 CPUs of Kueue quota, two go to Slurm (to run, or
# to wait there behind others' jobs) and four wait in Kueue. None ends by itself.
SWEEP = (
    "import oscar_jupyter\n"
    "sweep = [\n"
    f"    oscar_jupyter.offload({SLEEPS!r}, node={NODE!r}, time='00:06:00', wait=False)\n"
    "    for point in range(6)\n"
    "]\n"
)
BOB_CELLS = ["%load_ext oscar_jupyter\n%oscar_connect local-bob", SWEEP]
STATE_RANK = ["Running", "Pending", "Queued", "Suspended", "Failed", "Cancelled", "Succeeded"]


@pytest.fixture()
def views_lab(local_oscar, built_labextension, tmp_path):  # noqa: F811
    notebooks = {"alice.ipynb": ALICE_CELLS, "bob.ipynb": BOB_CELLS}
    with sidebar_lab(local_oscar, built_labextension, tmp_path, notebooks) as served:
        yield served


def api(url: str, token: str, path: str) -> dict:
    """A GET of the sidebar's API, as the page would make it."""
    request = urllib.request.Request(
        f"{url}/oscar-jupyter/api/{path}", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def run_all(page) -> None:
    """Runs every cell of the notebook in front, without waiting for them to end."""
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_idle(page, path: str, timeout: float = 120_000) -> None:
    """The notebook at `path` is in front and its kernel ran every cell (idle again)."""
    page.wait_for_function(
        """p => { const w = window.jupyterapp.shell.currentWidget;
                  return w?.context?.path === p
                    && w.sessionContext?.session?.kernel?.status === 'idle'
                    && [...w.content.widgets].every(c => c.model.type !== 'code'
                         || (c.model.executionCount !== null
                             && !c.node.querySelector('.jp-InputPrompt')
                                   ?.textContent.includes('*'))); }""",
        arg=path,
        timeout=timeout,
    )


def picker_shows(sidebar, cluster: str) -> None:
    from playwright.sync_api import expect

    expect(sidebar.locator(".oj-sidebar-picker")).to_have_value(cluster, timeout=30_000)


def group_counts(text: str) -> dict[str, int]:
    """'2 running, 2 suspended, 2 succeeded (…)' -> {'running': 2, ...}."""
    return {word: int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", text.split(" (")[0])}


def test_the_sidebar_follows_each_notebooks_user_and_groups_a_sweep(
    views_lab, local_oscar, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    url, token = views_lab
    alice, bob = local_oscar.user_profiles["alice"], local_oscar.user_profiles["bob"]
    ARTIFACTS.mkdir(exist_ok=True)
    began = time.monotonic()

    def stage(name: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {name}", flush=True)

    with sync_playwright() as pw:
        browser = launch_chromium(pw, tmp_path / "chromium", 1500, 950)
        browser.grant_permissions(["clipboard-read", "clipboard-write"])
        try:
            page = browser.new_page()
            open_notebook(page, url, token, "oj-views", "alice.ipynb")
            run_all(page)
            wait_idle(page, "alice.ipynb")
            focus_notebook(page, "bob.ipynb")
            run_all(page)
            wait_idle(page, "bob.ipynb")
            stage("both notebooks connected and submitted")

            page.locator('.jp-SideBar [data-id="oscar-jupyter-sidebar"]').click()
            sidebar = page.locator(SIDEBAR)
            expect(sidebar).to_be_visible()
            sidebar.get_by_role("button", name="This notebook", exact=True).click()

            # bob.ipynb is in front: the sidebar shows bob's cluster, not the default "local".
            picker_shows(sidebar, bob)
            follow = sidebar.locator(".oj-sidebar-follow")
            expect(follow).to_have_text(f"bob.ipynb is connected as {bob}")
            group = sidebar.locator('.oj-sidebar-group[data-notebook="bob.ipynb"]')
            expect(group).to_have_count(1, timeout=60_000)
            expect(group).to_have_attribute("data-jobs", "6")
            # Labelled by its cell and the first line of a job's code (the newest's).
            expect(group.locator(".oj-sidebar-joblabel")).to_have_text(
                re.compile(r"^\[\d+\] · import time$")
            )
            # No row per job until the group is opened: one row for the sweep.
            expect(sidebar.locator(".oj-sidebar-job:not([hidden])")).to_have_count(0)

            # alice.ipynb in front: alice's cluster, her three jobs by submission, newest first,
            # though the 2-CPU one waits in Kueue (no pod, no creation time) and the last runs.
            focus_notebook(page, "alice.ipynb")
            picker_shows(sidebar, alice)
            expect(follow).to_have_text(f"alice.ipynb is connected as {alice}")
            rows = sidebar.locator('.oj-sidebar-job[data-notebook="alice.ipynb"]')
            expect(rows).to_have_count(3, timeout=60_000)
            big = sidebar.locator('.oj-sidebar-job[data-notebook="alice.ipynb"]').filter(
                has_text="big-a"
            )
            expect(big).to_have_attribute("data-status", "Suspended", timeout=60_000)
            labels = [j["label"] for j in shown_jobs(sidebar)]
            assert [re.sub(r"^\[\d+\] · ", "", label) for label in labels] == [
                "label = 'small-b'",
                "label = 'big-a'",
                "label = 'hold-x'",
            ], labels
            listed = api(url, token, f"jobs?scope=mine&cluster={alice}")["jobs"]
            waiting = next(j for j in listed if j["label"]["first_line"] == "label = 'big-a'")
            assert waiting["creation_time"] is None and waiting["submitted_time"]
            sidebar.screenshot(path=str(ARTIFACTS / "sidebar-follows-alice.png"))
            stage("alice's jobs listed by submission")

            # Back to bob: his cluster again, and the sweep's counts by state.
            focus_notebook(page, "bob.ipynb")
            picker_shows(sidebar, bob)
            counts = group.locator(".oj-sidebar-counts")
            expect(counts).to_contain_text("4 suspended", timeout=60_000)
            found = group_counts(counts.inner_text())
            assert sum(found.values()) == 6, found
            assert set(found) <= {"running", "pending", "suspended"}, found
            stage(f"sweep: {counts.inner_text()}")

            # Open it: one compact row per job, by short id; the whole id on hover.
            group.get_by_role("button", name="Show the 6 jobs").click()
            children = sidebar.locator(".oj-sidebar-child:not([hidden])")
            expect(children).to_have_count(6)
            sweep = api(url, token, f"jobs?scope=mine&cluster={bob}")["jobs"]
            sweep = [j for j in sweep if j["label"]["notebook"] == "bob.ipynb"]
            assert len(sweep) == 6
            shown = shown_jobs(sidebar)
            # Newest submission first, as the server lists them.
            assert [j["job"] for j in shown] == [j["job"] for j in sweep], (shown, sweep)
            for entry in shown:
                assert entry["job"].endswith("-" + entry["id"]) and len(entry["id"]) == 12
                row = sidebar.locator(f'.oj-sidebar-child[data-job="{entry["job"]}"]')
                assert entry["job"] in row.locator(".oj-sidebar-jobid").get_attribute("title")
            # A click on a short id copies the whole id.
            first = shown[0]
            sidebar.locator(
                f'.oj-sidebar-child[data-job="{first["job"]}"] .oj-sidebar-jobid'
            ).click()
            assert page.evaluate("navigator.clipboard.readText()") == first["job"]
            for theme in ("light", "dark"):
                set_theme(page, theme)
                sidebar.screenshot(path=str(ARTIFACTS / f"sidebar-sweep-{theme}.png"))
                check_rows_fit(sidebar)
            set_theme(page, "light")

            # By state: the running and waiting first, the finished last.
            sort = sidebar.get_by_label("Sort jobs")
            sort.select_option(label="By state")
            ranks = [STATE_RANK.index(j["status"]) for j in shown_jobs(sidebar)]
            assert ranks == sorted(ranks), shown_jobs(sidebar)
            # By duration: the longest run first ("—": not started, last).
            sort.select_option(label="By duration")
            page.wait_for_timeout(300)

            def seconds(text: str) -> int:
                if text == "—":
                    return -1
                h, m, s = (int(p) for p in text.split(":"))
                return h * 3600 + m * 60 + s

            durations = sidebar.evaluate("""s => [...s.querySelectorAll(
                  '.oj-sidebar-child:not([hidden])')]
                .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
                .map(r => r.querySelector('.oj-sidebar-duration').textContent)""")
            values = [seconds(d) for d in durations]
            assert all(a >= b - 1 for a, b in zip(values, values[1:], strict=False)), durations
            sort.select_option(label="Newest first")

            # The text filter: one short id finds its job, its group opened to it alone.
            group.get_by_role("button", name="Hide the 6 jobs").click()
            expect(children).to_have_count(0)
            target = sweep[-1]  # the oldest: point 0
            search = sidebar.get_by_label("Filter jobs")
            search.fill(target["job"][-12:])
            expect(children).to_have_count(1)
            expect(children.first).to_have_attribute("data-job", target["job"])
            expect(counts).to_contain_text("(1 of 6 shown)")
            search.fill("no such job anywhere")
            expect(sidebar.locator(".oj-sidebar-jobs > .oj-sidebar-empty")).to_have_text(
                "No jobs match “no such job anywhere”."
            )
            search.fill("")
            expect(group).to_have_count(1)
            stage("sorted, filtered")

            # Select the sweep (its group's box) and cancel what still runs or waits.
            group.locator(".oj-sidebar-select").check()
            bar = sidebar.locator(".oj-sidebar-selection")
            expect(bar).to_be_visible()
            expect(bar.locator(".oj-sidebar-selection-text")).to_have_text("6 selected")
            expect(bar.get_by_role("button", name="Cancel 6")).to_be_enabled()
            expect(bar.get_by_role("button", name="Clean up 0")).to_be_disabled()
            bar.get_by_role("button", name="Cancel 6").click()
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("Cancel 6 jobs?")
            dialog.get_by_role("button", name="Cancel 6 jobs").click()
            expect(counts).to_contain_text("cancelling", timeout=2000)
            expect(counts).to_have_text("6 cancelled", timeout=90_000)
            expect(bar).to_be_hidden()
            stage("six cancelled")

            # Then clean the whole sweep up: nothing of it is left.
            group.locator(".oj-sidebar-select").check()
            bar.get_by_role("button", name="Clean up 6").click()
            expect(dialog).to_contain_text("Delete 6 selected finished jobs")
            dialog.get_by_role("button", name="Delete 6 jobs").click()
            expect(group).to_have_count(0, timeout=60_000)
            # Nothing of bob.ipynb is left; other tests may have left bob jobs from other cells.
            expect(sidebar.locator(".oj-sidebar-jobs > .oj-sidebar-empty")).to_have_text(
                re.compile(r"No offloaded jobs\. Run a cell|No jobs from bob\.ipynb\.")
            )
            stage("cleaned up")

            # Picked by hand: it stays until the notebook connects again, then follows it.
            sidebar.locator(".oj-sidebar-picker").select_option("local")
            expect(follow).to_have_text(f"bob.ipynb is connected as {bob} (you picked local)")
            page.evaluate("""() => { const w = window.jupyterapp.shell.currentWidget;
                                     w.content.activeCellIndex = 0; }""")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-cell'); }")
            picker_shows(sidebar, bob)
            expect(follow).to_have_text(f"bob.ipynb is connected as {bob}")
            expect(sidebar.locator(".oj-sidebar-error")).to_be_hidden()
            stage("followed the new connection")
        finally:
            browser.close()


def test_a_cancel_button_in_an_output_works_while_the_kernel_is_busy(
    views_lab, local_oscar, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    url, token = views_lab
    cells = [
        "%load_ext oscar_jupyter\n%oscar_connect local",
        "import oscar_jupyter\n"
        "job = oscar_jupyter.offload(\n"
        "    'import time\\nfor i in range(300):\\n'\n"
        "    '    print(i, flush=True)\\n    time.sleep(1)\\n',\n"
        f"    node={NODE!r}, time='00:06:00', wait=False)\n",
        "from IPython.display import HTML, display\n"
        "display(HTML(\n"
        '    \'<button type="button" class="oj-cancel-via-server" data-oj-cluster="local" \'\n'
        '    f\'data-oj-service="{job.service}" data-oj-job="{job.name}">Cancel</button>\'))\n',
        "import time\ntime.sleep(600)  # the kernel is busy with another cell\n",
    ]
    lab_root = tmp_path / "root"
    notebook(lab_root / "busy.ipynb", [new_code_cell(c) for c in cells])
    with sync_playwright() as pw:
        browser = launch_chromium(pw, tmp_path / "chromium", 1400, 900)
        try:
            page = browser.new_page()
            open_notebook(page, url, token, "oj-busy", "busy.ipynb")
            run_all(page)
            # The page says the listener works (a view shows this button only then).
            expect(page.locator("body.oj-server-cancel")).to_have_count(1)
            button = page.locator(".jp-OutputArea-output button.oj-cancel-via-server")
            expect(button).to_be_visible(timeout=90_000)
            job = button.get_attribute("data-oj-job")
            deadline = time.monotonic() + 300  # the Slurm is shared: it may queue first
            while time.monotonic() < deadline:
                listed = api(url, token, "jobs?scope=mine&cluster=local")["jobs"]
                entry = next((j for j in listed if j["job"] == job), None)
                if entry and entry["status"] == "Running":
                    break
                time.sleep(1)
            assert entry and entry["status"] == "Running", entry
            slurm_id = str(LocalState(HomeLayout(local_oscar.home).state_file).jobs[job]["job_id"])
            kernel_status = (
                "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
            )
            page.wait_for_function(f"() => ({kernel_status})() === 'busy'", timeout=60_000)

            # Every text the button shows, with when, from the click on.
            page.evaluate("""() => {
              const b = document.querySelector(
                '.jp-OutputArea-output button.oj-cancel-via-server');
              window.ojSeen = [];
              new MutationObserver(() => window.ojSeen.push(
                  [performance.now(), b.textContent, b.disabled]))
                .observe(b, {childList: true, characterData: true, subtree: true,
                             attributes: true});
              window.addEventListener('click', () => { window.ojClickAt = performance.now(); },
                                      {capture: true, once: true}); }""")
            button.click()
            expect(button).to_have_text("Cancelled", timeout=60_000)
            seen = page.evaluate("() => [window.ojClickAt, window.ojSeen]")
            clicked, texts = seen[0], seen[1]
            assert texts[0][1:] == ["Cancelling…", True], texts
            feedback_ms = texts[0][0] - clicked
            print(f"\n'Cancelling…' {feedback_ms:.1f} ms after the click", flush=True)
            assert feedback_ms < 200, texts
            expect(button).to_be_disabled()
            result = page.locator(".jp-OutputArea-output .oj-cancel-via-server-result")
            expect(result).to_have_text(f"Job {job[-12:]} cancelled on the cluster.")
            # Cancelled through the server while the kernel still runs the other cell.
            assert page.evaluate(kernel_status) == "busy"
            deadline = time.monotonic() + 20  # scancel is asynchronous (CG state)
            while slurm_job_ids_alive([slurm_id]) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert slurm_job_ids_alive([slurm_id]) == []
            listed = api(url, token, "jobs?scope=mine&cluster=local")["jobs"]
            entry = next(j for j in listed if j["job"] == job)
            assert (entry["status"], entry["cancelled_by"]) == ("Cancelled", "the sidebar")
            page.evaluate("() => { window.jupyterapp.commands.execute('kernelmenu:interrupt'); }")
        finally:
            browser.close()
