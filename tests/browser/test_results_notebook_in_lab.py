"""notebooks/03-results-and-figures.ipynb after Run All in JupyterLab, in headless Chromium,
light and dark: the figure made on the cluster is an image in the notebook, the HTML table is
rendered by the notebook (not by the extension), and the values came back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

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
NOTEBOOK = "03-results-and-figures.ipynb"


@pytest.fixture()
def lab(local_oscar, tmp_path):
    require_chromium()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    # Every cell in the page (JupyterLab 4 otherwise leaves the cells out of view undrawn),
    # so the outputs can be checked wherever the notebook is scrolled.
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = {
        **os.environ,
        "OSCAR_CLI_CONFIG": str(local_oscar.profile_path),
        "OSCAR_JUPYTER_LOG_DIR": str(tmp_path / "client-logs"),
    }
    with jupyterlab(root, tmp_path, env, ["--ServerApp.disable_check_xsrf=True"]) as served:
        yield served


def test_results_notebook_after_run_all_light_and_dark(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw, tmp_path / "chromium", 1280, 1100)
        try:
            page = browser.new_page()
            open_notebook(page, url, token, "oj-results", NOTEBOOK)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            expect(page.get_by_text("Deleted 3 finished job(s)")).to_be_visible(timeout=180_000)

            figure = page.locator(".jp-RenderedImage img").first
            expect(figure).to_be_visible()
            size = figure.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert size[0] > 300 and size[1] > 150, size
            table = page.locator(".jp-RenderedHTMLCommon table").filter(has_text="residual")
            expect(table).to_be_visible()
            assert table.locator("tr").count() == 6
            # Cluster HTML is rendered by the notebook's sanitising renderer, never in our views.
            assert page.locator(".oj-jobview table, .oj-status table").count() == 0
            expect(page.get_by_text("w = 3.002, b = -0.990")).to_be_visible()
            page.get_by_text("training [######").first.scroll_into_view_if_needed()

            for theme in ("light", "dark"):
                set_theme(page, theme)
                page.locator(".jp-Cell").filter(
                    has_text="--out w,b,losses"
                ).first.scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / f"results-and-figures-{theme}.png"))
        finally:
            browser.close()
