"""One-line hints for the errors a cell meets because it runs on the cluster, not in the kernel."""

from __future__ import annotations

import re

from .spec import OffloadSpec

_MISSING_MODULE = re.compile(r"^ModuleNotFoundError: No module named '([^']+)'")
_UNDEFINED = re.compile(r"^NameError: name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")


def hint(exception_line: str, spec: OffloadSpec) -> str:
    """A hint for the last line of a remote traceback (e.g. "NameError: name 'x' is not
    defined"); "" when there is none."""
    name = _UNDEFINED.match(exception_line)
    if name:
        return (
            "Hint: the cell runs in a fresh Python on the cluster, without the notebook's "
            f"variables; send {name.group(1)} with --in {name.group(1)} (or define it in the cell)"
        )
    if exception_line.startswith("NameError:"):
        return (
            "Hint: the cell runs in a fresh Python on the cluster, without the notebook's "
            "variables; send them with --in NAME (or define them in the cell)"
        )
    missing = _MISSING_MODULE.match(exception_line)
    if missing:
        top = missing.group(1).split(".")[0]
        return (
            f"Hint: the cell ran in the image {spec.image}, which has no module {top!r}; choose "
            f"an image that has it (--image), or make it available with --pre-exec (a command "
            f"run before the cell, e.g. a module load)"
        )
    if "[Errno 28]" in exception_line or "No space left on device" in exception_line:
        # Singularity's --containall makes /tmp (and home) the session directory, capped by
        # the site's `sessiondir max size` (64 MiB by default): OSCAR.md 13 B11.
        return (
            "Hint: the job's disk is full; in the container /tmp and the home directory are a "
            "small session directory (64 MiB by default, `oscar-jupyter check` shows the "
            "site's), so write large data to a --mount'ed scratch path instead"
        )
    return ""
