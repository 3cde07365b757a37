"""The local OSCAR's REST API (tornado): OSCAR v4.1's paths, status codes, bodies and auth rules.

Run as `python -m oscar_jupyter.local.server --home H --port P [--node-name N] [--executor E]`;
`daemon.start` does that, detached. Each `POST /job/{service}` goes through the same pipeline as a
real OSCAR with an interLink Slurm virtual node: the pod OSCAR would build (pod.py), the plugin's
per-pod directory (interlink.py), then sbatch or a plain process (executors.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hmac
import json
import logging
import platform
import re
import secrets
import shutil
import signal
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web

from .. import __version__
from .state import (
    FAILED,
    PENDING,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL_PHASES,
    HomeLayout,
    LocalState,
    ensure_admin_password,
)

log = logging.getLogger("oscar_jupyter.local.server")

ADMIN_USER = "oscar"
DEFAULT_NODE_NAME = "local-slurm"
NAMESPACE = "oscar-svc"
MAIN_CONTAINER = "oscar-container"
DEFAULT_OWNER = "cluster_admin"
SERVICE_TOKEN_LENGTH = 64
STATUS_CACHE_SECONDS = 1.0
NOT_FOUND_TEXT = "404 page not found"
BASIC_CHALLENGE = 'Basic realm="Authorization Required"'
STOPPED_REASON = "Cancelled: the local OSCAR was stopped (oscar-jupyter local stop)"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")

_STRING_FIELDS = (
    "name", "image", "script", "cpu", "memory", "total_cpu", "total_memory",
    "ephemeral_storage_request", "log_level", "interlink_node_name", "vo", "visibility",
    "isolation_level", "cluster_id",
)
_BOOL_FIELDS = ("enable_gpu", "enable_sgx", "image_prefetch", "alpine", "file_stage_in")
_STRING_MAP_FIELDS = ("annotations", "labels")
_STRING_LIST_FIELDS = ("allowed_users", "image_pull_secrets")
_SERVER_SET_FIELDS = ("token", "owner", "namespace", "bucket_list", "deployment", "volume_status")
_LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ApiError(Exception):
    """An answer other than success: HTTP status and OSCAR's plain-text body (often empty)."""

    def __init__(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(text or str(status))
        self.status = status
        self.text = text
        self.headers = headers or {}


def utc_now() -> str:
    return rfc3339(datetime.now(timezone.utc))


def rfc3339(value: Any) -> str | None:
    """A time as Kubernetes prints it (`2025-06-10T12:18:40Z`), from a datetime, epoch or string."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- service definitions ------------------------------------------------------------------------


def _invalid(detail: str) -> ApiError:
    return ApiError(400, f"The service specification is not valid: {detail}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


def parse_service_body(raw: bytes) -> dict[str, Any]:
    """Request body -> service dict, checked as OSCAR's JSON binding checks it (400 otherwise)."""
    try:
        body = json.loads(raw.decode("utf-8") if raw else "")
    except (UnicodeDecodeError, ValueError) as error:
        raise _invalid(f"the request body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise _invalid(f"the request body must be a JSON object, got {_json_type(body)}")
    for key in _STRING_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise _invalid(f'field "{key}" must be a string, got {_json_type(body[key])}')
    for key in _BOOL_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            raise _invalid(f'field "{key}" must be true or false, got {_json_type(body[key])}')
    for key in _STRING_MAP_FIELDS:
        _check_string_map(body.get(key), key)
    for key in _STRING_LIST_FIELDS:
        value = body.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise _invalid(f'field "{key}" must be a list of strings')
    environment = body.get("environment")
    if environment is not None:
        if not isinstance(environment, dict):
            raise _invalid('field "environment" must be an object with "variables" and "secrets"')
        _check_string_map(environment.get("variables"), "environment.variables")
        _check_string_map(environment.get("secrets"), "environment.secrets")
    for key in ("name", "image", "script"):
        if not body.get(key):
            raise _invalid(f'"{key}" is required')
    name = body["name"]
    if len(name) > 39:
        raise _invalid(f'"name" must have 1 to 39 characters, "{name}" has {len(name)}')
    if not _DNS1123_LABEL.match(name):
        raise _invalid(
            f'"name" must be a DNS-1123 label (lowercase letters, digits and "-", starting and '
            f'ending with a letter or digit), got "{name}"'
        )
    for key in ("input", "output"):
        if body.get(key):
            raise _invalid(
                f'"{key}" needs a storage provider (MinIO), which the local OSCAR does not have; '
                f'remove "{key}" or use a real OSCAR cluster'
            )
    if body.get("mount"):
        raise _invalid('"mount" needs MinIO, which the local OSCAR does not have; remove "mount"')
    return body


def _check_string_map(value: Any, key: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(f'field "{key}" must be an object of string values (quote numbers)')


def check_quantities(service: dict[str, Any]) -> None:
    """OSCAR parses cpu/memory when it builds the pod spec and answers 500 when they are wrong."""
    for key in ("cpu", "memory", "ephemeral_storage_request"):
        value = service.get(key)
        if value and not _QUANTITY.match(value):
            raise ApiError(
                500,
                f'Error creating the service: "{key}": quantities must match the regular '
                "expression "
                f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (for example \"2\", \"500m\", "
                f'"4Gi"), got "{value}"',
            )


def complete_service(
    body: dict[str, Any], *, token: str, owner: str = DEFAULT_OWNER
) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored definition (OSCAR's defaults filled in, secrets blanked) and the secret values."""
    service = copy.deepcopy(body)
    for key in _SERVER_SET_FIELDS:
        service.pop(key, None)
    service["memory"] = service.get("memory") or "256Mi"
    service["cpu"] = service.get("cpu") or "0.2"
    service["visibility"] = service.get("visibility") or "private"
    level = (service.get("log_level") or "").upper()
    service["log_level"] = level if level in _LOG_LEVELS else "INFO"
    name = service["name"]
    labels = dict(service.get("labels") or {})
    labels.update({
        "oscar.grycap/user-service": "true",
        "oscar_service": name,
        "applicationId": name,
        "queue": f"root.oscar.{name}",
    })
    service["labels"] = labels
    service["annotations"] = dict(service.get("annotations") or {})
    environment = service.get("environment") or {}
    secret_values = dict(environment.get("secrets") or {})
    service["environment"] = {
        "variables": dict(environment.get("variables") or {}),
        "secrets": {key: "" for key in secret_values},
    }
    service["storage_providers"] = {
        "minio": {
            "default": {
                "endpoint": "", "verify": True, "access_key": "hidden",
                "secret_key": "hidden", "region": "",
            }
        }
    }
    service["script"] = service["script"].replace("\r\n", "\n")
    service["token"] = token
    service["owner"] = owner
    service["namespace"] = NAMESPACE
    return service, secret_values


def new_service_token() -> str:
    return secrets.token_hex(SERVICE_TOKEN_LENGTH // 2)


# --- the virtual node ---------------------------------------------------------------------------


def virtual_node_labels(node_name: str) -> dict[str, str]:
    return {
        "alpha.service-controller.kubernetes.io/exclude-balancer": "true",
        "kubernetes.io/os": "virtual-kubelet",
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/role": "agent",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        "virtual-node.interlink/type": "virtual-kubelet",
    }


VIRTUAL_NODE_TAINTS = [
    {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}
]


# --- the local OSCAR ----------------------------------------------------------------------------


class LocalOscar:
    """OSCAR's behaviour behind the HTTP layer: services, jobs, the virtual node.

    Every method runs on the IOLoop thread, so the state needs no lock; the slow part of a job
    submission (pod translation, sbatch) runs in a worker thread and reports back to the loop.
    """

    def __init__(
        self,
        layout: HomeLayout,
        *,
        password: str,
        executor: Any,
        executor_reason: str,
        runtime_description: str,
        plugin_config: Any,
        node_name: str = DEFAULT_NODE_NAME,
        supervisor_kit: Future | None = None,
    ) -> None:
        self.layout = layout
        self.user = ADMIN_USER
        self._password = password
        self.executor = executor
        self.executor_reason = executor_reason
        self.runtime_description = runtime_description
        self.plugin_config = plugin_config
        self.node_name = node_name
        self.supervisor_kit = supervisor_kit
        self.state = LocalState(layout.state_file)
        self._status_checked: dict[str, float] = {}
        self._launching: dict[str, asyncio.Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="oscar-local-launch")
        self._recover_after_restart()

    def __repr__(self) -> str:
        return f"LocalOscar(home={str(self.layout.root)!r}, node={self.node_name!r})"

    # -- auth

    def basic_auth_ok(self, header: str | None) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self._password}".encode()).decode()
        return hmac.compare_digest((header or "").encode(), expected.encode())

    # -- services

    def list_services(self) -> list[dict[str, Any]]:
        return list(self.state.services.values())

    def get_service(self, name: str) -> dict[str, Any]:
        name = name.strip()
        if not name:
            raise ApiError(400, "serviceName is required")
        if len(name) > 63 or not _LABEL_VALUE.match(name):
            raise ApiError(400, "invalid serviceName")
        return self._service(name)

    def _service(self, name: str) -> dict[str, Any]:
        service = self.state.services.get(name)
        if service is None:
            raise ApiError(404)
        return service

    def create_service(self, raw: bytes) -> None:
        body = parse_service_body(raw)
        check_quantities(body)
        if body["name"] in self.state.services:
            raise ApiError(409, "A service with the provided name already exists")
        service, secret_values = complete_service(body, token=new_service_token())
        self.state.services[service["name"]] = service
        self.state.secrets[service["name"]] = secret_values
        self.state.save()
        log.info("created service %s (image %s)", service["name"], service["image"])
        if not service.get("interlink_node_name"):
            log.info(
                "service %s has no interlink_node_name: OSCAR would run its jobs on a normal "
                "Kubernetes node; the local OSCAR runs them on %s (%s) anyway",
                service["name"], self.node_name, self.executor.kind,
            )

    def update_service(self, raw: bytes) -> None:
        body = parse_service_body(raw)
        old = self._service(body["name"])
        check_quantities(body)
        service, secret_values = complete_service(body, token=old["token"], owner=old["owner"])
        self.state.services[service["name"]] = service
        self.state.secrets[service["name"]] = secret_values
        self.state.save()
        log.info("updated service %s", service["name"])

    def delete_service(self, name: str) -> None:
        self._service(name)
        for job in self.state.jobs_of(name):
            self._remove_job(job)
        del self.state.services[name]
        self.state.secrets.pop(name, None)
        self.state.save()
        log.info("deleted service %s and its jobs", name)

    # -- jobs

    def submit_job(
        self, service_name: str, authorization: str | None, delegated_id: str | None, body: bytes
    ) -> str:
        service = self._service(service_name)
        parts = (authorization or "").split("Bearer ")
        if len(parts) != 2:
            raise ApiError(401)
        token = parts[1].strip()
        if len(token) != SERVICE_TOKEN_LENGTH or not hmac.compare_digest(
            token.encode(), service["token"].encode()
        ):
            raise ApiError(401)
        job_name = delegated_id if delegated_id else default_job_name(service_name)
        if len(job_name) > 63 or not _DNS1123_SUBDOMAIN.match(job_name):
            raise ApiError(
                500,
                f'Job.batch "{job_name}" is invalid: X-Delegated-Job-ID must be a DNS-1123 '
                "subdomain of at most 63 characters (lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit)",
            )
        if job_name in self.state.jobs:
            raise ApiError(500, f'jobs.batch "{job_name}" already exists')
        job = {
            "name": job_name,
            "service": service_name,
            "namespace": NAMESPACE,
            "pod_uid": str(uuid.uuid4()),
            "created_at": utc_now(),
            "pod_started_at": None,
            "pod_dir": None,
            "executor": None,
            "job_id": None,
            "phase": SUSPENDED,
            "started_at": None,
            "finished_at": None,
            "reason": None,
            "error_log": None,
        }
        self.state.jobs[job_name] = job
        self.state.save()
        log.info("job %s of service %s accepted (%d bytes)", job_name, service_name, len(body))
        self._launching[job_name] = asyncio.ensure_future(self._launch(job_name, body))
        return job_name

    async def _launch(self, job_name: str, body: bytes) -> None:
        try:
            job = self.state.jobs.get(job_name)
            if job is None:
                return
            service = self.state.services[job["service"]]
            wanted_node = service.get("interlink_node_name") or ""
            job["phase"] = PENDING
            job["pod_started_at"] = utc_now()
            if wanted_node and wanted_node != self.node_name:
                job["reason"] = f"no node {wanted_node!r}"
                self.state.save()
                log.warning(
                    "job %s stays Pending: service %s asks for node %r (interlink_node_name), but "
                    "the only node of this local OSCAR is %r; a real cluster would keep it Pending "
                    "too. Set interlink_node_name to %r or leave it empty.",
                    job_name, service["name"], wanted_node, self.node_name, self.node_name,
                )
                return
            self.state.save()
            pod_service = copy.deepcopy(service)
            pod_service["interlink_node_name"] = self.node_name
            secret_values = self.state.secrets.get(service["name"], {})
            pod_service["environment"]["secrets"] = dict(secret_values)
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(
                self._pool, self._translate_and_submit, pod_service, dict(job), body
            )
            self._record_launch(job_name, outcome)
        except Exception:
            log.exception("launching job %s failed", job_name)
            job = self.state.jobs.get(job_name)
            if job is not None:
                self._finish(job, FAILED, "LaunchError")
                job["error_log"] = "the local OSCAR could not launch this job; see its server.log\n"
                self.state.save()
        finally:
            self._launching.pop(job_name, None)

    def _translate_and_submit(
        self, service: dict[str, Any], job: dict[str, Any], body: bytes
    ) -> dict[str, Any]:
        """Worker thread: pod -> plugin directory -> executor. Touches no shared state."""
        from .executors import SubmitError
        from .interlink import TranslationError, prepare
        from .pod import build_pod, configmap_data

        if self.supervisor_kit is not None:
            try:
                self.supervisor_kit.result()
            except Exception as error:
                return {"error": f"the local OSCAR's supervisor kit is missing: {error}\n"}
        try:
            pod = build_pod(
                service, job_name=job["name"], body=body, pod_uid=job["pod_uid"],
                namespace=job["namespace"],
            )
            pod["spec"]["nodeName"] = self.node_name  # what the scheduler would do
            pod_dir = prepare(
                pod,
                configmaps={service["name"]: configmap_data(service)},
                config=self.plugin_config,
            )
        except (TranslationError, ValueError) as error:
            return {"error": f"interLink could not translate the job's pod: {error}\n"}
        try:
            job_id = self.executor.submit(pod_dir)
        except SubmitError as error:
            return {"pod_dir": str(pod_dir), "error": _text_line(str(error))}
        return {"pod_dir": str(pod_dir), "job_id": str(job_id)}

    def _record_launch(self, job_name: str, outcome: dict[str, Any]) -> None:
        job = self.state.jobs.get(job_name)
        if job is None:  # deleted while it was being submitted
            if outcome.get("job_id"):
                self._cancel_quietly(outcome["job_id"], outcome.get("pod_dir"))
            if outcome.get("pod_dir"):
                shutil.rmtree(outcome["pod_dir"], ignore_errors=True)
            return
        job["pod_dir"] = outcome.get("pod_dir")
        job["executor"] = self.executor.kind
        if outcome.get("error"):
            job["error_log"] = outcome["error"]
            self._finish(job, FAILED, "SubmitError")
            log.warning("job %s failed before it ran: %s", job_name, outcome["error"].strip())
        else:
            job["job_id"] = outcome["job_id"]
            log.info("job %s submitted to %s as %s", job_name, self.executor.kind, job["job_id"])
        self.state.save()

    def _finish(self, job: dict[str, Any], phase: str, reason: str | None) -> None:
        job["phase"] = phase
        job["reason"] = reason
        job["finished_at"] = job.get("finished_at") or utc_now()
        job["started_at"] = job.get("started_at") or job["finished_at"]

    def refresh(self, job: dict[str, Any]) -> dict[str, Any]:
        """Ask the executor for the job's state, at most once per STATUS_CACHE_SECONDS."""
        if job["phase"] in TERMINAL_PHASES or not job.get("job_id"):
            return job
        if job.get("executor") != self.executor.kind:
            return job  # submitted by another executor before a restart; keep what we knew
        now = time.monotonic()
        if now - self._status_checked.get(job["name"], -1e9) < STATUS_CACHE_SECONDS:
            return job
        self._status_checked[job["name"]] = now
        try:
            state = self.executor.state(job["job_id"], Path(job["pod_dir"]))
        except Exception as error:
            log.warning("state of job %s (%s) unknown: %s", job["name"], job["job_id"], error)
            return job
        job["started_at"] = rfc3339(state.started_at) or job.get("started_at")
        if state.phase in TERMINAL_PHASES:
            job["finished_at"] = rfc3339(state.finished_at) or utc_now()
            job["phase"] = state.phase
            job["reason"] = state.reason
            self.state.save()
            log.info("job %s ended %s (%s)", job["name"], state.phase, state.slurm_state)
        else:
            job["phase"] = state.phase
        return job

    def job_listing(self, service_name: str) -> dict[str, Any]:
        self._service(service_name)
        jobs: dict[str, Any] = {}
        for job in self.state.jobs_of(service_name):
            job = self.refresh(job)
            info: dict[str, Any] = {"status": job["phase"]}
            if job["phase"] != SUSPENDED:
                info["creation_time"] = job["pod_started_at"]
                if job.get("started_at") and job["phase"] != PENDING:
                    info["start_time"] = job["started_at"]
                if job["phase"] in TERMINAL_PHASES:
                    info["finish_time"] = job["finished_at"]
            jobs[job["name"]] = info
        return {"jobs": jobs}

    def job_log(self, service_name: str, job_name: str) -> str:
        self._service(service_name)
        job = self._job(service_name, job_name)
        if not job.get("pod_dir") and not job.get("error_log"):
            raise ApiError(404)  # no pod yet, or its container never started
        text = ""
        if job.get("pod_dir"):
            pod_dir = Path(job["pod_dir"])
            text = _read_text(pod_dir / "job.out")
            text += _read_text(pod_dir / f"run-{MAIN_CONTAINER}.out")
        return text + (job.get("error_log") or "")

    def _job(self, service_name: str, job_name: str) -> dict[str, Any]:
        job = self.state.jobs.get(job_name)
        if job is None or job["service"] != service_name:
            raise ApiError(404)
        return job

    def delete_job(self, service_name: str, job_name: str) -> None:
        self._service(service_name)
        self._remove_job(self._job(service_name, job_name))
        self.state.save()

    def delete_jobs(self, service_name: str, *, everything: bool) -> None:
        self._service(service_name)
        for job in self.state.jobs_of(service_name):
            if everything or self.refresh(job)["phase"] == SUCCEEDED:
                self._remove_job(job)
        self.state.save()

    def _remove_job(self, job: dict[str, Any]) -> None:
        """Delete the job like k8s deletes a VK pod: scancel when it still runs, then its dir."""
        if job["phase"] not in TERMINAL_PHASES and job.get("job_id"):
            self._cancel_quietly(job["job_id"], job.get("pod_dir"))
        if job.get("pod_dir"):
            shutil.rmtree(job["pod_dir"], ignore_errors=True)
        self.state.jobs.pop(job["name"], None)
        self._status_checked.pop(job["name"], None)
        log.info("deleted job %s", job["name"])

    def _cancel_quietly(self, job_id: str, pod_dir: str | None) -> None:
        try:
            self.executor.cancel(job_id, Path(pod_dir) if pod_dir else None)
        except Exception as error:
            log.warning("cancelling %s %s: %s", self.executor.kind, job_id, error)

    def _recover_after_restart(self) -> None:
        changed = False
        for job in self.state.jobs.values():
            if job["phase"] == SUSPENDED:  # the body was never kept; the pod can't be made now
                self._finish(job, FAILED, "the local OSCAR stopped before the job's pod existed")
                changed = True
        if changed:
            self.state.save()

    async def shutdown(self) -> list[str]:
        """Finish submissions in flight, cancel every unfinished job; returns their names."""
        pending = list(self._launching.values())
        if pending:
            await asyncio.wait(pending, timeout=30)
        cancelled = []
        for job in self.state.unfinished_jobs():
            if job.get("job_id") and job.get("executor") == self.executor.kind:
                self._cancel_quietly(job["job_id"], job.get("pod_dir"))
                self._finish(job, FAILED, STOPPED_REASON)
                cancelled.append(job["name"])
        self.state.save()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if cancelled:
            log.info("cancelled %d unfinished job(s): %s", len(cancelled), ", ".join(cancelled))
        return cancelled

    # -- cluster information

    def info(self) -> dict[str, Any]:
        machine = platform.machine()
        return {
            "version": f"{__version__}-local",
            "git_commit": "",
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
            "kubernetes_version": "none (oscar-jupyter local OSCAR)",
            "serverless_backend": {"name": f"oscar-jupyter-local ({self.executor.kind})",
                                   "version": __version__},
            "local": self.local_summary(),
        }

    def local_summary(self) -> dict[str, Any]:
        return {
            "executor": self.executor.kind,
            "executor_reason": self.executor_reason,
            "container_runtime": self.runtime_description,
            "virtual_node": self.node_name,
            "home": str(self.layout.root),
        }

    def config(self) -> dict[str, Any]:
        return {
            "config": {
                "name": "oscar", "namespace": "oscar", "services_namespace": NAMESPACE,
                "controller_service_account": "oscar-sa", "gpu_available": False,
                "interLink_available": True, "yunikorn_enable": False, "kueue_enable": False,
                "volume_enable": False, "oidc_groups": [], "minio_quota_enabled": False,
            },
            "minio_provider": {
                "endpoint": "", "verify": True, "access_key": "", "secret_key": "", "region": "",
            },
            "allowed_image_repositories": [],
        }

    def status(self) -> dict[str, Any]:
        resources = self.executor.node_resources()
        cpus_milli = int(resources["cpus"] * 1000)
        free_milli = int(resources["free_cpus"] * 1000)
        memory_bytes = int(resources["memory_mib"]) * 1024 * 1024
        free_bytes = int(resources["free_memory_mib"]) * 1024 * 1024
        states = dict.fromkeys(("Pending", "Running", "Succeeded", "Failed", "Unknown"), 0)
        for job in self.state.jobs.values():
            if job["phase"] in states:
                states[job["phase"]] += 1
        node = {
            "name": self.node_name,
            "cpu": {"capacity_cores": cpus_milli, "usage_cores": cpus_milli - free_milli,
                    "request_cores": cpus_milli - free_milli},
            "memory": {"capacity_bytes": memory_bytes, "usage_bytes": memory_bytes - free_bytes,
                       "request_bytes": memory_bytes - free_bytes},
            "gpu": 0,
            "is_interlink": True,
            "status": "Ready",
            "conditions": [{"type": "Ready", "status": True}],
            "labels": virtual_node_labels(self.node_name),
            "taints": VIRTUAL_NODE_TAINTS,
            "executor": self.executor.kind,
        }
        return {
            "cluster": {
                "nodes_count": 1,
                "metrics": {
                    "cpu": {"total_free_cores": free_milli, "max_free_on_node_cores": free_milli,
                            "total_schedulable_cores": cpus_milli,
                            "total_schedulable_on_node_cores": cpus_milli},
                    "memory": {"total_free_bytes": free_bytes, "max_free_on_node_bytes": free_bytes,
                               "total_schedulable_bytes": memory_bytes,
                               "max_schedulable_on_node_bytes": memory_bytes},
                    "gpu": {"total_gpu": 0},
                },
                "nodes": [node],
            },
            "oscar": {
                "deployment_name": "oscar",
                "ready": True,
                "jobs_count": len(self.state.jobs),
                "pods": {"total": sum(states.values()), "states": states},
                "oidc": {"enabled": False, "issuers": [], "groups": []},
            },
            "minio": {"buckets_count": 0, "total_objects": 0},
        }


def default_job_name(service_name: str) -> str:
    prefix = service_name if len(service_name) < 25 else service_name[:16]
    return f"{prefix}-{uuid.uuid4()}"


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _text_line(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


# --- HTTP layer ---------------------------------------------------------------------------------


class _Handler(tornado.web.RequestHandler):
    """Plain-text errors as gin writes them; 404 for unknown methods, never a stack trace."""

    def initialize(self, oscar: LocalOscar) -> None:
        self.oscar = oscar

    def send_text(self, status: int, text: str = "") -> None:
        self.set_status(status)
        if text:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.write(text)
        else:
            self.clear_header("Content-Type")
        self.finish()

    def send_json(self, status: int, document: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(document))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            if error.text:
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                self.write(error.text)
            else:
                self.clear_header("Content-Type")
            return
        if status_code == 405:  # gin answers an unrouted method with its plain 404
            self.set_status(404)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.write(NOT_FOUND_TEXT)
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if error is not None and status_code == 500:
            self.write(f"internal error of the local OSCAR: {type(error).__name__}: {error}")
        else:
            self.write(self._reason)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return
        super().log_exception(typ, value, tb)


class _SystemHandler(_Handler):
    """`/system/*`: HTTP Basic with the admin account, as OSCAR without OIDC."""

    def prepare(self) -> None:
        if not self.oscar.basic_auth_ok(self.request.headers.get("Authorization")):
            raise ApiError(401, headers={"WWW-Authenticate": BASIC_CHALLENGE})


class HealthHandler(_Handler):
    def get(self) -> None:
        self.send_text(200, "Ok")


class InfoHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.info())


class ConfigHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.config())


class StatusHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.status())


class ServicesHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.list_services())

    def post(self) -> None:
        self.oscar.create_service(self.request.body)
        self.send_text(201)

    def put(self) -> None:
        self.oscar.update_service(self.request.body)
        self.send_text(204)


class ServiceHandler(_SystemHandler):
    def get(self, name: str) -> None:
        self.send_json(200, self.oscar.get_service(name))

    def delete(self, name: str) -> None:
        self.oscar.delete_service(name)
        self.send_text(204)


class JobHandler(_Handler):
    """`POST /job/{service}`: only `Authorization: Bearer <service token>`."""

    def post(self, service_name: str) -> None:
        self.oscar.submit_job(
            service_name,
            self.request.headers.get("Authorization"),
            self.request.headers.get("X-Delegated-Job-ID"),
            self.request.body,
        )
        self.send_text(201)


class JobsHandler(_SystemHandler):
    def get(self, service_name: str) -> None:
        self.send_json(200, self.oscar.job_listing(service_name))

    def delete(self, service_name: str) -> None:
        everything = self.get_query_argument("all", "false").lower() in ("1", "t", "true")
        self.oscar.delete_jobs(service_name, everything=everything)
        self.send_text(204)


class JobLogHandler(_SystemHandler):
    def get(self, service_name: str, job_name: str) -> None:
        text = self.oscar.job_log(service_name, job_name)
        self.set_status(200)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    def delete(self, service_name: str, job_name: str) -> None:
        self.oscar.delete_job(service_name, job_name)
        self.send_text(204)


class NotFoundHandler(_Handler):
    def prepare(self) -> None:
        raise ApiError(404, NOT_FOUND_TEXT)


def make_app(oscar: LocalOscar) -> tornado.web.Application:
    """The tornado application serving OSCAR's REST API for `oscar`."""
    args = {"oscar": oscar}
    routes = [
        (r"/health", HealthHandler, args),
        (r"/system/info", InfoHandler, args),
        (r"/system/config", ConfigHandler, args),
        (r"/system/status", StatusHandler, args),
        (r"/system/services", ServicesHandler, args),
        (r"/system/services/([^/]+)", ServiceHandler, args),
        (r"/job/([^/]+)", JobHandler, args),
        (r"/system/logs/([^/]+)", JobsHandler, args),
        (r"/system/logs/([^/]+)/([^/]+)", JobLogHandler, args),
    ]
    return tornado.web.Application(
        routes, default_handler_class=NotFoundHandler, default_handler_args=args,
        serve_traceback=False,
    )


# --- process entry point ------------------------------------------------------------------------


def build_local_oscar(
    home: Path, *, node_name: str = DEFAULT_NODE_NAME, executor_preference: str = "auto"
) -> LocalOscar:
    """Wire the real parts: executor, container runtime, supervisor kit, plugin configuration."""
    from .executors import choose_executor
    from .interlink import PluginConfig
    from .singularity import runtime_command
    from .supervisor_kit import ensure_supervisor_kit

    layout = HomeLayout(home)
    layout.create()
    password = ensure_admin_password(layout)
    executor, reason = choose_executor(executor_preference)
    singularity_path, runtime_description = runtime_command(home)
    plugin_config = PluginConfig(
        data_root=str(layout.jobs_dir) + "/", singularity_path=str(singularity_path)
    )
    kit_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supervisor-kit")
    kit = kit_pool.submit(ensure_supervisor_kit)  # shared cache: singularity.py finds it there
    kit.add_done_callback(_report_supervisor_kit)
    kit_pool.shutdown(wait=False)
    return LocalOscar(
        layout, password=password, executor=executor, executor_reason=reason,
        runtime_description=runtime_description, plugin_config=plugin_config,
        node_name=node_name, supervisor_kit=kit,
    )


def _report_supervisor_kit(kit: Future) -> None:
    error = kit.exception()
    if error is not None:
        log.error("the supervisor kit could not be built, jobs will fail: %s", error)
    else:
        log.info("supervisor kit ready: %s", kit.result())


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m oscar_jupyter.local.server",
        description="Serve the local OSCAR's REST API "
        "(normally started by `oscar-jupyter local start`).",
    )
    parser.add_argument("--home", required=True, type=Path, help="the local OSCAR's home folder")
    parser.add_argument("--port", required=True, type=int, help="TCP port on --host")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME, help="the virtual node's name")
    parser.add_argument("--executor", default="auto", choices=("auto", "slurm", "process"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        oscar = build_local_oscar(
            args.home, node_name=args.node_name, executor_preference=args.executor
        )
    except Exception as error:
        log.error("cannot start the local OSCAR: %s", error)
        return 2
    try:
        return asyncio.run(_serve(oscar, args.host, args.port))
    finally:
        log.info("local OSCAR stopped")


async def _serve(oscar: LocalOscar, host: str, port: int) -> int:
    server = tornado.httpserver.HTTPServer(make_app(oscar))
    try:
        server.listen(port, address=host)
    except OSError as error:
        log.error(
            "cannot listen on %s:%d (%s); choose another port with --port or "
            "OSCAR_JUPYTER_LOCAL_PORT", host, port, error.strerror or error,
        )
        return 3
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info(
        "local OSCAR listening on http://%s:%d (executor %s: %s; runtime %s; node %s)",
        host, port, oscar.executor.kind, oscar.executor_reason,
        oscar.runtime_description, oscar.node_name,
    )
    await stopping.wait()
    log.info("stopping: no new requests, cancelling unfinished jobs")
    server.stop()
    await oscar.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
