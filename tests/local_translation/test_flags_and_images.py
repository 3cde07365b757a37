"""sbatch flags (splitting, dedup, resource flags) and image references, HEAD rules."""

from __future__ import annotations

import pytest

from oscar_jupyter.local.interlink import (
    PluginConfig,
    TranslationError,
    deduplicate_flags,
    image_reference,
    sbatch_flags,
    split_slurm_flags,
)


def pod_with(
    flags: str | None = None,
    limits: list[dict] | None = None,
    init_limits: list[dict] | None = None,
) -> dict:
    annotations = {} if flags is None else {"slurm-job.vk.io/flags": flags}

    def containers(all_limits, prefix):
        return [
            {"name": f"{prefix}{i}", "image": "x", "resources": {"limits": lim}}
            for i, lim in enumerate(all_limits or [])
        ]

    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "annotations": annotations},
        "spec": {
            "initContainers": containers(init_limits, "init"),
            "containers": containers(limits or [{}], "c"),
        },
    }


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("--job-name=hello -t 00:10:00 -p debug", ["--job-name=hello", "-t 00:10:00", "-p debug"]),
        ("  --nodes=1\t--time=01:00:00\n", ["--nodes=1", "--time=01:00:00"]),
        ('--comment="two words" -J x', ["--comment=two words", "-J x"]),
        ("--constraint='a|b' --gres=gpu:2", ["--constraint=a|b", "--gres=gpu:2"]),
        ("--x a b -y", ["--x a b", "-y"]),
        ("stray --a=1", ["stray", "--a=1"]),
        (r"--comment=a\ b", ["--comment=a b"]),
        ("", []),
    ],
)
def test_split_slurm_flags(text, flags):
    assert split_slurm_flags(text) == flags


def test_dedup_keeps_last_value_at_first_position_and_knows_short_aliases():
    flags = ["-p debug", "--time=1", "--partition=gpu", "-t 00:05:00", "-J a", "--job-name=b"]
    assert deduplicate_flags(flags) == ["--partition=gpu", "-t 00:05:00", "--job-name=b"]


def test_dedup_drops_empty_flags():
    assert deduplicate_flags(["", "  ", "--a=1", " --a=2 "]) == ["--a=2"]


def test_limits_become_cpus_and_mem_and_drop_the_annotation_ones():
    pod = pod_with(
        "-c 8 --mem=64G -p debug --cpus-per-task=16", limits=[{"cpu": "1500m", "memory": "4Gi"}]
    )
    assert sbatch_flags(pod) == ["-p debug", "--cpus-per-task=2", "--mem=4096"]


def test_without_limits_the_plugin_asks_for_one_cpu_and_one_megabyte():
    assert sbatch_flags(pod_with("-p debug")) == ["-p debug", "--cpus-per-task=1", "--mem=1"]


def test_annotation_cpu_and_mem_are_kept_when_there_are_no_limits():
    assert sbatch_flags(pod_with("-c 8 --mem=64G")) == ["-c 8", "--mem=64G"]


def test_mem_per_cpu_is_not_a_memory_flag_so_mem_is_still_added():
    pod = pod_with("--mem-per-cpu=2G", limits=[{"memory": "1Gi"}])
    assert sbatch_flags(pod) == ["--mem-per-cpu=2G", "--cpus-per-task=1", "--mem=1024"]


def test_the_max_over_all_containers_counts_init_included():
    pod = pod_with(
        limits=[{"cpu": "0.2", "memory": "256Mi"}, {"cpu": "2", "memory": "1G"}],
        init_limits=[{"cpu": "3"}],
    )
    assert sbatch_flags(pod) == ["--cpus-per-task=3", "--mem=953"]


def test_run_as_user_adds_uid_before_resources():
    pod = pod_with("--uid=5", limits=[{"cpu": "1", "memory": "1Mi"}])
    pod["spec"]["securityContext"] = {"runAsUser": 1001}
    assert sbatch_flags(pod) == ["--uid=1001", "--cpus-per-task=1", "--mem=1"]


def test_a_bad_quantity_names_the_container_and_field():
    with pytest.raises(TranslationError, match=r"container c0 limits\.memory.*'4 GB'"):
        sbatch_flags(pod_with(limits=[{"memory": "4 GB"}]))


CONFIG = PluginConfig("/jobs/")


@pytest.mark.parametrize(
    ("image", "annotations", "expected"),
    [
        ("ghcr.io/grycap/cowsay:latest", {}, "docker://ghcr.io/grycap/cowsay:latest"),
        ("python:3.11", {}, "docker://python:3.11"),
        ("docker://python:3.11", {}, "docker://python:3.11"),
        ("oras://reg/img:1", {}, "docker://oras://reg/img:1"),  # 0.6.1 prepends
        ("/shared/images/py.sif", {}, "/shared/images/py.sif"),
        ("py.sif", {"slurm-job.vk.io/image-root": "/shared/images/"}, "/shared/images/py.sif"),
        ("docker://x", {"slurm-job.vk.io/image-root": "/shared/"}, "/shared/docker://x"),
        (
            "docker://python",
            {"slurm-job.vk.io/image-root": "/cvmfs/unpacked.cern.ch/"},
            "/cvmfs/unpacked.cern.ch/docker://python",
        ),
    ],
)
def test_image_reference(image, annotations, expected):
    assert image_reference(image, annotations, CONFIG) == expected


def test_empty_image_prefix_keeps_a_bare_reference():
    assert image_reference("python:3.11", None, PluginConfig("/j/", image_prefix="")) == (
        "python:3.11"
    )
