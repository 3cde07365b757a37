"""The image's Python on the real Slurm, and `oscar-jupyter check` as a user runs it: a local
OSCAR whose jobs get an old python3 (`local start --job-python`, a python3 that says it is
3.6.15) ends a cell in one line, and the command-line check says so and exits 1; on the
session's local OSCAR the same check passes and keeps what it found in the profile."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from oscar_jupyter.config import JupyterSettings, load_profile
from oscar_jupyter.runner import old_python_message

from ..conftest import executor_choice, free_port
from ..core.pythons import fake_python, find_python

pytestmark = pytest.mark.e2e
NODE = "local-slurm"
COMMAND = [str(Path(sys.executable).with_name("oscar-jupyter"))]
OLD_VERSION = "3.6.15"


def oscar_jupyter(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@contextmanager
def local_oscar_with_python(root: Path, python: Path) -> Iterator[tuple[Path, str]]:
    """A local OSCAR of its own whose jobs' python3 is `python`: (its oscar-cli file, profile)."""
    config, home = root / "config.yaml", root / "home"
    started = oscar_jupyter(
        "local", "start", "--home", str(home), "--port", str(free_port()),
        "--config", str(config), "--users", "carol", "--job-python", str(python),
        "--executor", executor_choice(),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert f"the image's python3 is {python}" in started.stdout
    try:
        yield config, "local-carol"
    finally:
        stopped = oscar_jupyter("local", "stop", "--home", str(home))
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def old_python_oscar(request, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A local OSCAR whose jobs' python3 says it is 3.6.15."""
    if executor_choice() != "process":
        request.getfixturevalue("slurm_cluster")
    root = tmp_path_factory.mktemp("old-python")
    with local_oscar_with_python(root, fake_python(root / "rhel8-python", OLD_VERSION)) as made:
        yield made


def run_cells(config: Path, profile: str, monkeypatch, *cells: str):
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    nb = new_notebook(
        cells=[new_code_cell(f"%load_ext oscar_jupyter\n%oscar_connect {profile}")]
        + [new_code_cell(cell) for cell in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
    return nb.cells[1:]


def test_a_cell_on_an_image_with_python_3_6_ends_in_one_line(old_python_oscar, monkeypatch):
    config, profile = old_python_oscar
    cell = f"%%oscar_offload --node {NODE} --time 00:01:00\nprint('never runs')"
    outputs = run_cells(config, profile, monkeypatch, cell)[0].outputs
    errors = [out for out in outputs if out.output_type == "error"]
    assert len(errors) == 1, outputs
    message = old_python_message(OLD_VERSION)
    assert message == (
        "python3 3.6.15 found in the image; oscar-jupyter needs 3.8 or newer; "
        "choose another --image"
    )
    assert errors[0].evalue == message
    assert [line for line in errors[0].traceback if line.strip()] == [message]
    streamed = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "never runs" not in streamed and message not in streamed  # shown once, as the error
    assert "@@OJ" not in str(outputs)


def test_the_python_api_ends_with_the_same_line(old_python_oscar, monkeypatch):
    from oscar_jupyter.jobs import JobFailed
    from oscar_jupyter.session import Session

    config, profile = old_python_oscar
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    session = Session()
    session.connect(profile)
    job = session.submit("print('never runs')", session.build_spec({"node": NODE, "time": "60"}))
    with pytest.raises(JobFailed) as failed:
        job.result(120)
    assert str(failed.value) == f"{old_python_message(OLD_VERSION)} (job {job.name})"
    assert failed.value._render_traceback_() == [f"JobFailed: {failed.value}"]


def test_the_command_line_check_says_the_images_python_is_too_old(old_python_oscar):
    config, profile = old_python_oscar
    checked = oscar_jupyter("check", profile, "--config", str(config), "--node", NODE)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    rows = {row.split()[1]: row for row in checked.stdout.splitlines()[1:] if row.strip()}
    assert "FAIL" in rows["image's"] and old_python_message(OLD_VERSION) in rows["image's"]
    assert "cells cannot run on this site" in checked.stdout
    kept = JupyterSettings.of(load_profile(profile, config_path=config)).site_check
    assert kept["python"] == OLD_VERSION and kept["node"] == NODE


def test_the_command_line_check_reports_the_site_and_keeps_it(local_oscar, tmp_path):
    config = tmp_path / "config.yaml"
    shutil.copy(local_oscar.profile_path, config)
    profile = local_oscar.user_profiles["alice"]
    checked = oscar_jupyter("check", profile, "--config", str(config), "--node", NODE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == f"Site check of {profile}:"
    text = "\n".join(lines)
    for what in ("image's Python", "--pre-exec", "--secret", "/tmp", "object storage"):
        assert f" {what} " in text, text
    python_row = next(line for line in lines if "image's Python" in line)
    assert (
        python_row.lstrip().startswith("ok") and "(oscar-jupyter needs 3.8 or newer)" in python_row
    )
    assert "MiB free" in text
    storage_row = next(line for line in lines if "object storage" in line)
    assert "the job reaches http://127.0.0.1:" in storage_row, storage_row
    kept = JupyterSettings.of(load_profile(profile, config_path=config)).site_check
    assert kept["python"].startswith("3.") and kept["pre_exec"] is True
    assert kept["storage"] is True and kept["date"]
    before = yaml.safe_load(local_oscar.profile_path.read_text())
    after = yaml.safe_load(config.read_text())
    after["oscar"][profile].pop("jupyter")
    assert after == before  # nothing else of the file changed


def test_the_check_command_explains_itself_and_refuses_bad_input(tmp_path):
    shown = oscar_jupyter("check", "--help")
    assert shown.returncode == 0
    for words in ("probe job", "Python", "pre-exec", "secret", "/tmp", "storage", "Exit status"):
        assert words in shown.stdout
    missing = oscar_jupyter("check", "x", "--config", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    config = tmp_path / "config.yaml"
    config.write_text("oscar: {}\n")
    unknown = oscar_jupyter("check", "nosuch", "--config", str(config))
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr


def test_a_cell_on_the_image_the_check_found_too_old_is_refused_before_sending(
    local_oscar, tmp_path, monkeypatch
):
    from oscar_jupyter.session import Session
    from oscar_jupyter.spec import SpecError

    config = tmp_path / "config.yaml"
    data = yaml.safe_load(local_oscar.profile_path.read_text())
    old_image = "docker://rockylinux:8"
    data["oscar"]["local"]["jupyter"] = {
        "site_check": {"date": "2026-12-01", "python": OLD_VERSION, "image": old_image}
    }
    config.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
    session = Session()
    session.connect("local")
    spec = session.build_spec({"node": NODE, "time": "00:01:00", "image": old_image})
    with pytest.raises(SpecError) as refused:
        session.submit("print(1)", spec)
    assert refused.value.flag == "--image"
    assert str(refused.value).startswith(old_python_message(OLD_VERSION))
    assert "site check of 2026-12-01" in str(refused.value)
    assert session.jobs == {}  # nothing was sent


@pytest.mark.skipif(find_python("3.8") is None, reason="no python3.8 here (pyenv)")
def test_a_cell_runs_on_an_image_with_a_real_python_3_8(request, tmp_path, monkeypatch):
    if executor_choice() != "process":
        request.getfixturevalue("slurm_cluster")
    python = Path(find_python("3.8"))
    with local_oscar_with_python(tmp_path, python) as (config, profile):
        offload = f"%%oscar_offload --node {NODE} --time 00:01:00 --in n --out squares"
        cells = run_cells(
            config,
            profile,
            monkeypatch,
            "n = 4",
            offload + "\nimport sys\nprint('python', sys.version_info[:2])\n"
            "squares = [i * i for i in range(n)]\ndisplay({'done': True})",
            "print(squares)",
            offload + "\nraise ValueError('boom')",
        )
    ran, shown, failed = cells[1].outputs, cells[2].outputs, cells[3].outputs
    assert not [out for out in ran if out.output_type == "error"], ran
    assert "python (3, 8)" in "".join(out.get("text", "") for out in ran)
    assert "{'done': True}" in str(ran)
    assert "[0, 1, 4, 9]" in "".join(out.get("text", "") for out in shown)
    errors = [out for out in failed if out.output_type == "error"]
    assert len(errors) == 1 and errors[0].evalue == "ValueError: boom"
