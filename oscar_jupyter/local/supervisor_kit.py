"""The local "supervisor kit image": a venv with the real faas-supervisor and its launcher.

OSCAR's init container runs ``cp -r /supervisor/* /data`` from the supervisor-kit image, then the
main container runs ``echo $EVENT | base64 -d | /data/supervisor``. Here the kit directory plays the
role of the image's ``/supervisor``: its ``supervisor`` launcher runs the venv's python on
``faassupervisor.supervisor`` (the module's ``__main__`` reads the event from stdin). The bubblewrap
stand-in for singularity binds the paths listed in the kit's ``.binds`` read-only at their own path,
so the launcher works from ``/data`` inside the container.

Layout under the cache (``$OSCAR_JUPYTER_CACHE`` or ``~/.cache/oscar-jupyter``)::

    supervisor-kit/venv/     the venv (faas-supervisor 1.5.8 and its needs)
    supervisor-kit/kit/      supervisor (launcher), .binds (paths to bind read-only)
    supervisor-kit/ready     written last: the kit is complete
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from oscar_jupyter.local.singularity import KIT_BINDS_FILE, default_supervisor_kit

FAAS_SUPERVISOR = "faas-supervisor==1.5.8"
# faas-supervisor's metadata has a malformed requirement that newer pip refuses, so its needs are
# named here and it is installed with --no-deps.
SUPERVISOR_NEEDS = ["boto3", "pyyaml", "requests", "webdavclient3"]
PIP_TIMEOUT_S = 900


class SupervisorKitError(RuntimeError):
    """The supervisor kit could not be built; the message carries pip's own words."""


def _ready_text() -> str:
    # The resolved interpreter: `python`, `python3` and `python3.11` name the same one, and a
    # mismatch would rebuild the kit under jobs that are using it.
    return f"{FAAS_SUPERVISOR} {Path(sys.executable).resolve()}\n"


def ensure_supervisor_kit(cache: Path | None = None) -> Path:
    """The kit directory (the image's ``/supervisor``); built once, then reused.

    Safe to call from several processes at once: a lock file serialises the build.
    """
    kit = default_supervisor_kit(cache)
    root = kit.parent
    ready = root / "ready"
    if _is_ready(ready, kit):
        return kit
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_ready(ready, kit):
            return kit
        ready.unlink(missing_ok=True)
        _build(root, kit)
        ready.write_text(_ready_text())
    return kit


def supervisor_kit_ready(cache: Path | None = None) -> bool:
    """Whether `ensure_supervisor_kit` would return at once (nothing to build)."""
    kit = default_supervisor_kit(cache)
    return _is_ready(kit.parent / "ready", kit)


def _is_ready(ready: Path, kit: Path) -> bool:
    try:
        return ready.read_text() == _ready_text() and os.access(kit / "supervisor", os.X_OK)
    except OSError:
        return False


def _build(root: Path, kit: Path) -> None:
    venv = root / "venv"
    for partial in (venv, kit):
        if partial.exists():
            shutil.rmtree(partial)
    _run_step([sys.executable, "-m", "venv", str(venv)], f"python -m venv {venv} failed")
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run_step([*pip, "--no-deps", FAAS_SUPERVISOR], f"pip could not install {FAAS_SUPERVISOR}")
    needs = list(SUPERVISOR_NEEDS)
    if sys.version_info >= (3, 12):
        needs.append("setuptools")  # faas-supervisor imports distutils, gone from 3.12's stdlib
    _run_step([*pip, *needs], f"pip could not install {', '.join(needs)} for faas-supervisor")
    _run_step(
        [str(python), "-c", "import faassupervisor.supervisor"],
        "faas-supervisor was installed but does not import",
    )
    _write_kit(kit, venv)


def _write_kit(kit: Path, venv: Path) -> None:
    kit.mkdir(parents=True)
    launcher = kit / "supervisor"
    # -u: the supervisor's final dump must reach the log file even when it is not a terminal.
    launcher.write_text(
        "#!/bin/sh\n"
        f'exec {shlex.quote(str(venv / "bin" / "python"))} -u -m faassupervisor.supervisor "$@"\n'
    )
    launcher.chmod(0o755)
    # The venv's python is a symlink into the base installation, which the container needs too.
    binds = [str(venv.resolve()), str(Path(sys.base_prefix).resolve())]
    (kit / KIT_BINDS_FILE).write_text("".join(f"{path}\n" for path in dict.fromkeys(binds)))


def _run_step(argv: list[str], failure: str) -> None:
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise SupervisorKitError(f"{failure}: no answer within {PIP_TIMEOUT_S} s") from error
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-15:]
        raise SupervisorKitError(f"{failure}:\n" + "\n".join(detail))
