"""The bad-input table (bad_inputs.yaml): every bad input is refused before anything is sent,
by a SpecError that names the flag; every good one is accepted. Then, at the level of the Slurm
plugin's translation, that what the grammar accepts cannot run as code in the job script."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from oscar_jupyter.local.interlink import PluginConfig, prepare
from oscar_jupyter.local.pod import build_pod, configmap_data
from oscar_jupyter.options import parse_line
from oscar_jupyter.session import Session
from oscar_jupyter.spec import (
    OffloadSpec,
    SiteFacts,
    SpecError,
    normalise_image,
    settings_from_options,
)

from .table import record

TABLE = yaml.safe_load((Path(__file__).parent / "bad_inputs.yaml").read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]
GOOD: list[str] = TABLE["good"]
GOOD_PYTHON: list[dict[str, Any]] = TABLE["good_python"]


class RecordingClient:
    """Stands in for OscarClient: records every method called on it (none should be)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append(name)
            raise AssertionError(f"client.{name} was called: something was sent")

        return record


def keeps_schemes(spec: OffloadSpec) -> bool:
    """A non-docker scheme needs a plugin newer than 0.6.1 (profile jupyter: image_schemes)."""
    return "://" in spec.image and not spec.image.startswith("docker://")


def spec_from_line(line: str) -> OffloadSpec:
    """The spec a %%oscar_offload line gives, through the magic's own parser."""
    return OffloadSpec(**settings_from_options(parse_line(line)))


def good_spec(line: str) -> OffloadSpec:
    spec = spec_from_line(line)
    return dataclasses.replace(spec, site=SiteFacts(keeps_schemes=keeps_schemes(spec)))


def spec_of(case: dict[str, Any]) -> OffloadSpec:
    if "flags" in case:
        return spec_from_line(case["flags"])
    return OffloadSpec(**case["python"])


def test_the_table_is_well_formed():
    names = [case["case"] for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique (they are test ids)"
    for case in CASES:
        assert ("flags" in case) != ("python" in case), case["case"]
        assert set(case["expect"]) == {"flag", "says"}, case["case"]
    assert len(CASES) >= 100 and len(GOOD) >= 20


@pytest.mark.parametrize("case", CASES, ids=[case["case"] for case in CASES])
def test_bad_input_is_refused_before_anything_is_sent(case):
    session = Session()
    client = RecordingClient()
    session.client = client  # type: ignore[assignment]
    error: SpecError | None = None
    try:
        session.submit(case.get("code", "print(1)"), spec_of(case))
    except SpecError as refusal:
        error = refusal
    flag, says = case["expect"]["flag"], case["expect"]["says"]
    message = str(error) if error else ""
    record(
        "bad inputs refused before sending",
        case["case"],
        (
            error is not None
            and client.calls == []
            and error.flag == flag
            and message.startswith(flag)
            and says in message
        ),
    )
    assert error is not None, "accepted"
    assert client.calls == []
    assert error.flag == flag
    assert message.startswith(flag), message
    assert says in message, message


@pytest.mark.parametrize("line", GOOD)
def test_good_flags_are_accepted(line):
    spec = good_spec(line)
    record("good inputs accepted", line, spec.validate_all() == [])
    assert spec.validate_all() == []
    assert spec.service_definition()["image"] == normalise_image(spec.image)
    spec.job_body("print(1)")


@pytest.mark.parametrize("settings", GOOD_PYTHON, ids=str)
def test_good_python_settings_are_accepted(settings):
    spec = OffloadSpec(**settings)
    assert spec.validate_all() == []
    spec.service_definition()
    spec.job_body("print(1)")


# ---- the plugin's translation: accepted values stay single words of the singularity call ----

# Records its arguments, one NUL-terminated file per call, instead of running a container.
FAKE_SINGULARITY = """#!/bin/bash
printf '%s\\0' "$@" > "$(mktemp "$RECORD_DIR/call.XXXXXX")"
"""


def run_translated(
    service: dict[str, Any], tmp_path: Path, image_prefix: str = "docker://"
) -> list[list[str]]:
    """Turn ``service`` into the plugin's job.slurm + job.sh, run them with bash and a
    recording singularity, and return the argument lists singularity got."""
    runtime = tmp_path / "fake-singularity"
    runtime.write_text(FAKE_SINGULARITY)
    runtime.chmod(0o755)
    records = tmp_path / "calls"
    records.mkdir()
    pod = build_pod(service, job_name="job", body=b"cHJpbnQoMSk=", pod_uid="u-1")
    # image_prefix "" keeps every image as it is, as plugins after 0.6.1 keep schemes.
    config = PluginConfig(
        data_root=f"{tmp_path}/jobs/", singularity_path=str(runtime), image_prefix=image_prefix
    )
    directory = prepare(pod, configmaps={service["name"]: configmap_data(service)}, config=config)
    result = subprocess.run(
        ["bash", str(directory / "job.slurm")],
        cwd=directory,
        text=True,
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "RECORD_DIR": str(records)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [path.read_bytes().decode().split("\0")[:-1] for path in sorted(records.iterdir())]


def main_container_call(calls: list[list[str]]) -> list[str]:
    [call] = [c for c in calls if c[-1].startswith("echo $EVENT")]
    return call


def service_of(spec: OffloadSpec) -> dict[str, Any]:
    return {**spec.service_definition(), "interlink_node_name": "vk"}


def test_an_unchecked_image_runs_code_on_the_host(tmp_path):
    """The control: past our validation, the plugin's job script runs an injected command."""
    marker = tmp_path / "injected"
    service = service_of(OffloadSpec())
    service["image"] = f"python:3.12-slim;touch${{IFS}}{marker};true"
    run_translated(service, tmp_path)
    assert marker.exists()
    with pytest.raises(SpecError, match="--image"):
        OffloadSpec(image=service["image"]).validate()


ACCEPTED_LINES = [line for line in GOOD if "--image" in line or "--singularity-options" in line]


@pytest.mark.parametrize("line", ACCEPTED_LINES)
def test_accepted_images_and_options_reach_singularity_as_single_words(line, tmp_path):
    spec = good_spec(line)
    prefix = "" if spec.site.keeps_schemes else "docker://"
    call = main_container_call(run_translated(service_of(spec), tmp_path, prefix))
    image = call[call.index("/bin/sh") - 1]
    assert image == normalise_image(spec.image)
    if spec.singularity_options:
        words = spec.singularity_options.split()
        runs = [call[start : start + len(words)] for start in range(len(call))]
        assert words in runs
