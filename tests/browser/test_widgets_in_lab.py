"""The panel and a running job's live view in JupyterLab, in headless Chromium, light and dark.

Screenshots go to test-artifacts/ for a person to look at. The test also checks what a screenshot
cannot prove by itself: the widgets fit the notebook's width, take their colours from the theme,
and the view's Cancel button cancels the job on the cluster.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ..jupyterlab import (
    jupyterlab,
    launch_chromium,
    open_notebook,
    require_chromium,
    set_theme,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

NOTEBOOK_CELLS = [
    "%load_ext oscar_jupyter\n%oscar_connect local",
    "import oscar_jupyter\n"
    "panel = oscar_jupyter.Panel()\n"
    "panel.set(node='local-slurm', time='00:10:00', cpus_per_task=1, mem='512M',\n"
    "          partition='debug', mounts=['/tmp:/data:ro'], env={'OMP_NUM_THREADS': '1'})\n"
    "panel",
    "%%oscar_offload --no-wait -o job\n"
    "import sys, time\n"
    "for i in range(300):\n"
    "    print(f'epoch {i}: loss={1 / (i + 1):.4f}', flush=True)\n"
    "    if i % 7 == 3:\n"
    "        print(f'warning: slow batch {i}', file=sys.stderr, flush=True)\n"
    "    time.sleep(0.5)",
    "panel.set(gpus='two')  # marked at its widget",
]


def cancel_all_jobs(local_oscar) -> None:
    from oscar_jupyter.client import OscarClient
    from oscar_jupyter.config import load_profile

    profile = load_profile("local", config_path=local_oscar.profile_path)
    with OscarClient(profile) as client:
        for service in client.list_services():
            client.delete_jobs(service["name"], all=True)


@pytest.fixture()
def lab(local_oscar, tmp_path):
    """A JupyterLab server on loopback (as root), its own settings, the test notebook."""
    require_chromium()
    root = tmp_path / "root"
    root.mkdir()
    nb = new_notebook(
        cells=[new_code_cell(c) for c in NOTEBOOK_CELLS],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )
    nbformat.write(nb, root / "widgets.ipynb")
    env = {
        **os.environ,
        "OSCAR_CLI_CONFIG": str(local_oscar.profile_path),
        "OSCAR_JUPYTER_LOG_DIR": str(tmp_path / "client-logs"),
    }
    try:
        with jupyterlab(root, tmp_path, env, ["--ServerApp.disable_check_xsrf=True"]) as served:
            yield served
    finally:
        cancel_all_jobs(local_oscar)  # a --no-wait job outlives its kernel, as on a cluster


def test_panel_and_live_job_view_in_jupyterlab_light_and_dark(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw, tmp_path / "chromium", 1280, 1500)
        try:
            page = browser.new_page()
            open_notebook(page, url, token, "oj-widgets", "widgets.ipynb")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            panel = page.locator(".oj-panel")
            view = page.locator(".oj-jobview")
            expect(panel).to_be_visible(timeout=60_000)
            expect(view.locator(".oj-status-Running")).to_be_visible(timeout=90_000)
            expect(view.get_by_text("epoch 5:")).to_be_visible(timeout=60_000)
            expect(panel.locator(".oj-preview")).to_contain_text(
                re.compile(r"%%oscar_offload --node[= ]local-slurm --time[= ]00:10:00")
            )
            # The bad value is marked at its widget with the magic's message.
            expect(panel.locator(".oj-invalid .oj-error")).to_contain_text(
                "--gpus two: use a whole number"
            )
            # ... across the form's whole width, not squeezed into one 170 px column.
            form = panel.locator(".oj-form:has(> .oj-invalid)")
            invalid = panel.locator(".oj-form > .oj-invalid").bounding_box()
            assert invalid["width"] >= 0.95 * form.bounding_box()["width"], invalid

            # Fits the notebook's width: nothing wider than the output area.
            area = page.locator(".jp-OutputArea-output").filter(has=panel).bounding_box()
            box = panel.bounding_box()
            assert (
                box["x"] >= area["x"] - 1
                and box["x"] + box["width"] <= area["x"] + area["width"] + 1
            )
            scroll = panel.evaluate("e => e.scrollWidth - e.clientWidth")
            assert scroll <= 1, f"the panel overflows its width by {scroll}px"

            def theme_colours() -> dict:
                return page.evaluate("""() => {
                  const css = getComputedStyle(document.body);
                  const probe = document.createElement('div');
                  document.body.appendChild(probe);
                  const resolve = v => { probe.style.color = css.getPropertyValue(v);
                                         return getComputedStyle(probe).color; };
                  const out = { brand: resolve('--jp-brand-color1'),
                                error: resolve('--jp-error-color1'),
                                card: getComputedStyle(document.querySelector('.oj-panel'))
                                        .backgroundColor,
                                layout1: (probe.style.color = css.getPropertyValue(
                                  '--jp-layout-color1'), getComputedStyle(probe).color),
                                badge: getComputedStyle(document.querySelector(
                                  '.oj-jobview .oj-badge')).backgroundColor,
                                errorText: getComputedStyle(document.querySelector(
                                  '.oj-panel .oj-invalid .oj-error')).color };
                  probe.remove();
                  return out; }""")

            shots = {}
            for theme in ("light", "dark"):
                if theme == "dark":
                    set_theme(page, "dark")
                colours = theme_colours()
                assert colours["card"] == colours["layout1"], colours
                assert colours["errorText"] == colours["error"], colours
                if "oj-status-Running" in view.locator(".oj-badge").get_attribute("class"):
                    assert colours["badge"] == colours["brand"], colours
                shots[theme] = colours["card"]
                panel.screenshot(path=str(ARTIFACTS / f"panel-{theme}.png"))
                view.screenshot(path=str(ARTIFACTS / f"jobview-running-{theme}.png"))
                page.screenshot(path=str(ARTIFACTS / f"lab-widgets-{theme}.png"), full_page=True)
            assert shots["light"] != shots["dark"]  # the widgets follow the theme

            # The view's Cancel button works (through the Jupyter server, with the extension);
            # once the job has ended the live view becomes the notebook's own output, which a
            # saved notebook shows without a kernel.
            view.get_by_role("button", name="Cancel").click()
            ended = page.locator(".jp-OutputArea-output").filter(has_text=re.compile("■ Cancelled"))
            expect(ended).to_be_visible(timeout=30_000)
            expect(ended).to_contain_text("epoch 5:")
            ended.screenshot(path=str(ARTIFACTS / "jobview-cancelled-dark.png"))
        finally:
            browser.close()
