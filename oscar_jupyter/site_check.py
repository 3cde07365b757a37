"""A new user's first command on a real site: `oscar-jupyter check PROFILE` / `%oscar_check`.

It connects, sends one tiny probe job through the same path every cell takes, and reports, as a
table, what a first day on the site would otherwise find out cell by cell: OSCAR's version and
auth, interLink, the virtual nodes and where they came from, the node's advertised capacity, the
user's Kueue quota, queue wait and time to the first line, the image's Python (and whether the
runner's version gate lets it through), whether a pre-exec command and a secret arrive, the size
of `/tmp`, and whether the job reaches the cluster's object storage. What it learned is kept,
dated, in the profile's `jupyter: {site_check: ...}` block, where the magics read it. A site is
unusable when a cell cannot run there at all (`SiteReport.usable`): no interLink, no probe job
sent or ended well, an image's Python older than the job's program needs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .config import JupyterSettings, record_site_check
from .jobs import Job, JobFailed
from .runner import OLDEST_PYTHON, old_python_in, old_python_message, supports_python
from .session import Session
from .spec import DEFAULT_IMAGE
from .timefmt import duration

PRE_EXEC_MARK = "oscar-jupyter-check: pre-exec ran"
SECRET_NAME = "OJ_SITE_CHECK_SECRET"
PROBE_TIMEOUT_SECONDS = 900.0
STORAGE_TIMEOUT_SECONDS = 10
# The probe prints one line of facts; everything it needs is in the standard library. The
# storage's endpoint counts as reached when it answers at all (an HTTP error is an answer).
_PROBE = f"""\
import json, os, platform, shutil, sys, urllib.error, urllib.request
def reach(url):
    if not url:
        return None
    try:
        urllib.request.urlopen(url, timeout={STORAGE_TIMEOUT_SECONDS})
    except urllib.error.HTTPError:
        pass
    except Exception as error:
        return "%s: %s" % (type(error).__name__, error)
    return "reached"
tmp = shutil.disk_usage("/tmp")
print("oj-check " + json.dumps({{
    "python": platform.python_version(),
    "executable": sys.executable,
    "host": platform.node(),
    "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "tmp_bytes": tmp.total,
    "tmp_free_bytes": tmp.free,
    "secret": os.environ.get({SECRET_NAME!r}),
    "storage": reach(STORAGE),
}}), flush=True)
"""


def probe_code(storage_endpoint: str | None) -> str:
    """The probe job's cell: it reports its facts, and tries `storage_endpoint` when given."""
    return f"STORAGE = {storage_endpoint!r}\n" + _PROBE


@dataclass
class Finding:
    """One row of the report: what, what was found, and whether that is fine (None: a fact)."""

    what: str
    found: str
    ok: bool | None = None
    blocking: bool = False  # failed, no cell runs on the site


@dataclass
class SiteReport:
    cluster: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # what is kept in the profile

    def add(self, what: str, found: str, ok: bool | None = None, blocking: bool = False) -> None:
        self.findings.append(Finding(what, found, ok, blocking))

    @property
    def ok(self) -> bool:
        """Everything checked works."""
        return all(f.ok is not False for f in self.findings)

    @property
    def usable(self) -> bool:
        """Cells run on the site (some features may still fail: see `ok`)."""
        return not any(f.ok is False and f.blocking for f in self.findings)

    def text(self) -> str:
        width = max((len(f.what) for f in self.findings), default=0)
        marks = {True: "ok  ", False: "FAIL", None: "    "}
        lines = [f"Site check of {self.cluster}:"]
        lines += [f"  {marks[f.ok]} {f.what:<{width}}  {f.found}" for f in self.findings]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        marks = {True: "✔", False: "✖", None: ""}
        rows = "".join(
            f"<tr><td>{marks[f.ok]}</td><td>{html.escape(f.what)}</td>"
            f"<td style='text-align: left'>{html.escape(f.found)}</td></tr>"
            for f in self.findings
        )
        return (
            f"<b>Site check of {html.escape(self.cluster)}</b><table><thead><tr><th></th>"
            f"<th>check</th><th style='text-align: left'>found</th></tr></thead>{rows}</table>"
        )

    def __str__(self) -> str:
        return self.text()


def check_site(
    profile: str | None = None,
    *,
    node: str | None = None,
    image: str | None = None,
    timeout: float = PROBE_TIMEOUT_SECONDS,
    progress: Callable[[str], None] = lambda _text: None,
    keep: bool = True,
) -> SiteReport:
    """Check the cluster of `profile` (oscar-cli's default without one) with one probe job on
    `node`; with `keep`, record the findings in the profile. `progress` hears what happens."""
    session = Session()
    progress("connecting")
    connection = session.connect(profile)
    report = SiteReport(connection.cluster_id)
    report.add("OSCAR", f"{connection.version} at {connection.endpoint}, {connection.auth} auth")
    report.add(
        "interLink",
        "available" if connection.interlink_available else "not enabled: jobs never reach HPC",
        connection.interlink_available,
        blocking=True,
    )
    names = session.known_node_names()
    report.add(
        "virtual nodes",
        f"{', '.join(names)} (from {session.nodes_source})"
        if names
        else "none listed (name them in the profile: jupyter: {nodes: [vega]})",
    )
    chosen = node or _default_node(session, names)
    if chosen is None:
        report.add(
            "probe job",
            "not sent: no node known; give the node to check (--node NAME), or name the "
            "site's nodes in the profile (jupyter: {nodes: [NAME]})",
            False,
            blocking=True,
        )
        return report
    known = session.node_named(chosen)
    if known is not None and known.resources_known:
        report.add(
            "node capacity",
            f"{chosen}: {known.cpu_total:g} CPUs, {known.memory_total_bytes / 2**30:.1f} GiB, "
            f"{known.gpus} GPUs as its virtual node advertises them (interLink's configured "
            "capacity, not necessarily the site's partition)",
        )
    if connection.auth != "basic":
        report.add(
            "Kueue quota",
            "OSCAR's default per-user quota is 2 CPUs and 2Gi in all (your admins may have set "
            "another): a job asking more is never admitted",
        )
    _probe(session, report, chosen, image, timeout, progress)
    if keep:
        report.facts["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        report.facts["node"] = chosen
        try:
            record_site_check(connection.cluster_id, report.facts)
            report.add(
                "kept", f"in the profile's jupyter: {{site_check: ...}} ({report.facts['date']})"
            )
        except Exception as err:  # e.g. a profile from the environment: nothing to keep it in
            report.add("kept", f"not kept: {err}")
    return report


def _default_node(session: Session, names: list[str] | None) -> str | None:
    """The profile's node, else the only node listed, else the node the last check probed."""
    configured = session.build_spec({}).node
    if configured:
        return configured
    if names and len(names) == 1:
        return names[0]
    checked = (
        JupyterSettings.of(session.profile).site_check.get("node") if session.profile else None
    )
    return checked if isinstance(checked, str) and checked else None


def _probe(
    session: Session,
    report: SiteReport,
    node: str,
    image: str | None,
    timeout: float,
    progress: Callable[[str], None],
) -> None:
    owner = session.owner
    # A value stable per user and cluster: the probe's runner service is the same every time.
    secret = hashlib.sha256(f"{session.require_client().endpoint}|{owner}".encode()).hexdigest()[
        :24
    ]
    storage, storage_note = _storage_endpoint(session)
    spec = session.build_spec(
        {
            "node": node,
            "time": "00:05:00",
            "image": image or session.build_spec({}).image or DEFAULT_IMAGE,
            "pre_exec": f"echo '{PRE_EXEC_MARK}'",
            "secrets": {SECRET_NAME: secret},
        }
    )
    progress(f"sending a probe job to {node}")
    submitted = time.monotonic()
    job = session.submit(probe_code(storage), spec, check_secrets=False)
    first_line: list[float] = []

    def seen(_job: Job, lines: list[Any]) -> None:
        if lines and not first_line:
            first_line.append(time.monotonic() - submitted)
        progress(f"probe job {job.status()}")

    whole_log = ""
    try:
        job.wait(timeout, on_update=seen)
        # The whole log as OSCAR serves it (the pre-exec's output is before the container's).
        whole_log = session.require_client().job_logs(job.service, job.name)
        job.raise_for_status()
    except JobFailed as failed:
        _record_timing(report, job, first_line)
        old = old_python_in(f"{failed}\n{failed.remote_traceback}")
        if old is not None:  # the runner's version gate stopped it
            _report_python(report, old, spec.image)
            report.add("the rest", "not checked: no job runs on this image (--image)")
            return
        report.add("probe job", f"failed: {failed}", False, blocking=True)
        tail = failed.remote_traceback.strip().splitlines()[-3:]
        if tail:
            report.add("its end", " | ".join(tail), False)
        return
    except TimeoutError:
        job.cancel()
        report.add(
            "probe job", f"did not end within {timeout:g} s: cancelled", False, blocking=True
        )
        return
    finally:
        _forget(session)
    _record_timing(report, job, first_line)
    facts = _probe_facts(job)
    if facts is None:
        report.add("probe job", "ended without its facts line", False, blocking=True)
        return
    version = str(facts.get("python", "?"))
    _report_python(report, version, spec.image)
    pre_exec = PRE_EXEC_MARK in whole_log or PRE_EXEC_MARK in job.raw_log
    report.add(
        "--pre-exec",
        "runs before the job" if pre_exec else "its output is not in the job's log",
        pre_exec,
    )
    arrived = facts.get("secret") == secret
    report.add(
        "--secret",
        "arrives in the job"
        if arrived
        else "does not arrive: interLink 0.6.1 and older drop OSCAR's service secrets "
        "(envFrom); pass such values through a file on a --mount'ed path",
        arrived,
    )
    tmp, free = int(facts.get("tmp_bytes") or 0), int(facts.get("tmp_free_bytes") or 0)
    small = tmp < 1024**3  # e.g. apptainer's 64 MiB session directory under --containall
    report.add(
        "/tmp",
        f"{tmp / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free"
        + ("; data-heavy cells need a --mount'ed scratch path" if small else ""),
    )
    _report_storage(report, storage, storage_note, facts.get("storage"))
    report.facts.update(
        pre_exec=pre_exec,
        secrets=arrived,
        tmp_bytes=tmp,
        host=str(facts.get("host") or ""),
    )


def _report_python(report: SiteReport, version: str, image: str) -> None:
    usable = supports_python(version)
    oldest = ".".join(map(str, OLDEST_PYTHON))
    report.add(
        "image's Python",
        f"python3 {version} in {image} (oscar-jupyter needs {oldest} or newer)"
        if usable
        else f"{old_python_message(version)} (every job ends with this error)",
        usable,
        blocking=True,
    )
    report.facts.update(python=version, image=image)


def _storage_endpoint(session: Session) -> tuple[str | None, str]:
    """The object storage's endpoint the probe tries, or None and why there is none."""
    from .storage import StorageUnavailable

    try:
        return session.bucket.access.endpoint, ""
    except StorageUnavailable as why:
        return None, str(why)


def _report_storage(
    report: SiteReport, endpoint: str | None, why_none: str, reached: object
) -> None:
    if endpoint is None:
        report.add("object storage", f"none for this user ({why_none}): data travels in the log")
        return
    ok = reached == "reached"
    report.add(
        "object storage",
        f"the job reaches {endpoint}"
        if ok
        else f"the job cannot reach {endpoint} ({reached}): --upload, --download and large "
        "--in/--out values fail on this site",
        ok,
    )
    report.facts["storage"] = ok


def _record_timing(report: SiteReport, job: Job, first_line: list[float]) -> None:
    queued = job.queued()
    if queued is not None:
        report.add("queue wait", duration(queued))
        report.facts["queue_seconds"] = round(queued, 1)
    if first_line:
        report.add("submit to first line", f"{first_line[0]:.1f} s")
        report.facts["first_line_seconds"] = round(first_line[0], 1)


def _probe_facts(job: Job) -> dict[str, Any] | None:
    for line in job.lines():
        if line.stream == "stdout" and line.text.startswith("oj-check "):
            try:
                found = json.loads(line.text[len("oj-check ") :])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def _forget(session: Session) -> None:
    """The probe leaves nothing behind: its job and, when idle, its runner service."""
    try:
        session.cleanup(services=True)
    except Exception:  # a check's cleanup must not hide its findings
        pass
