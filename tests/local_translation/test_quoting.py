"""shell_quote follows shellescape.Quote, and bash reads its output back unchanged."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oscar_jupyter.local.interlink import shell_quote


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("", "''"),
        ("eyJhIjoxfQ==", "eyJhIjoxfQ=="),
        ("a-Z_0.9/x:y,z@h%+=", "a-Z_0.9/x:y,z@h%+="),
        ("hello, it's me", "'hello, it'\"'\"'s me'"),
        ("two words", "'two words'"),
        ("$HOME", "'$HOME'"),
        ("café", "'café'"),  # any non-ASCII character is unsafe
        (
            "echo $EVENT | base64 -d | /data/supervisor",
            "'echo $EVENT | base64 -d | /data/supervisor'",
        ),
        ("'", "''\"'\"''"),
        ("a\nb", "'a\nb'"),
    ],
)
def test_shell_quote_cases(value, quoted):
    assert shell_quote(value) == quoted


env_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=60,
) | st.sampled_from(["'", '"\'"', "$(id)", "`id`", "a,b", "x\ny\n", "\\", "ü€😀", " "])


@settings(max_examples=60, deadline=None)
@given(value=env_values)
def test_envfile_line_reads_back_byte_for_byte(tmp_path_factory, value):
    envfile = tmp_path_factory.mktemp("env") / "envfile.properties"
    envfile.write_bytes(f"NAME={shell_quote(value)}\n".encode())
    result = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; printf %s "$NAME"', "bash", str(envfile)],
        capture_output=True,
        check=True,
    )
    assert result.stdout == value.encode()
