"""JupyterLab for the sidebar's browser tests: notebooks written into a fresh root, the sidebar's
server extension and its build, the local OSCAR's oscar-cli config, and the kernels' records of
this test only; every job on the local OSCAR cancelled at the end (--no-wait jobs and sessions
outlive their kernels, as on a cluster)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from ..jupyterlab import jupyterlab, require_chromium


def notebook(path: Path, cells: list) -> None:
    nbformat.write(
        new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {
                    "name": "python3",
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                }
            },
        ),
        path,
    )


def cancel_all_jobs(local_oscar) -> None:
    from oscar_jupyter.client import OscarClient
    from oscar_jupyter.config import load_profile

    profile = load_profile("local", config_path=local_oscar.profile_path)
    with OscarClient(profile) as client:
        for service in client.list_services():
            client.delete_jobs(service["name"], all=True)


def lab_env(local_oscar, tmp_path) -> dict[str, str]:
    env = {
        **os.environ,
        "OSCAR_CLI_CONFIG": str(local_oscar.profile_path),
        # The kernels' job records (labels) and logs: this test's own.
        "OSCAR_JUPYTER_LOG_DIR": str(tmp_path / "client-logs"),
    }
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        env.pop(name, None)
    return env


@contextmanager
def sidebar_lab(
    local_oscar,
    built_labextension: Path,
    tmp_path: Path,
    notebooks: Mapping[str, Sequence[Any]],
    extra_args: Sequence[str] = (),
) -> Iterator[tuple[str, str]]:
    """Serves a root holding `notebooks` (path -> cells: code as text, or nbformat cells);
    yields (url, token)."""
    require_chromium()
    root = tmp_path / "root"
    root.mkdir()
    for path, cells in notebooks.items():
        notebook(root / path, [new_code_cell(c) if isinstance(c, str) else c for c in cells])
    try:
        with jupyterlab(
            root,
            tmp_path,
            lab_env(local_oscar, tmp_path),
            [
                "--ServerApp.jpserver_extensions=oscar_jupyter.server=True",
                f"--LabApp.extra_labextensions_path={built_labextension}",
                *extra_args,
            ],
        ) as served:
            yield served
    finally:
        cancel_all_jobs(local_oscar)
