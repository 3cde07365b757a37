"""OffloadSpec: validation messages, the service definition and FDL (golden files), flags."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from oscar_jupyter import options, runner
from oscar_jupyter.options import OptionError, parse_line
from oscar_jupyter.spec import (
    _FORBIDDEN_SBATCH,
    DEFAULT_IMAGE,
    MAX_TIME_SECONDS,
    SBATCH_OPTIONS,
    SBATCH_SHORT_OPTIONS,
    OffloadSpec,
    SiteFacts,
    SpecError,
    check_image,
    normalise_image,
    parse_memory,
    parse_time,
    settings_from_options,
)

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "defaults": OffloadSpec(),
    "cpu_job": OffloadSpec(
        node="vega-new-vk",
        time="02:30:00",
        cpus_per_task=8,
        mem="32G",
        job_name="train",
        partition="cpu",
        account="proj1",
    ),
    "gpu_full": OffloadSpec(
        node="vk",
        time="1-12",
        nodes=2,
        ntasks_per_node=4,
        mpi="--oversubscribe --bind-to none",
        gpus=4,
        mem="1.5Gi",
        image="ghcr.io/org/torch:2.3",
        mounts=["/scratch/me:/data:ro", "/a:/b"],
        pre_exec="module load cuda\nexport X=1",
        singularity_options="--no-home",
        sbatch="--qos normal -C amd",
        env={"OMP_NUM_THREADS": "8", "JSON": '{"a": "b, c"}'},
        prefix="team-x",
        site=SiteFacts(applies_mpi_flags=True),
    ),
    "sif_image": OffloadSpec(node="vk", image="/shared/images/py.sif", time="45"),
}


_MPI_SITE = SiteFacts(applies_mpi_flags=True)


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
    assert "enable_gpu" not in d and d["interlink_node_name"] == "vk"  # --gres alone reaches Slurm
    a = d["annotations"]
    assert a["slurm-job.vk.io/flags"] == (
        "--time=1-12:00:00 --nodes=2 --ntasks-per-node=4 --gres=gpu:4 --qos=normal -Camd"
    )
    assert a["slurm-job.vk.io/mpi-flags"] == "--oversubscribe --bind-to none"
    assert a["slurm-job.vk.io/singularity-mounts"] == "--bind /scratch/me:/data:ro --bind /a:/b"
    assert a["job.vk.io/singularity-mounts"] == a["slurm-job.vk.io/singularity-mounts"]
    # Ends with a newline: plugins up to 0.6.1 append job.sh to the same line.
    assert a["slurm-job.vk.io/pre-exec"] == "module load cuda\nexport X=1\n"
    assert a["job.vk.io/pre-exec"] == a["slurm-job.vk.io/pre-exec"]
    assert a["slurm-job.vk.io/singularity-options"] == "--no-home"
    # --env values travel in the job's program only: not in the service, nor in its name.
    assert d["environment"]["variables"] == {"PYTHONUNBUFFERED": "1"}
    spec = CASES["gpu_full"]
    assert spec.service_name() == dataclasses.replace(spec, env={}).service_name()
    assert d["labels"] == {"oscar-jupyter/runner": "true"}


@pytest.mark.parametrize(
    ("image", "sent"),
    [
        ("python:3.12-slim", "docker://python:3.12-slim"),
        ("docker://python:3.12", "docker://python:3.12"),
        ("oras://reg/x:1", "oras://reg/x:1"),
        ("/shared/py.sif", "/shared/py.sif"),
        ("ghcr.io/a/b@sha256:" + "ab" * 32, "docker://ghcr.io/a/b@sha256:" + "ab" * 32),
        (
            "ghcr.io/intertwin-eu/itwinai:0.0.1-3dgan-0.2",
            "docker://ghcr.io/intertwin-eu/itwinai:0.0.1-3dgan-0.2",
        ),
        ("localhost:5000/a/b_c__d-e:T1", "docker://localhost:5000/a/b_c__d-e:T1"),
        ("library://user/col/img:sha256.ab12", "library://user/col/img:sha256.ab12"),
        ("docker-archive:///scratch/img.tar", "docker-archive:///scratch/img.tar"),
    ],
)
def test_image_references(image, sent):
    # Schemes other than docker:// need a plugin that keeps them (after 0.6.1).
    site = SiteFacts(keeps_schemes=True)
    assert OffloadSpec(image=image, site=site).service_definition()["image"] == sent


def test_service_name_is_short_dns_and_changes_with_the_definition():
    names = {case: spec.service_name() for case, spec in CASES.items()}
    for name in names.values():
        assert len(name) <= 24 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert len(set(names.values())) == len(names)
    assert names["gpu_full"].startswith("team-x-")
    assert OffloadSpec(time="150").service_name() == OffloadSpec(time="02:30:00").service_name()
    assert OffloadSpec(mem="1G").service_name() == OffloadSpec(mem="1024").service_name()
    assert OffloadSpec(mem="1G").service_name() != OffloadSpec(mem="2G").service_name()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 5400),
        ("5:30", 330),
        ("02:30:00", 9000),
        ("100:00:00", 360000),
        ("2-0", 172800),
        ("1-12", 129600),
        ("1-1:30", 91800),
        ("0-00:00:01", 1),
        (" 10 ", 600),
    ],
)
def test_parse_time_accepts_slurm_forms(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("1024", 1024),
        ("32G", 32768),
        ("32g", 32768),
        ("512M", 512),
        ("2Gi", 2048),
        ("1T", 1 << 20),
        ("1.5G", 1536),
        ("2048K", 2),
        ("1048576B", 1),
        ("300Mi", 300),
    ],
)
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
    ({"sbatch": "--ou=/x.out"}, "--sbatch", ["reads --ou as --output", "job.out"]),
    ({"sbatch": "-HoFILE"}, "--sbatch", ["reads -o as --output"]),
    ({"sbatch": "--wrap='ls /'"}, "--sbatch", ["--sbatch '--wrap=ls /': ", "cell"]),
    ({"sbatch": "-W"}, "--sbatch", ["reads -W as --wait"]),
    ({"sbatch": "--o=x"}, "--sbatch", ["ambiguous", "--output, --overcommit"]),
    ({"sbatch": "--colour=x"}, "--sbatch", ["not an sbatch option"]),
    ({"sbatch": ["--qos=normal"]}, "--sbatch", ["one string, not list"]),
    ({"singularity_options": "--a\n--b"}, "--singularity-options", ["one line"]),
    ({"singularity_options": "--no-home'"}, "--singularity-options", ["no quotes"]),
    ({"singularity_options": "/x"}, "--singularity-options", ["must follow an option"]),
    (
        {"image": "python:3.12-slim;id"},
        "--image",
        ["not an image reference", "--image python:3.12-slim"],
    ),
    ({"image": "Python:3.12"}, "--image", ["write --image python:3.12"]),
    ({"image": "/a/../b.sif"}, "--image", ["no '..'"]),
    ({"image": None}, "--image", ["as text"]),
    ({"time": "99999999999999"}, "--time", ["365-00:00:00"]),
    ({"cpus_per_task": 2.0}, "--cpus-per-task", ["int or a string of digits"]),
    ({"cpus_per_task": "2x"}, "--cpus-per-task", ["whole number"]),
    ({"env": ["A=1"]}, "--env", ["dict"]),
    ({"env": {"A\n": "1"}}, "--env", ["variable name"]),
    ({"mounts": "/a:/b"}, "--mount", ["list"]),
    ({"mounts": ["/a:/b\n"]}, "--mount", ["SRC:DST"]),
    ({"pre_exec": 1}, "--pre-exec", ["text"]),
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


def spec_from_line(line: str) -> OffloadSpec:
    """The spec a %%oscar_offload line gives, through the magic's own parser."""
    return OffloadSpec(**settings_from_options(parse_line(line)))


def test_to_flags_shows_only_non_defaults_as_a_person_types_them():
    assert OffloadSpec().to_flags() == "%%oscar_offload"
    assert OffloadSpec(node="vk", mem="4G", image=DEFAULT_IMAGE).to_flags() == (
        "%%oscar_offload --node vk --mem 4G"
    )
    assert OffloadSpec(sbatch="--exclusive", env={"A": "x y"}).to_flags() == (
        "%%oscar_offload --sbatch=--exclusive --env 'A=x y'"
    )
    # One quoting style a person would write: no '"'"' runs for a value with a quote in it.
    assert OffloadSpec(pre_exec="echo 'hi'").to_flags() == (
        "%%oscar_offload --pre-exec \"echo 'hi'\""
    )


def test_bad_option_lines_say_what_to_write():
    with pytest.raises(SpecError, match="--cpus-per-task"):
        spec_from_line("--cpus-per-task four")
    with pytest.raises(OptionError, match="unknown flag --colour"):
        spec_from_line("--colour blue")
    with pytest.raises(SpecError, match="NAME=VALUE"):
        spec_from_line("--env JUSTNAME")
    with pytest.raises(OptionError, match="did you mean --in"):
        spec_from_line("--inputs x")
    with pytest.raises(OptionError, match="'B=2'.*--env B=2"):
        spec_from_line("--env A=1 B=2")


def test_the_readme_flag_table_is_the_options_table():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert options.readme_table() in readme, "run: python -m oscar_jupyter.options"


def test_every_spec_field_but_the_site_has_one_option():
    fields = {f.name for f in dataclasses.fields(OffloadSpec)} - {"site"}
    assert set(options.BY_FIELD) == fields


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("--qos normal -C amd", ["--qos=normal", "-Camd"]),
        ("--qos=normal --exclusive", ["--qos=normal", "--exclusive"]),
        ("--qo=normal --reserv maint", ["--qos=normal", "--reservation=maint"]),
        ("--exclusive=user --nice --no-kill", ["--exclusive=user", "--nice", "--no-kill"]),
        ("-pdebug -HO -k", ["-pdebug", "-H", "-O", "-k"]),
        ("-Os -p debug", ["-O", "-s", "-pdebug"]),
        ("--comment=--x", ["--comment=--x"]),
        ("--exclude=n[01-05] --array=0-15%4", ["--exclude=n[01-05]", "--array=0-15%4"]),
        ("", []),
    ],
)
def test_sbatch_words_are_read_as_sbatch_reads_them(text, words):
    assert OffloadSpec(sbatch=text).sbatch_words() == words


def _unique_prefixes(name: str) -> list[str]:
    return [
        name[:i]
        for i in range(1, len(name) + 1)
        if name[:i] == name or [n for n in SBATCH_OPTIONS if n.startswith(name[:i])] == [name]
    ]


@pytest.mark.parametrize("name", sorted(_FORBIDDEN_SBATCH))
def test_forbidden_sbatch_options_are_refused_in_every_spelling(name):
    spellings = [f"--{prefix}" for prefix in _unique_prefixes(name)]
    spellings += [f"-{letter}" for letter, long in SBATCH_SHORT_OPTIONS.items() if long == name]
    assert spellings
    for spelling in spellings:
        value = "" if SBATCH_OPTIONS[name] == "no" else "=x" if spelling[1] == "-" else "x"
        for text in (spelling + value, f"--qos=normal -H {spelling}{value}"):
            with pytest.raises(SpecError) as error:
                OffloadSpec(sbatch=text).sbatch_words()
            assert _FORBIDDEN_SBATCH[name] in str(error.value), text


def _sbatch_22_05() -> bool:
    if shutil.which("sbatch") is None:
        return False
    version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout
    words = version.split()  # "slurm-wlm 22.05.8"
    return bool(words) and words[-1].startswith("22.05.")


def _sbatch_first_error(*args: str) -> str:
    """The first line sbatch writes for these options; every call fails while parsing them, and
    --test-only guarantees nothing is ever submitted."""
    result = subprocess.run(
        ["sbatch", "--test-only", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    return (result.stderr.splitlines() or [""])[0]


@pytest.mark.skipif(not _sbatch_22_05(), reason="needs sbatch 22.05 (the table's version)")
def test_sbatch_option_table_is_the_installed_sbatchs():
    found = set()
    for letter in string.ascii_lowercase:
        found |= set(re.findall(r"'--([a-z][a-z0-9-]+)'", _sbatch_first_error(f"--{letter}")))
    assert found == set(SBATCH_OPTIONS)
    for name, kind in SBATCH_OPTIONS.items():
        if kind == "no":
            assert "doesn't allow an argument" in _sbatch_first_error(f"--{name}=x"), name
        elif kind == "required":
            assert "requires an argument" in _sbatch_first_error(f"--{name}"), name


@pytest.mark.skipif(not _sbatch_22_05(), reason="needs sbatch 22.05 (the table's version)")
@pytest.mark.parametrize("name", sorted(_FORBIDDEN_SBATCH))
def test_sbatch_reads_each_prefix_of_a_forbidden_option_as_the_spec_does(name):
    for length in range(1, len(name) + 1):
        prefix = name[:length]
        if SBATCH_OPTIONS[name] == "no":
            line = _sbatch_first_error(f"--{prefix}=x")
        else:
            line = _sbatch_first_error(f"--{prefix}")
        with pytest.raises(SpecError) as error:
            OffloadSpec(sbatch=f"--{prefix}").sbatch_words()
        if "is ambiguous" in line:
            assert "ambiguous" in str(error.value), prefix
        else:
            [read_as] = re.findall(r"option '--([a-z-]+)'", line)  # e.g. --mem for "--mem"
            assert _FORBIDDEN_SBATCH[read_as] in str(error.value), (prefix, line)


def test_time_limits_stop_at_slurms_longest():
    assert parse_time("365-00:00:00") == parse_time("525600") == MAX_TIME_SECONDS
    for text in ("365-00:00:01", "525601", "8761:00:00", "99999999999999", "9" * 99):
        with pytest.raises(SpecError, match="at most --time 365-00:00:00"):
            parse_time(text)
    with pytest.raises(SpecError, match="HH:MM:SS"):
        parse_time("9" * 5000)  # past int()'s digit limit: a SpecError, not a ValueError


def test_a_huge_memory_is_a_spec_error():
    with pytest.raises(SpecError, match="--mem 32G"):
        parse_memory("9" * 400)


def test_counts_may_be_strings_of_digits():
    spec = OffloadSpec(cpus_per_task="2", nodes=" 3 ", gpus="1", mpi=True, site=_MPI_SITE)
    assert (spec.cpus_per_task, spec.nodes, spec.gpus) == (2, 3, 1)
    same = OffloadSpec(cpus_per_task=2, nodes=3, gpus=1, mpi="on", site=_MPI_SITE)
    assert spec == same
    assert spec.service_name() == same.service_name()


def test_job_body_wants_text():
    with pytest.raises(SpecError, match=r"code: .*not bytes.*decode") as error:
        OffloadSpec().job_body(b"print(1)")
    assert error.value.flag == "code"
    with pytest.raises(SpecError, match="--env"):
        OffloadSpec(env=["A=1"]).job_body("print(1)")


def test_settings_from_options_takes_env_as_items_or_a_dict():
    assert settings_from_options({"env": ["A=1"]})["env"] == {"A": "1"}
    assert settings_from_options({"env": {"A": "1"}})["env"] == {"A": "1"}
    for typed, flag in (
        ({"env": "A=1"}, "--env"),
        ({"env": [1]}, "--env"),
        ({"mounts": "/a:/b"}, "--mount"),
    ):
        with pytest.raises(SpecError) as error:
            settings_from_options(typed)
        assert error.value.flag == flag


SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # what needs no quoting in a shell word


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40)
    | st.from_regex(
        r"([a-z]{1,6}://)?[A-Za-z0-9.:/_@-]{1,30}(:[A-Za-z0-9._;$`'\"-]{1,10})?", fullmatch=True
    )
)
def test_property_an_accepted_image_is_one_plain_shell_word(image):
    try:
        check_image(image)
    except SpecError as error:
        assert error.flag == "--image"
        return
    assert SHELL_SAFE.fullmatch(normalise_image(image))


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40)
    | st.lists(st.from_regex(r"-{0,2}[A-Za-z0-9=/:;$'\"]{1,8}", fullmatch=True)).map(" ".join)
)
def test_property_accepted_singularity_options_are_plain_shell_words(options):
    spec = OffloadSpec(singularity_options=options)
    try:
        spec._check_singularity_options()
    except SpecError as error:
        assert error.flag == "--singularity-options"
        return
    assert all(SHELL_SAFE.fullmatch(word) for word in options.split())


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40)
    | st.lists(st.from_regex(r"-{1,2}[A-Za-z0-9=/:;$'\" -]{1,8}", fullmatch=True)).map(" ".join)
)
def test_property_sbatch_words_are_known_options_with_plain_values(text):
    try:
        words = OffloadSpec(sbatch=text).sbatch_words()
    except SpecError as error:
        assert error.flag == "--sbatch"
        return
    for word in words:
        assert not re.search(r"[\s'\"\\$`;|&<>()#]", word)
        if word.startswith("--"):
            assert word[2:].partition("=")[0] in SBATCH_OPTIONS
        else:
            assert word[1] in SBATCH_SHORT_OPTIONS


text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\0\n\r"), min_size=1, max_size=12
)
specs = st.builds(
    OffloadSpec,
    node=st.none() | st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
    time=st.none() | st.sampled_from(["10", "02:30:00", "1-12"]),
    cpus_per_task=st.none() | st.integers(1, 128),
    mem=st.none() | st.sampled_from(["512", "4G", "1.5Gi"]),
    nodes=st.none() | st.integers(1, 8),
    gpus=st.none() | st.integers(1, 8),
    job_name=st.none() | text,
    partition=st.none() | text,
    account=st.none() | text,
    image=st.sampled_from([DEFAULT_IMAGE, "python:3.11", "/x/y.sif"]) | text,
    mounts=st.lists(text, max_size=2),
    pre_exec=st.none() | text,
    singularity_options=st.none() | text,
    sbatch=st.none() | text,
    env=st.dictionaries(text.filter(lambda name: "=" not in name), text, max_size=3),
    prefix=st.sampled_from(["oj", "team"]) | text,
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_property_to_flags_parses_back_to_the_same_spec(spec):
    assert spec_from_line(spec.to_flags()) == spec


def test_a_lone_surrogate_in_the_cell_is_refused_with_its_place():
    with pytest.raises(SpecError, match=r"code: line 2, column 8 holds '\\ud800'"):
        OffloadSpec(node="vk", time="00:01:00").job_body("x = 1\nprint('\ud800')\n")


@pytest.mark.parametrize(
    ("code", "env", "flag"),
    [
        ("".join(f"x{i} = {i * 7919 % 100003}\n" for i in range(30000)), {}, "cell"),
        ("print(1)", {"BIG": "v" * 70000 + os.urandom(60000).hex()}, "--env"),
    ],
)
def test_an_oversized_job_names_what_made_it_big(code, env, flag):
    with pytest.raises(SpecError) as err:
        OffloadSpec(node="vk", time="00:01:00", env=env).job_body(code)
    assert err.value.flag == flag and str(err.value).startswith(flag)
    assert "v" * 100 not in str(err.value)  # never the value itself


def test_enable_gpu_only_where_the_site_schedules_gpus():
    spec = OffloadSpec(node="vk", time="00:10:00", gpus=2)
    assert "enable_gpu" not in spec.service_definition()
    assert "--gres=gpu:2" in spec.service_definition()["annotations"]["slurm-job.vk.io/flags"]
    gpu_site = dataclasses.replace(spec, site=SiteFacts(schedules_gpus=True))
    assert gpu_site.service_definition()["enable_gpu"] is True


@pytest.mark.parametrize(
    ("image", "sent"),
    [
        ("python:3.12-slim", "/cvmfs/unpacked.cern.ch/python:3.12-slim"),
        ("/cvmfs/unpacked.cern.ch/python:3.12-slim", "/cvmfs/unpacked.cern.ch/python:3.12-slim"),
        ("/scratch/images/py.sif", "/scratch/images/py.sif"),
    ],
)
def test_a_site_image_prefix_writes_bare_references_with_it(image, sent):
    site = SiteFacts(image_prefix="/cvmfs/unpacked.cern.ch/")
    spec = OffloadSpec(node="vk", time="00:10:00", image=image, site=site)
    assert spec.service_definition()["image"] == sent
    assert "--site" not in spec.to_flags()


def test_a_scheme_on_a_prefixed_site_is_refused_with_the_bare_reference():
    site = SiteFacts(image_prefix="/cvmfs/unpacked.cern.ch/")
    spec = OffloadSpec(node="vk", time="00:10:00", image="docker://python:3.12-slim", site=site)
    with pytest.raises(
        SpecError,
        match=r"^--image .*write the reference without a scheme, "
        r"e\.g\. --image python:3\.12-slim",
    ):
        spec.validate()
