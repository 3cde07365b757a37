"""Start, stop and inspect the local OSCAR's server process; write the `local` oscar-cli profile.

`start` launches `python -m oscar_jupyter.local.server` detached (its own session, output to
`<home>/server.log`), waits until it answers, and records `server.pid` and `server.json`. `stop`
asks it to stop (SIGTERM: it cancels its unfinished jobs and saves its state), waits, and cancels
whatever it could not (a killed server leaves Slurm jobs behind otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .singularity import DEFAULT_SESSIONDIR_MAX_SIZE_MIB
from .state import HomeLayout, LocalState, default_home, ensure_admin_password, write_atomically
from .virtual_kubelet import DEFAULT_CPU_CAPACITY, DEFAULT_MEMORY_CAPACITY

DEFAULT_PORT = 8765
PORT_ENV = "OSCAR_JUPYTER_LOCAL_PORT"
PROFILE_NAME = "local"
HOST = "127.0.0.1"
SERVER_MODULE = "oscar_jupyter.local.server"

# Servers this process started: kept so that stop() can reap them (no zombies in the caller).
_children: dict[int, subprocess.Popen] = {}


class DaemonError(RuntimeError):
    """The local OSCAR could not be started or stopped; the message says what to change."""


@dataclass(frozen=True)
class StartResult:
    endpoint: str
    pid: int
    executor: str
    executor_reason: str
    container_runtime: str
    virtual_node: str
    profile_path: Path | None
    already_running: bool = False
    user_profiles: dict[str, str] = field(default_factory=dict)  # user -> profile name
    kubeconfig: Path | None = None
    plugin_release: str | None = None  # the interLink Slurm plugin release it models
    interlink_release: str | None = None  # the interLink release it models


@dataclass(frozen=True)
class StopResult:
    was_running: bool
    cancelled_jobs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LocalStatus:
    running: bool
    home: Path
    endpoint: str | None = None
    pid: int | None = None
    executor: str | None = None
    executor_reason: str | None = None
    container_runtime: str | None = None
    virtual_node: str | None = None
    jobs: dict[str, int] = field(default_factory=dict)
    plugin_release: str | None = None
    interlink_release: str | None = None


def resolve_port(port: int | None = None) -> int:
    """`port`, else `$OSCAR_JUPYTER_LOCAL_PORT`, else 8765; a clear error when it is not a port."""
    if port is None:
        raw = os.environ.get(PORT_ENV)
        if not raw:
            return DEFAULT_PORT
        try:
            port = int(raw)
        except ValueError:
            raise DaemonError(
                f"{PORT_ENV}={raw!r} is not a port number; set it to e.g. 8765"
            ) from None
    if not 1 <= port <= 65535:
        raise DaemonError(f"port {port} is out of range; choose a port from 1 to 65535")
    return port


def _job_python(path: Path | str) -> str:
    """`path` made absolute, checked to be an executable file (a python3 of an image)."""
    python = Path(path).expanduser().absolute()
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise DaemonError(
            f"--job-python {python}: not an executable file; give the path of a python3, "
            "e.g. /usr/bin/python3.8"
        )
    return str(python)


def _layout(home: Path | str | None) -> HomeLayout:
    return HomeLayout(Path(home).expanduser() if home is not None else default_home())


def start(
    *,
    home: Path | str | None = None,
    port: int | None = None,
    node_name: str = "local-slurm",
    executor: str = "auto",
    config_path: Path | None = None,
    timeout: float = 60.0,
    users: list[str] | None = None,
    kueue_cpu: str = "2",
    kueue_memory: str = "2Gi",
    kueue_gpu: str = "0",
    node_gpus: int = 0,
    image_prefix: str = "docker://",
    real_status: bool = True,
    job_listing_limit: int = 70,
    job_python: Path | str | None = None,
    plugin_version: str | None = None,
    interlink_version: str | None = None,
    node_cpu: str = DEFAULT_CPU_CAPACITY,
    node_memory: str = DEFAULT_MEMORY_CAPACITY,
    sessiondir_max_size: int = DEFAULT_SESSIONDIR_MAX_SIZE_MIB,
) -> StartResult:
    """Start the local OSCAR (or find it running) and write the `local` profile to `config_path`
    (default: oscar-cli's config file), a `local-<user>` OIDC profile for each of `users` (no
    kubeconfig: OIDC users have no Kubernetes access), and `<home>/kubeconfig` (the admin's,
    named by the `local` profile only). The other options shape how strict the local cluster is (see
    docs/ARCHITECTURE.md, "The local OSCAR's strictness"); they apply when it starts.

    `plugin_version` and `interlink_version` are the releases it models (releases.py; 0.6.1, what
    sites run, when None). A running server that models others is not restarted: DaemonError."""
    from .releases import DEFAULT_INTERLINK_RELEASE, DEFAULT_PLUGIN_RELEASE, check_release
    from .users import check_user_name

    users = [check_user_name(user) for user in users or []]
    wanted = {
        "plugin": check_release("plugin", plugin_version) if plugin_version else None,
        "interlink": check_release("interlink", interlink_version) if interlink_version else None,
    }
    layout = _layout(home)
    layout.create()
    password = ensure_admin_password(layout)
    running = _running_pid(layout)
    if running is not None:
        runtime = _read_runtime(layout)
        summary = _local_summary(runtime["endpoint"], password)
        for kind, release in wanted.items():
            if release and summary.get(f"{kind}_release") not in (None, release):
                raise DaemonError(
                    f"the local OSCAR (pid {running}) already runs and models {kind} "
                    f"{summary.get(f'{kind}_release')}, not {release}; stop it first "
                    "(oscar-jupyter local stop) to change releases"
                )
        profile = _write_profile(runtime["endpoint"], password, config_path, layout)
        extras = _write_user_files(layout, runtime["endpoint"], password, users, config_path)
        return _start_result(
            runtime["endpoint"], running, summary, profile, *extras, already_running=True
        )

    port = resolve_port(port)
    endpoint = f"http://{HOST}:{port}"
    command = [
        sys.executable,
        "-m",
        SERVER_MODULE,
        "--home",
        str(layout.root),
        "--port",
        str(port),
        "--host",
        HOST,
        "--node-name",
        node_name,
        "--executor",
        executor,
        "--kueue-cpu",
        kueue_cpu,
        "--kueue-memory",
        kueue_memory,
        "--kueue-gpu",
        kueue_gpu,
        "--node-gpus",
        str(node_gpus),
        "--image-prefix",
        image_prefix,
        "--job-listing-limit",
        str(job_listing_limit),
        "--plugin-version",
        wanted["plugin"] or DEFAULT_PLUGIN_RELEASE,
        "--interlink-version",
        wanted["interlink"] or DEFAULT_INTERLINK_RELEASE,
        "--node-cpu",
        node_cpu,
        "--node-memory",
        node_memory,
        "--sessiondir-max-size",
        str(sessiondir_max_size),
    ]
    if not real_status:
        command.append("--metrics-status")
    if job_python is not None:
        command += ["--job-python", _job_python(job_python)]
    with open(layout.log_file, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    _children[process.pid] = process
    write_atomically(layout.pid_file, f"{process.pid}\n", mode=0o644)
    write_atomically(
        layout.runtime_file,
        json.dumps({"pid": process.pid, "endpoint": endpoint, "port": port}),
        mode=0o644,
    )
    summary = _wait_until_serving(process, endpoint, password, layout, timeout)
    profile = _write_profile(endpoint, password, config_path, layout)
    extras = _write_user_files(layout, endpoint, password, users, config_path)
    return _start_result(endpoint, process.pid, summary, profile, *extras)


def _start_result(
    endpoint: str,
    pid: int,
    summary: dict[str, Any],
    profile: Path | None,
    user_profiles: dict[str, str] | None = None,
    kubeconfig: Path | None = None,
    *,
    already_running: bool = False,
) -> StartResult:
    return StartResult(
        endpoint=endpoint,
        pid=pid,
        executor=summary["executor"],
        executor_reason=summary["executor_reason"],
        container_runtime=summary["container_runtime"],
        virtual_node=summary["virtual_node"],
        profile_path=profile,
        already_running=already_running,
        user_profiles=dict(user_profiles or {}),
        kubeconfig=kubeconfig,
        plugin_release=summary.get("plugin_release"),
        interlink_release=summary.get("interlink_release"),
    )


def _write_user_files(
    layout: HomeLayout, endpoint: str, password: str, users: list[str], config_path: Path | None
) -> tuple[dict[str, str], Path]:
    """A `local-<user>` profile per user and the admin's kubeconfig.

    A user's profile holds the endpoint and an `oidc_refresh_token` only, like a real
    EGI/Keycloak profile, and no kubeconfig: an OSCAR user has no Kubernetes access
    (reference OSCAR.md section 13, B5), and the local Kubernetes API subset accepts the
    admin's credentials alone (kubernetes_api.py). A `jupyter:` block an older start wrote
    there is dropped (`save_profile` drops what the profile no longer holds)."""
    from ..config import ClusterProfile, Secret, save_profile
    from .users import ensure_secret, issuer, profile_name, refresh_token

    secret = ensure_secret(layout)
    names = {}
    for user in users:
        token = refresh_token(user, iss=issuer(endpoint), secret=secret)
        profile = ClusterProfile(
            cluster_id=profile_name(user),
            endpoint=endpoint,
            refresh_token=Secret(token),
            ssl_verify=True,
        )
        save_profile(profile, config_path=config_path)
        names[user] = profile_name(user)
    return names, write_kubeconfig(layout, endpoint, password)


def write_kubeconfig(layout: HomeLayout, endpoint: str, password: str) -> Path:
    """`<home>/kubeconfig` (0600): the local Kubernetes API subset, as the admin."""
    import yaml

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "oscar-jupyter-local",
        "clusters": [{"name": "oscar-jupyter-local", "cluster": {"server": endpoint}}],
        "users": [{"name": "oscar", "user": {"username": "oscar", "password": password}}],
        "contexts": [
            {
                "name": "oscar-jupyter-local",
                "context": {"cluster": "oscar-jupyter-local", "user": "oscar"},
            }
        ],
    }
    write_atomically(layout.kubeconfig_file, yaml.safe_dump(document), mode=0o600)
    return layout.kubeconfig_file


def _wait_until_serving(
    process: subprocess.Popen, endpoint: str, password: str, layout: HomeLayout, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _forget(layout, process.pid)
            raise DaemonError(
                f"the local OSCAR exited with status {process.returncode} while starting:\n"
                f"{_log_tail(layout)}\n(full log: {layout.log_file})"
            )
        try:
            summary = _local_summary(endpoint, password, timeout=2.0)
        except (httpx.HTTPError, DaemonError):
            time.sleep(0.1)
            continue
        if summary.get("home") == str(layout.root):
            return summary
        time.sleep(0.1)  # another server answers on that port; ours will fail to bind
    _terminate(process.pid, grace=5.0)
    _forget(layout, process.pid)
    raise DaemonError(
        f"the local OSCAR did not answer on {endpoint} within {timeout:.0f} s:\n{_log_tail(layout)}"
    )


def _local_summary(endpoint: str, password: str, *, timeout: float = 10.0) -> dict[str, Any]:
    response = httpx.get(f"{endpoint}/system/info", auth=("oscar", password), timeout=timeout)
    if response.status_code != 200:
        raise DaemonError(f"{endpoint}/system/info answered {response.status_code}")
    return response.json().get("local") or {}


def _jupyter_block(layout: HomeLayout) -> dict[str, Any]:
    # /system/status lists no virtual node, as on a real cluster: the admin's profile says
    # where the cluster's Kubernetes API is, as an admin's profile of a real cluster may.
    return {"jupyter": {"kubeconfig": str(layout.kubeconfig_file)}}


def _write_profile(
    endpoint: str, password: str, config_path: Path | None, layout: HomeLayout
) -> Path:
    from ..config import ClusterProfile, Secret, save_profile

    profile = ClusterProfile(
        cluster_id=PROFILE_NAME,
        endpoint=endpoint,
        user="oscar",
        password=Secret(password),
        ssl_verify=True,
        defaults=_jupyter_block(layout),
    )
    return save_profile(profile, config_path=config_path)


def stop(*, home: Path | str | None = None, timeout: float = 60.0) -> StopResult:
    """Stop the server; afterwards no job of this local OSCAR runs and no server process is left."""
    layout = _layout(home)
    unfinished = _unfinished_job_names(layout)
    pid = _running_pid(layout)
    if pid is not None:
        _terminate(pid, grace=timeout)
    _cancel_leftovers(layout)
    _forget(layout, pid)
    # Only those it cancelled: a job the state still called unfinished may have ended already
    # (its end reaches the state through the plugin's status cache, B9), and stopping settles it.
    cancelled = _stopped_job_names(layout, unfinished) if pid else []
    return StopResult(was_running=pid is not None, cancelled_jobs=cancelled)


def _terminate(pid: int, *, grace: float) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL the server's whole session."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, grace):
        return
    try:
        os.killpg(pid, signal.SIGKILL)  # its own session: the server and what it spawned
    except ProcessLookupError:
        pass
    _wait_gone(pid, 5.0)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        child = _children.get(pid)
        if child is not None and child.poll() is not None:
            return True
        if child is None and not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _cancel_leftovers(layout: HomeLayout) -> None:
    """Cancel jobs a killed server left unfinished, with the executor that ran them."""
    if not layout.state_file.exists():
        return
    from .executors import ProcessExecutor, SlurmExecutor
    from .services import STOPPED_REASON, utc_now

    state = LocalState(layout.state_file)
    leftovers = [job for job in state.unfinished_jobs() if job.get("job_id")]
    if not leftovers:
        return
    # The executor that ran each job, even when Slurm is down now (scancel then reports it).
    executors: dict[str, Any] = {"slurm": SlurmExecutor(), "process": ProcessExecutor()}
    for job in leftovers:
        kind = job.get("executor") or "slurm"
        pod_dir = Path(job["pod_dir"]) if job.get("pod_dir") else None
        try:
            executors[kind].cancel(job["job_id"], pod_dir)
        except Exception as error:  # already gone is fine; anything else is reported
            print(f"oscar-jupyter: cancelling job {job['name']}: {error}", file=sys.stderr)
        job["phase"], job["reason"] = "Failed", STOPPED_REASON
        job["finished_at"] = job.get("finished_at") or utc_now()
    state.save()


def _stopped_job_names(layout: HomeLayout, names: list[str]) -> list[str]:
    """Those of `names` that the stop cancelled (their reason says so)."""
    from .services import STOPPED_REASON

    if not layout.state_file.exists():
        return []
    jobs = LocalState(layout.state_file).jobs
    return [name for name in names if (jobs.get(name) or {}).get("reason") == STOPPED_REASON]


def _unfinished_job_names(layout: HomeLayout) -> list[str]:
    if not layout.state_file.exists():
        return []
    return sorted(job["name"] for job in LocalState(layout.state_file).unfinished_jobs())


def _forget(layout: HomeLayout, pid: int | None) -> None:
    layout.pid_file.unlink(missing_ok=True)
    layout.runtime_file.unlink(missing_ok=True)
    if pid is not None:
        child = _children.pop(pid, None)
        if child is not None:
            child.poll()


def status(*, home: Path | str | None = None) -> LocalStatus:
    """What runs: endpoint, executor, container runtime, virtual node and job counts by status."""
    layout = _layout(home)
    pid = _running_pid(layout)
    if pid is None:
        return LocalStatus(running=False, home=layout.root)
    endpoint = _read_runtime(layout)["endpoint"]
    password = ensure_admin_password(layout)
    auth = ("oscar", password)
    counts: Counter[str] = Counter()
    try:
        with httpx.Client(base_url=endpoint, auth=auth, timeout=10.0) as client:
            summary = client.get("/system/info").raise_for_status().json().get("local") or {}
            for service in client.get("/system/services").raise_for_status().json():
                listing = client.get(f"/system/logs/{service['name']}").raise_for_status().json()
                counts.update(job["status"] for job in listing.get("jobs", {}).values())
    except httpx.HTTPError as error:
        raise DaemonError(
            f"the local OSCAR (pid {pid}) does not answer properly on {endpoint}: {error}; "
            f"see {layout.log_file}, or restart it (oscar-jupyter local stop, then start)"
        ) from None
    return LocalStatus(
        running=True,
        home=layout.root,
        endpoint=endpoint,
        pid=pid,
        executor=summary.get("executor"),
        executor_reason=summary.get("executor_reason"),
        container_runtime=summary.get("container_runtime"),
        virtual_node=summary.get("virtual_node"),
        jobs=dict(counts),
        plugin_release=summary.get("plugin_release"),
        interlink_release=summary.get("interlink_release"),
    )


def _read_runtime(layout: HomeLayout) -> dict[str, Any]:
    try:
        return json.loads(layout.runtime_file.read_text())
    except (OSError, ValueError) as error:
        raise DaemonError(
            f"cannot read {layout.runtime_file} ({error}); run `oscar-jupyter local stop` "
            "and start again"
        ) from None


def _running_pid(layout: HomeLayout) -> int | None:
    """The pid in server.pid if that process is alive and is this home's server, else None."""
    try:
        pid = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return None
    if not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [word.decode(errors="replace") for word in cmdline]
    if SERVER_MODULE not in words or str(layout.root) not in words:
        return None  # the pid was reused by another program
    return pid


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _log_tail(layout: HomeLayout, lines: int = 15) -> str:
    try:
        text = layout.log_file.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
