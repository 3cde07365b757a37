"""The runtime line and job.slurm prefix in cases the worked examples do not cover."""

from __future__ import annotations

import pytest

from oscar_jupyter.local.interlink import (
    PluginConfig,
    TranslationError,
    prepare,
    render_job_sh,
    render_job_slurm,
)


def pod(
    container: dict, volumes: list[dict] | None = None, annotations: dict | None = None
) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations or {}},
        "spec": {
            "containers": [{"name": "c", "image": "img", **container}],
            "volumes": volumes or [],
        },
    }


def runtime_line(text: str) -> str:
    [line] = [line for line in text.split("\n") if line.startswith("runCtn ")]
    return line


def test_no_command_means_singularity_run_with_args_only():
    config = PluginConfig("/j/", singularity_default_options=["--containall"])
    line = runtime_line(render_job_sh(pod({"args": ["--flag", "a b"]}), config))
    assert line == "runCtn c singularity run --containall    docker://img --flag 'a b'"


@pytest.mark.parametrize("release", ["0.6.1", "0.6.2"])
def test_host_path_and_sub_path_binds(tmp_path, release):
    host = tmp_path / "data"
    volumes = [
        {"name": "h", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
        {"name": "cm", "configMap": {"name": "conf"}},
    ]
    mounts = [
        {"name": "h", "mountPath": "/in", "readOnly": True},
        {"name": "cm", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
    ]
    the_pod = pod({"command": ["true"], "volumeMounts": mounts}, volumes)
    config = PluginConfig(f"{tmp_path}/jobs/", release=release)
    directory = prepare(the_pod, configmaps={"conf": {"app.conf": "a\\nb"}}, config=config)
    line = runtime_line((directory / "job.sh").read_text())
    # hostPath: no trailing space; subPath: the key is bound onto mountPath itself.
    assert (
        f" --bind {host}:/in:ro --bind {directory}/configMaps/cm/app.conf:/etc/app.conf:rw " in line
    )
    assert host.is_dir()
    # A literal \n without any real newline: plugin 0.6.2 unescapes it (prepare.go 515-520 at
    # 0.6.2-pre5), 0.6.1 writes the text as it is (prepare.go 1671).
    written = (directory / "configMaps/cm/app.conf").read_text()
    assert written == ("a\\nb" if release == "0.6.1" else "a\nb")


def test_host_path_directory_must_exist(tmp_path):
    volumes = [{"name": "h", "hostPath": {"path": str(tmp_path / "missing"), "type": "Directory"}}]
    the_pod = pod({"volumeMounts": [{"name": "h", "mountPath": "/in"}]}, volumes)
    with pytest.raises(TranslationError, match="does not exist; create it"):
        prepare(the_pod, configmaps={}, config=PluginConfig(f"{tmp_path}/jobs/"))
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    ("mounts", "volumes", "message"),
    [
        ([{"name": "x", "mountPath": "/x"}], [], "no volume of that name"),
        (
            [{"name": "h", "mountPath": "/x"}],
            [{"name": "h", "hostPath": {"path": "/tmp"}}],
            "hostPath type None is not supported",
        ),
        (
            [{"name": "n", "mountPath": "/x"}],
            [{"name": "n", "nfs": {"server": "s"}}],
            "volume type nfs is not supported",
        ),
    ],
)
def test_volumes_the_plugin_cannot_handle(mounts, volumes, message):
    with pytest.raises(TranslationError, match=message):
        render_job_sh(pod({"volumeMounts": mounts}, volumes), PluginConfig("/j/"))


@pytest.mark.parametrize(
    ("release", "last_lines"),
    [
        ("0.6.1", "\nmodule load x /j/ns-u1/job.sh\n"),  # B1: job.sh joins the pre-exec line
        ("0.6.2", "\nmodule load x\n/j/ns-u1/job.sh\n"),
    ],
)
def test_job_slurm_prefix_order(release, last_lines):
    annotations = {
        "interlink.eu/pod-ip": "10.0.0.7",
        "slurm-job.vk.io/pre-exec": "module load x",
        "interlink.eu/wstunnel-client-commands": "wstunnel &",
    }
    config = PluginConfig(
        "/j/", command_prefix="source /etc/profile", bash_path="/usr/bin/bash", release=release
    )
    text = render_job_slurm(pod({}, annotations=annotations), config)
    assert text.startswith("#!/usr/bin/bash\n#SBATCH --job-name=u1\n")
    assert text.endswith(
        "#SBATCH --mem=1\n\nexport POD_IP=10.0.0.7\n\nsource /etc/profile\nwstunnel &\n"
        + last_lines
    )


@pytest.mark.parametrize(
    ("pre_exec", "release", "last_lines"),
    [
        (None, "0.6.1", "#SBATCH --mem=1\n /j/ns-u1/job.sh\n"),
        (None, "0.6.2", "#SBATCH --mem=1\n\n/j/ns-u1/job.sh\n"),
        ("module load x\n", "0.6.1", "#SBATCH --mem=1\n\nmodule load x\n /j/ns-u1/job.sh\n"),
        ("module load x\n", "0.6.2", "#SBATCH --mem=1\n\nmodule load x\n\n/j/ns-u1/job.sh\n"),
    ],
)
def test_b1_a_pre_exec_ending_in_a_newline_is_safe_on_both_releases(pre_exec, release, last_lines):
    annotations = {"slurm-job.vk.io/pre-exec": pre_exec} if pre_exec else {}
    text = render_job_slurm(pod({}, annotations=annotations), PluginConfig("/j/", release=release))
    assert text.endswith(last_lines)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad_Name"}, "metadata.name 'Bad_Name' is not a DNS-1123 name"),
        ({"uid": "../x"}, "metadata.uid '../x' must be a UUID-like string"),
        ({"namespace": ""}, "metadata.namespace '' is not a DNS-1123 label"),
    ],
)
def test_pod_identity_is_checked(change, message):
    the_pod = pod({})
    the_pod["metadata"] |= change
    with pytest.raises(TranslationError, match=message):
        render_job_slurm(the_pod, PluginConfig("/j/"))


def test_env_names_must_be_shell_variables(tmp_path):
    the_pod = pod({"env": [{"name": "my.var", "value": "1"}]})
    with pytest.raises(TranslationError, match="env name 'my.var' cannot be a shell variable"):
        prepare(the_pod, configmaps={}, config=PluginConfig(f"{tmp_path}/"))


def test_mpi_flags_change_nothing_as_in_every_modelled_plugin_release():
    # prepare.go (0.6.1 lines 961-966, 0.6.2-pre5 1093-1100) builds the mpiexec words but
    # assigns them to the loop's copy of each container command: job.sh keeps its line.
    from oscar_jupyter.local.interlink import MPI_FLAGS_APPLIED, mpi_command

    config = PluginConfig("/j/", singularity_default_options=["--containall"])
    plain = render_job_sh(pod({"command": ["/bin/sh", "-c", "true"]}), config)
    for value in ("", "--oversubscribe", "true"):
        annotations = {"slurm-job.vk.io/mpi-flags": value}
        wrapped = render_job_sh(
            pod({"command": ["/bin/sh", "-c", "true"]}, None, annotations), config
        )
        assert wrapped == plain
    assert MPI_FLAGS_APPLIED is False
    # What the plugin means to prepend: split on single spaces, "true" special-cased.
    assert mpi_command({"slurm-job.vk.io/mpi-flags": "--oversubscribe  --bind-to none"}) == [
        "mpiexec",
        "-np",
        "$SLURM_NTASKS",
        "--oversubscribe",
        "",
        "--bind-to",
        "none",
    ]
    assert mpi_command({"slurm-job.vk.io/mpi-flags": ""}) == ["mpiexec", "-np", "$SLURM_NTASKS", ""]
    assert mpi_command({"slurm-job.vk.io/mpi-flags": "true"}) == []
    assert mpi_command({}) == []
