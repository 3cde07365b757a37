"""Who owns what on a shared OSCAR, and the state of jobs other kernels submitted.

OSCAR's service names are unique cluster-wide and services are private by default, so runner
service names carry their owner (`OffloadSpec.service_name(owner, endpoint)`). Several kernels of
one user share a runner service, so each job's name carries the submitting kernel's tag:
`<service>-<kernel tag>-<12 random hex>`.

Every view (`%oscar_jobs`, the jobs table, the sidebar) shows `Job.status()` (`job_status`);
`JobTracker` gives it for jobs this process did not submit, at the cost of one listing per
service per refresh plus a log read per job whose final state is not known yet.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .client import OscarClient, OscarError
from .config import Secret, jwt_claims
from .job_status import JobState
from .jobs import SENTINEL_GRACE_SECONDS, Job
from .spec import RUNNER_LABEL, OffloadSpec
from .timefmt import parse_iso

KERNEL_TAG_LENGTH = 6
JOB_RANDOM_HEX = 12
SCOPES = ("kernel", "mine", "all")
MAX_REMEMBERED_JOBS = 10000
_KERNEL_TAG = re.compile(rf"[0-9a-f]{{{KERNEL_TAG_LENGTH}}}")


def jwt_subject(token: Secret | str | None) -> str | None:
    """The `sub` claim of a JWT, read without verification (only to name things), or None."""
    sub = (jwt_claims(token) or {}).get("sub")
    return sub if isinstance(sub, str) and sub else None


def owner_identity(client: OscarClient) -> tuple[str, bool]:
    """(who the client acts as, whether that is an OIDC `sub`): the access token's `sub`, else the
    refresh token's, else the basic-auth user ("" when none is known)."""
    # The access token the client really sends (from oidc-agent or the refresh token too).
    access = client._oidc_token()
    for token in (access, client.profile.refresh_token):
        sub = jwt_subject(token)
        if sub:
            return sub, True
    return client.profile.user or "", False


def kernel_tag() -> str:
    """6 hex characters fixed for this kernel: from its connection file's name under ipykernel
    (so the tag survives a kernel restart), else random."""
    if "ipykernel" in sys.modules:
        try:
            from ipykernel.connect import get_connection_file

            name = os.path.basename(get_connection_file())
        except Exception:  # not inside a running kernel (a plain IPython, a script)
            name = ""
        if name:
            return _tag_of_connection_file(name)
    return secrets.token_hex(KERNEL_TAG_LENGTH // 2)


def kernel_tag_of_kernel_id(kernel_id: str) -> str:
    """The tag of the kernel a Jupyter server started with id `kernel_id` (its connection file is
    `kernel-<id>.json`): how the server knows which sessions a notebook's kernel started."""
    return _tag_of_connection_file(f"kernel-{kernel_id}.json")


def _tag_of_connection_file(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:KERNEL_TAG_LENGTH]


def make_job_name(service: str, tag: str) -> str:
    """`<service>-<kernel tag>-<12 random hex>` (a Kubernetes name: at most 63 characters)."""
    return f"{service}-{tag}-{secrets.token_hex(JOB_RANDOM_HEX // 2)}"


def kernel_tag_of(service: str, job: str) -> str | None:
    """The kernel tag in a job's name, None for a job named otherwise (e.g. by OSCAR itself)."""
    if not job.startswith(service + "-"):
        return None
    rest = job[len(service) + 1 :]
    tag, dash, random = rest.partition("-")
    if dash and _KERNEL_TAG.fullmatch(tag) and re.fullmatch(r"[0-9a-f]+", random):
        return tag
    return None


def is_runner_service(service: Mapping[str, Any]) -> bool:
    return (service.get("labels") or {}).get(RUNNER_LABEL) == "true"


def owns_service(service: Mapping[str, Any], owner: str, by_sub: bool, endpoint: str) -> bool:
    """A runner service of `owner`: OSCAR's `owner` field says so (OIDC), or its name was made
    for this owner and cluster (basic auth, where every service's owner is the cluster admin)."""
    name = str(service.get("name") or "")
    if by_sub and service.get("owner"):
        return service.get("owner") == owner
    return OffloadSpec.is_owned_service_name(name, owner, endpoint)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    return scope


class JobTracker:
    """`Job.status()` for jobs of any kernel, kept between refreshes.

    A job whose state is final is remembered as a `JobState` (its log is not read again); a job
    still going is a `Job` refreshed from the service's listing the caller already fetched.
    Thread safe: the sidebar's requests run in worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._final: dict[tuple[str, str, str], JobState] = {}
        self._live: dict[tuple[str, str, str], Job] = {}
        # The followed logs go to a private folder of this tracker, never to the kernel's own
        # log files (a kernel following the same job writes those).
        self._log_dir = Path(tempfile.mkdtemp(prefix="oscar-jupyter-seen-"))
        weakref.finalize(self, shutil.rmtree, self._log_dir, True)

    def states(
        self,
        client: OscarClient,
        service: str,
        listing: Mapping[str, Mapping[str, Any]],
        *,
        names: set[str] | None = None,
        own: Mapping[str, Job] | None = None,
    ) -> dict[str, JobState]:
        """The state of each listed job (only those in `names` when given); `own` are the
        caller's own Job handles, refreshed rather than duplicated."""
        listing = dict(listing)
        wanted = [n for n in listing if names is None or n in names]
        states: dict[str, JobState] = {}
        for name in wanted:
            key = (client.endpoint, service, name)
            job = (own or {}).get(name)
            if job is not None and job.service != service:
                job = None
            if job is None:
                with self._lock:
                    final = self._final.get(key)
                    job = self._live.get(key)
                if final is not None:
                    states[name] = final
                    continue
                if job is None or job.client is not client:  # the profile changed: new client
                    job = self._new_job(client, service, name, listing[name])
            if not job.is_done():
                try:
                    job.refresh(listing)
                except OscarError:
                    pass  # the log could not be read this time: the listing's word stands
            state = job.state()
            states[name] = state
            with self._lock:
                if state.done:
                    self._live.pop(key, None)
                    if len(self._final) >= MAX_REMEMBERED_JOBS:
                        self._final.clear()
                    self._final[key] = state
                elif job is not (own or {}).get(name):
                    self._live[key] = job
        with self._lock:  # jobs deleted on the cluster are forgotten
            for key in [
                k for k in self._live if k[:2] == (client.endpoint, service) and k[2] not in listing
            ]:
                del self._live[key]
        return states

    def _new_job(
        self, client: OscarClient, service: str, name: str, info: Mapping[str, Any]
    ) -> Job:
        return job_found(client, service, name, info, log_dir=self._log_dir)


def job_found(
    client: OscarClient,
    service: str,
    name: str,
    info: Mapping[str, Any],
    spec: OffloadSpec | None = None,
    *,
    log_dir: Path | None = None,
) -> Job:
    """A handle of a job this process did not submit, from its listing entry `info`."""
    # Submitted before we saw it: its runner's start line is trusted from its creation on,
    # not only from now (a job found running for 40 s has run 40 s, not 0).
    created = parse_iso(info.get("creation_time"))
    job = Job(client, service, name, spec or OffloadSpec(), log_dir=log_dir, submitted_at=created)
    finished = parse_iso(info.get("finish_time"))
    if finished is not None:
        age = (datetime.now(timezone.utc) - finished).total_seconds()
        if age > SENTINEL_GRACE_SECONDS:
            # Ended long ago: a missing exit sentinel will not arrive any more, so the job
            # is Failed at once rather than "finishing" for the grace period.
            job._terminal_seen_at = time.monotonic() - SENTINEL_GRACE_SECONDS - 1
    return job
