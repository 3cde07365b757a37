"""`oscar-jupyter check PROFILE`: a site checked from a shell (as `%oscar_check` in a notebook),
and `oscar-jupyter local start|stop|status`: the local OSCAR."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import ConfigError
from .local import daemon
from .local.releases import (
    DEFAULT_INTERLINK_RELEASE,
    DEFAULT_PLUGIN_RELEASE,
    INTERLINK_RELEASES,
    PLUGIN_RELEASES,
)
from .local.singularity import DEFAULT_SESSIONDIR_MAX_SIZE_MIB
from .local.supervisor_kit import SupervisorKitError, ensure_supervisor_kit, supervisor_kit_ready
from .local.virtual_kubelet import DEFAULT_CPU_CAPACITY, DEFAULT_MEMORY_CAPACITY


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oscar-jupyter", description="Offload notebook cells to HPC through OSCAR."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_check(commands)
    local = commands.add_parser(
        "local", help="the local OSCAR (this machine's Slurm, or plain processes)"
    )
    actions = local.add_subparsers(dest="action", required=True)
    home_help = (
        "its home folder (default $OSCAR_JUPYTER_LOCAL_HOME or ~/.local/share/oscar-jupyter/local)"
    )

    start = actions.add_parser("start", help="start it and write the `local` oscar-cli profile")
    start.add_argument("--home", type=Path, help=home_help)
    start.add_argument(
        "--port", type=int, help=f"port on 127.0.0.1 (default ${daemon.PORT_ENV} or 8765)"
    )
    start.add_argument("--node-name", default="local-slurm", help="the virtual node's name")
    start.add_argument(
        "--executor",
        default="auto",
        choices=("auto", "slurm", "process"),
        help="run jobs with sbatch or as plain processes (default: slurm when it works)",
    )
    start.add_argument(
        "--config",
        type=Path,
        help="oscar-cli config file for the profile "
        "(default $OSCAR_CLI_CONFIG or ~/.oscar-cli/config.yaml)",
    )
    start.add_argument(
        "--users",
        default="",
        help="comma-separated OIDC-style users; each gets a "
        "`local-<user>` profile with a refresh token, like a real EGI/Keycloak profile",
    )
    start.add_argument("--kueue-cpu", default="2", help="per-user Kueue CPU quota (default 2)")
    start.add_argument(
        "--kueue-memory", default="2Gi", help="per-user Kueue memory quota (default 2Gi)"
    )
    start.add_argument("--kueue-gpu", default="0", help="per-user Kueue GPU quota (default 0)")
    start.add_argument(
        "--node-gpus",
        type=int,
        default=0,
        help="GPUs the virtual node advertises (default 0, as interLink)",
    )
    start.add_argument(
        "--image-prefix",
        default="docker://",
        help="the Slurm plugin's ImagePrefix (default docker://)",
    )
    start.add_argument(
        "--plugin-version",
        choices=PLUGIN_RELEASES,
        help="the interLink Slurm plugin release whose job.slurm/job.sh it writes "
        f"(default {DEFAULT_PLUGIN_RELEASE}, what sites run; or the running server's)",
    )
    start.add_argument(
        "--interlink-version",
        choices=INTERLINK_RELEASES,
        help="the interLink release between OSCAR and the plugin "
        f"(default {DEFAULT_INTERLINK_RELEASE}: service secrets never reach the job; "
        "or the running server's)",
    )
    start.add_argument(
        "--node-cpu",
        default=DEFAULT_CPU_CAPACITY,
        help=f"CPUs the virtual node advertises (default {DEFAULT_CPU_CAPACITY}, interLink's, "
        "whatever Slurm has)",
    )
    start.add_argument(
        "--node-memory",
        default=DEFAULT_MEMORY_CAPACITY,
        help=f"memory the virtual node advertises (default {DEFAULT_MEMORY_CAPACITY}, interLink's)",
    )
    start.add_argument(
        "--sessiondir-max-size",
        type=int,
        default=DEFAULT_SESSIONDIR_MAX_SIZE_MIB,
        metavar="MIB",
        help="cap of /tmp, /var/tmp and home in each container, as apptainer's "
        f"`sessiondir max size` (default {DEFAULT_SESSIONDIR_MAX_SIZE_MIB}; 0: no cap; "
        "bubblewrap stand-in only)",
    )
    start.add_argument(
        "--metrics-status",
        dest="real_status",
        action="store_false",
        help="list the virtual node in /system/status as if it had metrics "
        "(a real cluster lists none: by default nodes come from the "
        "kubeconfig the profile names)",
    )
    start.add_argument(
        "--job-python",
        type=Path,
        metavar="PATH",
        help="the python3 that plays the image's in every job (default: the host's "
        "/usr/bin/python3), e.g. an older one to see how the job program meets it",
    )
    stop = actions.add_parser("stop", help="cancel its running jobs and stop it")
    stop.add_argument("--home", type=Path, help=home_help)
    status = actions.add_parser("status", help="show what runs")
    status.add_argument("--home", type=Path, help=home_help)
    return parser


# Exit statuses of `check`: 0 cells run on the site (some features may still be missing: see
# the table), 1 they do not, 2 the command line or the profile is wrong (argparse's too).
CHECK_UNUSABLE, CHECK_ERROR = 1, 2


def _add_check(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="check a site with one probe job (a new user's first command)",
        description="Send one tiny probe job to the cluster of PROFILE, as every cell goes, "
        "and print what a first day on the site would otherwise find out cell by cell: "
        "OSCAR's version and auth, interLink, the virtual nodes and where they came from, the "
        "node's advertised capacity, the Kueue quota, queue wait and time to the first line, "
        "the image's Python (oscar-jupyter needs 3.8 or newer), whether --pre-exec and "
        "--secret arrive, /tmp's size and free space, and whether the job reaches the "
        "cluster's object storage. The findings are kept, dated, in the profile's jupyter: "
        "{site_check: ...} block, where the magics read them (as %oscar_check does).",
        epilog="Exit status: 0 cells run on the site (a FAIL row is a feature it lacks), "
        "1 they do not (no interLink, the probe job failed, the image's Python is too old), "
        "2 a wrong command line or profile.",
    )
    check.add_argument("profile", metavar="PROFILE", help="a cluster of oscar-cli's config")
    check.add_argument(
        "--node", help="the virtual node to probe (default: the profile's, or the only one)"
    )
    check.add_argument(
        "--image", help="the image to probe (default: the profile's, else oscar-jupyter's)"
    )
    check.add_argument(
        "--config",
        type=Path,
        help="oscar-cli config file (default $OSCAR_CLI_CONFIG or ~/.oscar-cli/config.yaml)",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds the probe job may take, queue included (default 900)",
    )
    check.add_argument(
        "--no-keep",
        dest="keep",
        action="store_false",
        help="do not record the findings in the profile",
    )


def _check(args: argparse.Namespace) -> int:
    from .client import OscarError
    from .site_check import PROBE_TIMEOUT_SECONDS, check_site
    from .spec import SpecError

    if args.config is not None:
        if not args.config.is_file():
            print(
                f"oscar-jupyter check: error: --config {args.config}: no such file; give "
                "oscar-cli's config file",
                file=sys.stderr,
            )
            return CHECK_ERROR
        os.environ["OSCAR_CLI_CONFIG"] = str(args.config)  # where the profile is read and kept
    timeout = PROBE_TIMEOUT_SECONDS if args.timeout is None else args.timeout
    if timeout <= 0:
        print("oscar-jupyter check: error: --timeout must be positive seconds", file=sys.stderr)
        return CHECK_ERROR
    try:
        report = check_site(
            args.profile,
            node=args.node,
            image=args.image,
            timeout=timeout,
            progress=_progress,
            keep=args.keep,
        )
    except (ConfigError, SpecError) as error:
        _progress_done()
        print(f"oscar-jupyter check: error: {error}", file=sys.stderr)
        return CHECK_ERROR
    except OscarError as error:
        _progress_done()
        print(f"oscar-jupyter check: {args.profile} does not answer: {error}", file=sys.stderr)
        return CHECK_UNUSABLE
    _progress_done()
    print(report.text())
    if not report.usable:
        print(f"\n{args.profile}: cells cannot run on this site (see FAIL above).")
        return CHECK_UNUSABLE
    return 0


def _progress(text: str) -> None:
    """Where the check is, on stderr (one line redrawn on a terminal)."""
    if sys.stderr.isatty():
        print(f"\r\033[Kchecking: {text}", end="", file=sys.stderr, flush=True)


def _progress_done() -> None:
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> None:
    result = daemon.start(
        home=args.home,
        port=args.port,
        node_name=args.node_name,
        executor=args.executor,
        config_path=args.config,
        users=[user.strip() for user in args.users.split(",") if user.strip()],
        kueue_cpu=args.kueue_cpu,
        kueue_memory=args.kueue_memory,
        kueue_gpu=args.kueue_gpu,
        node_gpus=args.node_gpus,
        image_prefix=args.image_prefix,
        real_status=args.real_status,
        job_python=args.job_python,
        plugin_version=args.plugin_version,
        interlink_version=args.interlink_version,
        node_cpu=args.node_cpu,
        node_memory=args.node_memory,
        sessiondir_max_size=args.sessiondir_max_size,
    )
    if result.already_running:
        print(f"The local OSCAR is already running (pid {result.pid}).")
    print(f"endpoint:          {result.endpoint}")
    print(f"executor:          {result.executor} ({result.executor_reason})")
    print(f"container runtime: {result.container_runtime}")
    print(f"virtual node:      {result.virtual_node}")
    print(_releases_line(result.plugin_release, result.interlink_release))
    print(f"profile:           local in {result.profile_path}  (%oscar_connect local)")
    for user, profile in result.user_profiles.items():
        print(f"user profile:      {profile} ({user}, OIDC refresh token)")
    if result.kubeconfig:
        print(f"kubeconfig:        {result.kubeconfig}")
    if not supervisor_kit_ready():
        # The server builds it too; waiting here (on the same lock) makes start honest about
        # when jobs can run, and shows why the first start takes longer.
        print(
            "supervisor:        preparing faas-supervisor (first start only, ~15 s) ...",
            end="",
            flush=True,
        )
        kit = ensure_supervisor_kit()
        print(f" ready ({kit})")


def _releases_line(plugin: str | None, interlink: str | None) -> str:
    return f"models:            Slurm plugin {plugin or '?'}, interLink {interlink or '?'}"


def _stop(args: argparse.Namespace) -> None:
    result = daemon.stop(home=args.home)
    if not result.was_running:
        print("The local OSCAR was not running.")
        return
    print("The local OSCAR stopped.")
    if result.cancelled_jobs:
        print(
            f"Cancelled {len(result.cancelled_jobs)} unfinished job(s): "
            + ", ".join(result.cancelled_jobs)
        )


def _status(args: argparse.Namespace) -> int:
    info = daemon.status(home=args.home)
    if not info.running:
        print(f"The local OSCAR is not running (home {info.home}).")
        return 3
    jobs = ", ".join(f"{count} {name}" for name, count in sorted(info.jobs.items())) or "none"
    print(f"endpoint:          {info.endpoint} (pid {info.pid})")
    print(f"executor:          {info.executor} ({info.executor_reason})")
    print(f"container runtime: {info.container_runtime}")
    print(f"virtual node:      {info.virtual_node}")
    print(_releases_line(info.plugin_release, info.interlink_release))
    print(f"jobs:              {jobs}")
    print(f"home:              {info.home}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `oscar-jupyter` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    try:
        if args.action == "start":
            _start(args)
        elif args.action == "stop":
            _stop(args)
        else:
            return _status(args)
    except (daemon.DaemonError, ConfigError, SupervisorKitError, OSError, ValueError) as error:
        print(f"oscar-jupyter: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
