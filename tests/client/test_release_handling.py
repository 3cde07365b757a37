"""The client's handling of what sites' interLink and Slurm plugin releases do (reference
OSCAR.md section 13), in the parts that need no job: the follow's injected text (B6), flags
0.6.1 would mangle (B2), the explanation of a job that never started (B3), the interLink
releases that drop secrets (B4), and the job program's check for a missing secret."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from oscar_jupyter import runner
from oscar_jupyter.diagnostics import never_started_reason
from oscar_jupyter.follow import InjectedTextFilter, strip_injected
from oscar_jupyter.local.kubernetes_api import follow_waiting_message
from oscar_jupyter.session import _drops_secrets
from oscar_jupyter.spec import OffloadSpec, SpecError, parse_sbatch

START = "@@OJ|s|0|{}|@@\n"


@pytest.mark.parametrize("step", [1, 2, 5, 17, 64, 10_000])
def test_the_follow_drops_the_plugins_injected_text_however_it_is_cut(step):
    """B6: GetLogs.go writes its waiting message without a newline, so it joins the first line
    (the runner's start line): the filter removes it, even split across reads."""
    waiting = follow_waiting_message("GetLogs#4711", "/jobs/x/run-oscar-container.out")
    stream = waiting + waiting + START + "a line\nHTTP InterLink session is just text\n"
    kept = InjectedTextFilter()
    out = "".join(kept.feed(stream[i : i + step]) for i in range(0, len(stream), step))
    out += kept.end()
    assert out == START + "a line\nHTTP InterLink session is just text\n"
    assert strip_injected(stream) == out


def test_text_held_back_at_the_end_of_a_stream_is_given_back():
    kept = InjectedTextFilter()
    assert kept.feed("output\nHTTP Inter") == "output\n"
    assert kept.end() == "HTTP Inter"


@pytest.mark.parametrize("words", ["--mem-bind=local", "--mem-bind local", "--mem-b=local"])
def test_flags_0_6_1_would_mangle_are_refused_naming_sbatch(words):
    with pytest.raises(SpecError) as refused:
        parse_sbatch(words)
    message = str(refused.value)
    assert refused.value.flag == "--sbatch"
    assert "sbatch" in message and "0.6.1" in message and "-bind=" in message
    assert "leave it out" in message and "0.6.2" in message


def test_a_value_holding_a_cut_flag_is_refused():
    with pytest.raises(SpecError) as refused:
        parse_sbatch("--comment=a--memo")
    assert "write its value without '--mem'" in str(refused.value)


def test_sbatch_options_travel_as_single_words():
    """0.6.1 splits the flags annotation on single spaces: each option is one word."""
    spec = OffloadSpec(node="n", sbatch="--qos normal -C gpu --exclusive")
    flags = spec.slurm_flags()
    assert "--qos=normal" in flags and "--exclusive" in flags
    assert all(" " not in flag for flag in flags)


def test_a_job_that_never_started_is_explained():
    reason = never_started_reason("")
    assert reason.startswith("it ended before the job program started, with an empty log")
    assert "the Slurm plugin refused or could not start it" in reason
    assert "sbatch refused an option" in reason and "--dry-run" in reason
    told = never_started_reason("", "ProviderFailed: could not reach the plugin")
    assert told == (
        "the Slurm plugin refused or could not start it: ProviderFailed: could not reach the plugin"
    )
    # The plugin's error, Go-quoted, wraps sbatch's own words: those are what the user needs.
    wrapped = 'x{s:"... Body: sbatch: error: invalid partition specified: p\\nsbatch: error: B"}'
    assert never_started_reason("", wrapped).startswith(
        "the Slurm plugin refused it: sbatch: invalid partition specified: p (its pod's status"
    )


def test_interlink_releases_before_0_6_2_drop_secrets():
    assert _drops_secrets("0.6.1") and _drops_secrets("0.5.2")
    assert not _drops_secrets("0.6.2") and not _drops_secrets("0.7.0")
    assert not _drops_secrets(None) and not _drops_secrets("unknown")


def _run_program(program: bytes, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "program.py"
    path.write_bytes(program)
    return subprocess.run(
        [sys.executable, str(path)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_job_program_fails_in_one_line_for_a_secret_that_did_not_arrive(tmp_path):
    """B4: on interLink <= 0.6.1 the service's secret is not in the job's environment."""
    program = runner.build_program("print('ran')", secrets=["API_TOKEN"])
    missing = _run_program(program, {}, tmp_path)
    assert missing.returncode == 1 and "ran" not in missing.stdout
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("MissingSecretError: --secret API_TOKEN did not reach the job: ")
    assert "interLink is 0.6.1 or older" in last and "--mount" in last
    arrived = _run_program(program, {"API_TOKEN": "x"}, tmp_path)
    assert arrived.returncode == 0 and arrived.stdout.strip().endswith("ran"), arrived.stderr


def test_the_site_check_probe_does_not_require_its_secret():
    spec = OffloadSpec(node="n", secrets={"PROBE": "v"})
    checked = base64.b64decode(spec.job_body("pass"))
    unchecked = base64.b64decode(spec.job_body("pass", check_secrets=False))
    assert checked != unchecked
