"""What the sidebar shows, computed from OSCAR itself and this machine's job records, without
tornado (handlers.py serves it; labextension/src/api.ts types the answers).

Jobs submitted by any kernel (the magic, `offload()`, the panel) appear here because they are read
back from the runner services' job listings: one services listing plus one job listing per runner
service per refresh, and one refresh per `refresh_seconds` per (cluster, scope) however many tabs
poll (concurrent requests wait for the refresh in flight and share it). Each job's status is
`Job.status()`, as in the kernel (`ownership.JobTracker`): a job's log is read while its final
state is unknown, then its final state is remembered. Labels (notebook · [n] · first line) and
cancelled jobs that OSCAR no longer lists come from the local job records (`job_records`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import connections, job_records
from ..client import OscarClient, OscarError
from ..config import (
    ClusterProfile,
    ConfigError,
    default_config_path,
    default_profile_name,
    list_profiles,
    load_profile,
)
from ..diagnostics import slurm_end
from ..job_records import BY_SIDEBAR, JobRecord
from ..job_status import (
    TERMINAL,
    JobRow,
    JobState,
    listed_row,
    merge_records,
    status_from_log,
)
from ..jobs import cancel_on_cluster, is_marker
from ..logs import LogParser
from ..nodes import discover_nodes
from ..ownership import (
    JobTracker,
    check_scope,
    is_runner_service,
    kernel_tag_of,
    kernel_tag_of_kernel_id,
    owner_identity,
    owns_service,
)
from ..remote_session import SessionError, UserSessions
from ..session import Session
from ..storage import StorageUnavailable
from ..timefmt import iso_utc, now_iso

# A sidebar request must not hang a Jupyter server thread for OscarClient's default 30 s.
CLIENT_TIMEOUT_SECONDS = 15.0
# Lines of output sent in one log answer; more new lines than this are cut at the front.
MAX_LOG_LINES = 5000
DEFAULT_REFRESH_SECONDS = 5.0
# Jobs whose log parser is kept between log polls (a parser holds the job's lines).
MAX_PARSERS = 64
CLEANUP_SCOPES = ("notebook", "mine", "jobs")
# The most jobs one cleanup request may name (the sidebar's selection).
MAX_CLEANUP_JOBS = 5000
log = logging.getLogger(__name__)


class JobNotFound(LookupError):
    """OSCAR knows no such job (answered 404 by the sidebar's API)."""


@dataclass
class _Slot:
    """The last job listing of one (cluster, scope), and the lock its refresh holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    result: dict[str, Any] | None = None
    client: OscarClient | None = None
    at: float = float("-inf")
    by_job: dict[str, dict[str, Any]] = field(default_factory=dict)


def relative_notebook(path: str | None, root_dir: str | None) -> str | None:
    """A notebook path as the kernel knows it (JPY_SESSION_NAME, absolute on jupyter_server 2)
    made relative to the Jupyter root; None when it is not under the root."""
    if not path:
        return None
    if not os.path.isabs(path):
        return path.replace(os.sep, "/")
    if not root_dir:
        return None
    root = os.path.expanduser(root_dir)
    for base, target in (
        (os.path.abspath(root), os.path.abspath(path)),
        (os.path.realpath(root), os.path.realpath(path)),
    ):
        relative = os.path.relpath(target, base)
        if relative != os.curdir and not relative.startswith(os.pardir):
            return relative.replace(os.sep, "/")
    return None


def _log_answer(
    client: OscarClient, service: str, job: str, lines: list[tuple[str, str]], since: int
) -> dict[str, Any]:
    """`lines[since:]`, at most MAX_LOG_LINES of them (the newest), and the client's next since."""
    new = lines[since:]
    omitted = max(0, len(new) - MAX_LOG_LINES)
    new = new[omitted:]
    return {
        "cluster": client.profile.cluster_id,
        "service": service,
        "job": job,
        "lines": [{"stream": stream, "text": text} for stream, text in new],
        "next": len(lines),
        "omitted": omitted,
    }


class ClientCache:
    """One OscarClient per cluster name, rebuilt when the profile behind it changes on disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str | None, tuple[ClusterProfile, OscarClient]] = {}

    def get(self, cluster: str | None) -> OscarClient:
        profile = load_profile(cluster)
        with self._lock:
            cached = self._clients.get(cluster)
            if cached is not None and cached[0] == profile:
                return cached[1]
            client = OscarClient(profile, timeout=CLIENT_TIMEOUT_SECONDS)
            self._clients[cluster] = (profile, client)
        if cached is not None:
            cached[1].close()
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for _profile, client in clients:
            client.close()


class SidebarBackend:
    """What the sidebar asks for (clusters, nodes, jobs, cancel, log, cleanup). `cluster` names
    an oscar-cli profile; None means the config file's default cluster (or the `OSCAR_*`
    environment, as `%oscar_connect` does).

    Raises `ConfigError` (fix the profile), `OscarError` (OSCAR's own message) or `ValueError`
    (a malformed service or job name); messages never hold a secret.
    """

    # Seconds a job listing is served again before OSCAR is asked anew (per cluster and scope).
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS

    def __init__(self) -> None:
        self.clients = ClientCache()
        self.tracker = JobTracker()
        self.upstream_listings = 0  # refreshes that asked OSCAR (tests and the curious)
        self._lock = threading.Lock()
        self._slots: dict[tuple[str | None, str], _Slot] = {}
        self._sessions: dict[str, UserSessions] = {}  # cluster (profile) -> its user's
        # the session jobs' output files (Job keeps one): the server's own, not the kernels'
        self._session_logs: tempfile.TemporaryDirectory[str] | None = None
        self._parsers: OrderedDict[tuple[str, str, str], tuple[LogParser, threading.Lock]] = (
            OrderedDict()
        )

    def clusters(self) -> dict[str, Any]:
        path = default_config_path()
        names = list_profiles(path)
        entries = []
        for name in names:
            try:
                profile = load_profile(name, config_path=path)
            except ConfigError as err:
                entries.append({"name": name, "endpoint": None, "error": str(err)})
            else:
                entries.append(
                    {
                        "name": name,
                        "endpoint": profile.endpoint,
                        "auth": profile.auth_kind,
                        "error": None,
                    }
                )
        default = default_profile_name(path) if names else None
        return {"config_path": str(path), "clusters": entries, "default": default}

    def nodes(self, cluster: str | None) -> dict[str, Any]:
        """The interLink nodes from the first source that knows them (nodes.discover_nodes):
        OSCAR, the Kubernetes API of the profile's (or the user's) kubeconfig, or the profile's
        list; `source` says which, `warning` why none did."""
        client = self.clients.get(cluster)
        site = client.profile.jupyter
        found = discover_nodes(client, list(site.nodes), site.kubeconfig)
        nodes = [n for n in found.nodes if n.is_interlink] if found.source else []
        return {
            "cluster": client.profile.cluster_id,
            "source": found.source,
            "warning": found.warning,
            "nodes": [asdict(n) for n in nodes],
        }

    # -- connection ------------------------------------------------------------------------------

    def connection(self, notebook: str, root_dir: str | None = None) -> dict[str, Any]:
        """The cluster (profile) the kernel of `notebook` (relative to the Jupyter root) last
        connected as, noted by `%oscar_connect` (connections.py); `cluster` null when it noted
        none. `profile` says whether this server's oscar-cli config has that profile (a kernel
        connected through the `OSCAR_*` environment names its endpoint's host instead)."""
        relative = notebook or ""
        if not relative or relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(
                f"notebook {notebook!r}: give the notebook's path relative to the Jupyter "
                "root, e.g. work/train.ipynb"
            )
        candidates = [relative]
        if root_dir:
            candidates.insert(0, os.path.join(os.path.expanduser(root_dir), relative))
        found = [c for c in map(connections.connection_info, candidates) if c is not None]
        latest = max(found, key=lambda c: c.connected_at) if found else None
        answer: dict[str, Any] = {
            "notebook": relative,
            "cluster": latest.cluster if latest else None,
            "connected_at": (latest.connected_at or None) if latest else None,
            "profile": False,
        }
        if latest is not None:
            try:
                answer["profile"] = latest.cluster in list_profiles(default_config_path())
            except ConfigError:
                pass
        return answer

    # -- jobs ------------------------------------------------------------------------------------

    def jobs(
        self, cluster: str | None, scope: str = "all", root_dir: str | None = None
    ) -> dict[str, Any]:
        """Jobs of every runner service the profile's user can list ("all"), or of the user's
        own runner services only ("mine"; OIDC users see only their own jobs either way), plus
        the Cancelled jobs of this machine's job records. One upstream listing per
        `refresh_seconds` per (cluster, scope): concurrent requests share one refresh."""
        if check_scope(scope) == "kernel":
            raise ValueError("scope kernel: the sidebar is no kernel; use mine or all")
        client = self.clients.get(cluster)
        with self._lock:
            slot = self._slots.setdefault((cluster, scope), _Slot())
        with slot.lock:  # single flight: who waits here gets the answer of the refresh before
            fresh = (
                slot.result is not None
                and slot.client is client
                and time.monotonic() - slot.at < self.refresh_seconds
            )
            if not fresh:
                slot.result = self._list(client, scope, root_dir)
                slot.client, slot.at = client, time.monotonic()
                slot.by_job = {j["job"]: j for j in slot.result["jobs"]}
            return slot.result or {}

    def _list(self, client: OscarClient, scope: str, root_dir: str | None) -> dict[str, Any]:
        self.upstream_listings += 1
        refreshed_at = iso_utc(datetime.now(timezone.utc), "milliseconds")
        owner, by_sub = owner_identity(client)
        records = job_records.records(client.endpoint, owner)
        rows: list[JobRow] = []
        for service in client.list_services():
            if not is_runner_service(service):
                continue
            mine = by_sub or owns_service(service, owner, by_sub, client.endpoint)
            if scope == "mine" and not mine:
                continue
            name = service.get("name") or ""
            try:
                listing = client.list_jobs(name)
            except OscarError as err:
                if err.status_code in (403, 404):
                    continue  # deleted between the two calls (`%oscar_cleanup --all`), or not ours
                raise
            states = self.tracker.states(client, name, listing)
            for job_name, info in listing.items():
                state = states[job_name]
                record = records.get(job_name)
                unrecorded = record is not None and (
                    not record.final or (state.usage is not None and record.usage is None)
                )
                if unrecorded and state.done:
                    self._note_final(client, name, job_name, state)
                row = listed_row(
                    name,
                    job_name,
                    info,
                    state,
                    kernel_tag=kernel_tag_of(name, job_name),
                    this_kernel=False,
                    mine=bool(mine),
                    node=service.get("interlink_node_name") or None,
                )
                rows.append(row)
        # The recorded Cancelled jobs are this user's, recorded by one of their kernels here.
        merged = merge_records(rows, records)
        return {
            "cluster": client.profile.cluster_id,
            "refreshed_at": refreshed_at,
            "refresh_seconds": float(self.refresh_seconds),
            "jobs": [
                row.as_json(relative_notebook(row.label.notebook if row.label else None, root_dir))
                for row in merged
            ],
        }

    def _note_final(self, client: OscarClient, service: str, job: str, state: JobState) -> None:
        try:
            job_records.mark_final(
                client.endpoint,
                service,
                job,
                state.status,
                exit_code=state.exit_code,
                cancelled_by=state.cancelled_by,
                finished_at=iso_utc(state.finished_at) or None,
                usage=state.usage.as_record() if state.usage is not None else None,
            )
        except OSError as err:
            log.warning("oscar-jupyter: could not record how job %s ended: %s", job, err)

    def _forget_listings(self, client: OscarClient) -> None:
        """The next listing of this cluster asks OSCAR again (after a cancel or a cleanup)."""
        with self._lock:
            slots = [slot for slot in self._slots.values() if slot.client is client]
        for slot in slots:
            slot.at = float("-inf")

    def _known_entry(self, client: OscarClient, job: str) -> dict[str, Any] | None:
        with self._lock:
            slots = [slot for slot in self._slots.values() if slot.client is client]
        for slot in slots:
            entry = slot.by_job.get(job)
            if entry is not None:
                return entry
        return None

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, cluster: str | None, service: str, job: str) -> dict[str, Any]:
        """Cancel the job on OSCAR (which scancels it), confirmed by the job's absence from the
        listing afterwards (`jobs.cancel_on_cluster`), and record it as Cancelled "by the
        sidebar", with a snapshot of its log (OSCAR forgets the log with the job). A job the
        cluster did not cancel (another user's) raises `CancelRefused` and nothing is recorded."""
        client = self.clients.get(cluster)
        owner, _ = owner_identity(client)
        record = job_records.load(client.endpoint, job, owner)
        answer = {
            "cluster": client.profile.cluster_id,
            "service": service,
            "job": job,
            "cancelled": True,
        }
        if record is not None and record.status == "Cancelled":
            answer["message"] = "the job had already been cancelled"
            return answer
        snapshot = None
        try:
            snapshot = self._snapshot(client, service, job)
        except OscarError as err:
            if err.status_code != 404:
                log.info("oscar-jupyter: no log snapshot of %s before its cancel: %s", job, err)
        cancel_on_cluster(client, service, job)
        ended = snapshot.get("exit_code") if snapshot else None
        try:
            if snapshot is not None:
                job_records.save_log_snapshot(client.endpoint, job, snapshot)
            if ended is not None:  # it had ended before the cancel arrived: not cancelled
                job_records.mark_final(
                    client.endpoint,
                    service,
                    job,
                    "Succeeded" if ended == 0 else "Failed",
                    exit_code=ended,
                    cluster=client.profile.cluster_id,
                )
                answer["cancelled"] = False
                answer["message"] = f"the job had already ended (exit code {ended}); deleted"
            else:
                job_records.mark_final(
                    client.endpoint,
                    service,
                    job,
                    "Cancelled",
                    cancelled_by=BY_SIDEBAR,
                    cluster=client.profile.cluster_id,
                )
        except OSError as err:
            log.warning("oscar-jupyter: could not record the cancel of %s: %s", job, err)
        self._forget_listings(client)
        return answer

    def _snapshot(self, client: OscarClient, service: str, job: str) -> dict[str, Any]:
        parser = LogParser()
        parser.feed(client.job_logs(service, job))
        lines = [line for line in parser.lines if not is_marker(line)]
        return {
            "lines": [{"stream": line.stream, "text": line.text} for line in lines],
            "partial": dict(parser.partial),
            "exit_code": parser.exit_code,
            "node": (parser.started or {}).get("node"),
            "traceback": parser.traceback() or None,
            "saved_at": now_iso(),
        }

    # -- log -----------------------------------------------------------------------------------

    def log(self, cluster: str | None, service: str, job: str, since: int = 0) -> dict[str, Any]:
        """The job's output lines after the first `since` (`next` of the previous answer), what its
        unfinished lines show now, and its status; a recorded (cancelled) job's from the
        snapshot taken at its cancel, else from the log its kernel saved."""
        if since < 0:
            raise ValueError(
                f"since={since}: give the number of lines you already have "
                "(the `next` of the previous answer), 0 or more"
            )
        client = self.clients.get(cluster)
        owner, _ = owner_identity(client)
        record = job_records.load(client.endpoint, job, owner)
        if record is not None and record.status == "Cancelled":
            return self._recorded_log(client, service, job, record, since, owner)
        try:
            text = client.job_logs(service, job)
        except OscarError as err:
            if err.status_code not in (404, 500):
                raise
            # OSCAR answers 500 with no body for a job without a pod (unknown, deleted, or kept
            # Suspended by Kueue): what the listing says decides.
            listed = self._listed(client, service, job) if err.status_code == 500 else None
            if listed is None and record is not None:
                return self._recorded_log(client, service, job, record, since, owner)
            if listed is None:
                if err.status_code == 404:
                    raise
                raise JobNotFound(
                    f"No job {job} in service {service}: OSCAR lists no such job (it was "
                    "deleted, or never was)"
                ) from err
            return self._waiting_log(client, service, job, listed, since)
        parser, lock = self._parser(client, service, job)
        with lock:
            parser.feed(text)
            lines = [line for line in parser.lines if not is_marker(line)]
            partial = dict(parser.partial)
            exit_code, node = parser.exit_code, (parser.started or {}).get("node")
            started, traceback = parser.started is not None, parser.traceback() or None
        status, cancelled_by = self._log_status(client, job, exit_code, started, slurm_end(text))
        answer = _log_answer(client, service, job, [(ln.stream, ln.text) for ln in lines], since)
        answer.update(
            {
                "partial": partial,
                "status": status,
                "exit_code": exit_code,
                "finished": status in TERMINAL,
                "node": node,
                "traceback": traceback,
                "cancelled_by": cancelled_by,
            }
        )
        answer.update(self._listed_times(client, job))
        return answer

    def _listed(self, client: OscarClient, service: str, job: str) -> dict[str, Any] | None:
        """The job's entry in a fresh listing of its service; None when OSCAR lists no such job
        (or no such service)."""
        try:
            return client.list_jobs(service).get(job)
        except OscarError as err:
            if err.status_code in (403, 404):
                return None
            raise

    def _waiting_log(
        self, client: OscarClient, service: str, job: str, listed: dict[str, Any], since: int
    ) -> dict[str, Any]:
        """A listed job OSCAR serves no log of yet (no pod: Kueue keeps it Suspended): no
        line, and its status."""
        known = self._known_entry(client, job) or {}
        status = known.get("status") or listed.get("status") or "Suspended"
        answer = _log_answer(client, service, job, [], since)
        answer.update(
            {
                "partial": {},
                "status": status,
                "exit_code": known.get("exit_code"),
                "finished": status in TERMINAL,
                "node": known.get("node"),
                "traceback": None,
                "cancelled_by": known.get("cancelled_by"),
            }
        )
        answer.update(self._listed_times(client, job))
        return answer

    def _listed_times(self, client: OscarClient, job: str) -> dict[str, Any]:
        """The job's run time as its row in the last listing has it (the start and end every
        view counts from), so that the log panel says what the job list says."""
        entry = self._known_entry(client, job) or {}
        return {
            "runner_start": entry.get("runner_start"),
            "duration": entry.get("duration") if entry.get("status") in TERMINAL else None,
            "submitted_time": entry.get("submitted_time"),
        }

    def _log_status(
        self,
        client: OscarClient,
        job: str,
        exit_code: int | None,
        started: bool,
        ended_by_slurm: str | None,
    ) -> tuple[str, str | None]:
        entry = self._known_entry(client, job) or {}
        return status_from_log(
            exit_code, started, ended_by_slurm, entry.get("status"), entry.get("cancelled_by")
        )

    def _recorded_log(
        self,
        client: OscarClient,
        service: str,
        job: str,
        record: JobRecord,
        since: int,
        owner: str,
    ) -> dict[str, Any]:
        snapshot = job_records.load_log_snapshot(client.endpoint, job, owner)
        if snapshot is not None:
            lines = [
                (str(line.get("stream") or "stdout"), str(line.get("text") or ""))
                for line in snapshot.get("lines") or []
                if isinstance(line, dict)
            ]
            partial, node = snapshot.get("partial") or {}, snapshot.get("node")
            traceback = snapshot.get("traceback")
        else:
            saved = job_records.kernel_log_lines(job) or []
            lines, partial, node, traceback = [("stdout", text) for text in saved], {}, None, None
        answer = _log_answer(client, service, job, lines, since)
        answer.update(
            {
                "partial": partial,
                "status": record.status or "Cancelled",
                "exit_code": record.exit_code,
                "finished": True,
                "node": node,
                "traceback": traceback,
                "cancelled_by": record.cancelled_by,
                "recorded": True,
            }
        )
        answer.update(self._listed_times(client, job))
        return answer

    def _parser(
        self, client: OscarClient, service: str, job: str
    ) -> tuple[LogParser, threading.Lock]:
        """The log parser kept for this job: a poll parses only what the log grew by."""
        key = (client.endpoint, service, job)
        with self._lock:
            found = self._parsers.pop(key, None) or (LogParser(), threading.Lock())
            self._parsers[key] = found  # most recently used last
            while len(self._parsers) > MAX_PARSERS:
                self._parsers.popitem(last=False)
        return found

    # -- cleanup -------------------------------------------------------------------------------

    def cleanup(
        self,
        cluster: str | None,
        scope: str,
        notebook: str | None,
        dry_run: bool,
        root_dir: str | None = None,
        jobs: list[str] | None = None,
    ) -> dict[str, Any]:
        """The finished jobs (Succeeded, Failed, Cancelled) of the user, of one notebook, or
        those named in `jobs` (the sidebar's selection; the unfinished and other users' are
        left alone): counted (`dry_run`), or deleted on OSCAR with their local records."""
        if scope not in CLEANUP_SCOPES:
            raise ValueError(
                f'scope {scope!r}: use notebook (with "notebook": its path), mine, or jobs '
                '(with "jobs": their names)'
            )
        if scope == "notebook" and not notebook:
            raise ValueError(
                "scope notebook: give the notebook's path relative to the "
                'Jupyter root in "notebook", e.g. "work/train.ipynb"'
            )
        if scope == "jobs" and (
            not isinstance(jobs, list)
            or not jobs
            or len(jobs) > MAX_CLEANUP_JOBS
            or not all(isinstance(j, str) for j in jobs)
        ):
            raise ValueError(
                f'scope jobs: give the names of the jobs to clean up in "jobs", a list of 1 '
                f"to {MAX_CLEANUP_JOBS} job names"
            )
        named = set(jobs or ())
        listing = self.jobs(cluster, "mine", root_dir)
        chosen = [
            j
            for j in listing["jobs"]
            if j["mine"]
            and j["status"] in TERMINAL
            and (
                scope == "mine"
                or (scope == "notebook" and j["label"]["notebook"] == notebook)
                or (scope == "jobs" and j["job"] in named)
            )
        ]
        ids = [j["job"] for j in chosen]
        if dry_run:
            return {"cluster": listing["cluster"], "count": len(ids), "jobs": ids}
        client = self.clients.get(cluster)
        owner, _ = owner_identity(client)
        deleted = []
        for entry in chosen:
            if not entry["recorded"]:
                try:
                    client.delete_job(entry["service"], entry["job"])
                except OscarError as err:
                    if err.status_code != 404:
                        raise
            try:
                job_records.delete(client.endpoint, entry["job"], owner)
            except OSError as err:
                log.warning(
                    "oscar-jupyter: could not delete the record of %s: %s", entry["job"], err
                )
            deleted.append(entry["job"])
        _discard_objects(client, owner, deleted)
        self._forget_listings(client)
        return {"cluster": listing["cluster"], "count": len(deleted), "deleted": deleted}

    # -- persistent sessions ---------------------------------------------------------------------

    def sessions(self, cluster: str | None, kernel_id: str | None = None) -> dict[str, Any]:
        """The persistent sessions (remote_session.py) of the cluster's user, from every one of
        their kernels (or only those the Jupyter kernel `kernel_id` started): name, state, node,
        time left, idle time. `note` says why none can be listed (no object storage for this
        user). One look per `refresh_seconds` however many tabs ask, as for the jobs."""
        if kernel_id is not None and not re.fullmatch(r"[0-9a-fA-F-]{1,64}", kernel_id):
            raise ValueError(f"kernel {kernel_id!r}: give a Jupyter kernel id, e.g. 0f3c…")
        client = self.clients.get(cluster)
        answer: dict[str, Any] = {"cluster": client.profile.cluster_id, "note": None}
        try:
            found = self._user_sessions(client).list(self.refresh_seconds)
        except StorageUnavailable as err:
            return {**answer, "sessions": [], "note": str(err)}
        rows = [remote.row() for remote in found]
        if kernel_id is not None:
            tag = kernel_tag_of_kernel_id(kernel_id)
            rows = [row for row in rows if row["kernel"] == tag]
        return {**answer, "sessions": rows}

    def stop_session(self, cluster: str | None, job: str) -> dict[str, Any]:
        """Stops the cluster user's session whose job is `job`, as `%oscar_session stop` does;
        its kernel is told on its next cell that the sidebar stopped it."""
        client = self.clients.get(cluster)
        try:
            remote = self._user_sessions(client).stop(job, BY_SIDEBAR)
        except SessionError as err:
            raise JobNotFound(str(err)) from err
        except StorageUnavailable as err:
            raise JobNotFound(f"no session with job {job}: {err}") from err
        self._forget_listings(client)
        return {
            "cluster": client.profile.cluster_id,
            "name": remote.name,
            "job": job,
            "stopped": True,
        }

    def _user_sessions(self, client: OscarClient) -> UserSessions:
        """One `UserSessions` per cluster profile (so per user), kept between looks."""
        with self._lock:
            found = self._sessions.get(client.profile.cluster_id)
            if found is None or found.connection.client is not client:
                connection = Session()
                connection.client, connection.profile = client, client.profile
                if self._session_logs is None:
                    self._session_logs = tempfile.TemporaryDirectory(prefix="oscar-sidebar-")
                found = UserSessions(connection, Path(self._session_logs.name))
                self._sessions[client.profile.cluster_id] = found
            return found

    def close(self) -> None:
        self.clients.close()
        if self._session_logs is not None:
            self._session_logs.cleanup()


def _discard_objects(client: OscarClient, owner: str, jobs: list[str]) -> None:
    """The objects these deleted jobs left in the user's own bucket (transfers.py)."""
    if not jobs:
        return
    from ..spec import OffloadSpec
    from ..storage import StorageUnavailable, UserBucket, job_prefix

    bucket = UserBucket(client, OffloadSpec.owner_tag(owner, client.endpoint))
    try:
        with_objects = bucket.job_names() & set(jobs)
        for job in sorted(with_objects):
            bucket.delete_prefix(job_prefix(job))
    except StorageUnavailable:
        return
    except Exception as err:  # a leftover object is harmless; the jobs are gone all the same
        log.warning("oscar-jupyter: could not remove the jobs' objects: %s", err)
