"""singularity.py: `singularity exec|run` emulated with real bubblewrap (`--containall`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oscar_jupyter.local.singularity import (
    EnvFileError,
    parse_command_line,
    parse_env_file,
    runtime_command,
)

IMAGE = "docker://ghcr.io/grycap/cowsay:latest"
SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
DUMP_VALUE = "import os,sys; sys.stdout.buffer.write(os.environb[b'VALUE'])"


def plugin_quote(value: str) -> str:
    """How the Slurm plugin writes a value into <ctr>_envfile.properties (shellescape.Quote)."""
    if value == "":
        return "''"
    if SAFE.fullmatch(value) and value.isascii():
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


@pytest.fixture(scope="module")
def singularity(tmp_path_factory) -> str:
    path, description = runtime_command(tmp_path_factory.mktemp("home"))
    assert description.startswith("bubblewrap ") and "emulates singularity exec" in description
    return path


def run(singularity: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", dict(os.environ, HOST_ONLY_SECRET="do-not-leak"))
    return subprocess.run([singularity, *args], capture_output=True, timeout=60, **kwargs)


def test_the_environment_is_clean(singularity):
    result = run(singularity, "exec", "--nv", "--no-eval", "--containall", IMAGE, "env")
    names = {line.split("=", 1)[0] for line in result.stdout.decode().splitlines()}
    assert result.returncode == 0, result.stderr
    assert "HOST_ONLY_SECRET" not in names and "SLURM_JOB_ID" not in names
    assert {"PATH", "HOME", "SINGULARITY_CONTAINER"} <= names


def test_root_is_read_only_and_tmp_is_private_and_writable(singularity, tmp_path):
    marker = Path("/tmp") / f"host-only-{os.getpid()}"
    marker.write_text("host")
    try:
        script = (
            f"test ! -e {marker} && echo tmp-is-private; "
            "echo x > /tmp/new && cat /tmp/new; "
            "for p in /usr/new /etc/new /new; do touch $p 2>/dev/null || echo ro:$p; done; "
            "echo pid:$$; test ! -e /proc/" + str(os.getpid()) + " && echo own-pid-ns; pwd"
        )
        result = run(singularity, "exec", "--containall", IMAGE, "/bin/sh", "-c", script)
    finally:
        marker.unlink()
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[:5] == ["tmp-is-private", "x", "ro:/usr/new", "ro:/etc/new", "ro:/new"]
    assert int(lines[5].removeprefix("pid:")) <= 3
    assert lines[6:] == ["own-pid-ns", os.environ.get("HOME", "/root")]


def test_binds_read_write_read_only_comma_lists_and_files(singularity, tmp_path):
    shared, readonly = tmp_path / "shared", tmp_path / "readonly"
    shared.mkdir()
    readonly.mkdir()
    (readonly / "in.txt").write_text("given\n")
    script_file = tmp_path / "script.sh"
    script_file.write_text("echo from the bound script\n")
    result = run(
        singularity,
        "exec",
        "--containall",
        "--bind",
        f"{shared}:/data:rw,{readonly}:/input:ro",
        "-B",
        f"{script_file}:/oscar/config/script.sh:ro",
        "--pwd",
        "/data",
        IMAGE,
        "/bin/sh",
        "-c",
        "echo written > out.txt; cat /input/in.txt; touch /input/x 2>/dev/null || echo input-ro; "
        "/bin/sh /oscar/config/script.sh",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["given", "input-ro", "from the bound script"]
    assert (shared / "out.txt").read_text() == "written\n"
    assert not (readonly / "x").exists()


def test_a_bind_over_tmp_replaces_the_private_tmp(singularity, tmp_path):
    (tmp_path / "seen").write_text("yes\n")
    result = run(
        singularity, "exec", "--containall", "--bind", f"{tmp_path}:/tmp", IMAGE, "cat", "/tmp/seen"
    )
    assert result.stdout == b"yes\n"


def test_a_missing_bind_source_is_refused_with_its_name(singularity, tmp_path):
    result = run(singularity, "exec", "--bind", f"{tmp_path}/nope:/data", IMAGE, "true")
    assert result.returncode == 255
    assert f"the source {tmp_path}/nope does not exist" in result.stderr.decode()


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_the_exit_code_is_the_commands(singularity, code):
    assert run(singularity, "exec", IMAGE, "/bin/sh", "-c", f"exit {code}").returncode == code


def test_run_without_a_command_is_a_shell(singularity):
    result = run(singularity, "run", IMAGE, input=b"echo from stdin; exit 5\n")
    assert (result.returncode, result.stdout) == (5, b"from stdin\n")


def test_unknown_options_are_ignored_with_a_note_and_value_options_skipped(singularity):
    result = run(
        singularity,
        "exec",
        "--no-mount",
        "/exa5",
        "--frobnicate",
        "--hostname=h",
        IMAGE,
        "echo",
        "ran",
    )
    assert (result.returncode, result.stdout) == (0, b"ran\n")
    assert "ignoring unknown option --frobnicate" in result.stderr.decode()


def test_the_module_runs_as_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "oscar_jupyter.local.singularity", "exec", IMAGE, "echo", "hi"],
        capture_output=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, b"hi\n")


def test_usage_errors_say_what_is_missing(singularity):
    result = run(singularity, "exec", "--containall")
    assert result.returncode == 255 and b"missing the IMAGE" in result.stderr
    result = run(singularity, "pull", IMAGE)
    assert result.returncode == 255 and b"usage: singularity exec|run" in result.stderr


def test_supervisor_comes_from_the_kit(singularity, tmp_path):
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "supervisor").write_text("kit content\n")
    env = dict(os.environ, OSCAR_JUPYTER_SUPERVISOR_KIT=str(kit))
    result = run(singularity, "exec", IMAGE, "cat", "/supervisor/supervisor", env=env)
    assert result.stdout == b"kit content\n"


def test_runtime_command_prefers_a_real_apptainer(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text("#!/bin/sh\necho 'apptainer version 1.3.4'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert runtime_command(tmp_path / "home") == (str(fake), "apptainer version 1.3.4")


# --- B11: the session directory's cap (reference OSCAR.md section 13) -----------------------

TMP_SIZES = "for d in /tmp /var/tmp $HOME; do df -k $d | tail -1 | awk '{print $2}'; done"


def test_tmp_var_tmp_and_home_are_capped_at_64_mib_by_default(singularity):
    """apptainer.conf `sessiondir max size = 64`: --containall puts /tmp, /var/tmp and home in
    that tmpfs. Each is a 64 MiB tmpfs here."""
    result = run(singularity, "exec", "--containall", IMAGE, "/bin/sh", "-c", TMP_SIZES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["65536"] * 3


def test_writing_past_the_cap_fails_with_enospc_and_the_cap_is_configurable(tmp_path):
    path, description = runtime_command(tmp_path / "home", sessiondir_max_size_mib=4)
    assert "/tmp capped at 4 MiB" in description
    script = (
        "head -c 3000000 /dev/zero > /tmp/fits && echo fits; "
        "head -c 2000000 /dev/zero > /tmp/too-much; echo status=$?"
    )
    result = run(path, "exec", "--containall", IMAGE, "/bin/sh", "-c", script)
    assert result.stdout.decode().splitlines() == ["fits", "status=1"]
    assert "No space left on device" in result.stderr.decode()


def test_a_cap_of_zero_leaves_tmp_uncapped(tmp_path):
    path, description = runtime_command(tmp_path / "home", sessiondir_max_size_mib=0)
    assert "/tmp not capped" in description
    result = run(path, "exec", IMAGE, "/bin/sh", "-c", TMP_SIZES)
    assert result.returncode == 0, result.stderr
    assert all(int(size) > 65536 for size in result.stdout.decode().split())


def test_a_bind_over_tmp_is_not_capped(singularity, tmp_path):
    script = "head -c 70000000 /dev/zero > /tmp/big && echo written"
    result = run(singularity, "exec", "--bind", f"{tmp_path}:/tmp", IMAGE, "/bin/sh", "-c", script)
    assert result.stdout == b"written\n", result.stderr
    assert (tmp_path / "big").stat().st_size == 70000000


def test_a_bad_cap_is_refused(tmp_path):
    with pytest.raises(ValueError, match="must not be negative"):
        runtime_command(tmp_path / "home", sessiondir_max_size_mib=-1)
    env = dict(os.environ, OSCAR_JUPYTER_SESSIONDIR_MAX_SIZE="lots")
    result = subprocess.run(
        [sys.executable, "-m", "oscar_jupyter.local.singularity", "exec", IMAGE, "true"],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 255 and b"is not a whole number of MiB" in result.stderr


# --- env files ---------------------------------------------------------------------------------

TRICKY_VALUES = [
    "hello, it's me",
    "eyJhIjoxfQ==",
    "",
    "$HOME and ${PATH} and `id` and $(id)",
    "line one\nline two\n",
    'double "quotes" and \\ backslash',
    "ünïcødé ✓ 🚀",
    '{"json": [1, "two", {"three": null}]}',
    "  leading and trailing  ",
    "'",
    "''",
    "\t",
]


def test_env_file_values_reach_the_container_as_written(singularity, tmp_path):
    env_file = tmp_path / "main_envfile.properties"
    env_file.write_text("".join(f"V{i}={plugin_quote(v)}\n" for i, v in enumerate(TRICKY_VALUES)))
    program = "import os,json; print(json.dumps([os.environ[f'V{i}'] for i in range(%d)]))"
    result = run(
        singularity,
        "exec",
        "--env-file",
        str(env_file),
        IMAGE,
        "python3",
        "-c",
        program % len(TRICKY_VALUES),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == TRICKY_VALUES


env_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), env_values, max_size=5
    )
)
def test_env_file_parser_round_trips_the_plugin_quoting(values):
    text = "".join(f"{name}={plugin_quote(value)}\n" for name, value in values.items())
    assert parse_env_file(text) == values


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=env_values)
def test_env_file_values_round_trip_byte_for_byte_through_bubblewrap(singularity, tmp_path, value):
    env_file = tmp_path / "envfile.properties"
    env_file.write_bytes(f"VALUE={plugin_quote(value)}\n".encode())
    result = run(
        singularity, "exec", "--env-file", str(env_file), IMAGE, "python3", "-c", DUMP_VALUE
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == value.encode()


def test_env_file_shell_forms():
    text = "# comment\nexport A=1\nB=\"x $A ${A}y \\$z\"; C=a'b c'\\ d\nD=$UNSET\nE=cont\\\ninued\n"
    assert parse_env_file(text) == {
        "A": "1",
        "B": "x 1 1y $z",
        "C": "ab c d",
        "D": "",
        "E": "continued",
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("A='unterminated\n", "line 1: unterminated single quote"),
        ("\nnot an assignment\n", "line 2: expected NAME=VALUE"),
        ('A="open\n', "unterminated double quote"),
        ("A=$(id)\n", "command substitution"),
    ],
)
def test_env_file_errors_name_the_line(text, message):
    with pytest.raises(EnvFileError, match=re.escape(message)):
        parse_env_file(text, "f.properties")


def test_an_env_file_error_is_fatal_in_the_command(singularity, tmp_path):
    env_file = tmp_path / "bad.properties"
    env_file.write_text("A='oops\n")
    result = run(singularity, "exec", "--env-file", str(env_file), IMAGE, "true")
    assert result.returncode == 255
    assert f"{env_file}, line 1: unterminated single quote" in result.stderr.decode()


def test_command_line_parsing_keeps_the_command_intact():
    invocation = parse_command_line(
        [
            "exec",
            "--nv",
            "--no-eval",
            "--containall",
            "--bind",
            "/a:/b:ro",
            "--no-home",
            "--env-file",
            "/e",
            "docker://img",
            "/bin/sh",
            "-c",
            "echo --bind x",
        ]
    )
    assert invocation.image == "docker://img"
    assert invocation.command == ["/bin/sh", "-c", "echo --bind x"]
    assert [(b.source, b.destination, b.read_only) for b in invocation.binds] == [
        ("/a", "/b", True)
    ]
    assert invocation.env_files == ["/e"]


def test_an_env_file_error_does_not_show_the_values(singularity, tmp_path):
    env_file = tmp_path / "bad.properties"
    env_file.write_text("OSCAR_SERVICE_TOKEN=s3cr3t token-part-two\n")
    result = run(singularity, "exec", "--env-file", str(env_file), IMAGE, "true")
    assert result.returncode == 255
    assert b"line 1: expected NAME=VALUE" in result.stderr
    assert b"s3cr3t" not in result.stderr and b"token-part-two" not in result.stderr


def test_a_variable_over_the_kernel_limit_is_refused_clearly(singularity, tmp_path):
    env_file = tmp_path / "big.properties"
    env_file.write_text("EVENT=" + "A" * 140_000 + "\n")
    result = run(singularity, "exec", "--env-file", str(env_file), IMAGE, "true")
    assert result.returncode == 255
    assert b"variable EVENT is 140007 bytes" in result.stderr
    just_fits = "A" * (131072 - len("EVENT=") - 1)
    env_file.write_text(f"EVENT={just_fits}\n")
    result = run(
        singularity, "exec", "--env-file", str(env_file), IMAGE, "/bin/sh", "-c", "echo ${#EVENT}"
    )
    assert result.stdout == b"131065\n"
