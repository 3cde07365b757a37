"""Requests over the node's capacity, in a real kernel (nbclient) against the local OSCAR: refused
at once with the numbers, in the magic and in the panel, and nothing reaches the cluster.

The local profile reaches the local OSCAR's Kubernetes API subset (its kubeconfig), whose virtual
node advertises this machine's Slurm CPUs and memory and 0 GPUs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from oscar_jupyter.client import OscarClient
from oscar_jupyter.config import load_profile
from oscar_jupyter.nodes import VirtualNode, format_bytes
from oscar_jupyter.spec import OffloadSpec, SpecError

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
NODE = "local-slurm"
WAY_OUT = "(or choose another node: %oscar_nodes)"


def cluster_contents(local_oscar, monkeypatch) -> dict[str, set[str]]:
    """Every service of the local OSCAR and its jobs, as its admin lists them."""
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    client = OscarClient(load_profile("local"))
    try:
        return {s["name"]: set(client.list_jobs(s["name"])) for s in client.list_services()}
    finally:
        client.close()


def local_node(connected) -> VirtualNode:
    node = connected.node_named(NODE)
    assert connected.nodes_source == "Kubernetes", connected.nodes_source
    assert node is not None and node.resources_known, connected.nodes()
    return node


def error_text(cell) -> str:
    [error] = [o for o in cell.outputs if o.output_type == "error"]
    assert error.ename == "SpecError"
    assert error.traceback == [f"SpecError: {error.evalue}"]  # one line, none of our frames
    return error.evalue


def stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_over_capacity_is_refused_at_once_in_the_magic_and_the_panel(
    local_oscar, connected, monkeypatch
):
    node = local_node(connected)
    cpus, memory = int(node.cpu_total), node.memory_total_bytes
    big = cpus + 28  # over the virtual node's advertised CPUs (100 by default: OSCAR.md 13 B13)
    before = cluster_contents(local_oscar, monkeypatch)
    offload = f"%%oscar_offload --node {NODE} --time 00:02:00"
    nb = new_notebook(
        cells=[
            new_code_cell(source)
            for source in (
                "%load_ext oscar_jupyter\n%oscar_connect local",
                f"{offload} --cpus-per-task {big}\nprint('ran')\n",
                f"{offload} --mem 4T\nprint('ran')\n",
                f"{offload} --cpus-per-task {big} --mem 4T --dry-run\nprint('ran')\n",
                "from oscar_jupyter.widgets import Panel\n"
                f"panel = Panel()\npanel.set(node='{NODE}', time='00:02:00', cpus_per_task={big})\n"
                "print(panel.problems['cpus_per_task'].message)\n"
                "print(sorted(panel.problems))\n"
                "print(panel.errors['cpus_per_task'].value)",
                "%%oscar_offload\nprint('ran')\n",  # a bare magic with the panel's settings
                f"panel.set(node='{NODE}', time='00:02:00', cpus_per_task={cpus})\n"
                "print(sorted(panel.problems), repr(panel.capacity_note.value))",
            )
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(client.nb, ARTIFACTS / "capacity-refusals.ipynb")
    cells = client.nb.cells

    # The admin's profile names the cluster's kubeconfig; OSCAR's /system/status lists no
    # virtual node (no metrics), so the numbers come from Kubernetes.
    source = (
        "(the capacity its virtual node advertises, from Kubernetes: the numbers configured in "
        "interLink, 100 CPUs / 3000G unless the site set them, not necessarily those of the "
        "HPC partition)"
    )
    cpu_refusal = (
        f"--cpus-per-task {big}: node {NODE} offers {cpus} CPU{'s' * (cpus != 1)} {source}; "
        f"ask for at most --cpus-per-task {cpus} {WAY_OUT}"
    )
    largest = f"{memory // 2**30}G" if memory % 2**30 == 0 else f"{memory // 2**20}M"
    mem_refusal = (
        f"--mem 4T: 4.0 TiB asked and node {NODE} offers {format_bytes(memory)} {source}; "
        f"ask for at most --mem {largest} {WAY_OUT}"
    )
    assert error_text(cells[1]) == cpu_refusal
    assert error_text(cells[2]) == mem_refusal
    # A dry run is refused the same way, with every problem at once.
    assert error_text(cells[3]) == f"{cpu_refusal}\n{mem_refusal}"
    for cell in cells[1:4]:
        assert "ran" not in stdout(cell)
        assert not [o for o in cell.outputs if o.output_type == "display_data"]  # no status line

    # The panel marks the field as the user types, with the magic's very message ...
    message, fields, marked = stdout(cells[4]).splitlines()
    assert message == cpu_refusal
    assert fields == "['cpus_per_task']"
    assert f"{big}: node local-slurm offers" in marked
    # ... and a bare %%oscar_offload with the panel's settings refuses with it.
    assert error_text(cells[5]) == cpu_refusal
    # At the node's own size there is no problem and no note (Kubernetes gives no free count).
    assert stdout(cells[6]).strip() == "[] ''"

    assert cluster_contents(local_oscar, monkeypatch) == before  # nothing was sent


def test_a_refusal_is_checked_again_against_the_node_as_it_is_now(connected):
    """Numbers heard at connect may be stale (newer plugins advertise what the site has free):
    before refusing, the session asks the cluster again, and a request that fits runs."""
    node = local_node(connected)
    cpus = int(node.cpu_total)
    stale = dataclasses.replace(node, cpu_total=0.5, cpu_free=0.5)
    connected._nodes = [stale if n.name == NODE else n for n in connected._nodes]
    spec = connected.build_spec({"node": NODE, "time": "00:02:00", "cpus_per_task": 1})
    job = connected.submit("import os\nprint('cpus', len(os.sched_getaffinity(0)))", spec)
    job.wait(timeout=180)
    assert job.exit_code == 0
    assert connected.node_named(NODE).cpu_total == cpus  # the fresh numbers are kept

    # Still too big once asked again: refused, naming the node's real size.
    with pytest.raises(SpecError) as refused:
        connected.submit("print(1)", dataclasses.replace(spec, cpus_per_task=cpus + 1))
    assert str(refused.value).startswith(
        f"--cpus-per-task {cpus + 1}: node {NODE} offers {cpus} CPU"
    )
    assert list(connected.jobs) == [job.name]


def test_a_spec_that_fits_the_node_raises_nothing(connected):
    node = local_node(connected)
    fits = OffloadSpec(
        node=NODE,
        time="00:02:00",
        cpus_per_task=int(node.cpu_total),
        mem=f"{node.memory_total_bytes // 2**20}M",
    )
    connected.check_offloadable(fits)
