"""Magics in an IPython shell, for what needs no cluster: parsing, validation, dry runs."""

from __future__ import annotations

import re

import pytest
import yaml
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from oscar_jupyter import session as session_module
from oscar_jupyter.spec import SpecError


@pytest.fixture()
def ip(ipshell, monkeypatch, tmp_path):
    shell = ipshell
    monkeypatch.setattr(session_module, "_current", None)  # a fresh session per test
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return shell


def run_cell_magic(ip, line: str, cell: str = "print(1)\n"):
    with capture_output() as captured:
        result = ip.run_cell_magic("oscar_offload", line, cell)
    return result, captured


def test_dry_run_prints_fdl_and_request_and_sends_nothing(ip):
    _, out = run_cell_magic(
        ip,
        "--dry-run --node vega --time 02:30:00 --cpus-per-task 8 --mem 32G "
        "--env 'GREETING=hello, it'\"'\"'s $HOME `x`' --sbatch '--qos=high --exclusive'",
    )
    text = out.stdout
    assert "POST /job/oj-" in text
    assert "nothing was sent" in text
    fdl_text = text.split("# Service definition", 1)[1].split("\n", 1)[1].split("# ", 1)[0]
    fdl = yaml.safe_load(fdl_text)
    service = next(iter(fdl["functions"]["oscar"][0].values()))
    assert service["interlink_node_name"] == "vega"
    assert service["cpu"] == "8"
    assert service["log_level"] == "DEBUG"
    assert "GREETING" not in service["environment"]["variables"]  # only in the job's program
    assert "hello, it" not in text  # the dry run shows no --env value
    flags = service["annotations"]["slurm-job.vk.io/flags"]
    assert "--time=02:30:00" in flags and "--qos=high" in flags and "--exclusive" in flags


@pytest.mark.parametrize(
    ("line", "flag"),
    [
        ("--time 90x", "--time"),
        ("--mem lots", "--mem"),
        ("--cpus-per-task 0", "--cpus-per-task"),
        ("--cpus-per-task two", "--cpus-per-task"),
        ("--mount /only-one-side", "--mount"),
        ("--sbatch '--output=/tmp/x'", "--sbatch"),
        ("--sbatch '--mem-per-cpu=2G'", "--sbatch"),
        ("--env NOEQUALS", "--env"),
        ("--timeout soon", "--timeout"),
    ],
)
def test_bad_flags_fail_before_anything_is_sent(ip, line, flag):
    # No cluster is configured: reaching the network would fail with a connection error instead.
    with pytest.raises(SpecError) as err:
        run_cell_magic(ip, "--dry-run " + line)
    assert err.value.flag == flag
    assert flag in str(err.value)


def test_unknown_flag_is_a_usage_error_with_the_usage_text(ip):
    with pytest.raises(UsageError) as err:
        run_cell_magic(ip, "--nodes-count 3")
    assert "%%oscar_offload" in str(err.value)


def test_config_traits_are_defaults_and_cell_flags_win(ip):
    ip.run_line_magic("config", "OscarMagics.default_image = 'docker://example.org/train:1'")
    ip.run_line_magic("config", "OscarMagics.default_time = '00:10:00'")
    try:
        _, out = run_cell_magic(ip, "--dry-run --node vega --time 01:00:00")
        assert "docker://example.org/train:1" in out.stdout
        assert "--time=01:00:00" in out.stdout and "00:10:00" not in out.stdout
    finally:
        ip.run_line_magic("config", "OscarMagics.default_image = 'docker://python:3.12-slim'")
        ip.run_line_magic("config", "OscarMagics.default_time = ''")


def test_panel_defaults_apply_to_a_bare_cell(ip):
    session_module.current().defaults.update({"node": "vega", "cpus_per_task": 4})
    _, out = run_cell_magic(ip, "--dry-run")
    assert "interlink_node_name: vega" in out.stdout
    assert "cpu: '4'" in out.stdout or 'cpu: "4"' in out.stdout


def test_connect_without_any_configuration_says_what_to_do(ip):
    with pytest.raises(Exception) as err:
        ip.run_line_magic("oscar_connect", "")
    message = str(err.value)
    assert "oscar-cli" in message or "OSCAR_ENDPOINT" in message


def test_a_bad_flag_renders_as_its_message_alone_in_the_notebook(ip):
    with capture_output() as out:
        ip.run_cell("%%oscar_offload --dry-run --time 90x\nprint(1)\n")
    assert "SpecError: --time 90x" in out.stdout + out.stderr
    assert "magics.py" not in out.stdout + out.stderr  # no internals in the rendering


@pytest.mark.parametrize("flag", ["--password", "--token"])
def test_secrets_written_in_a_cell_are_refused_with_the_safe_ways(ip, flag):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("oscar_connect", f"--endpoint http://127.0.0.1:9 --user u {flag} s3cret")
    message = str(err.value)
    assert "s3cret" not in message
    assert "--ask-password" in message and "--token-file" in message


def test_a_missing_token_file_is_named(ip, tmp_path):
    with pytest.raises(UsageError, match="missing-token"):
        ip.run_line_magic(
            "oscar_connect", f"--endpoint http://h:1 --token-file {tmp_path}/missing-token"
        )


def test_a_cluster_profile_carries_offload_defaults_under_the_traits_and_flags(ip, tmp_path):
    from oscar_jupyter.config import load_profile

    config = tmp_path / "config.yaml"
    config.write_text(
        "oscar:\n"
        "  vega:\n"
        "    endpoint: https://oscar.vega.example\n"
        "    auth_user: oscar\n"
        "    auth_password: not-used-here\n"
        "    memory: 2Gi\n"
        "    jupyter:\n"
        "      node: vega-new-vk\n"
        "      time: '01:00:00'\n"
        "      partition: cpu\n"
        "default: vega\n"
    )
    session_module.current().profile = load_profile("vega", config_path=config)
    _, out = run_cell_magic(ip, "--dry-run --time 00:20:00")
    assert "interlink_node_name: vega-new-vk" in out.stdout
    assert "memory: 2048Mi" in out.stdout
    assert "--partition=cpu" in out.stdout
    assert "--time=00:20:00" in out.stdout and "01:00:00" not in out.stdout  # the flag wins
    assert "not-used-here" not in out.stdout


@pytest.mark.parametrize("name", ["not an identifier", "1job", "class"])
def test_the_job_variable_must_be_a_python_name(ip, name):
    with pytest.raises(SpecError, match="-o .*give a Python variable name"):
        ip.run_cell_magic("oscar_offload", f"--node vega --time 00:01:00 -o '{name}'", "x = 1")
    assert name not in ip.user_ns


def test_a_mistyped_flag_suggests_the_closest_one(ip):
    with pytest.raises(UsageError) as err:
        run_cell_magic(ip, "--walltime 00:10:00")
    assert str(err.value) == "%%oscar_offload: unknown flag --walltime: did you mean --time?"
    with pytest.raises(UsageError) as err:
        run_cell_magic(ip, "--frobnicate")
    assert "usage:" not in str(err.value) and "--frobnicate" in str(err.value)


def test_dry_run_prints_the_summary_then_the_fdl_then_the_script(ip):
    _, out = run_cell_magic(ip, "--dry-run --node vega --time 01:00:00 --mem 4G --gpus 1")
    text = out.stdout
    order = [
        text.find(h) for h in ("# Summary", "# Service definition", "# Job request", "# File ")
    ]
    assert order[0] == 0 and order == sorted(order)
    summary = text[: order[1]]
    assert "node: vega" in summary and "memory 4G" in summary and "1 GPU(s)" in summary
    assert "sbatch flags: --time=01:00:00 --gres=gpu:1" in summary
    assert text.rstrip().splitlines()[-1].startswith('exec python3 .oj-tagger.py "$_oj_work"')


def test_a_syntax_error_is_reported_before_anything_is_sent(ip):
    from oscar_jupyter.errors import CellSyntaxError

    # No cluster is configured: reaching the network would fail with a connection error instead.
    with pytest.raises(CellSyntaxError) as err:
        run_cell_magic(ip, "--node vega --time 00:01:00", "a = 1\nb = (\n")
    rendered = err.value._render_traceback_()
    assert rendered[0] == "  <cell>, line 3"
    assert rendered[-1].startswith("SyntaxError: ")
    # A SyntaxError as Python's own: `except SyntaxError` catches it, at the editor's line.
    assert isinstance(err.value, SyntaxError) and err.value.lineno == 3


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("A-B", "a variable name is letters, digits and '_'"),
        ("LOG_LEVEL", "OSCAR's supervisor reads this variable"),
        ("EXECUTION_MODE", "OSCAR's supervisor reads this variable"),
    ],
)
def test_a_bad_secret_name_is_refused_before_its_value_is_asked(ip, monkeypatch, name, says):
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda prompt="": asked.append(prompt) or "x")
    monkeypatch.delenv(name, raising=False)
    with pytest.raises(SpecError) as err:
        run_cell_magic(ip, f"--dry-run --node vega --time 00:01:00 --secret {name}")
    assert err.value.flag == "--secret" and says in str(err.value)
    assert asked == []


def test_a_secret_a_frontend_cannot_ask_for_names_it_and_the_safe_ways(ip, monkeypatch):
    from IPython.core.error import StdinNotImplementedError

    def cannot_prompt(prompt: str = "") -> str:
        raise StdinNotImplementedError("raw_input was called, but this frontend does not support")

    monkeypatch.setattr("getpass.getpass", cannot_prompt)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SpecError) as err:
        run_cell_magic(ip, "--dry-run --node vega --time 00:01:00 --secret HF_TOKEN")
    message = str(err.value)
    assert message.startswith("--secret HF_TOKEN: this kernel has no $HF_TOKEN")
    assert "oscar_jupyter.ask_secret('HF_TOKEN')" in message


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("--inputs x", "unknown flag --inputs: did you mean --in?"),
        ("--walltime 01:00:00", "did you mean --time?"),
        ("--env A=1 B=2", "unexpected word 'B=2': give each variable its own --env: --env B=2"),
    ],
)
def test_what_people_type_is_answered_with_the_flag_they_meant(ip, line, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        run_cell_magic(ip, f"--node vega {line}")


def test_the_magics_help_lists_every_option_of_the_table(ip):
    from oscar_jupyter.magics import OscarMagics
    from oscar_jupyter.options import OPTIONS

    doc = OscarMagics.oscar_offload.__doc__ or ""
    assert all(option.usage in doc for option in OPTIONS)
    assert "--secret NAME" in doc and "--in NAME[,NAME...]" in doc and "--out" in doc


def test_out_ranks_all_goes_with_out_and_ranks_and_not_with_a_session(ip):
    _, out = run_cell_magic(
        ip, "--dry-run --node vega --ntasks 2 --mpi --out x --out-ranks all", "x = 1\n"
    )
    assert "nothing was sent" in out.stdout
    with pytest.raises(SpecError, match=r"^--out-ranks all: there are no --out names"):
        run_cell_magic(ip, "--dry-run --node vega --ntasks 2 --mpi --out-ranks all")
    with pytest.raises(SpecError, match=r"^--out-ranks all: the cell runs once"):
        run_cell_magic(ip, "--dry-run --node vega --out x --out-ranks all")
    with pytest.raises(UsageError, match="--out-ranks cannot go with --session"):
        run_cell_magic(ip, "--session s1 --out x --out-ranks all")
