"""Generated job.slurm / job.sh / env files, byte for byte, for both plugin releases.

`golden/` holds the inputs (pods, an OSCAR service) and one folder of outputs per release:

* `plugin-0.6.2/` (the plugin's 0.6.2-pre5 tag, ~HEAD): Examples 1 and 2 are the text of
  INTERLINK.md 2.13 (worked examples traced by hand through the Go code). The one deliberate
  difference: in Example 2 the plugin lists the two ConfigMap keys in random (Go map) order and
  we sort them, so `example2_job.sh.lines` is `example2_job.sh.lines.verbatim` with those two
  binds swapped (test_example2_golden_is_the_reference_up_to_bind_order checks exactly that).
* `plugin-0.6.1/` (what sites run): the same inputs traced by hand through the 0.6.1 tag. B1
  (`prepare.go` 1102-1108): job.sh's path on the pre-exec's line, or after a space on a line
  of its own; B2 (929-959, 259-299): `-t 00:10:00` split into two `#SBATCH` lines, `--mem`
  cut out of `--mem-bind`, quotes kept and split; images: `docker://` put in front of
  `oras://` (1838-1860).
* `interlink-0.6.1/` and `interlink-0.6.2/`: the OSCAR pod's env file; only interLink 0.6.2
  resolves the service secret's `envFrom` (B4).

The `flags` and `oscar` outputs were written by hand from the Go code of each tag, not by this
module (INTERLINK.md's examples have neither a pre-exec ending in a newline, nor B2's cases).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from oscar_jupyter.local.interlink import (
    JOB_SH_FUNCTIONS,
    PluginConfig,
    _env_lines,
    job_sh_functions,
    prepare,
    render_job_sh,
    render_job_slurm,
)
from oscar_jupyter.local.pod import build_pod, configmap_data

GOLDEN = Path(__file__).parent / "golden"
RELEASES = ("0.6.1", "0.6.2")
REFERENCE_ROOT = "/home/slurmuser/.interlink/jobs/"
EXAMPLE2_CONFIGMAPS = {
    "thermal-detector": {"script.sh": "#!/bin/sh\necho hi\n", "function_config.yaml": "name: x\n"}
}
EXAMPLE2_SECRETS = {"minio-user": {"accessKey": b"minio", "secretKey": b"not-a-real-key"}}


def golden(name: str, release: str | None = None) -> str:
    path = GOLDEN / (f"plugin-{release}/{name}" if release else name)
    return path.read_bytes().decode("utf-8")


def example_pod(name: str) -> dict:
    return json.loads(golden(f"{name}_pod.json"))


def container_lines(job_sh: str) -> str:
    return "".join(
        line + "\n" for line in job_sh.split("\n") if line.startswith(("runInitCtn ", "runCtn "))
    )


def reference_config(release: str) -> PluginConfig:
    return PluginConfig(data_root=REFERENCE_ROOT, release=release)


def oscar_pod(interlink_release: str = "0.6.1") -> tuple[dict, dict]:
    """The pod OSCAR builds for golden/oscar_service.json, as interLink hands it on."""
    case = json.loads(golden("oscar_service.json"))
    pod = build_pod(
        dict(case["service"]),
        job_name=case["job_name"],
        body=case["body"].encode(),
        pod_uid=case["pod_uid"],
        interlink_release=interlink_release,
    )
    return pod, case["service"]


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", ["example1", "example2", "flags"])
def test_job_slurm_exact(name, release):
    assert render_job_slurm(example_pod(name), reference_config(release)) == golden(
        f"{name}_job.slurm", release
    )


def test_the_releases_differ_where_section_13_says():
    """B1 and B2 on Example 1: 0.6.1 splits `-t 00:10:00` and `-p debug` and puts job.sh on
    the pre-exec's line; 0.6.2 does neither. The rest of the file is the same."""
    old, new = golden("example1_job.slurm", "0.6.1"), golden("example1_job.slurm", "0.6.2")
    assert "\nmodule load apptainer /home/" in old and "\nmodule load apptainer\n/home/" in new
    assert "#SBATCH -t\n#SBATCH 00:10:00\n#SBATCH -p\n#SBATCH debug\n" in old
    assert "#SBATCH -t 00:10:00\n#SBATCH -p debug\n" in new
    assert old.splitlines()[:4] == new.splitlines()[:4]


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", ["example1", "flags"])
def test_job_sh_is_function_block_then_the_main_part(name, release):
    job_sh = render_job_sh(example_pod(name), reference_config(release))
    # The TAB line ends with the newline that starts the reference's first printf line.
    assert job_sh == job_sh_functions(release) + "\n" + golden(f"{name}_job.sh.main", release)


@pytest.mark.parametrize("release", RELEASES)
def test_function_block_has_the_plugin_frame(release):
    block = job_sh_functions(release)
    assert block.startswith("\n\n####\n# Functions\n####\n")
    assert block.endswith("\nhighestExitCode=0\n\n\t")


@pytest.mark.parametrize("release", RELEASES)
def test_function_block_golden(release):
    """Our helper block as each release writes it (our own bash with the plugin's observable
    behaviour, not the plugin's text): regenerate with UPDATE_GOLDEN=1 when it changes."""
    path = GOLDEN / f"plugin-{release}" / "job_sh_functions.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(job_sh_functions(release).encode("utf-8"))
    assert path.exists(), f"missing {path}: run with UPDATE_GOLDEN=1"
    assert job_sh_functions(release) == path.read_bytes().decode("utf-8")


def test_run_redirect_per_release():
    """0.6.1 truncates run-<ctr>.out and writes at its offset (`&>`, prepare.go 1166); 0.6.2
    appends (`>> ... 2>&1`, prepare.go 1304 at 0.6.2-pre5)."""
    assert 'time ( "$@" ) &> "${workingPath}/run-${ctn}.out" &\n' in job_sh_functions("0.6.1")
    assert '>> "${workingPath}/run-${ctn}.out" 2>&1 &\n' in job_sh_functions("0.6.2")
    assert job_sh_functions("0.6.2") == JOB_SH_FUNCTIONS


@pytest.mark.parametrize("release", RELEASES)
def test_example1_envfile_exact(tmp_path, release):
    config = PluginConfig(f"{tmp_path}/", release=release)
    directory = prepare(example_pod("example1"), configmaps={}, config=config)
    envfile = directory / "main_envfile.properties"
    assert (
        envfile.read_bytes()
        == (GOLDEN / f"plugin-{release}/example1_main_envfile.properties").read_bytes()
    )


@pytest.mark.parametrize("release", RELEASES)
def test_prepare_writes_what_render_returns(tmp_path, release):
    config = PluginConfig(f"{tmp_path}/", release=release)
    pod = example_pod("example1")
    directory = prepare(pod, configmaps={}, config=config)
    assert directory == tmp_path / "default-6f0d2a3e-1b2c-4d5e-8f90-123456789abc"
    assert (directory / "job.slurm").read_text() == render_job_slurm(pod, config)
    assert (directory / "job.sh").read_text() == render_job_sh(pod, config)
    assert (directory / "job.slurm").stat().st_mode & 0o777 == 0o774
    assert (directory / "job.sh").stat().st_mode & 0o777 == 0o774


@pytest.mark.parametrize("release", RELEASES)
def test_example2_container_lines(release):
    job_sh = render_job_sh(
        example_pod("example2"),
        reference_config(release),
        configmaps=EXAMPLE2_CONFIGMAPS,
        secrets=EXAMPLE2_SECRETS,
    )
    assert container_lines(job_sh) == golden("example2_job.sh.lines", release)


def test_example2_golden_is_the_reference_up_to_bind_order():
    ours = golden("example2_job.sh.lines", "0.6.2")
    reference = golden("example2_job.sh.lines.verbatim", "0.6.2")
    assert ours != reference
    assert sorted(ours.split(" --bind ")) == sorted(reference.split(" --bind "))


@pytest.mark.parametrize("release", RELEASES)
def test_example2_files_on_disk(tmp_path, release):
    directory = prepare(
        example_pod("example2"),
        configmaps=EXAMPLE2_CONFIGMAPS,
        secrets=EXAMPLE2_SECRETS,
        config=PluginConfig(f"{tmp_path}/", release=release),
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


@pytest.mark.parametrize("release", RELEASES)
def test_oscar_service_pod_job_slurm_and_container_lines(release):
    """The pod of an OSCAR runner service with a pre-exec as the client sends it today (no
    trailing newline): on 0.6.1 job.sh never runs."""
    pod, service = oscar_pod()
    config = reference_config(release)
    assert render_job_slurm(pod, config) == golden("oscar_job.slurm", release)
    job_sh = render_job_sh(pod, config, configmaps={service["name"]: configmap_data(service)})
    assert container_lines(job_sh) == golden("oscar_job.sh.lines", release)


@pytest.mark.parametrize("interlink_release", RELEASES)
def test_oscar_service_pod_envfile(interlink_release):
    """B4: the service secret is in the env file only when interLink 0.6.2 resolved envFrom."""
    pod, _ = oscar_pod(interlink_release)
    envfile = "".join(_env_lines(pod["spec"]["containers"][0]))
    expected = GOLDEN / f"interlink-{interlink_release}/oscar-container_envfile.properties"
    assert envfile == expected.read_text()
    assert ("API_KEY='s3cr3t value'\n" in envfile) == (interlink_release == "0.6.2")


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", ["example1", "example2", "flags"])
def test_generated_files_parse_in_bash(name, release):
    config = reference_config(release)
    pod = example_pod(name)
    job_sh = render_job_sh(pod, config, configmaps=EXAMPLE2_CONFIGMAPS, secrets=EXAMPLE2_SECRETS)
    for text in (job_sh_functions(release), job_sh, render_job_slurm(pod, config)):
        result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
