"""The worked examples of INTERLINK.md 2.13, byte for byte.

Golden files hold the text the reference gives. The one deliberate difference: in Example 2
the plugin lists the two ConfigMap keys in random (Go map) order and we sort them, so
``example2_job.sh.lines`` is ``example2_job.sh.lines.verbatim`` with those two binds swapped
(test_example2_golden_is_the_reference_up_to_bind_order checks exactly that).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from oscar_jupyter.local.interlink import (
    JOB_SH_FUNCTIONS,
    PluginConfig,
    prepare,
    render_job_sh,
    render_job_slurm,
)

GOLDEN = Path(__file__).parent / "golden"
REFERENCE_ROOT = "/home/slurmuser/.interlink/jobs/"
EXAMPLE2_CONFIGMAPS = {
    "thermal-detector": {"script.sh": "#!/bin/sh\necho hi\n", "function_config.yaml": "name: x\n"}
}
EXAMPLE2_SECRETS = {"minio-user": {"accessKey": b"minio", "secretKey": b"not-a-real-key"}}


def golden(name: str) -> str:
    return (GOLDEN / name).read_bytes().decode("utf-8")


def example_pod(number: int) -> dict:
    return json.loads(golden(f"example{number}_pod.json"))


def container_lines(job_sh: str) -> str:
    return "".join(
        line + "\n" for line in job_sh.split("\n") if line.startswith(("runInitCtn ", "runCtn "))
    )


@pytest.fixture
def reference_config() -> PluginConfig:
    return PluginConfig(data_root=REFERENCE_ROOT)


def test_example1_job_slurm_exact(reference_config):
    assert render_job_slurm(example_pod(1), reference_config) == golden("example1_job.slurm")


def test_example1_job_sh_is_function_block_then_reference_main_part(reference_config):
    job_sh = render_job_sh(example_pod(1), reference_config)
    # The TAB line ends with the newline that starts the reference's first printf line.
    assert job_sh == JOB_SH_FUNCTIONS + "\n" + golden("example1_job.sh.main")


def test_function_block_has_the_plugin_frame():
    assert JOB_SH_FUNCTIONS.startswith("\n\n####\n# Functions\n####\n")
    assert JOB_SH_FUNCTIONS.endswith("\nhighestExitCode=0\n\n\t")


def test_example1_envfile_exact(tmp_path):
    directory = prepare(example_pod(1), configmaps={}, config=PluginConfig(f"{tmp_path}/"))
    envfile = directory / "main_envfile.properties"
    assert envfile.read_bytes() == (GOLDEN / "example1_main_envfile.properties").read_bytes()


def test_prepare_writes_what_render_returns(tmp_path):
    config = PluginConfig(f"{tmp_path}/")
    pod = example_pod(1)
    directory = prepare(pod, configmaps={}, config=config)
    assert directory == tmp_path / "default-6f0d2a3e-1b2c-4d5e-8f90-123456789abc"
    assert (directory / "job.slurm").read_text() == render_job_slurm(pod, config)
    assert (directory / "job.sh").read_text() == render_job_sh(pod, config)
    assert (directory / "job.slurm").stat().st_mode & 0o777 == 0o774
    assert (directory / "job.sh").stat().st_mode & 0o777 == 0o774


def test_example2_job_slurm_exact(reference_config):
    assert render_job_slurm(example_pod(2), reference_config) == golden("example2_job.slurm")


def test_example2_container_lines(reference_config):
    job_sh = render_job_sh(
        example_pod(2), reference_config, configmaps=EXAMPLE2_CONFIGMAPS, secrets=EXAMPLE2_SECRETS
    )
    assert container_lines(job_sh) == golden("example2_job.sh.lines")


def test_example2_golden_is_the_reference_up_to_bind_order():
    ours, reference = golden("example2_job.sh.lines"), golden("example2_job.sh.lines.verbatim")
    assert ours != reference
    assert sorted(ours.split(" --bind ")) == sorted(reference.split(" --bind "))


def test_example2_files_on_disk(tmp_path):
    directory = prepare(
        example_pod(2),
        configmaps=EXAMPLE2_CONFIGMAPS,
        secrets=EXAMPLE2_SECRETS,
        config=PluginConfig(f"{tmp_path}/"),
    )
    config_dir = directory / "configMaps" / "oscar-config"
    assert sorted(p.name for p in config_dir.iterdir()) == ["function_config.yaml", "script.sh"]
    assert (config_dir / "script.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (config_dir / "script.sh").stat().st_mode & 0o777 == 0o644  # defaultMode 420
    assert (directory / "secrets" / "minio-user" / "secretKey").read_bytes() == b"not-a-real-key"
    assert (directory / "emptyDirs" / "supervisor-share-data").is_dir()
    assert not (directory / "supervisor-container_envfile.properties").exists()
    assert (directory / "oscar-container_envfile.properties").read_text() == (
        "EVENT=eyJrZXkiOiAidmFsdWUifQ==\n"
    )


@pytest.mark.parametrize("number", [1, 2])
def test_generated_job_sh_parses_in_bash(number, reference_config):
    job_sh = render_job_sh(
        example_pod(number),
        reference_config,
        configmaps=EXAMPLE2_CONFIGMAPS,
        secrets=EXAMPLE2_SECRETS,
    )
    for text in (JOB_SH_FUNCTIONS, job_sh):
        result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
