"""What a real multi-user OSCAR v4.1 + interLink cluster does to a notebook, in real kernels.

The session's local OSCAR is as strict as the real one (docs/ARCHITECTURE.md, "The local
OSCAR's strictness"): OIDC users alice and bob, private services, Kueue for non-admins, no virtual
node in /system/status, GPUs the virtual node does not have. Each test runs notebooks through
nbclient, as a user would, and reads what the cells show.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
NODE = "local-slurm"


def run(local_oscar, monkeypatch, name: str, cells: list[str], **env: str):
    """Execute `cells` in a fresh kernel (errors allowed: tests read them) and save the result."""
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(local_oscar.profile_path))
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(local_oscar.home / "client-logs"))
    monkeypatch.setenv("KUBECONFIG", str(local_oscar.home / "no-kubeconfig"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(nb, ARTIFACTS / f"real-cluster-{name}.ipynb")
    return nb


def text(
    cell, kinds: tuple[str, ...] = ("stream", "display_data", "execute_result", "error")
) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type not in kinds:
            continue
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}\n" + "\n".join(out.traceback))
        else:
            parts.append(out.data.get("text/plain", "") + out.data.get("text/markdown", ""))
    return "".join(parts)


def errors(cell) -> list:
    return [out for out in cell.outputs if out.output_type == "error"]


def connect(user: str | None) -> str:
    return f"%load_ext oscar_jupyter\n%oscar_connect {'local-' + user if user else 'local'}"


OFFLOAD = f"%%oscar_offload --node {NODE} --time 00:02:00\nimport getpass\nprint('ran')\n"


def test_two_users_with_the_same_settings_both_offload(local_oscar, monkeypatch):
    # Service names are unique cluster-wide and private: a shared name would lock bob out.
    for user in ("alice", "bob"):
        nb = run(local_oscar, monkeypatch, f"two-users-{user}", [connect(user), OFFLOAD])
        assert not errors(nb.cells[1]), text(nb.cells[1])
        assert "ran\n" in text(nb.cells[1], ("stream",))
        assert "Succeeded" in text(nb.cells[1])


def test_gpus_reach_slurm_as_gres_instead_of_a_pod_that_is_never_scheduled(
    local_oscar, monkeypatch
):
    cell = f"%%oscar_offload --node {NODE} --time 00:02:00 --gpus 1 --timeout 120\nprint(1)\n"
    nb = run(local_oscar, monkeypatch, "gpus", [connect("alice"), cell])
    shown = text(nb.cells[1])
    # This Slurm has no GPU: sbatch itself refuses --gres, and the cell says so at once. The
    # plugin leaves an empty log (B3) and alice cannot read the pod's status (no Kubernetes
    # access for OIDC users, B5): the error names the plugin's refusal and its likely causes.
    assert "JobFailed" in shown and "the Slurm plugin refused or could not start it" in shown
    assert "sbatch refused an option" in shown and "--dry-run" in shown
    assert "JobTimeout" not in shown


def test_log_level_in_env_reaches_the_cell_not_the_supervisor(local_oscar, monkeypatch):
    cell = (
        f"%%oscar_offload --node {NODE} --time 00:02:00 --env LOG_LEVEL=debug\n"
        "import os\nprint('level', os.environ['LOG_LEVEL'])\n"
    )
    nb = run(local_oscar, monkeypatch, "log-level", [connect("alice"), cell])
    assert not errors(nb.cells[1]), text(nb.cells[1])
    assert "level debug\n" in text(nb.cells[1], ("stream",))


def test_a_cell_without_a_node_is_refused_before_anything_is_sent(local_oscar, monkeypatch):
    nb = run(
        local_oscar,
        monkeypatch,
        "no-node",
        [
            connect("alice"),
            "%%oscar_offload --time 00:02:00\nprint(1)\n",
            "from oscar_jupyter import session\nprint(len(session.current().jobs))",
        ],
    )
    [error] = errors(nb.cells[1])
    assert error.ename == "SpecError" and "--node" in error.evalue
    assert text(nb.cells[2], ("stream",)).strip() == "0"


def test_an_oidc_users_job_over_the_kueue_quota_says_why_it_waits(local_oscar, monkeypatch):
    nb = run(
        local_oscar,
        monkeypatch,
        "kueue",
        [
            connect("alice"),
            "import oscar_jupyter.waiting\noscar_jupyter.waiting.EXPLAIN_WAIT_SECONDS = 2",
            # Within the node (capacity.py refuses more) but over the user's Kueue quota.
            f"%%oscar_offload --node {NODE} --time 00:02:00 --mem 4G --no-wait -o job\nprint(1)\n",
            "import time\ntime.sleep(6)\njob.refresh()\nprint(job.status())\n"
            "print(job.waiting_reason())\njob.cancel()",
        ],
    )
    shown = text(nb.cells[3], ("stream",))
    assert shown.startswith("Suspended\n"), shown
    assert "suspended by Kueue" in shown and "4096Mi of memory > 2Gi" in shown


def test_an_oidc_user_without_a_node_source_is_told_names_go_unchecked(local_oscar, monkeypatch):
    # /system/status lists no virtual node (no metrics), as on a real cluster, and an OSCAR user
    # has no Kubernetes access (OSCAR.md 13 B5): a $KUBECONFIG at hand, maybe another cluster's,
    # is never used. The connection says node names go unchecked and how to name them.
    nb = run(local_oscar, monkeypatch, "nodes-unchecked", [connect("alice"), "%oscar_nodes"])
    said = text(nb.cells[0]) + text(nb.cells[1])
    assert "names go unchecked" in said or "node names go unchecked" in said, said
    assert "jupyter: {nodes: [" in said
    assert "(from Kubernetes)" not in said


def test_a_secret_stays_out_of_the_saved_notebook_and_the_log(local_oscar_0_6_2, monkeypatch):
    # On interLink 0.6.2, where the secret arrives (0.6.1 refuses the cell: B4).
    local_oscar = local_oscar_0_6_2
    value = "tok-" + secrets.token_hex(16)
    cell = (
        f"%%oscar_offload --node {NODE} --time 00:02:00 --secret API_TOKEN -o job\n"
        "import os\nprint(len(os.environ['API_TOKEN']))\n"
    )
    nb = run(
        local_oscar,
        monkeypatch,
        "secret",
        [connect("alice"), cell, "print(job.raw_log.count('tok-'))"],
        API_TOKEN=value,
    )
    assert text(nb.cells[1], ("stream",)).strip() == str(len(value))
    assert text(nb.cells[2], ("stream",)).strip() == "0"
    assert value not in json.dumps(nb)


def test_cleanup_in_one_kernel_leaves_the_other_kernels_jobs(local_oscar, monkeypatch):
    other = run(
        local_oscar,
        monkeypatch,
        "cleanup-other",
        [connect("alice"), OFFLOAD.replace("00:02:00", "00:02:00 -o job"), "print(job.name)"],
    )
    other_job = text(other.cells[2], ("stream",)).strip()
    mine = run(
        local_oscar,
        monkeypatch,
        "cleanup-mine",
        [
            connect("alice"),
            OFFLOAD.replace("00:02:00", "00:02:00 -o job"),
            "print(job.service, job.name)",
            "%oscar_cleanup",
        ],
    )
    service, my_job = text(mine.cells[2], ("stream",)).split()
    assert "Deleted 1 finished job" in text(mine.cells[3]), text(mine.cells[3])
    with httpx.Client(
        base_url=local_oscar.endpoint, timeout=30, auth=(local_oscar.user, local_oscar.password)
    ) as admin:
        listed = admin.get(f"/system/logs/{service}").json()["jobs"]
    assert other_job in listed and my_job not in listed


def test_a_site_image_prefix_in_the_profile_writes_images_the_site_can_open(
    tmp_path, monkeypatch, slurm_cluster
):
    # A site whose plugin (0.6.1) puts an unpacked-image prefix before every image.
    from oscar_jupyter.config import load_profile, save_profile
    from oscar_jupyter.local import daemon
    from oscar_jupyter.local.pod import DEFAULT_SUPERVISOR_KIT_IMAGE

    from ..conftest import executor_choice, free_port

    prefix = f"{tmp_path}/unpacked/"
    Path(prefix, "python:3.12-slim").mkdir(parents=True)  # the unpacked image, as on CVMFS
    # OSCAR's supervisor kit image, which the plugin prefixes too: the site unpacked it there.
    Path(prefix + DEFAULT_SUPERVISOR_KIT_IMAGE).mkdir(parents=True)
    config = tmp_path / "config.yaml"
    home = tmp_path / "site"
    daemon.start(
        home=home,
        port=free_port(),
        executor=executor_choice(),
        config_path=config,
        image_prefix=prefix,
        timeout=120,
    )
    try:
        profile = load_profile("local", config_path=config)
        profile.defaults["jupyter"] = {**profile.defaults["jupyter"], "image_prefix": prefix}
        save_profile(profile, config_path=config)
        monkeypatch.setenv("OSCAR_CLI_CONFIG", str(config))
        monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
        nb = new_notebook(
            cells=[
                new_code_cell(source)
                for source in [
                    connect(None),
                    f"%%oscar_offload --node {NODE} --time 00:02:00 --image docker://python:3.12-slim\n"
                    "print('never sent')\n",
                    f"%%oscar_offload --node {NODE} --time 00:02:00 "
                    "--image python:3.12-slim -o job\n"
                    "print('ran')\n",
                    "print(job.spec.service_definition()['image'])",
                ]
            ]
        )
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
    finally:
        daemon.stop(home=home)
    [refused] = errors(nb.cells[1])
    assert refused.ename == "SpecError" and "--image python:3.12-slim" in refused.evalue
    assert not errors(nb.cells[2]) and "ran\n" in text(nb.cells[2], ("stream",))
    assert text(nb.cells[3], ("stream",)).strip() == f"{prefix}python:3.12-slim"
