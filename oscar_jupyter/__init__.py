"""oscar-jupyter: offload notebook cells to HPC clusters through OSCAR and interLink.

In a notebook: `%load_ext oscar_jupyter`, then `%oscar_connect` and `%%oscar_offload`.
In plain Python: `oscar_jupyter.connect(...)` and `oscar_jupyter.offload(code, node=..., time=...)`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "connect",
    "offload",
    "attach",
    "ask_secret",
    "start_session",
    "attach_session",
    "RemoteSession",
    "Job",
    "JobFailed",
    "JobCancelled",
    "OffloadSpec",
    "SpecError",
    "Panel",
    "load_ipython_extension",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import oscar_jupyter` stays cheap and the local OSCAR server needs no IPython.
    if name in ("connect", "offload", "attach", "ask_secret"):
        from . import session

        return getattr(session, name)
    if name in ("start_session", "attach_session", "RemoteSession"):
        from . import remote_session

        return getattr(remote_session, {"attach_session": "attach"}.get(name, name))
    if name in ("Job", "JobFailed", "JobCancelled"):
        from . import jobs

        return getattr(jobs, name)
    if name in ("OffloadSpec", "SpecError"):
        from . import spec

        return getattr(spec, name)
    if name == "Panel":
        from .widgets import Panel

        return Panel
    raise AttributeError(name)


def load_ipython_extension(ipython: Any) -> None:
    from .errors import CELL_SYNTAX_ERRORS, show_cell_syntax_error
    from .magics import OscarMagics

    # IPython shows any SyntaxError with the frames that raised it; a cell's own syntax error
    # is shown as Python shows it, named SyntaxError.
    ipython.set_custom_exc(CELL_SYNTAX_ERRORS, show_cell_syntax_error)

    ipython.register_magics(OscarMagics)


def unload_ipython_extension(ipython: Any) -> None:
    pass
