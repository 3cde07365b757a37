"""sbatch flags (splitting, dedup, resource flags) and image references, per plugin release:
0.6.2 (shell words, short aliases, any scheme kept) and 0.6.1 (regexes over the raw annotation,
single-space split, prefix unless already there; B2 of reference OSCAR.md section 13)."""

from __future__ import annotations

import pytest

from oscar_jupyter.local.interlink import (
    PluginConfig,
    TranslationError,
    deduplicate_flags,
    deduplicate_flags_0_6_1,
    image_reference,
    sbatch_flags,
    split_slurm_flags,
    split_slurm_flags_0_6_1,
)

RELEASES = ("0.6.1", "0.6.2")


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
def test_split_slurm_flags_0_6_2(text, flags):
    assert split_slurm_flags(text) == flags


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        (
            "--job-name=hello -t 00:10:00 -p debug",
            ["--job-name=hello", "-t", "00:10:00", "-p", "debug"],
        ),
        ('--comment="two words" -J x', ['--comment="two', 'words"', "-J", "x"]),
        ("--nodes=1  --time=1", ["--nodes=1", "", "--time=1"]),
        ("--nodes=1\t--time=1", ["--nodes=1\t--time=1"]),
        ("", [""]),
    ],
)
def test_split_slurm_flags_0_6_1_splits_on_single_spaces_only(text, flags):
    assert split_slurm_flags_0_6_1(text) == flags


def test_dedup_0_6_2_keeps_last_value_at_first_position_and_knows_short_aliases():
    flags = ["-p debug", "--time=1", "--partition=gpu", "-t 00:05:00", "-J a", "--job-name=b"]
    assert deduplicate_flags(flags) == ["--partition=gpu", "-t 00:05:00", "--job-name=b"]


def test_dedup_drops_empty_flags():
    assert deduplicate_flags(["", "  ", "--a=1", " --a=2 "]) == ["--a=2"]
    assert deduplicate_flags_0_6_1(["", "  ", "--a=1", " --a=2 "]) == ["--a=2"]


def test_dedup_0_6_1_keys_knows_no_aliases_and_treats_a_lone_value_as_a_key():
    flags = ["-p", "debug", "--partition=gpu", "-t", "5", "--time 1", "--time 2", "-p", "x"]
    # prepare.go 266-281 at 0.6.1: "=" splits, a "--" flag keys on its first word, anything
    # else is its own key; the last value stays at the first position.
    assert deduplicate_flags_0_6_1(flags) == [
        "-p",
        "debug",
        "--partition=gpu",
        "-t",
        "5",
        "--time 2",
        "x",
    ]


# --- B2: plugin 0.6.1 (prepare.go 929-959): regexes over the raw annotation, then split " ".


def test_0_6_1_mem_regex_eats_the_start_of_mem_bind_and_mem_per_cpu():
    limits = [{"cpu": "1", "memory": "1Gi"}]
    pod = pod_with("--mem-bind=local --mem-per-cpu=2G --mem=64G -p debug", limits=limits)
    assert sbatch_flags(pod, "0.6.1") == [
        "-bind=local",
        "-per-cpu=2G",
        "-p",
        "debug",
        "--cpus-per-task=1",
        "--mem=1024",
    ]
    assert sbatch_flags(pod, "0.6.2") == [
        "--mem-bind=local",
        "--mem-per-cpu=2G",
        "-p debug",
        "--cpus-per-task=1",
        "--mem=1024",
    ]


def test_0_6_1_quoted_values_with_spaces_break_into_words():
    pod = pod_with('--comment="two words" --job-name=x', limits=[{"cpu": "1", "memory": "1Mi"}])
    assert sbatch_flags(pod, "0.6.1") == [
        '--comment="two',
        'words"',
        "--job-name=x",
        "--cpus-per-task=1",
        "--mem=1",
    ]
    assert sbatch_flags(pod, "0.6.2")[:2] == ["--comment=two words", "--job-name=x"]


def test_0_6_1_cuts_cpus_per_task_in_both_spellings_but_not_dash_c():
    limits = [{"cpu": "2", "memory": "1Mi"}]
    pod = pod_with("--cpus-per-task 16 -c 8 --cpus-per-task=4 -p debug", limits=limits)
    assert sbatch_flags(pod, "0.6.1") == ["-c", "8", "-p", "debug", "--cpus-per-task=2", "--mem=1"]
    assert sbatch_flags(pod, "0.6.2") == ["-p debug", "--cpus-per-task=2", "--mem=1"]


def test_0_6_1_without_limits_any_mem_match_counts_as_a_memory_flag():
    # --mem-bind matches the regex, so the plugin believes --mem was given and adds no --mem=1.
    assert sbatch_flags(pod_with("--mem-bind=local"), "0.6.1") == [
        "--mem-bind=local",
        "--cpus-per-task=1",
    ]
    assert sbatch_flags(pod_with("--mem-bind=local"), "0.6.2") == [
        "--mem-bind=local",
        "--cpus-per-task=1",
        "--mem=1",
    ]
    # -c is no cpu flag to 0.6.1: --cpus-per-task=1 is added after it.
    assert sbatch_flags(pod_with("-c 8 --mem=64G"), "0.6.1") == [
        "-c",
        "8",
        "--mem=64G",
        "--cpus-per-task=1",
    ]


def test_0_6_1_regexes_use_gos_ascii_non_space():
    # RE2's \S is [^\t\n\f\r ]: a vertical tab is part of the value it swallows.
    pod = pod_with("--mem=1G\v-p debug", limits=[{"cpu": "1", "memory": "1Mi"}])
    assert sbatch_flags(pod, "0.6.1") == ["debug", "--cpus-per-task=1", "--mem=1"]


def test_limits_become_cpus_and_mem_and_drop_the_annotation_ones():
    pod = pod_with(
        "-c 8 --mem=64G -p debug --cpus-per-task=16", limits=[{"cpu": "1500m", "memory": "4Gi"}]
    )
    assert sbatch_flags(pod, "0.6.2") == ["-p debug", "--cpus-per-task=2", "--mem=4096"]


def test_without_limits_the_plugin_asks_for_one_cpu_and_one_megabyte():
    assert sbatch_flags(pod_with("-p debug"), "0.6.2") == [
        "-p debug",
        "--cpus-per-task=1",
        "--mem=1",
    ]


def test_annotation_cpu_and_mem_are_kept_when_there_are_no_limits():
    assert sbatch_flags(pod_with("-c 8 --mem=64G"), "0.6.2") == ["-c 8", "--mem=64G"]


def test_mem_per_cpu_is_not_a_memory_flag_so_mem_is_still_added():
    pod = pod_with("--mem-per-cpu=2G", limits=[{"memory": "1Gi"}])
    assert sbatch_flags(pod, "0.6.2") == ["--mem-per-cpu=2G", "--cpus-per-task=1", "--mem=1024"]


@pytest.mark.parametrize("release", RELEASES)
def test_the_max_over_all_containers_counts_init_included(release):
    pod = pod_with(
        limits=[{"cpu": "0.2", "memory": "256Mi"}, {"cpu": "2", "memory": "1G"}],
        init_limits=[{"cpu": "3"}],
    )
    assert sbatch_flags(pod, release) == ["--cpus-per-task=3", "--mem=953"]


@pytest.mark.parametrize("release", RELEASES)
def test_run_as_user_adds_uid_before_resources(release):
    pod = pod_with("--uid=5", limits=[{"cpu": "1", "memory": "1Mi"}])
    pod["spec"]["securityContext"] = {"runAsUser": 1001}
    assert sbatch_flags(pod, release) == ["--uid=1001", "--cpus-per-task=1", "--mem=1"]


def test_a_bad_quantity_names_the_container_and_field():
    with pytest.raises(TranslationError, match=r"container c0 limits\.memory.*'4 GB'"):
        sbatch_flags(pod_with(limits=[{"memory": "4 GB"}]))


CVMFS = {"slurm-job.vk.io/image-root": "/cvmfs/unpacked.cern.ch/"}


@pytest.mark.parametrize(
    ("image", "annotations", "on_0_6_1", "on_0_6_2"),
    [
        ("ghcr.io/grycap/cowsay:latest", {}, "docker://ghcr.io/grycap/cowsay:latest", None),
        ("python:3.11", {}, "docker://python:3.11", None),
        ("docker://python:3.11", {}, "docker://python:3.11", None),
        ("oras://reg/img:1", {}, "docker://oras://reg/img:1", "oras://reg/img:1"),
        ("/shared/images/py.sif", {}, "/shared/images/py.sif", None),
        (
            "py.sif",
            {"slurm-job.vk.io/image-root": "/shared/images/"},
            "/shared/images/py.sif",
            None,
        ),
        (
            "docker://x",
            {"slurm-job.vk.io/image-root": "/shared/"},
            "/shared/docker://x",
            "docker://x",
        ),
        ("docker://python", CVMFS, "/cvmfs/unpacked.cern.ch/docker://python", "docker://python"),
    ],
)
def test_image_reference(image, annotations, on_0_6_1, on_0_6_2):
    """prepareImage: 0.6.1 (prepare.go 1838-1860) prepends unless already there; 0.6.2
    (1973-2000 at 0.6.2-pre5) keeps any scheme://."""
    assert image_reference(image, annotations, PluginConfig("/jobs/", release="0.6.1")) == on_0_6_1
    expected = on_0_6_2 or on_0_6_1
    assert image_reference(image, annotations, PluginConfig("/jobs/", release="0.6.2")) == expected


@pytest.mark.parametrize("release", RELEASES)
def test_empty_image_prefix_keeps_a_bare_reference(release):
    config = PluginConfig("/j/", image_prefix="", release=release)
    assert image_reference("python:3.11", None, config) == "python:3.11"


def test_an_unknown_release_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"0\.6\.1, 0\.6\.2, not '0\.5\.2'"):
        PluginConfig("/j/", release="0.5.2")
    with pytest.raises(ValueError, match="0.6.1, 0.6.2"):
        sbatch_flags(pod_with(), "0.7.0")
