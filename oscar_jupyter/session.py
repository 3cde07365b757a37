"""The kernel's connection to one OSCAR cluster and what it offloaded there.

`connect()` checks the cluster once (health, info, config), `offload()` turns a cell into a job of a
runner service, creating the service the first time its configuration is used.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import job_records
from .capacity import capacity_error, capacity_notes
from .client import OscarClient, OscarError
from .config import ClusterProfile, JupyterSettings, load_profile
from .connections import note_connection
from .errors import CellInterrupted
from .follow import kubeconfig_at_hand
from .job_status import JobRow, listed_row, merge_records
from .jobs import (
    CancelRefused,
    Job,
    JobTimeout,
    Poller,
    add_cancel_listener,
    cancel_on_cluster,
    set_cancel_lookup,
)
from .nodes import VirtualNode, discover_nodes
from .ownership import (
    JobTracker,
    check_scope,
    is_runner_service,
    job_found,
    kernel_tag,
    kernel_tag_of,
    make_job_name,
    owner_identity,
    owns_service,
)
from .polling import MAX_LOG_BYTES_PER_SECOND
from .runner import old_python_message, supports_python
from .spec import OffloadSpec, SpecError, spec_of_service
from .storage import StorageUnavailable, UserBucket
from .transfers import (
    INLINE_INPUT_BYTES,
    JobTransfers,
    check_transfers,
    parse_download,
    parse_upload,
    url_seconds,
)
from .values import check_names, pack_inputs

CHANNEL_KEY_VARIABLE = "OSCAR_JUPYTER_CHANNEL_KEY"  # cell_program.CHANNEL_KEY_VARIABLE

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(OffloadSpec))
RECENT_IMAGES = 8
# Names tried for one runner service before giving up (each taken by someone else).
MAX_SERVICE_CANDIDATES = 8


# The fastest poll of an OIDC user's job (see Session.poll_floor).
OIDC_POLL_FLOOR_SECONDS = 1.0
# After Ctrl-C during a submit, how long to look for the job the request may have created.
SENT_JOB_LOOKUP_SECONDS = 3.0


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C is ignored inside (main thread only): cleaning up after one must not be cut."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Every confirmed cancel of a job handle is kept in this machine's job records (the job views
# list cancelled jobs until cleaned up, and say who cancelled them).
add_cancel_listener(job_records.note_cancelled)


def _recorded_canceller(job: Job) -> str | None:
    """Who cancelled a job that vanished from the listing, as this user's record says."""
    owner, _ = owner_identity(job.client)
    record = job_records.load(job.client.endpoint, job.name, owner)
    return record.cancelled_by if record is not None and record.status == "Cancelled" else None


set_cancel_lookup(_recorded_canceller)


def _record_when_ended(job: Job) -> None:
    """Keeps how the job ended and what it used in its record, for the views after the kernel."""
    if job_records.note_ended(job):
        job.remove_listener(_record_when_ended)


class NotConnected(RuntimeError):
    pass


@dataclass
class ConnectionReport:
    cluster_id: str
    endpoint: str
    version: str
    auth: str
    interlink_available: bool
    nodes: list[VirtualNode] | None
    warnings: list[str] = field(default_factory=list)
    nodes_source: str | None = None  # OSCAR, Kubernetes or profile (nodes.SOURCES)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self._repr_markdown_().replace("**", "").replace("`", ""))

    def _repr_markdown_(self) -> str:
        lines = [
            f"Connected to **{self.cluster_id}** at `{self.endpoint}` (OSCAR {self.version}, "
            f"{self.auth} auth)."
        ]
        if self.nodes_source:
            names = ", ".join(f"`{n.name}`" for n in self.nodes or [] if n.is_interlink)
            lines.append(f"interLink virtual nodes (from {self.nodes_source}): {names}.")
        lines += [f"**Warning:** {w}" for w in self.warnings]
        return "\n\n".join(lines)


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; None and empty values do not override."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if value is None or value == "" or value == [] or value == {}:
                continue
            merged[key] = value
    return merged


class NotOffloadable(RuntimeError):
    """The connected cluster cannot run a cell on an HPC site (said before anything is sent)."""

    def _render_traceback_(self) -> list[str]:
        return [f"NotOffloadable: {self}"]


class Session:
    def __init__(self) -> None:
        self.client: OscarClient | None = None
        self.profile: ClusterProfile | None = None
        self.report: ConnectionReport | None = None
        self.defaults: dict[str, Any] = {}  # the offload panel writes here
        self.jobs: dict[str, Job] = {}
        self.services: set[str] = set()  # runner services this kernel created
        self.used_services: set[str] = set()
        self.recent_images: list[str] = []
        self.poller = Poller()
        self.max_log_bytes_per_second = MAX_LOG_BYTES_PER_SECOND  # per job (jobs.py explains)
        self.follow_kubernetes = True
        self._nodes: list[VirtualNode] | None = None
        self._node_names: list[str] | None = None  # interLink names a cell may use; None: unknown
        self.nodes_source: str | None = None
        self.interlink_available = True
        # The site's interLink release, where the cluster says it (the local OSCAR's
        # /system/info does; a real OSCAR does not), else the site check's finding; None: unknown
        self.interlink_release: str | None = None
        self._names_jobs = False  # the cluster honours X-Delegated-Job-ID (learned on 1st submit)
        self.kernel_tag = kernel_tag()  # in the name of every job this kernel submits
        self.submitted: set[str] = set()  # jobs this kernel submitted (whatever their name)
        self.tracker = JobTracker()  # the state of other kernels' jobs, between looks
        self._service_for: dict[str, str] = {}  # first candidate name -> name in use
        self._owner: tuple[OscarClient, str, bool] | None = None
        self._last_listing: dict[str, dict[str, dict[str, Any]]] = {}  # find_job's look-ups
        self._channel_keys: dict[str, bytes] = {}  # runner service -> its storage channel key
        self._bucket: UserBucket | None = None
        # (label, total bytes) -> on_bytes: the cell's progress bars (magics sets it)
        self.transfer_progress: Any = None

    # -- connection ----------------------------------------------------------------------------

    def connect(self, name: str | None = None, **overrides: Any) -> ConnectionReport:
        profile = load_profile(name, **overrides)
        client = OscarClient(profile)
        try:
            client.health()
            info = client.info()
            config = client.config()
        except OscarError:
            client.close()
            raise
        warnings = []
        interlink = bool((config.get("config") or {}).get("interLink_available"))
        if not interlink:
            warnings.append(
                "this OSCAR reports interLink_available: false, so it ignores a service's node "
                "and runs jobs on an ordinary Kubernetes node, not on the HPC system."
            )
        if self.client is not None:
            self.client.close()
        self.client, self.profile = client, profile
        self.interlink_available = interlink
        release = (info.get("local") or {}).get("interlink_release")  # the local OSCAR's
        self.interlink_release = release if isinstance(release, str) else None
        self._names_jobs = False
        problem = self._refresh_nodes(client)
        if problem:
            warnings.append(problem)
        # The sidebar follows the notebook's connection (connections.py).
        note_connection(os.environ.get("JPY_SESSION_NAME"), profile.cluster_id)
        self.report = ConnectionReport(
            cluster_id=profile.cluster_id,
            endpoint=profile.endpoint,
            version=str(info.get("version", "unknown")),
            auth=profile.auth_kind,
            interlink_available=interlink,
            nodes=self._nodes,
            warnings=warnings,
            nodes_source=self.nodes_source,
        )
        return self.report

    def _refresh_nodes(self, client: OscarClient) -> str | None:
        """Ask the node sources again (nodes.discover_nodes); the warning to show, if any."""
        site = JupyterSettings.of(self.profile)
        found = discover_nodes(client, list(site.nodes), site.kubeconfig)
        self._nodes, self._node_names = found.nodes, found.interlink_names
        self.nodes_source = found.source
        return found.warning

    def require_client(self) -> OscarClient:
        if self.client is None:
            self.connect()
        assert self.client is not None
        return self.client

    def nodes(self, refresh: bool = True) -> list[VirtualNode]:
        """The nodes of the first source that knows the interLink nodes (see `nodes_source`)."""
        if refresh or self._nodes is None:
            self._refresh_nodes(self.require_client())
        return list(self._nodes or [])

    def known_node_names(self) -> list[str] | None:
        """interLink node names, or None when no source lists them (then unchecked)."""
        return None if self._node_names is None else list(self._node_names)

    def check_offloadable(self, spec: OffloadSpec, *, check_secrets: bool = True) -> None:
        """Refuse, before anything is sent, a cell that could not reach an interLink node, whose
        secrets the site check found never arrive there, or whose image it found too old."""
        checked = JupyterSettings.of(self.profile).site_check
        if check_secrets and spec.secrets and checked.get("secrets") is False:
            raise SpecError(
                "--secret",
                f"--secret {', '.join(spec.secrets)}: the site check of "
                f"{checked.get('date', 'this site')} found that secrets never reach a job here "
                "(interLink 0.6.1 and older drop OSCAR's service secrets); pass the value "
                "through a file on a --mount'ed path, or run `oscar-jupyter check` again once "
                "the site runs interLink 0.6.2",
            )
        if check_secrets and spec.secrets and _drops_secrets(self.interlink_release):
            raise SpecError(
                "--secret",
                f"--secret {', '.join(spec.secrets)}: this cluster runs interLink "
                f"{self.interlink_release}, which drops OSCAR's service secrets (it resolves "
                "the pod's envFrom only from 0.6.2), so the cell would read None; pass the "
                "value through a file on a --mount'ed path",
            )
        version = checked.get("python")
        if isinstance(version, str) and not supports_python(version):
            if checked.get("image") == spec.image:
                raise SpecError(
                    "--image",
                    f"{old_python_message(version)} (the site check of "
                    f"{checked.get('date', 'this site')} found it in {spec.image})",
                )
        if not self.interlink_available:
            raise NotOffloadable(
                "this OSCAR reports interLink_available: false, so it would ignore the node and "
                "run the cell on an ordinary Kubernetes node, where it never starts; ask the "
                "cluster's admins to enable interLink, or connect to another cluster"
            )
        if not spec.node:
            known = self.known_node_names()
            example = known[0] if known else "vega"
            names = f" (this cluster's: {', '.join(known)})" if known else ""
            raise SpecError(
                "--node",
                f"--node: name the interLink virtual node to run on{names}, e.g. "
                f"--node {example}; or set a default: the panel, %config OscarMagics."
                f"default_node = '{example}', or jupyter: {{node: {example}}} in the profile. "
                "Without one OSCAR runs the pod on an ordinary Kubernetes node, where it stays "
                "Pending forever",
            )
        self.check_capacity(spec)

    def node_named(self, name: str | None) -> VirtualNode | None:
        """The discovered interLink node called `name` (no cluster call), or None."""
        return next((n for n in self._nodes or [] if n.is_interlink and n.name == name), None)

    def check_capacity(self, spec: OffloadSpec) -> None:
        """Refuse a request over the chosen node's capacity (capacity.py), with the numbers.

        A refusal is checked again against the node as the cluster reports it now: a node's
        capacity can change (newer interLink plugins advertise what the site has free)."""
        if capacity_error(spec, self.node_named(spec.node)) is None:
            return
        if self.client is not None:
            try:
                self._refresh_nodes(self.client)
            except Exception:  # cluster unreachable: refuse on the numbers we have
                pass
        error = capacity_error(spec, self.node_named(spec.node))
        if error is not None:
            raise error

    def capacity_notes(self, spec: OffloadSpec) -> list[str]:
        """Soft notes on the request against the node (it would queue; GPUs left to Slurm)."""
        return capacity_notes(spec, self.node_named(spec.node))

    # -- offloading ----------------------------------------------------------------------------

    def build_spec(self, flags: Mapping[str, Any], *base: Mapping[str, Any]) -> OffloadSpec:
        """Profile defaults < `base` layers (e.g. traitlets) < the panel's defaults < cell flags."""
        jupyter = JupyterSettings.of(self.profile)
        from_profile = {k: v for k, v in jupyter.offload_defaults.items() if k in SPEC_FIELDS}
        settings = merge_settings(from_profile, *base, self.defaults, flags)
        unknown = sorted(set(settings) - set(SPEC_FIELDS))
        if unknown:
            raise TypeError(f"unknown offload settings: {', '.join(unknown)}")
        settings.setdefault("site", jupyter.site)
        return OffloadSpec(**settings)

    # -- who we are ---------------------------------------------------------------------------

    def runner_service_name(self, spec: OffloadSpec) -> str:
        """The name a submit would try first (this user's), or the owner-less one offline."""
        if self.client is None:
            return spec.service_name()
        return spec.service_name(self.owner, self.client.endpoint)

    @property
    def owner(self) -> str:
        """Who this session acts as on the cluster: the OIDC `sub`, else the basic-auth user."""
        return self._identity()[0]

    def _identity(self) -> tuple[str, bool]:
        client = self.require_client()
        if self._owner is None or self._owner[0] is not client:
            self._owner = (client, *owner_identity(client))
        return self._owner[1], self._owner[2]

    def _owns(self, service: Mapping[str, Any]) -> bool:
        owner, by_sub = self._identity()
        return owns_service(service, owner, by_sub, self.require_client().endpoint)

    def ensure_service(self, spec: OffloadSpec) -> str:
        """The name of this user's runner service for `spec`, created when missing.

        The first candidate name is `spec.service_name(owner, endpoint)`. A name that belongs to
        someone else (403 on reading it, or readable but not our runner) moves on to the next
        candidate (salt 1, 2, ...); "already exists" right after a 404 is another of our kernels
        creating it at the same moment, so it is read again.
        """
        client = self.require_client()
        owner, _ = self._identity()
        first = spec.service_name(owner, client.endpoint)
        if first in self._service_for:
            return self._service_for[first]
        taken: list[str] = []
        for salt in range(MAX_SERVICE_CANDIDATES):
            name = spec.service_name(owner, client.endpoint, salt)
            found = self._read_service(client, name)
            if found is None:
                definition = {**spec.service_definition(), "name": name}
                # The key that seals each job's storage manifest (cell_program.seal): in the
                # service's environment, which reaches every job and never its log.
                variables = definition.setdefault("environment", {}).setdefault("variables", {})
                variables[CHANNEL_KEY_VARIABLE] = os.urandom(32).hex()
                try:
                    client.create_service(definition)
                except OscarError as err:
                    if "already exists" not in err.message:
                        raise
                    found = self._read_service(client, name)  # a concurrent create
                else:
                    self.services.add(name)
                    found = True
            if found is True:
                self._service_for[first] = name
                self.used_services.add(name)
                return name
            taken.append(name)
        raise RuntimeError(
            f"the runner service names {', '.join(taken)} all belong to other users of this "
            "cluster; change a setting (e.g. --prefix) to get other names"
        )

    def _read_service(self, client: OscarClient, name: str) -> bool | None:
        """True: our runner service; False: someone else's name; None: no such service."""
        try:
            service = client.get_service(name)
        except OscarError as err:
            if err.status_code == 404:
                return None
            if err.status_code == 403:
                return False  # another owner's private service
            raise
        mine = is_runner_service(service) and self._owns(service)
        if mine:
            variables = (service.get("environment") or {}).get("variables") or {}
            key = variables.get(CHANNEL_KEY_VARIABLE)
            if key:
                self._channel_keys[name] = bytes.fromhex(str(key))
        return mine

    # -- storage --------------------------------------------------------------------------------

    @property
    def bucket(self) -> UserBucket:
        """This user's bucket on the connected cluster (made on first use)."""
        client = self.require_client()
        if self._bucket is None or self._bucket.client is not client:
            owner, _ = self._identity()
            self._bucket = UserBucket(client, OffloadSpec.owner_tag(owner, client.endpoint))
        return self._bucket

    def storage_available(self) -> bool:
        try:
            self.bucket.access  # noqa: B018 (reads /system/config once)
        except StorageUnavailable:
            return False
        return True

    def channel_key(self, service: str) -> bytes:
        if service not in self._channel_keys:
            self._read_service(self.require_client(), service)
        if service not in self._channel_keys:
            raise SpecError(
                "--upload",
                f"the runner service {service} predates the storage channel (no "
                f"{CHANNEL_KEY_VARIABLE}): delete it with %oscar_cleanup --services, then run "
                "the cell again",
            )
        return self._channel_keys[service]

    def _progress(self) -> Any:
        return self.transfer_progress or (lambda label, total: lambda moved: None)

    def submit(
        self,
        code: str,
        spec: OffloadSpec,
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Sequence[str] = (),
        on_interrupt: str = "cancel",
        check_secrets: bool = True,
    ) -> Job:
        """Validate, make sure the runner service exists, and send the cell as a job, with the
        `inputs` values in its namespace; the job brings back the `outputs` variables.
        `check_secrets` False sends secrets even where they are known not to arrive, and the
        job does not fail for a missing one (the site check's probe finds out for itself).

        Ctrl-C while the job is being sent leaves nothing running that the user does not know
        of: a job the cluster created meanwhile is cancelled (`on_interrupt` "cancel") or kept
        and followed ("detach"); either way the cell ends in one line (`CellInterrupted`)."""
        spec.validate(known_nodes=self.known_node_names())
        check_transfers(spec.uploads, spec.downloads)
        wanted = check_names("--out", outputs) if outputs else []
        packed = pack_inputs(inputs or {})
        large_inputs = len(packed) > INLINE_INPUT_BYTES
        # Small values still travel in the job: its body is checked before anything is sent.
        body = spec.job_body(
            code, "" if large_inputs else packed, wanted, check_secrets=check_secrets
        )
        self.check_offloadable(spec, check_secrets=check_secrets)
        client = self.require_client()
        needs_storage = large_inputs or bool(spec.uploads or spec.downloads)
        if needs_storage and not self.storage_available():
            self.bucket.access  # noqa: B018 (raises StorageUnavailable, which says what to do)
        use_storage = needs_storage or (bool(wanted) and self.storage_available())
        try:
            service = self.ensure_service(spec)
        except KeyboardInterrupt:
            raise CellInterrupted(
                "interrupted while the runner service was being created; no job was sent"
            ) from None
        job_name = make_job_name(service, self.kernel_tag)
        transfers = None
        if use_storage:
            transfers = JobTransfers(self.bucket, job_name)
            try:
                sealed = transfers.prepare(
                    channel_key=self.channel_key(service),
                    inputs=packed,
                    uploads=[parse_upload(item) for item in spec.uploads],
                    downloads=[parse_download(item) for item in spec.downloads],
                    outputs=bool(wanted),
                    seconds=url_seconds(spec.time_limit_seconds()),
                    progress=self._progress(),
                    out_ranks=spec.task_count() if spec.values_from_all_ranks() else 1,
                )
                # the sealed URLs take room in the body: it is checked again
                body = spec.job_body(code, sealed, wanted)
            except BaseException:
                transfers.discard()
                raise
        try:
            job_name = self._send(client, service, body, job_name)
        except KeyboardInterrupt:
            with interrupts_deferred():
                said = self._after_interrupted_send(
                    client, service, job_name, spec, wanted, code, on_interrupt
                )
            raise CellInterrupted(said) from None
        except BaseException:
            if transfers is not None:
                transfers.discard()
            raise
        job = Job(client, service, job_name, spec)
        job.transfers = transfers
        return self._track(job, wanted, code)

    def _send(self, client: OscarClient, service: str, body: bytes, job_name: str) -> str:
        """POST the job; its name (OSCAR's own, on a cluster that ignores X-Delegated-Job-ID)."""
        if self._names_jobs:
            client.submit_job(service, body, job_id=job_name)
            return job_name
        # Until this OSCAR has shown that it honours X-Delegated-Job-ID, keep what is needed
        # to find the job by difference between two listings if it names the job itself.
        before = set(client.list_jobs(service))
        client.submit_job(service, body, job_id=job_name)
        after = client.list_jobs(service)
        fresh = sorted(set(after) - before)
        if job_name in after:
            self._names_jobs = True
            return job_name
        if len(fresh) == 1:
            return fresh[0]
        raise RuntimeError(
            f"OSCAR accepted the job but named it itself, and {len(fresh)} new jobs of "
            f"service {service} appeared at once; find it with %oscar_jobs"
        )

    def _track(self, job: Job, outputs: list[str], code: str) -> Job:
        """A job just sent: this kernel's, followed, recorded for the job views."""
        job.outputs = outputs
        job.sent_here = True
        job.max_log_bytes_per_second = self.max_log_bytes_per_second
        job.min_poll_interval = self.poll_floor()
        if self.follow_kubernetes:  # stream the pod's log where a kubeconfig reaches the cluster
            job.follow_with_kubernetes(kubeconfig_at_hand(self.profile))
        self.jobs[job.name] = job
        job_records.note_submitted(
            job, code, self.profile.cluster_id if self.profile else None, self.kernel_tag
        )  # labels the job views; never fails here
        job.add_listener(_record_when_ended)
        self.submitted.add(job.name)
        self._remember_image(job.spec.image)
        return job

    def _after_interrupted_send(
        self,
        client: OscarClient,
        service: str,
        job_name: str,
        spec: OffloadSpec,
        outputs: list[str],
        code: str,
        on_interrupt: str,
    ) -> str:
        """Ctrl-C came while the job was being sent: find out whether the cluster created it
        (the request may have reached it), then cancel or keep it. What to tell the user."""
        deadline = time.monotonic() + SENT_JOB_LOOKUP_SECONDS
        try:
            while True:
                listed = job_name in client.list_jobs(service)
                if listed or time.monotonic() >= deadline:
                    break
                time.sleep(0.25)
        except (OscarError, OSError) as err:
            return (
                f"interrupted while sending the cell; whether OSCAR created job {job_name} is "
                f"unknown ({err}): check with %oscar_jobs and %oscar_cancel it"
            )
        if not listed:
            return "interrupted while sending the cell; no job was created"
        if on_interrupt == "detach":
            job = self._track(Job(client, service, job_name, spec), outputs, code)
            self.poller.watch(job)
            return (
                f"interrupted while sending the cell; job {job_name} was sent and keeps "
                f"running: follow it with %oscar_attach {job_name}"
            )
        try:
            cancel_on_cluster(client, service, job_name)
        except (CancelRefused, OscarError) as err:
            return (
                f"interrupted while sending the cell; job {job_name} was created and could "
                f"not be cancelled ({err}): %oscar_cancel {job_name}"
            )
        return f"interrupted while sending the cell; job {job_name} was created and cancelled"

    def poll_floor(self) -> float:
        """The fastest a job of this connection is polled: every request of an OIDC user costs
        OSCAR an uncached userinfo call to the identity provider (pkg/utils/auth/oidc.go), so
        they are polled at most once a second; basic auth costs nothing of the kind."""
        auth = self.profile.auth_kind if self.profile is not None else "basic"
        return 0.0 if auth in ("basic", "none") else OIDC_POLL_FLOOR_SECONDS

    def _remember_image(self, image: str) -> None:
        if image in self.recent_images:
            self.recent_images.remove(image)
        self.recent_images.insert(0, image)
        del self.recent_images[RECENT_IMAGES:]

    # -- jobs of this kernel, of this user, of everyone ------------------------------------------

    def is_this_kernels(self, service: str, job: str) -> bool:
        """Submitted by this kernel: its tag in the name (also before a kernel restart), or
        submitted here under a name OSCAR chose."""
        return job in self.submitted or kernel_tag_of(service, job) == self.kernel_tag

    def runner_services(self, scope: str = "mine") -> list[str]:
        """The runner services whose jobs `scope` covers.

        "all": every runner service this user can list. "mine": the same for an OIDC user (OSCAR
        lists only the caller's own jobs of a service); with basic auth, which reads every
        service, the ones named for this owner. "kernel": "mine" plus those this kernel used.
        """
        check_scope(scope)
        client = self.require_client()
        _, by_sub = self._identity()
        listed = [s for s in client.list_services() if is_runner_service(s)]
        names = {str(s.get("name")) for s in listed if scope == "all" or by_sub or self._owns(s)}
        if scope == "kernel":
            names |= self.used_services | {job.service for job in self.jobs.values()}
        return sorted(names)

    def list_jobs(
        self, scope: str = "kernel", *, notebook: str | None = None, hide_finished: bool = False
    ) -> list[JobRow]:
        """This kernel's jobs ("kernel"), this user's ("mine") or every visible one ("all"),
        newest submission first, each with the status every view shows and its label from this
        machine's job records, plus the recorded Cancelled jobs OSCAR no longer lists. One
        listing per runner service; a log read only for jobs whose final state is not known yet.
        `notebook` keeps the jobs submitted from that notebook (`JPY_SESSION_NAME`), from any
        of its kernels; `hide_finished` the running and waiting ones."""
        check_scope(scope)
        client = self.require_client()
        rows: list[JobRow] = []
        for service in self.runner_services("mine" if notebook else scope):
            listing = self.job_listing(service)
            if listing is None:
                continue
            names = {
                n
                for n in listing
                if scope != "kernel" or notebook or self.is_this_kernels(service, n)
            }
            states = self.tracker.states(client, service, listing, names=names, own=self.jobs)
            rows += [
                listed_row(
                    service,
                    name,
                    listing[name],
                    states[name],
                    kernel_tag=kernel_tag_of(service, name),
                    this_kernel=self.is_this_kernels(service, name),
                )
                for name in names
            ]

        def in_scope(record: job_records.JobRecord) -> bool:
            return notebook is not None or scope != "kernel" or record.kernel == self.kernel_tag

        merged = merge_records(rows, self._records(), keep=in_scope, kernel=self.kernel_tag)
        if notebook is not None:
            merged = [r for r in merged if r.label is not None and r.label.notebook == notebook]
        if hide_finished:
            merged = [r for r in merged if not r.done]
        return merged

    def _records(self) -> dict[str, job_records.JobRecord]:
        return job_records.records(self.require_client().endpoint, self.owner)

    def job_listing(self, service: str) -> dict[str, dict[str, Any]] | None:
        """OSCAR's listing of the service's jobs (all pages), None when it is gone or not ours."""
        try:
            return self.require_client().list_jobs(service)
        except OscarError as err:
            if err.status_code == 404:
                return None  # deleted meanwhile
            raise

    def cleanup(self, *, scope: str = "kernel", services: bool = False) -> CleanupReport:
        """Delete the finished jobs of this kernel ("kernel") or of this user ("mine"), with
        their local records; the recorded Cancelled jobs OSCAR no longer lists are forgotten.

        A job counts as finished when `Job.status()` says so (the exit sentinel may come before
        OSCAR's phase). With `services`, the runner services in the scope are deleted too, but
        only those where no job of any kernel still runs or waits: deleting a service deletes
        all its jobs. The report says which services were kept and why.
        """
        if scope not in ("kernel", "mine"):
            raise ValueError(f"scope {scope!r}: use kernel or mine")
        client = self.require_client()
        report = CleanupReport()
        rows = self.list_jobs(scope)
        for row in rows:
            if not row.done:
                continue
            if not row.recorded:
                try:
                    client.delete_job(row.service, row.job)
                except OscarError as err:
                    if err.status_code != 404:
                        raise
            self._forget(row.job)
            self._discard_objects(row.job)
            report.deleted_jobs.append(row.job)
        if services:
            if scope == "kernel":
                candidates = self.used_services | self.services | {r.service for r in rows}
            else:
                candidates = {
                    str(s.get("name"))
                    for s in client.list_services()
                    if is_runner_service(s) and self._owns(s)
                }
            for service in sorted(candidates):
                self._delete_service_if_idle(client, service, report)
        return report

    def _discard_objects(self, job: str) -> None:
        """The job's objects in this user's bucket (none: nothing to do, no request)."""
        tracked = self.jobs.get(job)
        if tracked is not None and tracked.transfers is None:
            return
        if not self.storage_available():
            return
        try:
            JobTransfers(self.bucket, job).discard()
        except Exception as err:  # a leftover object is harmless; say it, go on
            warnings.warn(
                f"oscar-jupyter could not remove the objects of job {job}: {err}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _forget(self, job: str) -> None:
        """Drop this user's record of a deleted job; a record left behind is harmless."""
        try:
            job_records.delete(self.require_client().endpoint, job, self.owner)
        except OSError as err:
            warnings.warn(
                f"oscar-jupyter could not update the job records: {err}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _delete_service_if_idle(
        self, client: OscarClient, service: str, report: CleanupReport
    ) -> None:
        listing = self.job_listing(service)  # read again: any kernel may have submitted
        if listing is None:
            return
        states = self.tracker.states(client, service, listing, own=self.jobs)
        busy = sorted(name for name, state in states.items() if not state.done)
        if busy:
            shown = ", ".join(f"{name} ({states[name].status})" for name in busy[:3])
            more = f" and {len(busy) - 3} more" if len(busy) > 3 else ""
            report.kept_services[service] = (
                f"{len(busy)} job(s) still running or waiting: {shown}{more}"
            )
            return
        try:
            client.delete_service(service)
        except OscarError as err:
            if err.status_code != 404:  # gone meanwhile (or, for OSCAR, another owner's)
                raise
        report.deleted_services.append(service)
        report.jobs_deleted_with_services += len(listing)
        self.used_services.discard(service)
        self.services.discard(service)
        self._service_for = {k: v for k, v in self._service_for.items() if v != service}

    def find_job(self, name: str) -> Job:
        """A job by name, unique prefix or short id (the name's last part, as `%oscar_jobs`
        shows it): this kernel's, else any visible runner service's. A prefix or short id that
        fits several jobs is refused with their names."""
        if name in self.jobs:
            return self.jobs[name]
        matches = [j for n, j in self.jobs.items() if _names_job(n, name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise KeyError(_ambiguous(name, [j.name for j in matches]))
        client = self.require_client()
        used = sorted(self.used_services)
        short = "-" not in name
        for services in (used, None):
            if services is None:
                services = [s for s in self.runner_services("all") if s not in used]
            found: list[tuple[str, str]] = []
            for service in services:
                if not short and not service.startswith(name[: len(service)]):
                    continue
                listing = self.job_listing(service) or {}
                found += [(service, n) for n in listing if _names_job(n, name)]
                self._last_listing[service] = listing
            exact = [f for f in found if f[1] == name]
            if len(exact) == 1 or len(found) == 1:
                service, job = (exact or found)[0]
                return self._attached(client, service, job)
            if len(found) > 1:
                raise KeyError(_ambiguous(name, [n for _s, n in found]))
        known = ", ".join(self.jobs) or "none in this kernel"
        raise KeyError(f"no job named {name!r} (jobs: {known}; all yours: %oscar_jobs --mine)")

    def _attached(self, client: OscarClient, service: str, name: str) -> Job:
        """A handle of a job found on the cluster, timed from its creation, with the node and
        walltime its runner service asks for."""
        try:
            spec = spec_of_service(client.get_service(service))
        except (OscarError, SpecError):
            spec = OffloadSpec()
        info = self._last_listing.get(service, {}).get(name) or {}
        job = job_found(client, service, name, info, spec)
        job.min_poll_interval = self.poll_floor()
        return job


def _names_job(job: str, name: str) -> bool:
    """`name` is the job's whole name, a prefix of it, or its short id (the last part)."""
    return job == name or job.startswith(name) or job.endswith("-" + name)


def _ambiguous(name: str, jobs: list[str]) -> str:
    shown = ", ".join(sorted(jobs)[:5]) + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")
    return f"{name!r} names {len(jobs)} jobs ({shown}); give more of the job id"


@dataclass
class CleanupReport:
    """What `Session.cleanup` deleted, and the runner services it kept (name -> why)."""

    deleted_jobs: list[str] = field(default_factory=list)
    deleted_services: list[str] = field(default_factory=list)
    kept_services: dict[str, str] = field(default_factory=dict)
    jobs_deleted_with_services: int = 0  # finished jobs of other kernels, gone with a service

    def lines(self, whose: str = "this kernel's") -> list[str]:
        lines = [f"Deleted {len(self.deleted_jobs)} finished job(s) ({whose})."]
        if self.deleted_services:
            extra = (
                f", with {self.jobs_deleted_with_services} finished job(s) of other kernels"
                if self.jobs_deleted_with_services
                else ""
            )
            lines.append(f"Deleted runner service(s) {', '.join(self.deleted_services)}{extra}.")
        for service, why in self.kept_services.items():
            lines.append(f"Kept runner service {service}: {why}.")
        return lines


_current: Session | None = None


def current() -> Session:
    global _current
    if _current is None:
        _current = Session()
    return _current


def _drops_secrets(release: str | None) -> bool:
    """Whether interLink `release` ("0.6.1") drops a pod's envFrom (B4: before 0.6.2)."""
    try:
        return release is not None and tuple(map(int, release.split(".")[:3])) < (0, 6, 2)
    except ValueError:
        return False


def connect(name: str | None = None, **overrides: Any) -> ConnectionReport:
    """Connect this kernel to a cluster: a cluster of oscar-cli's config, or explicit settings."""
    return current().connect(name, **overrides)


def attach(name: str, *, wait: bool = True, timeout: float | None = None) -> Job:
    """Follow a job submitted from any kernel (or before a restart) as if submitted here.

    Its output is read again from the start; with `wait`, blocks until it ends and raises
    `JobFailed` (or `JobCancelled`) unless the cell succeeded. Ctrl-C stops following; it never
    cancels a job that this call did not submit.
    """
    session = current()
    job = session.find_job(name)
    session.jobs.setdefault(job.name, job)
    if not wait:
        session.poller.watch(job)
        return job
    job.result(timeout)
    return job


def ask_secret(name: str) -> None:
    """Ask for a secret's value (not echoed, never in the notebook) and keep it in this kernel's
    environment, where `--secret NAME` and the panel's Secrets field take it from."""
    import getpass

    os.environ[name] = getpass.getpass(f"Value of secret {name} (not shown, not saved): ")


def jobs_left_running() -> list[Job]:
    """This kernel's jobs that had not ended when last polled (no network call)."""
    return [] if _current is None else [j for j in _current.jobs.values() if not j.is_done()]


@atexit.register
def _announce_jobs_left_running() -> None:
    # At kernel shutdown the notebook is gone; the kernel's stderr reaches the server's log.
    for job in jobs_left_running():
        print(
            f"oscar-jupyter: job {job.name} still runs on the cluster; get its output back in "
            f"any kernel with %oscar_attach {job.name}",
            file=sys.__stderr__ or sys.stderr,
            flush=True,
        )


def offload(
    code: str,
    *,
    wait: bool = True,
    timeout: float | None = None,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] = (),
    **settings: Any,
) -> Job:
    """Run `code` as a job on the connected cluster; with `wait`, block until it ends.

    `settings` are `OffloadSpec` fields (node, time, cpus_per_task, mem, ...). `inputs` are
    values the code finds as variables; `outputs` names variables it sends back, which
    `job.result()` returns as a dict. Raises `SpecError` before anything is sent when a setting
    or an input is invalid, and `JobFailed` when the code fails remotely.
    """
    session = current()
    job = session.submit(code, session.build_spec(settings), inputs=inputs, outputs=outputs)
    if not wait:
        session.poller.watch(job)
        return job
    try:
        job.result(timeout, progress=session.transfer_progress)
    except (KeyboardInterrupt, JobTimeout):
        job.cancel()  # never leave an orphaned job behind an interrupted call
        raise
    return job
