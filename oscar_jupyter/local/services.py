"""Service definitions as the local OSCAR takes them: OSCAR v4.1's body checks, defaults, tokens,
and the virtual node's labels. Errors are `ApiError`s carrying OSCAR's own status and text."""

from __future__ import annotations

import copy
import json
import re
import secrets
from datetime import datetime, timezone
from typing import Any

ADMIN_USER = "oscar"
DEFAULT_NODE_NAME = "local-slurm"
NAMESPACE = "oscar-svc"
MAIN_CONTAINER = "oscar-container"
DEFAULT_OWNER = "cluster_admin"
SERVICE_TOKEN_LENGTH = 64
NOT_FOUND_TEXT = "404 page not found"
BASIC_CHALLENGE = 'Basic realm="Authorization Required"'
STOPPED_REASON = "Cancelled: the local OSCAR was stopped (oscar-jupyter local stop)"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")

_STRING_FIELDS = (
    "name",
    "image",
    "script",
    "cpu",
    "memory",
    "total_cpu",
    "total_memory",
    "ephemeral_storage_request",
    "log_level",
    "interlink_node_name",
    "vo",
    "visibility",
    "isolation_level",
    "cluster_id",
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
    return rfc3339(datetime.now(timezone.utc)) or ""


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
    names: dict[type, str] = {dict: "object", list: "array", str: "string"}
    return names.get(type(value), type(value).__name__)


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
                f'\'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$\' (for example "2", "500m", '
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
    labels.update(
        {
            "oscar.grycap/user-service": "true",
            "oscar_service": name,
            "applicationId": name,
            "queue": f"root.oscar.{name}",
        }
    )
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
                "endpoint": "",
                "verify": True,
                "access_key": "hidden",
                "secret_key": "hidden",
                "region": "",
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
