"""The offload panel on comm's DummyComm: what a user sees change when they edit it, and what the
magic then does with a bare `%%oscar_offload`."""

from __future__ import annotations

import html
import shlex

import pytest
import yaml
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from oscar_jupyter.magics import _offload_parser, offload_flags
from oscar_jupyter.spec import DEFAULT_IMAGE, SpecError
from oscar_jupyter.widgets import Panel
from oscar_jupyter.widgets.panel import NO_NODE


@pytest.fixture()
def ip(monkeypatch, tmp_path, session):
    start_ipython()  # once per process; later calls return None
    shell = get_ipython()
    shell.run_line_magic("load_ext", "oscar_jupyter")
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return shell


def fill(panel: Panel, **values: str) -> None:
    for name, value in values.items():
        if name == "node":
            panel.node.value = value
        elif name == "image":
            panel.image.value = value
        elif name == "pre_exec":
            panel.pre_exec.value = value
        else:
            panel.text[name].value = value


def dry_run(ip, line: str = "") -> dict:
    """The service the magic would create for this cell line (from its --dry-run FDL)."""
    with capture_output() as out:
        ip.run_cell_magic("oscar_offload", "--dry-run " + line, "print(1)\n")
    fdl = out.stdout.split("# Service definition", 1)[1].split("\n", 1)[1]
    fdl = fdl.split("# Job request", 1)[0]
    return next(iter(yaml.safe_load(fdl)["functions"]["oscar"][0].values()))


def magic_error(ip, line: str) -> SpecError:
    with pytest.raises(SpecError) as err:
        dry_run(ip, line)
    return err.value


def test_node_picker_lists_virtual_nodes_with_state_and_free_resources(session):
    panel = Panel(session=session)
    labels = [label for label, _ in panel.node.options]
    assert labels[0] == NO_NODE
    vega = next(label for label in labels if label.startswith("vega"))
    assert "Ready" in vega and "12/64 CPUs" in vega and "100.0 GiB/256.0 GiB" in vega
    assert "4 GPUs" in vega
    assert any(label.startswith("leonardo") and "NotReady" in label for label in labels)
    assert not any(label.startswith("worker-1") for label in labels)  # not an interLink node


def test_refresh_shows_nodes_that_appeared_and_keeps_the_choice(session):
    panel = Panel(session=session)
    panel.node.value = "vega"
    session.listed_nodes = session.listed_nodes + [
        type(session.listed_nodes[0])("lumi", "Ready", 128.0, 128.0, 2**40, 2**40, 8, True)
    ]
    panel.refresh_button.click()
    assert "lumi" in [value for _, value in panel.node.options]
    assert panel.node.value == "vega"


def test_unreachable_cluster_is_explained_and_the_form_still_works(session):
    def broken(refresh: bool = True):
        raise ConnectionError("cannot reach https://oscar.example.org (connection refused)")

    session.nodes = broken
    panel = Panel(session=session)
    info = html.unescape(panel.node_info.value)
    assert "Could not list the cluster's nodes" in info and "connection refused" in info
    fill(panel, time="01:00:00")
    assert session.defaults["time"] == "01:00:00"


def test_edits_change_the_previewed_line_and_the_kernel_defaults(session):
    panel = Panel(session=session)
    assert panel.offload_line == "%%oscar_offload"
    fill(
        panel,
        node="vega",
        time="02:30:00",
        cpus_per_task="8",
        mem="32G",
        gpus="2",
        partition="gpu",
        account="proj42",
        sbatch="--qos=high --exclusive",
        image="ghcr.io/me/train:1",
        pre_exec="module load cuda",
    )
    panel.mounts.add_row(("/scratch/me:/data:ro",))
    panel.env.add_row(("OMP_NUM_THREADS", "8"))
    expected = {
        "node": "vega",
        "time": "02:30:00",
        "cpus_per_task": 8,
        "mem": "32G",
        "gpus": 2,
        "partition": "gpu",
        "account": "proj42",
        "sbatch": "--qos=high --exclusive",
        "image": "ghcr.io/me/train:1",
        "pre_exec": "module load cuda",
        "mounts": ["/scratch/me:/data:ro"],
        "env": {"OMP_NUM_THREADS": "8"},
    }
    assert session.defaults == expected
    assert panel.problems == {}
    # The previewed line, pasted into a cell, gives the magic exactly these settings.
    words = shlex.split(panel.offload_line)
    assert words[0] == "%%oscar_offload"
    args = _offload_parser().parse_args([w for w in words[1:]])
    assert offload_flags(args) == expected
    assert "--time 02:30:00" in panel.preview.value
    # Clearing a field hands it back to the magic's own default.
    fill(panel, gpus="")
    panel.env.remove_row(panel.env._rows[0])
    assert "gpus" not in session.defaults and "env" not in session.defaults
    assert "--gpus" not in panel.offload_line and "OMP_NUM_THREADS" not in panel.offload_line


def test_mpi_on_in_the_panel_is_the_bare_flag_on_the_previewed_line(session):
    panel = Panel(session=session)
    fill(panel, node="vega", ntasks="1", mpi="on")
    assert panel.problems == {}
    assert session.defaults == {"node": "vega", "ntasks": 1, "mpi": "on"}
    assert panel.offload_line == "%%oscar_offload --node vega --ntasks 1 --mpi"
    fill(panel, mpi="--bind-to none")
    assert panel.offload_line == "%%oscar_offload --node vega --ntasks 1 '--mpi=--bind-to none'"


def test_service_definition_is_folded_and_follows_the_values(session):
    panel = Panel(session=session)
    assert panel.service_fold.selected_index is None  # folded until opened
    fill(panel, node="vega", cpus_per_task="4", mem="2G")
    text = panel.service_view.value
    assert "interlink_node_name" in text and "&quot;cpu&quot;: &quot;4&quot;" in text
    assert "2048Mi" in text and "runner script" in text


def test_recent_images_are_offered(session):
    session.recent_images = ["docker://ghcr.io/me/train:2", "docker://ghcr.io/me/train:1"]
    panel = Panel(session=session)
    assert list(panel.image.options)[:2] == session.recent_images
    assert DEFAULT_IMAGE in panel.image.options


def test_a_new_panel_shows_the_kernel_defaults(session):
    session.defaults.update(
        {
            "node": "vega",
            "time": "00:20:00",
            "cpus_per_task": 2,
            "mounts": ["/a:/b"],
            "env": {"A": "1"},
        }
    )
    panel = Panel(session=session)
    assert panel.node.value == "vega"
    assert panel.text["time"].value == "00:20:00"
    assert panel.text["cpus_per_task"].value == "2"
    assert panel.mounts.values() == [("/a:/b",)]
    assert panel.env.values() == [("A", "1")]
    assert session.defaults["cpus_per_task"] == 2


@pytest.mark.parametrize(
    ("field", "value", "line"),
    [
        ("time", "90x", "--time 90x"),
        ("mem", "lots", "--mem lots"),
        ("cpus_per_task", "two", "--cpus-per-task two"),
        ("cpus_per_task", "0", "--cpus-per-task 0"),
        ("partition", "a b", "--partition 'a b'"),
        ("sbatch", "--output=/tmp/x", "--sbatch=--output=/tmp/x"),
        ("image", "image.sif", "--image image.sif"),
        ("nodes", "2", "--nodes 2"),
        ("ntasks", "4", "--ntasks 4"),
        ("mpi", "true", "--mpi true"),
    ],
)
def test_invalid_values_are_marked_with_the_magics_own_message(ip, session, field, value, line):
    panel = Panel(session=session)
    fill(panel, **{field: value})
    expected = magic_error(ip, line)
    problem = panel.problems[field]
    assert (problem.flag, problem.message) == (expected.flag, str(expected))
    assert "oj-invalid" in panel.cells[field]._dom_classes
    assert html.unescape(panel.errors[field].value) == str(expected)
    assert "Fix the marked values" in panel.preview.value
    # Fixing it clears the mark.
    fill(panel, **{field: ""})
    assert field not in panel.problems
    assert "oj-invalid" not in panel.cells[field]._dom_classes
    assert panel.errors[field].value == ""


def test_bad_mount_and_env_rows_are_marked(ip, session):
    panel = Panel(session=session)
    panel.mounts.add_row(("/only-one-side",))
    assert panel.problems["mounts"].message == str(magic_error(ip, "--mount /only-one-side"))
    panel.mounts.set_values([])
    panel.env.add_row(("1BAD", "x"))
    assert panel.problems["env"].message == str(magic_error(ip, "--env 1BAD=x"))


def test_unknown_node_is_marked_once_the_cluster_listed_its_nodes(session):
    panel = Panel(session=session)
    panel.load_defaults({"node": "nowhere"})
    assert "not a virtual node of this cluster" in panel.problems["node"].message
    assert "vega" in panel.problems["node"].message


def test_bare_offload_uses_the_panel_and_cell_flags_still_win(ip, session):
    panel = Panel(session=session)
    fill(panel, node="vega", time="02:30:00", cpus_per_task="4", mem="2G")
    panel.env.add_row(("GREETING", "hi"))
    service = dry_run(ip)
    assert service["interlink_node_name"] == "vega"
    assert service["cpu"] == "4" and service["memory"] == "2048Mi"
    assert "--time=02:30:00" in service["annotations"]["slurm-job.vk.io/flags"]
    assert "GREETING" not in service["environment"]["variables"]  # --env travels in the job
    assert panel.session.defaults["env"] == {"GREETING": "hi"}
    flagged = dry_run(ip, "--time 00:05:00 --cpus-per-task 2")
    assert "--time=00:05:00" in flagged["annotations"]["slurm-job.vk.io/flags"]
    assert flagged["cpu"] == "2" and flagged["memory"] == "2048Mi"


def test_bare_offload_fails_loudly_while_a_panel_value_is_invalid(ip, session):
    panel = Panel(session=session)
    fill(panel, node="vega", time="90x")
    error = magic_error(ip, "")
    assert error.flag == "--time" and str(error) == panel.problems["time"].message


def test_repr_never_shows_environment_values(session):
    panel = Panel(session=session)
    panel.env.add_row(("API_TOKEN", "s3cr3t-value"))
    assert "s3cr3t-value" not in repr(panel)
    assert "env" in repr(panel)


def test_set_from_code_fills_the_widgets_and_names_unknown_fields(session):
    panel = Panel(session=session)
    panel.set(node="vega", time="00:30:00", cpus_per_task=2, env={"A": "1"}, mounts=["/a:/b"])
    assert panel.text["cpus_per_task"].value == "2" and panel.env.values() == [("A", "1")]
    assert session.defaults["cpus_per_task"] == 2 and session.defaults["mounts"] == ["/a:/b"]
    panel.set(time=None)
    assert "time" not in session.defaults
    with pytest.raises(TypeError, match="unknown fields walltime; fields are node, time"):
        panel.set(walltime="01:00:00")


def test_secrets_are_named_in_the_panel_and_valued_from_the_kernels_environment(
    session, monkeypatch
):
    panel = Panel(session=session)
    monkeypatch.delenv("API_TOKEN", raising=False)
    fill(panel, node="vega", time="00:10:00", secrets="API_TOKEN")
    assert panel.problems["secrets"].flag == "--secret"
    assert "oscar_jupyter.ask_secret('API_TOKEN')" in panel.problems["secrets"].message
    monkeypatch.setenv("API_TOKEN", "s3cr3t-value")
    panel.update()
    assert "secrets" not in panel.problems
    assert session.defaults["secrets"] == {"API_TOKEN": "s3cr3t-value"}
    assert "--secret API_TOKEN" in panel.offload_line
    panel.set(secrets={"API_TOKEN": "s3cr3t-value"})  # names only, whatever is given
    shown = [
        panel.text["secrets"].value,
        panel.offload_line,
        panel.preview.value,
        panel.service_view.value,
        repr(panel),
    ]
    assert not [text for text in shown if "s3cr3t-value" in text]


def test_a_large_request_with_the_node_left_at_the_cluster_default_is_flagged(session):
    panel = Panel(session=session)
    assert panel.node.value is None and panel.node.options[0] == ("(cluster default)", None)
    fill(panel, cpus_per_task="128")
    assert panel.capacity_note.value == html.escape(
        "Note: --cpus-per-task 128 with the node left at (cluster default): no listed virtual "
        "node can run it (the largest, vega, offers 64 CPUs and 256.0 GiB); the job would wait "
        "for resources that never come; ask for less or choose another node: %oscar_nodes"
    )
    fill(panel, cpus_per_task="64")
    assert panel.capacity_note.value == html.escape(
        "Note: --cpus-per-task 64 with the node left at (cluster default): the node the "
        "cluster picks is not checked; vega can run it (choose one to be sure)"
    )
    fill(panel, cpus_per_task="1")
    assert panel.capacity_note.value == ""  # a small request is no news
    fill(panel, cpus_per_task="64", node="vega")
    assert "cluster default" not in panel.capacity_note.value


def test_with_no_node_listed_a_large_request_is_said_to_be_unchecked(session):
    def unreachable(refresh: bool = True):
        raise ConnectionError("cluster down")

    session.nodes = unreachable
    panel = Panel(session=session)
    fill(panel, cpus_per_task="64", mem="200G")
    assert panel.capacity_note.value == html.escape(
        "Note: --cpus-per-task 64 and --mem 200G with the node left at (cluster default): "
        "nothing checks this request against a node's capacity before it is sent; choose a "
        "node to check it (choose another node: %oscar_nodes)"
    )


def test_start_session_button_uses_the_panels_settings(session, monkeypatch):
    from oscar_jupyter import remote_session

    panel = Panel(session)
    panel.session_name.value = "1bad"
    panel.session_button.click()
    assert "session name" in panel.session_status.value and "oj-error" in (
        panel.session_status.value
    )

    started = {}

    class Started:
        class job:  # noqa: N801
            node = "vega"
            name = "oj-x-job"

    def fake_start(name, spec, **kwargs):
        started.update(name=name, node=spec.node, time=spec.time)
        return Started()

    monkeypatch.setattr(remote_session, "start", fake_start)
    fill(panel, node="vega", time="01:00:00")
    panel.session_name.value = "s1"
    panel.session_button.click()
    assert started == {"name": "s1", "node": "vega", "time": "01:00:00"}
    assert "Session s1 ready on vega" in panel.session_status.value
    assert not panel.session_button.disabled
