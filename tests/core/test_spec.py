"""OffloadSpec: validation messages, the service definition and FDL (golden files), flags."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from oscar_jupyter import runner
from oscar_jupyter.spec import (
    DEFAULT_IMAGE,
    OffloadSpec,
    SpecError,
    parse_memory,
    parse_time,
)

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "defaults": OffloadSpec(),
    "cpu_job": OffloadSpec(node="vega-new-vk", time="02:30:00", cpus_per_task=8, mem="32G",
                           job_name="train", partition="cpu", account="proj1"),
    "gpu_full": OffloadSpec(node="vk", time="1-12", nodes=2, gpus=4, mem="1.5Gi",
                            image="ghcr.io/org/torch:2.3", mounts=["/scratch/me:/data:ro", "/a:/b"],
                            pre_exec="module load cuda\nexport X=1",
                            singularity_options="--no-home", sbatch="--qos normal -C amd",
                            env={"OMP_NUM_THREADS": "8", "JSON": '{"a": "b, c"}'}, prefix="team-x"),
    "sif_image": OffloadSpec(node="vk", image="/shared/images/py.sif", time="45"),
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_service_definition_and_fdl_match_golden_files(case):
    spec = CASES[case]
    definition = spec.service_definition()
    assert definition["script"] == runner.RUNNER_SCRIPT
    shown = {**definition, "script": "<RUNNER_SCRIPT>"}
    check_golden(f"{case}.service.json", json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
    check_golden(f"{case}.fdl.yaml", spec.fdl("oscar-cluster"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_fdl_is_what_oscar_cli_reads_back_into_the_same_service(case):
    spec = CASES[case]
    document = yaml.safe_load(spec.fdl("my-cluster"))
    [entry] = document["functions"]["oscar"]
    service = entry["my-cluster"]
    files = spec.fdl_files()
    assert list(files) == [service["script"]] == [f"{spec.service_name()}.sh"]
    # oscar-cli replaces script by the file's content; the rest is the service JSON
    service["script"] = files[service["script"]]
    assert service == spec.service_definition()


def test_service_fields_follow_the_design():
    d = CASES["gpu_full"].service_definition()
    assert d["image"] == "docker://ghcr.io/org/torch:2.3"
    assert d["cpu"] == "1" and d["memory"] == "1536Mi" and d["log_level"] == "DEBUG"
    assert d["enable_gpu"] is True and d["interlink_node_name"] == "vk"
    a = d["annotations"]
    assert a["slurm-job.vk.io/flags"] == ("--time=1-12:00:00 --nodes=2 --gres=gpu:4 "
                                          "--qos=normal -Camd")
    assert a["slurm-job.vk.io/singularity-mounts"] == "--bind /scratch/me:/data:ro --bind /a:/b"
    assert a["job.vk.io/singularity-mounts"] == a["slurm-job.vk.io/singularity-mounts"]
    assert a["slurm-job.vk.io/pre-exec"] == "module load cuda\nexport X=1"
    assert a["job.vk.io/pre-exec"] == a["slurm-job.vk.io/pre-exec"]
    assert a["slurm-job.vk.io/singularity-options"] == "--no-home"
    assert d["environment"]["variables"] == {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "8",
                                             "JSON": '{"a": "b, c"}'}
    assert d["labels"] == {"oscar-jupyter/runner": "true"}


@pytest.mark.parametrize(("image", "sent"), [
    ("python:3.12-slim", "docker://python:3.12-slim"),
    ("docker://python:3.12", "docker://python:3.12"),
    ("oras://reg/x:1", "oras://reg/x:1"),
    ("/shared/py.sif", "/shared/py.sif"),
    ("ghcr.io/a/b@sha256:abc", "docker://ghcr.io/a/b@sha256:abc"),
])
def test_image_references(image, sent):
    assert OffloadSpec(image=image).service_definition()["image"] == sent


def test_service_name_is_short_dns_and_changes_with_the_definition():
    names = {case: spec.service_name() for case, spec in CASES.items()}
    for name in names.values():
        assert len(name) <= 24 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert len(set(names.values())) == len(names)
    assert names["gpu_full"].startswith("team-x-")
    assert OffloadSpec(time="150").service_name() == OffloadSpec(time="02:30:00").service_name()
    assert OffloadSpec(mem="1G").service_name() == OffloadSpec(mem="1024").service_name()
    assert OffloadSpec(mem="1G").service_name() != OffloadSpec(mem="2G").service_name()


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 5400), ("5:30", 330), ("02:30:00", 9000), ("100:00:00", 360000), ("2-0", 172800),
    ("1-12", 129600), ("1-1:30", 91800), ("0-00:00:01", 1), (" 10 ", 600),
])
def test_parse_time_accepts_slurm_forms(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize(("text", "mib"), [
    ("1024", 1024), ("32G", 32768), ("32g", 32768), ("512M", 512), ("2Gi", 2048), ("1T", 1 << 20),
    ("1.5G", 1536), ("2048K", 2), ("1048576B", 1), ("300Mi", 300),
])
def test_parse_memory_units(text, mib):
    assert parse_memory(text) == mib * 1024 * 1024


# every rule: (fields, flag named, hint words that must appear)
BAD = [
    ({"time": "90x"}, "--time", ["90x", "HH:MM:SS", "--time 02:30:00"]),
    ({"time": "UNLIMITED"}, "--time", ["omit --time"]),
    ({"time": "0"}, "--time", ["more than zero", "omit --time"]),
    ({"time": "1:75"}, "--time", ["0-59"]),
    ({"time": "1-30"}, "--time", ["0-23"]),
    ({"mem": "lots"}, "--mem", ["lots", "--mem 32G"]),
    ({"mem": "5 GB"}, "--mem", ["Gi", "--mem 32G"]),
    ({"mem": "100K"}, "--mem", ["at least 1 MiB"]),
    ({"cpus_per_task": 0}, "--cpus-per-task", ["at least 1"]),
    ({"nodes": -1}, "--nodes", ["at least 1"]),
    ({"gpus": True}, "--gpus", ["whole number"]),
    ({"mounts": ["data:/data"]}, "--mount", ["absolute", "SRC:DST"]),
    ({"mounts": ["/a:/b:rx"]}, "--mount", ["ro|rw"]),
    ({"mounts": ["/a b:/c"]}, "--mount", ["--mount /scratch/me:/data:ro"]),
    ({"env": {"1BAD": "x"}}, "--env", ["1BAD", "MY_VAR"]),
    ({"env": {"A-B": "x"}}, "--env", ["variable name"]),
    ({"env": {"INPUT_FILE_PATH": "x"}}, "--env", ["another name"]),
    ({"env": {"OSCAR_SERVICE_TOKEN": "x"}}, "--env", ["another name"]),
    ({"env": {"K": "a\0b"}}, "--env", ["NUL"]),
    ({"image": ""}, "--image", ["--image python:3.12-slim"]),
    ({"image": "py thon"}, "--image", ["without spaces"]),
    ({"image": "images/py.sif"}, "--image", ["absolute path"]),
    ({"node": "Vega_1"}, "--node", ["lowercase", "--node vega-new-vk"]),
    ({"job_name": "my job"}, "--job-name", ["no spaces"]),
    ({"partition": "a;b"}, "--partition", ["--partition gpu"]),
    ({"account": "x'y"}, "--account", ["quotes"]),
    ({"sbatch": "--output=/x.out"}, "--sbatch", ["job.out"]),
    ({"sbatch": "-o /x.out"}, "--sbatch", ["job.out"]),
    ({"sbatch": "--error=e"}, "--sbatch", ["stderr"]),
    ({"sbatch": "-e e"}, "--sbatch", ["stderr"]),
    ({"sbatch": "--parsable"}, "--sbatch", ["remove it"]),
    ({"sbatch": "--cpus-per-task=4"}, "--sbatch", ["use --cpus-per-task / --mem of the magic"]),
    ({"sbatch": "-c 4"}, "--sbatch", ["use --cpus-per-task / --mem of the magic"]),
    ({"sbatch": "--mem=4G"}, "--sbatch", ["use --cpus-per-task / --mem of the magic"]),
    ({"sbatch": "--mem-per-cpu=2G"}, "--sbatch", ["conflicts"]),
    ({"sbatch": "--mem-per-gpu 2G"}, "--sbatch", ["conflicts"]),
    ({"sbatch": "--outp=x"}, "--sbatch", ["job.out"]),
    ({"sbatch": "--wrap='hostname'"}, "--sbatch", ["cell"]),
    ({"sbatch": "--comment='a b'"}, "--sbatch", ["spaces"]),
    ({"sbatch": "--qos 'normal"}, "--sbatch", ["quoting"]),
    ({"sbatch": "stray"}, "--sbatch", ["sbatch option"]),
    ({"singularity_options": "--a\n--b"}, "--singularity-options", ["one line"]),
    ({"prefix": "OJ"}, "--prefix", ["lowercase"]),
    ({"prefix": "a-very-long-prefix"}, "--prefix", ["1-13"]),
]


@pytest.mark.parametrize(("fields_", "flag", "hints"), BAD, ids=[str(b[0]) for b in BAD])
def test_every_validation_error_names_the_flag_and_says_what_to_write(fields_, flag, hints):
    spec = OffloadSpec(**fields_)
    with pytest.raises(SpecError) as error:
        spec.validate()
    assert error.value.flag == flag
    message = str(error.value)
    assert message.startswith(flag)
    for hint in hints:
        assert hint in message
    assert [e.flag for e in spec.validate_all()] == [flag]
    with pytest.raises(SpecError):
        spec.service_definition()


def test_unknown_node_lists_the_known_ones():
    with pytest.raises(SpecError, match=r"--node zz: .*known nodes: a-vk, b-vk"):
        OffloadSpec(node="zz").validate(known_nodes=["b-vk", "a-vk"])
    OffloadSpec(node="a-vk").validate(known_nodes=["b-vk", "a-vk"])


def test_validate_all_reports_every_problem_in_option_order():
    spec = OffloadSpec(node="X", time="soon", mem="much", sbatch="--wrap=x")
    assert [e.flag for e in spec.validate_all()] == ["--node", "--time", "--mem", "--sbatch"]


def test_secrets_in_env_never_show_in_repr_or_errors():
    spec = OffloadSpec(env={"API_TOKEN": "s3cr3t-value", "BAD": "s3cr3t\0"})
    assert "s3cr3t" not in repr(spec)
    assert "API_TOKEN" in repr(spec)
    assert all("s3cr3t" not in str(e) for e in spec.validate_all())


def test_time_limit_seconds():
    assert OffloadSpec().time_limit_seconds() is None
    assert OffloadSpec(time="1-0").time_limit_seconds() == 86400


def test_fdl_needs_a_cluster_id():
    with pytest.raises(SpecError, match="cluster id"):
        OffloadSpec().fdl("")


def test_to_flags_shows_only_non_defaults():
    assert OffloadSpec().to_flags() == "%%oscar_offload"
    assert OffloadSpec(node="vk", mem="4G", image=DEFAULT_IMAGE).to_flags() == (
        "%%oscar_offload --node=vk --mem=4G")
    assert OffloadSpec(sbatch="--exclusive", env={"A": "x y"}).to_flags() == (
        "%%oscar_offload --sbatch=--exclusive '--env=A=x y'")


def test_from_flags_errors_are_spec_errors():
    with pytest.raises(SpecError, match="--cpus-per-task"):
        OffloadSpec.from_flags("--cpus-per-task four")
    with pytest.raises(SpecError, match="not an option"):
        OffloadSpec.from_flags("--colour blue")
    with pytest.raises(SpecError, match="NAME=VALUE"):
        OffloadSpec.from_flags("--env JUSTNAME")


text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0\n\r"),
               min_size=1, max_size=12)
specs = st.builds(
    OffloadSpec,
    node=st.none() | st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
    time=st.none() | st.sampled_from(["10", "02:30:00", "1-12"]),
    cpus_per_task=st.none() | st.integers(1, 128),
    mem=st.none() | st.sampled_from(["512", "4G", "1.5Gi"]),
    nodes=st.none() | st.integers(1, 8), gpus=st.none() | st.integers(1, 8),
    job_name=st.none() | text, partition=st.none() | text, account=st.none() | text,
    image=st.sampled_from([DEFAULT_IMAGE, "python:3.11", "/x/y.sif"]) | text,
    mounts=st.lists(text, max_size=2), pre_exec=st.none() | text,
    singularity_options=st.none() | text, sbatch=st.none() | text,
    env=st.dictionaries(text.filter(lambda name: "=" not in name), text, max_size=3),
    prefix=st.sampled_from(["oj", "team"]) | text,
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_property_to_flags_parses_back_to_the_same_spec(spec):
    assert OffloadSpec.from_flags(spec.to_flags()) == spec
