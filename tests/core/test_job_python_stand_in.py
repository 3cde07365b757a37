"""`local start --job-python`: the bubblewrap stand-in for singularity runs every job with the
given python3 as the image's (`singularity.py`), so the version gate can meet an old one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from oscar_jupyter.local.singularity import ContainerRuntimeError, runtime_command

from .pythons import fake_python

IMAGE = "docker://rockylinux:8"
CHECK = (
    'command -v python3; python3 --version; python3 -c "import sys; print(sys.version_info[:2])"'
)


def run(singularity: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [singularity, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or dict(os.environ),
    )


def test_a_job_python_plays_the_images_python3(tmp_path):
    fake = fake_python(tmp_path / "rhel8", "3.6.15")  # under /tmp: bound over the private /tmp
    path, description = runtime_command(tmp_path / "home", job_python=str(fake))
    assert description.endswith(f"the image's python3 is {fake}")
    result = run(path, "exec", IMAGE, "/bin/sh", "-c", CHECK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["/opt/job-python/bin/python3", "Python 3.6.15", "(3, 6)"]


def test_without_the_option_the_hosts_python3_plays_it_whatever_the_environment_says(tmp_path):
    fake = fake_python(tmp_path / "rhel8", "3.6.15")
    plain, description = runtime_command(tmp_path / "home")
    assert "the image's python3" not in description
    env = dict(os.environ, OSCAR_JUPYTER_JOB_PYTHON=str(fake))
    result = run(
        plain, "exec", IMAGE, "python3", "-c", "import sys; print(sys.version_info[:2])", env=env
    )
    assert result.stdout.strip() == str(tuple(sys.version_info[:2])), result.stderr


def test_a_job_python_that_is_not_an_executable_is_refused(tmp_path):
    with pytest.raises(ContainerRuntimeError, match="--job-python .*not an executable file"):
        runtime_command(tmp_path / "home", job_python=str(tmp_path / "missing"))


def test_local_start_refuses_a_job_python_that_is_not_an_executable(tmp_path):
    from oscar_jupyter.local import daemon

    with pytest.raises(daemon.DaemonError, match="--job-python .*give the path of a python3"):
        daemon.start(home=tmp_path / "home", port=1, job_python=tmp_path / "missing")
