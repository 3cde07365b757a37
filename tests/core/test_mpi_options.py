"""Multi-rank cells (issue 21): --ntasks, --ntasks-per-node, --mpi in the one options table, their
checks before sending, and what the runner service gets (sbatch flags, the mpi-flags annotation)."""

from __future__ import annotations

import pytest
import yaml
from IPython.utils.capture import capture_output

from oscar_jupyter import options
from oscar_jupyter import session as session_module
from oscar_jupyter.config import ClusterProfile, JupyterSettings, SiteFacts
from oscar_jupyter.options import parse_line, split_words
from oscar_jupyter.spec import MPI_ANNOTATION, OffloadSpec, SpecError, settings_from_options

MPI_SITE = SiteFacts(applies_mpi_flags=True)


def spec_of(line: str, site: SiteFacts = MPI_SITE) -> OffloadSpec:
    """The spec the magic builds from `line` (its own parser and conversion)."""
    return OffloadSpec(**settings_from_options(parse_line(split_words(line))), site=site)


@pytest.mark.parametrize(
    ("line", "mpi"),
    [
        ("--node vk --ntasks 2 --mpi", "on"),
        ("--node vk --mpi --ntasks 2", "on"),  # the next word is one of our flags: bare
        ("--node vk --mpi --oversubscribe --ntasks 2", "--oversubscribe"),
        (
            "--node vk --mpi '--oversubscribe --bind-to none' --ntasks 2",
            "--oversubscribe --bind-to none",
        ),
        ("--node vk --mpi=--oversubscribe --ntasks 2", "--oversubscribe"),
        ("--node vk --ntasks 2", None),
    ],
)
def test_mpi_is_a_flag_whose_value_may_be_left_out(line, mpi):
    assert parse_line(split_words(line))["mpi"] == mpi


def test_the_bare_flag_sends_mpiexec_without_extra_flags_and_round_trips():
    spec = spec_of("--node vk --nodes 2 --ntasks-per-node 2 --mpi")
    annotations = spec.service_definition()["annotations"]
    # Not "true": the plugin reads that value as "no mpiexec" (prepare.go, `if mpiFlags != "true"`)
    assert annotations[MPI_ANNOTATION] == ""
    assert annotations["slurm-job.vk.io/flags"] == "--nodes=2 --ntasks-per-node=2"
    assert spec.task_count() == 4
    assert spec.to_flags() == "%%oscar_offload --node vk --nodes 2 --ntasks-per-node 2 --mpi"
    assert spec_of(spec.to_flags()) == spec


def test_mpi_flags_travel_single_spaced_and_round_trip():
    spec = spec_of("--node vk --ntasks 3 --mpi '--oversubscribe   --bind-to none'")
    annotations = spec.service_definition()["annotations"]
    # The plugin splits on single spaces: a double space would be an empty mpiexec argument.
    assert annotations[MPI_ANNOTATION] == "--oversubscribe --bind-to none"
    assert annotations["slurm-job.vk.io/flags"] == "--ntasks=3"
    assert spec_of(spec.to_flags()) == spec


def test_the_python_api_takes_mpi_true_or_flags():
    assert OffloadSpec(ntasks=2, mpi=True, site=MPI_SITE) == spec_of("--ntasks 2 --mpi")
    assert OffloadSpec(ntasks="2", mpi=False).mpi is None
    with pytest.raises(SpecError, match="--mpi: give True or the mpiexec flags"):
        OffloadSpec(mpi=3).validate()  # type: ignore[arg-type]


def test_no_mpi_no_annotation_and_one_task_needs_nothing():
    definition = OffloadSpec(node="vk", nodes=1, ntasks=1).service_definition()
    assert MPI_ANNOTATION not in definition["annotations"]
    assert definition["annotations"]["slurm-job.vk.io/flags"] == "--nodes=1 --ntasks=1"


@pytest.mark.parametrize(
    ("line", "flag", "says"),
    [
        ("--nodes 2", "--nodes", "2 nodes without --mpi: Slurm would hold them all"),
        ("--ntasks 4", "--ntasks", "add --mpi to run the cell as one rank per task"),
        ("--ntasks-per-node 2", "--ntasks-per-node", "2 tasks without --mpi"),
        ("--nodes 3 --ntasks 2 --mpi", "--ntasks", "fewer tasks than --nodes 3"),
        ("--nodes 2 --ntasks-per-node 2 --ntasks 5 --mpi", "--ntasks", "2 x --ntasks-per-node 2"),
        ("--mpi true", "--mpi", "reads the value 'true' as 'no mpiexec'"),
        ("--mpi '-np 4'", "--mpi", "set the number of ranks with --ntasks"),
        ("--mpi '--n=4'", "--mpi", "set the number of ranks with --ntasks"),
        ("--mpi oversubscribe", "--mpi", "give mpiexec's own flags"),
        ("--mpi '--x $(id)'", "--mpi", "pastes the flags unquoted into job.sh"),
        ("--sbatch '--ntasks=4'", "--sbatch", "use --ntasks of the magic"),
        ("--sbatch '-N2'", "--sbatch", "use --nodes of the magic"),
    ],
)
def test_bad_task_layouts_are_refused_naming_what_to_write(line, flag, says):
    with pytest.raises(SpecError) as error:
        spec_of("--node vk " + line).validate()
    assert error.value.flag == flag
    assert says in str(error.value)


def test_a_site_whose_plugin_ignores_mpi_flags_refuses_ranks_on_more_than_one_node():
    with pytest.raises(SpecError) as error:
        spec_of("--node vk --nodes 2 --ntasks 4 --mpi", site=SiteFacts()).validate()
    message = str(error.value)
    assert error.value.flag == "--mpi"
    assert "ranks on more than one node need the site's Slurm plugin" in message
    assert "jupyter: {mpi_flags: true}" in message
    assert "starts the ranks itself: --nodes 1 --ntasks 4 --mpi" in message
    # On one node the tagger starts the ranks, through mpiexec where the image has it: the
    # flags go to that mpiexec, in the program's first line.
    flagged = spec_of("--node vk --ntasks 2 --mpi '--bind-to none'", site=SiteFacts())
    flagged.validate()
    program = __import__("base64").b64decode(flagged.job_body("print(1)"))
    assert program.startswith(b"# oscar-jupyter ranks 2 --bind-to none\n")
    # One task under --mpi is harmless anywhere.
    spec_of("--node vk --mpi", site=SiteFacts()).validate()


@pytest.mark.parametrize(
    "line", ["--ntasks 3 --mpi", "--nodes 1 --ntasks 3 --mpi", "--ntasks-per-node 3 --mpi"]
)
def test_ranks_on_one_node_start_in_the_job_itself_on_every_plugin(line):
    from oscar_jupyter import runner

    spec = spec_of("--node vk --time 00:02:00 " + line, site=SiteFacts())
    spec.validate()
    assert spec.launches_ranks() and spec.task_count() == 3
    annotations = spec.service_definition()["annotations"]
    # No mpi-flags: a plugin that one day applies it would start 3 containers of 3 ranks each.
    assert MPI_ANNOTATION not in annotations
    flags = annotations["slurm-job.vk.io/flags"].split()
    assert "--nodes=1" in flags  # all the ranks' CPUs on the node where the runner starts them
    assert flags.count("--nodes=1") == 1
    body = spec.job_body("print(1)")
    program = __import__("base64").b64decode(body)
    assert program.startswith(runner.RANKS_HEADER.format(ranks=3, flags="").encode())
    # where the site applies mpi-flags, the plugin starts the ranks, not the runner
    mpi_site = spec_of("--node vk " + line)
    assert not mpi_site.launches_ranks()
    assert MPI_ANNOTATION in mpi_site.service_definition()["annotations"]


def test_the_ranks_shown_option_takes_0_or_all():
    assert spec_of("--node vk --ntasks 2 --mpi --ranks all").shows_all_ranks()
    assert not spec_of("--node vk --ntasks 2 --mpi --ranks 0").shows_all_ranks()
    assert OffloadSpec(ranks="all").shows_all_ranks()
    with pytest.raises(SpecError, match="give 0 .* or all"):
        spec_of("--node vk --ranks some").validate()
    assert "`--ranks 0\\|all`" in options.readme_table()


def test_the_profile_says_whether_the_site_applies_mpi_flags():
    def site(block):
        profile = ClusterProfile("c", "https://oscar.example", defaults={"jupyter": block})
        return JupyterSettings.of(profile)

    assert site({"mpi_flags": True}).site.applies_mpi_flags
    assert not site({}).site.applies_mpi_flags
    assert "mpi_flags" not in site({"mpi_flags": True}).offload_defaults  # a site fact


def test_the_panel_and_the_readme_list_the_new_options():
    from oscar_jupyter.widgets.panel import TEXT_FIELDS

    assert {"ntasks", "ntasks_per_node", "mpi", "ranks"} <= set(TEXT_FIELDS)
    table = options.readme_table()
    for usage in ("`--ntasks T`", "`--ntasks-per-node M`", "`--mpi [FLAGS]`"):
        assert usage in table
    assert "--mpi [FLAGS]" in options.flag_help()


def test_the_magic_refuses_two_nodes_without_mpi_before_sending(ipshell, monkeypatch, tmp_path):
    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError, match="--nodes 2: 2 nodes without --mpi"):
        ipshell.run_cell_magic("oscar_offload", "--node vk --nodes 2", "print(1)\n")
    session_module.current().profile = None
    with capture_output() as out:
        ipshell.run_cell_magic(
            "oscar_offload", "--dry-run --node vk --ntasks 1 --mpi --oversubscribe", "print(1)\n"
        )
    fdl = yaml.safe_load(
        out.stdout.split("# Service definition", 1)[1].split("\n", 1)[1].split("# ", 1)[0]
    )
    service = next(iter(fdl["functions"]["oscar"][0].values()))
    assert service["annotations"][MPI_ANNOTATION] == "--oversubscribe"


def test_the_python_api_refuses_ranks_before_connecting(monkeypatch, tmp_path):
    import oscar_jupyter

    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError, match="--nodes 2: 2 nodes without --mpi"):
        oscar_jupyter.offload("print(1)", node="vk", nodes=2)
    with pytest.raises(SpecError, match="ranks on more than one node need"):
        oscar_jupyter.offload("print(1)", node="vk", nodes=2, ntasks=2, mpi=True)


def test_the_status_line_says_on_how_many_nodes_and_ranks(tmp_path):
    from oscar_jupyter.display import status_line
    from oscar_jupyter.job_status import placement_text

    from .test_usage import ended_job

    assert placement_text(2, 8) == "2 nodes (8 ranks)"
    assert placement_text(1, 4) == "1 node (4 ranks)"
    assert placement_text(None, 4) == "4 ranks"  # Slurm chooses the nodes
    assert placement_text(1, 1) == placement_text(None, 1) == ""
    assert OffloadSpec(ntasks=8, ntasks_per_node=3).node_count() == 3
    assert OffloadSpec(ntasks=8).node_count() is None
    assert OffloadSpec(ntasks_per_node=4).node_count() == 1
    spec = OffloadSpec(node="vk", time="00:05:00", nodes=2, ntasks_per_node=4, mpi=True)
    line = status_line(ended_job(tmp_path, spec))
    assert line.startswith("✔ Succeeded on vk, 2 nodes (8 ranks) · ")
    alone = status_line(ended_job(tmp_path / "2", OffloadSpec(node="vk", time="00:05:00")))
    assert alone.startswith("✔ Succeeded on vk · ")


def test_a_job_attached_from_its_service_keeps_its_ranks():
    from oscar_jupyter.spec import spec_of_service

    spec = spec_of("--node vk --nodes 2 --ntasks-per-node 4 --mpi --time 00:05:00")
    read = spec_of_service(spec.service_definition())
    assert (read.nodes, read.ntasks_per_node, read.mpi, read.task_count()) == (2, 4, "on", 8)
    flagged = spec_of_service(spec_of("--node vk --ntasks 2 --mpi --bind-to").service_definition())
    assert flagged.mpi == "--bind-to" and flagged.task_count() == 2
