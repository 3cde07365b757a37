"""Interpreters an image might hold, for the tests that run the runner with an old python3."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def find_python(version: str) -> str | None:
    """The real executable of a working python<version> (on PATH or under ~/.pyenv), or None."""
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(map(str, Path.home().glob(f".pyenv/versions/{version}.*/bin/python3"))),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return probe.stdout.strip()
    return None


_FAKE_SITE = """\
# Makes this interpreter report Python {version}, as an image's old python3 would.
import sys


class _VersionInfo(tuple):
    major = property(lambda self: self[0])
    minor = property(lambda self: self[1])
    micro = property(lambda self: self[2])
    releaselevel = property(lambda self: self[3])
    serial = property(lambda self: self[4])


sys.version_info = _VersionInfo(({major}, {minor}, {micro}, "final", 0))
sys.version = "{version} (default, Dec  7 2021, 10:00:00) \\n[GCC 8.5.0]"
"""
_FAKE_PYTHON = """\
#!/bin/sh
# python3 as an image with Python {version} has it: this machine's interpreter, reporting that
# version to `python3 --version` and to `sys.version_info` in any program it runs.
case "${{1:-}}" in -V|--version) echo "Python {version}"; exit 0 ;; esac
PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" exec {real} "$@"
"""


def fake_python(folder: Path, version: str = "3.6.15") -> Path:
    """`folder`/bin/python3: a python3 that says it is `version` (the host's, under a
    sitecustomize that changes `sys.version_info`), for the version gate's tests."""
    major, minor, micro = (int(part) for part in version.split("."))
    site = folder / "fake-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(
        _FAKE_SITE.format(version=version, major=major, minor=minor, micro=micro)
    )
    python = folder / "bin" / "python3"
    python.parent.mkdir(parents=True, exist_ok=True)
    real = Path("/usr/bin/python3").resolve()
    python.write_text(_FAKE_PYTHON.format(version=version, site=site, real=real))
    python.chmod(0o755)
    return python
