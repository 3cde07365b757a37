"""A request against the chosen node's capacity (oscar_jupyter/capacity.py): the messages a user
reads, for nodes as each source reports them."""

from __future__ import annotations

import pytest

from oscar_jupyter.capacity import capacity_error, capacity_notes, capacity_problems
from oscar_jupyter.nodes import VirtualNode
from oscar_jupyter.session import Session
from oscar_jupyter.spec import OffloadSpec, SiteFacts, SpecError

CONFIGURED = (
    ": the numbers configured in interLink, 100 CPUs / 3000G unless the site set them, not "
    "necessarily those of the HPC partition)"
)
FROM_KUBERNETES = "(the capacity its virtual node advertises, from Kubernetes" + CONFIGURED
FREE_SAID = "what is free comes from OSCAR /system/status; Slurm decides when the job starts"
FROM_OSCAR = "(the capacity its virtual node advertises, from OSCAR" + CONFIGURED
GiB = 2**30


def node(
    name: str = "vega",
    cpus: float = 2,
    memory: int = 2 * GiB,
    gpus: int = 0,
    cpu_free: float | None = None,
    memory_free: int | None = None,
    source: str = "Kubernetes",
) -> VirtualNode:
    return VirtualNode(
        name=name,
        status="Ready",
        cpu_total=cpus,
        cpu_free=cpus if cpu_free is None else cpu_free,
        memory_total_bytes=memory,
        memory_free_bytes=memory if memory_free is None else memory_free,
        gpus=gpus,
        is_interlink=True,
        source=source,
    )


def messages(spec: OffloadSpec, target: VirtualNode | None) -> list[str]:
    return [str(problem) for problem in capacity_problems(spec, target)]


def test_cpus_over_the_node_are_refused_with_both_numbers_and_the_way_out():
    [problem] = capacity_problems(OffloadSpec(node="vega", cpus_per_task=64), node(cpus=2))
    assert problem.flag == "--cpus-per-task"
    assert str(problem) == (
        "--cpus-per-task 64: node vega offers 2 CPUs "
        f"{FROM_KUBERNETES}; ask for at most "
        "--cpus-per-task 2 (or choose another node: %oscar_nodes)"
    )


def test_a_request_that_fits_exactly_passes():
    spec = OffloadSpec(node="vega", cpus_per_task=2, mem="2G", gpus=4)
    assert capacity_problems(spec, node(cpus=2, memory=2 * GiB, gpus=4)) == []


def test_fractional_cpus_suggest_the_whole_cpus_that_fit():
    assert messages(OffloadSpec(node="vega", cpus_per_task=3), node(cpus=2.5)) == [
        "--cpus-per-task 3: node vega offers 2.5 CPUs "
        f"{FROM_KUBERNETES}; ask for at most --cpus-per-task 2 "
        "(or choose another node: %oscar_nodes)"
    ]
    # Without --cpus-per-task the pod still asks for 1 CPU.
    assert messages(OffloadSpec(node="vega"), node(cpus=0.5)) == [
        "--cpus-per-task: every job asks for at least 1 CPU and node vega offers 0.5 CPUs "
        f"{FROM_KUBERNETES}; "
        "choose another node: %oscar_nodes"
    ]


def test_memory_over_the_node_is_refused_in_human_units():
    assert messages(OffloadSpec(node="vega", mem="32G"), node(memory=2 * GiB)) == [
        "--mem 32G: 32.0 GiB asked and node vega offers 2.0 GiB "
        f"{FROM_KUBERNETES}; ask for at most --mem 2G "
        "(or choose another node: %oscar_nodes)"
    ]
    # A node whose memory is no whole number of GiB: the largest whole MiB.
    odd = 23081 * 2**20
    assert messages(OffloadSpec(node="vega", mem="24G"), node(memory=odd)) == [
        "--mem 24G: 24.0 GiB asked and node vega offers 22.5 GiB "
        f"{FROM_KUBERNETES}; ask for at most "
        "--mem 23081M (or choose another node: %oscar_nodes)"
    ]
    # What the service gets is whole MiB: 2 GiB plus one byte asks for 2049 MiB.
    assert capacity_problems(OffloadSpec(node="vega", mem="2049M"), node(memory=2 * GiB))
    assert not capacity_problems(OffloadSpec(node="vega", mem="2048M"), node(memory=2 * GiB))


def test_the_default_memory_is_checked_too():
    assert messages(OffloadSpec(node="tiny"), node("tiny", memory=512 * 2**20)) == [
        "--mem: without --mem a job asks for 1024Mi (1.0 GiB) and node tiny offers "
        "512.0 MiB "
        f"{FROM_KUBERNETES}; give at most --mem 512M (or choose another node: %oscar_nodes)"
    ]


def test_gpus_over_an_advertised_count_are_refused():
    assert messages(OffloadSpec(node="vega", gpus=8), node(gpus=4)) == [
        "--gpus 8: node vega has 4 GPUs; ask for at most --gpus 4 "
        "(or choose another node: %oscar_nodes)"
    ]
    assert messages(OffloadSpec(node="vega", gpus=2), node(gpus=1)) == [
        "--gpus 2: node vega has 1 GPU; ask for at most --gpus 1 "
        "(or choose another node: %oscar_nodes)"
    ]


def test_gpus_on_a_node_with_none_refused_only_where_kubernetes_schedules_them():
    scheduled = OffloadSpec(node="vega", gpus=1, site=SiteFacts(schedules_gpus=True))
    [problem] = capacity_problems(scheduled, node(gpus=0))
    assert problem.flag == "--gpus"
    assert str(problem).startswith(
        "--gpus 1: node vega has 0 GPUs, and this site schedules "
        "GPUs through Kubernetes (profile: gpu_scheduling)"
    )
    assert "Pending forever" in str(problem)
    # Elsewhere the node advertises no count (interLink's default): Slurm decides, with a note.
    left_to_slurm = OffloadSpec(node="vega", gpus=1)
    assert capacity_problems(left_to_slurm, node(gpus=0)) == []
    assert capacity_notes(left_to_slurm, node(gpus=0)) == [
        "node vega advertises no GPUs; --gpus 1 reaches Slurm as --gres=gpu:1, which refuses "
        "it if the site's partition has none (--partition chooses one)"
    ]


def test_every_problem_at_once_named_by_the_first_flag():
    spec = OffloadSpec(node="vega", cpus_per_task=64, mem="32G", gpus=2)
    error = capacity_error(spec, node(cpus=2, memory=2 * GiB, gpus=1))
    assert isinstance(error, SpecError) and error.flag == "--cpus-per-task"
    lines = str(error).splitlines()
    assert [line.split(":")[0] for line in lines] == ["--cpus-per-task 64", "--mem 32G", "--gpus 2"]
    assert capacity_error(OffloadSpec(node="vega"), node()) is None


@pytest.mark.parametrize(
    "unknown",
    [
        VirtualNode.from_profile("vega"),  # the profile names it: no resources
        None,  # not listed by any source
    ],
)
def test_nothing_is_refused_without_numbers(unknown):
    spec = OffloadSpec(node="vega", cpus_per_task=512, mem="4T", gpus=16)
    assert capacity_problems(spec, unknown) == []
    assert capacity_notes(spec, unknown) == []


def test_invalid_values_are_left_to_validation():
    spec = OffloadSpec(node="vega", cpus_per_task=0, mem="lots", gpus=-1)
    assert capacity_problems(spec, node()) == []
    assert spec.validate_all()  # validation names them


def test_over_what_is_free_now_is_a_note_that_it_would_queue():
    busy = node(cpus=64, cpu_free=12, memory=256 * GiB, memory_free=100 * GiB, source="OSCAR")
    spec = OffloadSpec(node="vega", cpus_per_task=16, mem="128G")
    assert capacity_problems(spec, busy) == []
    assert capacity_notes(spec, busy) == [
        "node vega has 12 of 64 CPUs free now: a job asking for 16 CPUs waits until enough "
        f"are free ({FREE_SAID})",
        "node vega has 100.0 GiB of 256.0 GiB memory free now: a job asking for 128.0 GiB "
        f"waits until enough is free ({FREE_SAID})",
    ]
    assert capacity_notes(OffloadSpec(node="vega", cpus_per_task=8, mem="64G"), busy) == []


def test_the_session_refuses_before_sending_and_without_a_cluster_uses_its_numbers():
    session = Session()
    session._nodes = [node("vega", cpus=2), node("leonardo", cpus=128)]
    session._node_names = ["vega", "leonardo"]
    with pytest.raises(SpecError) as refused:
        session.check_offloadable(OffloadSpec(node="vega", cpus_per_task=64))
    assert str(refused.value).startswith("--cpus-per-task 64: node vega offers 2 CPUs")
    session.check_offloadable(OffloadSpec(node="leonardo", cpus_per_task=64))
    assert session.capacity_notes(OffloadSpec(node="vega", gpus=1))[0].startswith(
        "node vega advertises no GPUs"
    )


def test_the_panel_marks_the_field_as_the_user_types_and_clears_it_when_it_fits():
    from oscar_jupyter.widgets import Panel

    session = Session()
    session._nodes = [node("vega", cpus=2, memory=2 * GiB, cpu_free=1, source="OSCAR")]
    session._node_names = ["vega"]
    panel = Panel(session=session, load_nodes=False)
    panel.set(node="vega", time="00:10:00")
    panel.text["cpus_per_task"].value = "64"
    expected = (
        "--cpus-per-task 64: node vega offers 2 CPUs "
        f"{FROM_OSCAR}; ask for at most --cpus-per-task 2 "
        "(or choose another node: %oscar_nodes)"
    )
    assert panel.problems["cpus_per_task"].message == expected
    assert panel.errors["cpus_per_task"].value == expected  # nothing to escape in it
    assert "oj-invalid" in panel.cells["cpus_per_task"]._dom_classes
    assert "Fix the marked values" in panel.preview.value
    # The kernel's default keeps the typed value, so a bare magic refuses with the same words.
    assert session.defaults["cpus_per_task"] == "64"
    with pytest.raises(SpecError) as refused:
        session.check_offloadable(session.build_spec({}))
    assert str(refused.value) == expected

    panel.text["mem"].value = "32G"
    assert panel.problems["mem"].message.startswith(
        f"--mem 32G: 32.0 GiB asked and node vega offers 2.0 GiB {FROM_OSCAR}"
    )
    panel.text["cpus_per_task"].value = "2"
    panel.text["mem"].value = "1G"
    assert panel.problems == {}
    assert "oj-invalid" not in panel.cells["cpus_per_task"]._dom_classes
    # It fits, but only 1 CPU is free now: a note, not a refusal.
    assert "Note: node vega has 1 of 2 CPUs free now" in panel.capacity_note.value


@pytest.mark.parametrize("schedules", [True, False])
def test_the_panel_judges_gpus_with_the_profiles_site_facts(schedules):
    from oscar_jupyter.config import ClusterProfile
    from oscar_jupyter.widgets import Panel

    session = Session()
    session.profile = ClusterProfile(
        cluster_id="site",
        endpoint="https://oscar.example.org",
        defaults={"jupyter": {"gpu_scheduling": schedules}},
    )
    session._nodes = [node("vega", gpus=0)]
    session._node_names = ["vega"]
    panel = Panel(session=session, load_nodes=False)
    panel.set(node="vega", time="00:10:00", gpus=1)
    if schedules:  # the pod would ask Kubernetes for a GPU the node does not have
        assert panel.problems["gpus"].message.startswith("--gpus 1: node vega has 0 GPUs")
        assert panel.capacity_note.value == ""
    else:
        assert panel.problems == {}
        assert "Note: node vega advertises no GPUs" in panel.capacity_note.value
    spec = session.build_spec({})
    if schedules:
        with pytest.raises(SpecError, match="^--gpus 1: node vega has 0 GPUs"):
            session.check_offloadable(spec)
    else:
        session.check_offloadable(spec)
