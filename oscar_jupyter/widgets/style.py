"""The widgets' look: one style sheet built only from JupyterLab's `--jp-*` theme variables.

Every top-level widget carries the sheet in a hidden HTML child, so it looks right wherever it is
displayed, in the light and the dark theme alike, and without a labextension.
"""

from __future__ import annotations

import html

import ipywidgets as w

# Colours come from the theme only; the fallbacks keep other frontends readable without picking
# colours of their own (currentColor, transparent, inherit).
STYLE_SHEET = """
.oj-root { width: 100%; max-width: 100%; box-sizing: border-box;
  color: var(--jp-ui-font-color1, inherit); font-family: var(--jp-ui-font-family, inherit);
  font-size: var(--jp-ui-font-size1, inherit); }
.oj-card { border: var(--jp-border-width, 1px) solid var(--jp-border-color2, currentColor);
  border-radius: 4px; background: var(--jp-layout-color1, transparent); padding: 8px 10px; }
.oj-title { font-weight: 600; font-size: var(--jp-ui-font-size2, inherit); }
.oj-muted { color: var(--jp-ui-font-color2, inherit); }
.oj-hint { color: var(--jp-warn-color0, darkorange); flex-basis: 100%; }
.oj-form { grid-gap: 6px 14px; width: 100%; }
.oj-field { min-width: 0; }
.oj-field .widget-text, .oj-field .widget-textarea, .oj-field .widget-dropdown,
.oj-field .widget-combobox { width: 100%; max-width: 100%; margin: 0; }
.oj-label { font-size: var(--jp-ui-font-size0, inherit); color: var(--jp-ui-font-color2, inherit);
  line-height: 1.6; }
.oj-invalid input, .oj-invalid textarea, .oj-invalid select {
  border-color: var(--jp-error-color1, currentColor) !important;
  outline: 1px solid var(--jp-error-color1, currentColor); }
.oj-error { color: var(--jp-error-color1, inherit); font-size: var(--jp-ui-font-size0, inherit);
  line-height: 1.4; }
.oj-error:empty { display: none; }
/* A field with an error takes the form's whole row: its message is not squeezed into a column. */
.oj-form > .oj-field.oj-invalid { grid-column: 1 / -1; }
.oj-form > .oj-field.oj-invalid .oj-error { max-width: 60em; }
.oj-rows { width: 100%; }
.oj-row { width: 100%; align-items: center; }
.oj-row .widget-text { flex: 1 1 auto; min-width: 0; width: auto; margin: 1px 4px 1px 0; }
.oj-row .widget-button { flex: 0 0 auto; width: auto; }
.oj-preview pre, .oj-code { font-family: var(--jp-code-font-family, monospace);
  font-size: var(--jp-code-font-size, inherit); background: var(--jp-layout-color2, transparent);
  color: var(--jp-content-font-color1, inherit); border-radius: 3px; padding: 6px 8px; margin: 0;
  white-space: pre-wrap; word-break: break-all; user-select: all; }
.oj-log { font-family: var(--jp-code-font-family, monospace);
  font-size: var(--jp-code-font-size, inherit); background: var(--jp-layout-color2, transparent);
  color: var(--jp-content-font-color1, inherit); border-radius: 3px; padding: 6px 8px; margin: 0;
  white-space: pre-wrap; word-break: break-word; max-height: 24em; overflow: auto; }
.oj-log .oj-stderr { color: var(--jp-error-color1, inherit); }
/* A live tail follows the output: a column-reverse scroller stays at its end while lines
   arrive, and stays where the reader scrolled to otherwise. */
.oj-follow { display: flex; flex-direction: column-reverse; max-height: 24em; overflow: auto; }
.oj-follow .oj-log { max-height: none; overflow: visible; }
/* With the JupyterLab extension, Cancel goes through the Jupyter server (at once, even while the
   kernel is busy); elsewhere the kernel's own button does it. */
.oj-cancel-via-server { display: none; }
body.oj-server-cancel .oj-cancel-via-server { display: inline-block; }
body.oj-server-cancel .oj-kernel-cancel { display: none; }
.oj-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
  font-size: var(--jp-ui-font-size0, inherit); color: var(--jp-ui-inverse-font-color1, inherit);
  background: var(--jp-layout-color3, transparent); white-space: nowrap; }
.oj-status-Suspended, .oj-status-Cancelled { background: var(--jp-layout-color4, transparent); }
.oj-status-Pending { background: var(--jp-warn-color1, transparent); }
.oj-status-Running { background: var(--jp-brand-color1, transparent); }
.oj-status-Succeeded { background: var(--jp-success-color1, transparent); }
.oj-status-Failed { background: var(--jp-error-color1, transparent); }
.oj-header { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 12px; }
.oj-bar { flex: 1 1 120px; min-width: 80px; max-width: 260px; height: 6px; border-radius: 3px;
  background: var(--jp-layout-color3, transparent); overflow: hidden; }
.oj-bar > div { height: 100%; background: var(--jp-brand-color1, currentColor); }
.oj-bar.oj-late > div { background: var(--jp-warn-color1, currentColor); }
.oj-buttons { flex-wrap: wrap; gap: 4px; }
.oj-table { width: 100%; border-collapse: collapse; }
.oj-table th { text-align: left; font-weight: 600; color: var(--jp-ui-font-color2, inherit);
  border-bottom: var(--jp-border-width, 1px) solid var(--jp-border-color2, currentColor); }
.oj-table th, .oj-table td { padding: 3px 8px 3px 0; white-space: nowrap; }
.oj-table td.oj-name { font-family: var(--jp-code-font-family, monospace); white-space: normal;
  word-break: break-all; }
.oj-grid { width: 100%; align-items: center; grid-gap: 2px 10px; }
.oj-grid .oj-head { font-weight: 600; color: var(--jp-ui-font-color2, inherit);
  border-bottom: var(--jp-border-width, 1px) solid var(--jp-border-color2, currentColor); }
.oj-grid .oj-name { font-family: var(--jp-code-font-family, monospace); word-break: break-all; }
"""

STATUSES = ("Suspended", "Pending", "Running", "Succeeded", "Failed", "Cancelled")


def style_widget() -> w.HTML:
    """A hidden-looking HTML child that carries the style sheet."""
    sheet = w.HTML(f"<style>{STYLE_SHEET}</style>")
    sheet.layout.margin = "0"
    sheet.layout.height = "0"
    sheet.layout.overflow = "hidden"
    return sheet


def badge(status: str) -> str:
    """HTML of a status badge; unknown states get the neutral colour."""
    css = status if status in STATUSES else "Suspended"
    return f'<span class="oj-badge oj-status-{css}">{html.escape(status)}</span>'
