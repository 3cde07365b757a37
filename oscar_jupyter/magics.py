"""IPython magics: parse flags, then call `session`, `jobs` and `display`. No logic of their own."""

from __future__ import annotations

import argparse
import getpass
import keyword
import os
import sys
import threading
from types import FrameType
from typing import Any, NoReturn

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display
from traitlets import Bool, Float, Int, Unicode

from . import display as views
from . import errors, remote_session
from .client import OscarError
from .jobs import CancelRefused, Job, JobFailed, JobTimeout, PollInterval
from .nodes import format_bytes
from .options import BY_FIELD, OptionError, OptionParser, flag_help, split_words
from .options import add_to as add_options
from .session import Session, current, interrupts_deferred
from .spec import (
    DEFAULT_IMAGE,
    OffloadSpec,
    SpecError,
    check_secret_names,
    settings_from_options,
)
from .timefmt import duration, short_id
from .transfers import INLINE_INPUT_BYTES, check_transfers
from .values import check_names, pack_inputs

# Flags of the line magics that take a value (the offload options know their own).
LINE_MAGIC_VALUE_FLAGS = ("--endpoint", "--user", "--token-file")
# The editor counts the %%oscar_offload line as the cell's line 1; the code starts on line 2.
CELL_LINE_OFFSET = 1


class _Parser(OptionParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit the kernel
        raise UsageError(f"{self.prog}: {self._explain(message)}")


def _split(line: str) -> list[str]:
    try:
        return split_words(line, LINE_MAGIC_VALUE_FLAGS)
    except OptionError as err:
        raise UsageError(str(err)) from None


def _offload_parser() -> _Parser:
    parser = _Parser("%%oscar_offload")
    add_options(parser)
    return parser


def offload_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed flags -> OffloadSpec fields (only what the cell set)."""
    settings = settings_from_options(vars(args))
    if args.secrets:
        settings["secrets"] = secret_values(args.secrets)
    return settings


def secret_values(names: list[str]) -> dict[str, str]:
    """Each `--secret NAME`'s value: the kernel's $NAME, else asked for (never in the cell).
    The names are checked before anything is asked."""
    check_secret_names(dict.fromkeys(names, ""))
    values = {}
    for name in names:
        value = os.environ.get(name)
        if not value:
            try:
                value = getpass.getpass(f"Value of secret {name} (not shown, not saved): ")
            except (StdinNotImplementedError, EOFError, OSError):
                raise SpecError(
                    "--secret",
                    f"--secret {name}: this kernel has no ${name} and this frontend cannot ask "
                    f"for it; set it without writing it in the notebook: run "
                    f"oscar_jupyter.ask_secret({name!r}) in a notebook, or start Jupyter with "
                    f"{name} in its environment",
                ) from None
        values[name] = value
    return values


@magics_class
class OscarMagics(Magics):
    """Offload cells to an OSCAR cluster's interLink virtual nodes (Slurm on an HPC system)."""

    default_image = Unicode(DEFAULT_IMAGE, help="container image of cells without --image").tag(
        config=True
    )
    default_node = Unicode("", help="virtual node of cells without --node").tag(config=True)
    default_time = Unicode("", help="walltime of cells without --time").tag(config=True)
    default_mem = Unicode("", help="memory of cells without --mem").tag(config=True)
    default_cpus_per_task = Int(0, help="CPUs of cells without --cpus-per-task (0: none)").tag(
        config=True
    )
    default_partition = Unicode("").tag(config=True)
    default_account = Unicode("").tag(config=True)
    default_on_interrupt = Unicode("cancel", help="cancel or detach on Ctrl-C").tag(config=True)
    max_stream_lines = Int(
        10000,
        help="lines shown in a blocking cell: the first half and the last half of a longer "
        "output (all of it: %oscar_logs JOB)",
    ).tag(config=True)
    live_tail_lines = Int(40, help="lines shown by the live view of a --no-wait cell").tag(
        config=True
    )
    min_poll_interval = Float(
        0.1, help="fastest poll while output flows (s); slower when a log fetch is slow or large"
    ).tag(config=True)
    max_log_bytes_per_second = Int(
        1_000_000,
        help="log bytes a job may download per second on average; polls of a large "
        "log slow down to keep it (the live view says so)",
    ).tag(config=True)
    follow_kubernetes = Bool(
        True,
        help="stream the job pod's log through the Kubernetes API when the profile's "
        "kubeconfig reaches the cluster (jupyter: {kubeconfig: PATH}), instead of polling OSCAR",
    ).tag(config=True)
    max_poll_interval = Float(5.0).tag(config=True)

    @property
    def session(self) -> Session:
        return current()

    @property
    def user_ns(self) -> dict[str, Any]:
        """The notebook's variables."""
        assert self.shell is not None, "the magics run inside an IPython shell"
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def trait_defaults_layer(self) -> dict[str, Any]:
        return {
            "image": self.default_image,
            "node": self.default_node,
            "time": self.default_time,
            "mem": self.default_mem,
            "cpus_per_task": self.default_cpus_per_task or None,
            "partition": self.default_partition,
            "account": self.default_account,
        }

    # -- connection ----------------------------------------------------------------------------

    @line_magic
    @no_var_expand
    def oscar_connect(self, line: str) -> Any:
        """%oscar_connect [PROFILE] [--endpoint URL] [--user NAME] [--ask-password] [--ask-token]
        [--token-file PATH] [--insecure]

        Connects this kernel to an OSCAR cluster: a cluster of ~/.oscar-cli/config.yaml (its
        default when no PROFILE), the OSCAR_* environment variables, or the flags. Passwords and
        tokens are asked for, never written in the cell.
        """
        p = _Parser("%oscar_connect")
        p.add_argument("profile", nargs="?")
        p.add_argument("--endpoint")
        p.add_argument("--user")
        p.add_argument("--ask-password", action="store_true")
        p.add_argument("--ask-token", action="store_true")
        p.add_argument("--token-file", help="a file holding an OIDC access token")
        p.add_argument("--password", dest="inline_secret")
        p.add_argument("--token", dest="inline_secret")
        p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
        args = p.parse_args(_split(line))
        if args.inline_secret is not None:
            raise UsageError(
                "%oscar_connect: a password or token written in a cell is saved with the "
                "notebook; use --ask-password / --ask-token (asked for, never stored), "
                "--token-file PATH, or the OSCAR_PASSWORD / OSCAR_TOKEN environment variables"
            )
        overrides: dict[str, Any] = {}
        if args.endpoint:
            overrides["endpoint"] = args.endpoint
        if args.user:
            overrides["user"] = args.user
        if args.ask_password:
            overrides["password"] = getpass.getpass("OSCAR password: ")
        if args.ask_token:
            overrides["token"] = getpass.getpass("OSCAR access token: ")
        if args.token_file:
            overrides["token"] = _read_token_file(args.token_file)
        if args.insecure:
            overrides["ssl_verify"] = False
        return self.session.connect(args.profile, **overrides)

    # -- offload -------------------------------------------------------------------------------

    @cell_magic
    @no_var_expand
    def oscar_offload(self, line: str, cell: str) -> Any:
        """%%oscar_offload [flags] then the code: run the cell on the cluster (flags below)."""
        args = _offload_parser().parse_args(_split(line))
        if args.output_name is not None:
            _check_variable_name(args.output_name)
        name = _cell_label(self.shell)
        errors.check_syntax(cell, name, CELL_LINE_OFFSET)
        if args.session is not None:
            return self._run_in_session(args, cell, name)
        session = self.session
        spec = session.build_spec(offload_flags(args), self.trait_defaults_layer())
        timeout = _seconds(args.timeout)
        inputs = self._input_values(_names(args.inputs))
        outputs = _names(args.outputs)
        if args.dry_run:
            return self._dry_run(spec, cell, inputs, outputs)
        on_interrupt = args.on_interrupt or _on_interrupt_setting(self.default_on_interrupt)
        session.max_log_bytes_per_second = self.max_log_bytes_per_second
        session.follow_kubernetes = self.follow_kubernetes
        session.transfer_progress = views.TransferProgress()
        job = session.submit(cell, spec, inputs=inputs, outputs=outputs, on_interrupt=on_interrupt)
        try:
            for note in session.capacity_notes(spec):  # it would queue; GPUs left to Slurm
                print(note, file=sys.stderr)
            if args.output_name:
                self.user_ns[args.output_name] = job
            if args.no_wait:
                self._show_live(job, name)
                if outputs:
                    print(
                        f"--out {','.join(job.outputs)}: with --no-wait the values come from "
                        f"{args.output_name or 'the job'}.result() once the job has ended"
                    )
                return None
        except KeyboardInterrupt:  # before the wait: the same choice as during it
            with interrupts_deferred():
                self._interrupted(job, "detach" if args.no_wait else on_interrupt)
            return None
        try:
            self._run_blocking(  # since=0: a followed job may have lines before the wait begins
                job, timeout, on_interrupt, cell_name=name, since=0
            )
            if job.outputs:
                self.user_ns.update(job.values(progress=session.transfer_progress))
        finally:
            job.discard_objects()  # once the job has ended: its values and downloads are here
        return None

    oscar_offload.__doc__ = (
        "%%oscar_offload [flags], then the cell's code\n\n"
        "Runs the cell as a Slurm job on an interLink virtual node and streams its output "
        "here.\nDefaults: %config OscarMagics.default_node = ..., the offload panel, or the "
        "`jupyter:` block of the cluster profile; a cell's own flags win.\n\nFlags:\n" + flag_help()
    )

    def _run_in_session(self, args: argparse.Namespace, cell: str, name: str) -> None:
        """`--session NAME`: the cell runs in the session's Python (remote_session.py)."""
        fields = settings_from_options(vars(args))  # not offload_flags: it asks for secrets
        transfers = {name: list(fields.pop(name, None) or []) for name in ("uploads", "downloads")}
        extra = sorted(BY_FIELD[name].flag for name in fields if name in BY_FIELD)
        extra += ["--secret"] if args.secrets else []
        extra += [
            flag
            for flag, given in (
                ("--no-wait", args.no_wait),
                ("--dry-run", args.dry_run),
                ("-o", args.output_name),
                ("--timeout", args.timeout),
                ("--on-interrupt", args.on_interrupt),
            )
            if given
        ]
        if extra:
            raise UsageError(
                f"%%oscar_offload --session {args.session}: {', '.join(extra)} cannot go with "
                "--session (the session's resources were set by %oscar_session start); only "
                "--in, --out, --upload and --download"
            )
        remote = remote_session.get(args.session)
        self.session.transfer_progress = views.TransferProgress()
        inputs = self._input_values(_names(args.inputs))
        stream = views.BoundedStream(remote.job.name, self.max_stream_lines)
        try:
            values = remote.run(
                cell,
                inputs,
                _names(args.outputs),
                sink=stream.write,
                cell_name=name,
                line_offset=CELL_LINE_OFFSET,
                partial=views.PartialLine(),
                uploads=transfers["uploads"],
                downloads=transfers["downloads"],
            )
        finally:
            stream.close()
            warning = remote.walltime_warning()
            if warning:
                print(warning, file=sys.stderr)
        self.user_ns.update(values)

    @line_magic
    @no_var_expand
    def oscar_session(self, line: str) -> Any:
        """%oscar_session start NAME [offload flags] [--idle-timeout MINUTES] | stop NAME |
        list | attach NAME

        A persistent session: one job on the virtual node running a Python that waits for
        cells (`%%oscar_offload --session NAME`), its variables kept between them, until
        `stop`, its walltime (--time) or --idle-timeout minutes without a cell (default 30).
        """
        p = _Parser("%oscar_session")
        p.add_argument("action", choices=("start", "stop", "list", "attach"))
        p.add_argument("name", nargs="?")
        p.add_argument("--idle-timeout", dest="idle_timeout", type=float, default=None)
        add_options(p)
        args = p.parse_args(_split(line))
        if args.action == "list":
            return self._list_sessions()
        if not args.name:
            raise UsageError(f"%oscar_session {args.action} NAME: name the session, e.g. s1")
        remote_session.check_name(args.name)
        if args.action != "start":
            if args.idle_timeout is not None or offload_flags(args):
                raise UsageError(f"%oscar_session {args.action} takes only the session's name")
            if args.action == "stop":
                remote = remote_session.get(args.name)
                remote.stop()
                print(
                    f"Session {args.name} stopped (job {remote.job.name} ended, objects removed)."
                )
                return None
            remote = remote_session.attach(args.name)
            print(f"Attached to session {args.name}: {self._session_line(remote)}")
            if remote.running is not None:  # sent before the restart: its output, then its end
                print(f"Cell {remote.running} of the session still runs; its output follows:")
                stream = views.BoundedStream(remote.job.name, self.max_stream_lines)
                try:
                    remote.follow_running(stream.write, f"session cell {remote.running}")
                finally:
                    stream.close()
            return None
        spec = self.session.build_spec(offload_flags(args), self.trait_defaults_layer())
        idle = (
            remote_session.DEFAULT_IDLE_MINUTES if args.idle_timeout is None else args.idle_timeout
        )
        handle = display(
            {"text/plain": f"Starting session {args.name}…"}, raw=True, display_id=True
        )

        def waiting() -> None:
            remote = remote_session._SESSIONS.get(args.name)
            if remote is not None:
                text = f"Starting session {args.name}: job {remote.job.name}, {remote.state()}"
                handle.update({"text/plain": text}, raw=True)

        remote = remote_session.start(args.name, spec, idle_minutes=idle, on_wait=waiting)
        handle.update(
            {"text/plain": f"Session {args.name} ready: {self._session_line(remote)}"}, raw=True
        )
        return None

    @staticmethod
    def _session_line(remote: remote_session.RemoteSession) -> str:
        row = remote.row()
        left = "no walltime" if row["time_left"] is None else f"{duration(row['time_left'])} left"
        idle = "" if row["idle"] is None else f", idle {duration(row['idle'])}"
        return (
            f"{row['state']} on {row['node']}, {left}{idle}, {row['cells']} cell(s), "
            f"job {row['job']}"
        )

    def _list_sessions(self) -> None:
        found = remote_session.sessions()
        if not found:
            print("No sessions in this kernel (start one: %oscar_session start NAME --node ...)")
            return
        for remote in found:
            print(f"{remote.name}: {self._session_line(remote)}")

    def _input_values(self, names: list[str]) -> dict[str, Any]:
        names = check_names("--in", names)
        missing = [n for n in names if n not in self.user_ns]
        if missing:
            raise SpecError(
                "--in",
                f"--in {','.join(missing)}: the notebook has no variable "
                f"{', '.join(missing)}; run the cell that defines it first",
            )
        return {n: self.user_ns[n] for n in names}

    def _dry_run(
        self, spec: OffloadSpec, cell: str, inputs: dict[str, Any], outputs: list[str]
    ) -> None:
        spec.validate(known_nodes=self.session.known_node_names())
        self.session.check_offloadable(spec)
        check_transfers(spec.uploads, spec.downloads)
        packed = pack_inputs(inputs)
        through_bucket = len(packed) > INLINE_INPUT_BYTES
        body = spec.job_body(cell, "" if through_bucket else packed, check_names("--out", outputs))
        cluster = self.session.profile.cluster_id if self.session.profile else "oscar-cluster"
        service = self.session.runner_service_name(spec)
        print("# Summary (nothing was sent):")
        print(views.spec_summary(spec))
        print(f"# Service definition (FDL for `oscar-cli apply`), cluster {cluster}:")
        print(spec.fdl(cluster, service))
        print("# Job request:")
        print(f"POST /job/{service}")
        print("Authorization: Bearer <service token>")
        print(f"X-Delegated-Job-ID: {service}-{self.session.kernel_tag}-<12 random hex digits>")
        print("Content-Type: application/octet-stream")
        print(
            f"Content-Length: {len(body)}  (base64 of the {len(cell.encode())}-byte cell program)"
        )
        if through_bucket or spec.uploads or spec.downloads:
            print("# Through your bucket on the cluster's object storage (when sent):")
            if through_bucket:
                print(f"--in values: {len(packed) * 3 // 4:,} bytes")
            for item in spec.uploads:
                print(f"--upload {item}")
            for item in spec.downloads:
                print(f"--download {item}")
            print(
                "The job then gets a presigned URL for each of its objects, made at send time "
                "and sealed in its body with the runner service's key (never shown)."
            )
        for name, content in spec.fdl_files(service).items():
            print(f"# File {name} (the runner script the FDL references):")
            print(content)

    def _run_blocking(
        self,
        job: Job,
        timeout: float | None,
        on_interrupt: str,
        cell_name: str = errors.LOCAL_FILENAME,
        since: int | None = None,
    ) -> None:
        handle = display(views.status_bundle(job), raw=True, display_id=True)
        stream = views.BoundedStream(job.name, self.max_stream_lines)
        pending = views.PartialLine()

        def on_update(job: Job, new_lines: list) -> None:
            partial = views.partial_lines(job)
            if stream.in_traceback:
                partial.pop("stderr", None)
            pending.update(partial, lines_follow=bool(new_lines))
            stream.write(new_lines)
            pending.show(partial)
            handle.update(views.status_bundle(job), raw=True)

        interval = PollInterval(self.min_poll_interval, self.max_poll_interval)
        try:
            job.wait(timeout, on_update=on_update, interval=interval, since=since)
        except KeyboardInterrupt:
            with interrupts_deferred():  # a second Ctrl-C must not cut the cancel short
                pending.clear()
                stream.close()
                note = None
                try:
                    note = self._interrupted(job, on_interrupt)
                finally:
                    handle.update(views.status_bundle(job, note), raw=True)
            return
        except JobTimeout:
            pending.clear()
            stream.close()
            job.cancel()
            handle.update(views.status_bundle(job), raw=True)
            raise
        pending.clear()
        stream.close()
        handle.update(views.status_bundle(job), raw=True)
        for note in job.collect_transfers(self.session.transfer_progress):
            print(note, file=sys.stderr)
        errors.raise_for_status(job, cell_name, CELL_LINE_OFFSET)

    def _interrupted(self, job: Job, on_interrupt: str) -> str:
        """Ctrl-C while a job of this cell runs: leave it running and followed ("detach": the
        note for its status line), or cancel it and end the cell in one line
        (`CellInterrupted`, so Run All stops)."""
        if on_interrupt == "detach":
            self.session.poller.watch(job)
            follow = f"%oscar_attach {short_id(job.name)}"
            print(f"Detached: job {job.name} keeps running; follow it with {follow}")
            return f"detached: this view stopped following ({follow})"
        try:
            cancelled = job.cancel()
        except (CancelRefused, OscarError) as err:
            raise errors.CellInterrupted(
                f"job {job.name} could not be cancelled ({err}); %oscar_cancel {job.name}"
            ) from None
        if not cancelled:
            raise errors.CellInterrupted(
                f"job {job.name} had already ended ({job.status()}); its output is above"
            ) from None
        raise errors.CellInterrupted(
            f"job {job.name} was cancelled on the cluster; its output so far is above"
        ) from None

    def _show_live(self, job: Job, cell_name: str = errors.LOCAL_FILENAME) -> None:
        """A view made in this cell, updated by the poller thread (never print from a thread).
        When the job ends, the view is replaced by the notebook's own outputs (`final_bundle`),
        so a saved notebook shows the job's end without a kernel or widget state."""
        tail = self.live_tail_lines
        limit = self.max_stream_lines
        if _has_widget_frontend(self.shell):
            from .widgets import JobView

            handle = display(JobView(job, tail_lines=tail), display_id=True)  # watched by it
        else:
            handle = display(views.live_bundle(job, tail), raw=True, display_id=True)
        ended = threading.Event()

        def update(job: Job) -> None:
            if not job.is_done():
                if not _has_widget_frontend(self.shell):
                    handle.update(views.live_bundle(job, tail), raw=True)
                return
            if ended.is_set():
                return
            ended.set()
            job.remove_listener(update)
            handle.update(views.final_bundle(job, limit, _ending(job, cell_name)), raw=True)

        job.add_listener(update)
        self.session.poller.watch(job)
        if job.is_done():
            update(job)

    @line_magic
    def oscar_panel(self, line: str) -> Any:
        """%oscar_panel: resource widgets whose values become the defaults of %%oscar_offload."""
        from .widgets import Panel

        return Panel()

    # -- line magics ---------------------------------------------------------------------------

    @line_magic
    def oscar_check(self, line: str) -> Any:
        """%oscar_check [PROFILE] [--node NODE] [--image IMG] [--no-keep]: check a site with
        one probe job (OSCAR, interLink, nodes, queue wait, the image's Python, pre-exec,
        secrets, /tmp, the object storage) and keep what it found in the profile, where the
        magics read it. `oscar-jupyter check PROFILE` does the same from a shell."""
        from .site_check import check_site

        p = _Parser("%oscar_check")
        p.add_argument("profile", nargs="?")
        p.add_argument("--node")
        p.add_argument("--image")
        p.add_argument("--no-keep", action="store_true", dest="no_keep")
        args = p.parse_args(_split(line))
        profile = args.profile or (self.session.profile and self.session.profile.cluster_id)
        shown = display({"text/plain": "Checking the site…"}, raw=True, display_id=True)

        def progress(text: str) -> None:
            shown.update({"text/plain": f"Checking the site: {text}…"}, raw=True)

        report = check_site(
            profile or None,
            node=args.node,
            image=args.image,
            progress=progress,
            keep=not args.no_keep,
        )
        shown.update({"text/plain": report.text(), "text/html": report._repr_html_()}, raw=True)
        return None

    @line_magic
    def oscar_nodes(self, line: str) -> None:
        """%oscar_nodes: the cluster's nodes (name, status, CPU, memory, GPU, interLink)."""
        session = self.session
        nodes = session.nodes(refresh=True)
        rows = [
            [
                n.name,
                n.status + (f" ({n.reason})" if n.reason else ""),
                f"{n.cpu_free:g} / {n.cpu_total:g}" if n.resources_known else "?",
                f"{format_bytes(n.memory_free_bytes)} / {format_bytes(n.memory_total_bytes)}"
                if n.resources_known
                else "?",
                str(n.gpus) if n.resources_known else "?",
                "yes" if n.is_interlink else "no",
            ]
            for n in nodes
        ]
        headers = ["node", "status", "CPU free / total", "memory free / total", "GPU", "interLink"]
        display(views.table_bundle(headers, rows, "The cluster lists no nodes."), raw=True)
        print(
            f"(from {session.nodes_source})"
            if session.nodes_source
            else "No source lists the cluster's interLink nodes: node names go unchecked; list "
            "them in the profile (jupyter: {nodes: [...]}) or give it a kubeconfig."
        )

    @line_magic
    def oscar_jobs(self, line: str) -> Any:
        """%oscar_jobs [--mine | --all | --notebook] [--hide-finished] [--ids] [--watch]: this
        kernel's jobs (--mine: all your jobs, --all: every job you can see, --notebook: the jobs
        of this notebook from any of its kernels), labelled by notebook, cell and first line as
        in the sidebar, newest first; --hide-finished keeps the running and waiting ones, the id
        column shows each job's short id (the magics that take a job accept it), --ids the whole
        name; --watch: a live table."""
        from .widgets.jobs_table import EMPTY, listing_bundle, this_notebook

        p = _Parser("%oscar_jobs")
        p.add_argument("--watch", action="store_true")
        p.add_argument("--hide-finished", action="store_true")
        p.add_argument("--ids", action="store_true")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--mine", action="store_true")
        which.add_argument("--all", action="store_true")
        which.add_argument("--notebook", action="store_true")
        args = p.parse_args(_split(line))
        scope = "all" if args.all else "mine" if args.mine else "kernel"
        notebook = this_notebook() if args.notebook else None
        if args.watch:
            from .widgets import JobsTable

            return JobsTable(scope=scope, notebook=notebook, hide_finished=args.hide_finished)
        rows = self.session.list_jobs(scope, notebook=notebook, hide_finished=args.hide_finished)
        empty = EMPTY["notebook" if notebook else scope]
        if args.hide_finished:
            empty = empty.replace("No jobs", "No running or waiting jobs")
        whose = {"kernel": "this kernel's jobs", "mine": "your jobs", "all": "these jobs"}[scope]
        bundle = listing_bundle(
            rows, ids=args.ids, empty=empty, whose="this notebook" if notebook else whose
        )
        display(bundle, raw=True)
        return None

    @line_magic
    def oscar_logs(self, line: str) -> None:
        """%oscar_logs JOB [--follow] [--rank N]: the whole output of a job (follow: until it
        ends; --rank: one rank's, of a job of several)."""
        p = _Parser("%oscar_logs")
        p.add_argument("job")
        p.add_argument("--follow", action="store_true")
        p.add_argument("--rank", type=int)
        args = p.parse_args(_split(line))
        job = self._find(args.job)
        if args.rank is not None:
            if args.follow:
                raise UsageError("%oscar_logs: --rank shows what a job has printed; no --follow")
            if not job.is_done():
                job.refresh()
            if not 0 <= args.rank < job.ranks:
                raise UsageError(
                    f"%oscar_logs {job.name} --rank {args.rank}: the job runs as "
                    f"{job.ranks} rank{'' if job.ranks == 1 else 's'} "
                    f"(0 to {job.ranks - 1})"
                    if job.ranks > 1
                    else f"%oscar_logs {job.name} --rank {args.rank}: the job runs as one rank"
                    " (or has not started): leave --rank out"
                )
            views.write_all(job, rank=args.rank)
            return
        if args.follow:
            views.write_all(job)
            self._run_blocking(job, None, "detach")
            return
        if not job.is_done():
            job.refresh()
        views.write_all(job)

    @line_magic
    def oscar_cancel(self, line: str) -> None:
        """%oscar_cancel JOB: cancel a job (its Slurm job is cancelled too)."""
        name = line.strip()
        if not name:
            raise UsageError("%oscar_cancel JOB: name the job (see %oscar_jobs)")
        job = self._find(name)
        if not job.is_done():
            job.refresh()  # a job found on the cluster starts with no state of its own
        if job.cancel():
            print(f"Cancelled job {job.name}.")
        else:
            print(f"Job {job.name} had already ended ({job.status()}); nothing to cancel.")

    @line_magic
    def oscar_attach(self, line: str) -> None:
        """%oscar_attach JOB: follow a job submitted from any kernel, its output from the start.

        Ends with the job's real state, as if it had been submitted in this cell. Ctrl-C stops
        following and leaves the job running."""
        name = line.strip()
        if not name:
            raise UsageError("%oscar_attach JOB: name the job (see %oscar_jobs)")
        job = self._find(name)
        self.session.jobs.setdefault(job.name, job)
        if job.lines():
            sys.stdout.write(job.logs())
        self._run_blocking(job, None, "detach")

    @line_magic
    def oscar_cleanup(self, line: str) -> None:
        """%oscar_cleanup [--mine] [--all]: delete this kernel's finished jobs (--mine: all your
        finished jobs; --all or --services: also the runner services in which no job of any
        kernel still runs or waits)."""
        p = _Parser("%oscar_cleanup")
        p.add_argument("--mine", action="store_true")
        p.add_argument("--all", "--services", dest="services", action="store_true")
        args = p.parse_args(_split(line))
        report = self.session.cleanup(
            scope="mine" if args.mine else "kernel", services=args.services
        )
        print("\n".join(report.lines("yours" if args.mine else "this kernel's")))

    def _find(self, name: str) -> Job:
        try:
            return self.session.find_job(name)
        except KeyError as err:
            raise UsageError(str(err.args[0])) from None


def _names(values: list[str]) -> list[str]:
    """`--in a,b --in c` -> ["a", "b", "c"], each a Python name."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _check_variable_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise SpecError(
            "-o", f"-o {name!r}: give a Python variable name for the job handle, e.g. -o job"
        )


def _read_token_file(path: str) -> str:
    """An access token from a file (e.g. EGI notebooks' /var/run/secrets/egi.eu/access_token)."""
    from pathlib import Path

    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as err:
        raise UsageError(
            f"%oscar_connect --token-file {path}: cannot read it ({err.strerror})"
        ) from None
    if not token:
        raise UsageError(f"%oscar_connect --token-file {path}: the file is empty")
    return token


def _cell_label(shell: Any) -> str:
    """How IPython names the running cell in tracebacks ('Cell In[7]'): the label of the
    cell's code, found among the callers' frames; '<cell>' when the magic was not run by a cell."""
    frame: FrameType | None = sys._getframe(1)
    compiler = getattr(shell, "compile", None)
    while frame is not None and compiler is not None:
        label = compiler.format_code_name(frame.f_code.co_filename)
        if label:
            return f"{label[0]} {label[1]}"
        frame = frame.f_back
    return errors.LOCAL_FILENAME


def _ending(job: Job, cell_name: str) -> str:
    """The error a finished job ended with, as a blocking cell would show it; "" on success."""
    try:
        errors.raise_for_status(job, cell_name, CELL_LINE_OFFSET)
    except Exception as error:  # the job's own failure, rendered as text
        render = getattr(error, "_render_traceback_", None)
        return "\n".join(render()) if render else f"{type(error).__name__}: {error}"
    return ""


def _on_interrupt_setting(value: str) -> str:
    if value not in ("cancel", "detach"):
        raise UsageError(
            f"OscarMagics.default_on_interrupt = {value!r}: use 'cancel' or 'detach', e.g. "
            "%config OscarMagics.default_on_interrupt = 'detach'"
        )
    return value


def _has_widget_frontend(shell: Any) -> bool:
    """A kernel (ipykernel) can show widgets; a terminal IPython cannot."""
    return getattr(shell, "kernel", None) is not None


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SpecError(
            "--timeout", f"--timeout {text}: write seconds, e.g. --timeout 600"
        ) from None
    if value <= 0:
        raise SpecError("--timeout", f"--timeout {text}: write a positive number of seconds")
    return value


__all__ = ["OscarMagics", "JobFailed", "OscarError"]
