"""Jupyter server extension of oscar-jupyter: the REST API behind the JupyterLab sidebar.

Enabled by ``jupyter-config/server-config/oscar_jupyter.json`` (installed into
``etc/jupyter/jupyter_server_config.d``), or by hand::

    jupyter server extension enable oscar_jupyter.server
"""

from __future__ import annotations

from typing import Any

from .backend import SidebarBackend
from .handlers import API_ROOT, route_table

__all__ = ["API_ROOT", "SidebarBackend", "route_table"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "oscar_jupyter.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    web_app = server_app.web_app
    backend = SidebarBackend()
    web_app.add_handlers(".*$", route_table(web_app.settings["base_url"], backend))
    server_app.log.info(
        "oscar-jupyter: sidebar API at %s%s", web_app.settings["base_url"], API_ROOT
    )
