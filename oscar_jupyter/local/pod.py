"""Service + job -> the Kubernetes pod OSCAR v4.1 builds for an interLink service.

The shape follows OSCAR's ``Service.ToPodSpec``, ``SetInterlinkService``,
``SetInterlinkJob`` and the job handler (reference OSCAR.md sections 3.4 and 6,
INTERLINK.md section 4), as the virtual kubelet hands it to the Slurm plugin: scheduled
(``nodeName`` set), API-server defaults filled in, ``RESOURCE_ID`` already resolved into a plain
value. The service's secret environment travels as OSCAR sends it, an ``envFrom`` of the
service's Secret, which interLink 0.6.2 resolves into plain values and 0.6.1 passes on
unresolved, so the plugin (which reads only ``env``) drops it (B4, ``resolve_env_from``). The
local OSCAR has no MinIO, so the ``minio-user`` secret volume is left out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import yaml

from .interlink import TranslationError, parse_quantity
from .releases import DEFAULT_INTERLINK_RELEASE, check_release

MAIN_CONTAINER = "oscar-container"
INIT_CONTAINER = "supervisor-container"
CONFIG_VOLUME = "oscar-config"
CONFIG_PATH = "/oscar/config"
SHARE_VOLUME = "supervisor-share-data"
SHARE_PATH = "/data"
SERVICE_VOLUME = "service-volume"
SCRIPT_KEY = "script.sh"
FDL_KEY = "function_config.yaml"
DEFAULT_CPU = "0.2"
DEFAULT_MEMORY = "256Mi"
TOLERATION_KEY = "virtual-node.interlink/no-schedule"
DEFAULT_SUPERVISOR_KIT_IMAGE = "docker://ghcr.io/grycap/faas-supervisor-kit:latest"
KUBERNETES_DEFAULT_FILE_MODE = 420  # 0644, what the API server fills in

# OSCAR's watchdog settings (defaults of WATCHDOG_*); meaningless for jobs, present anyway.
_WATCHDOG_ENV = (
    ("fprocess", "/oscar/bin/supervisor"),
    ("max_inflight", "1"),
    ("write_debug", "true"),
    ("exec_timeout", "0"),
    ("read_timeout", "300"),
    ("write_timeout", "300"),
    ("healthcheck_interval", "5"),
)
# The Job controller's generateName suffix: 5 characters from this alphabet.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Fields OSCAR leaves out of the stored FDL (yaml:"-") besides the script.
_NOT_IN_FDL = ("script", "namespace", "volume_status", "deployment")


def _require(service: Mapping[str, Any], key: str) -> str:
    value = service.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"service[{key!r}] must be a non-empty string (got {value!r})")
    return value


def _quantity(service: Mapping[str, Any], key: str, default: str) -> str:
    value = service.get(key)
    text = default if value in (None, "") else str(value)
    try:
        amount = parse_quantity(text, what=f"service {key}")
    except TranslationError as error:
        raise ValueError(str(error)) from None
    if amount <= 0:
        raise ValueError(f"service {key} must be positive (got {text!r})")
    return text


def _pod_suffix(pod_uid: str) -> str:
    """Five generateName characters, derived from the uid so the same input gives the same pod."""
    digest = hashlib.sha256(pod_uid.encode()).digest()
    return "".join(_NAME_ALPHABET[byte % len(_NAME_ALPHABET)] for byte in digest[:5])


def pod_name(job_name: str, pod_uid: str) -> str:
    """The name the Job controller gives the job's pod (`<job>-<5 characters>`)."""
    return f"{job_name}-{_pod_suffix(pod_uid)}"


def _string_map(service: Mapping[str, Any], *path: str) -> dict[str, str]:
    current: Any = service
    for key in path:
        current = (current or {}).get(key) if isinstance(current, Mapping) else None
    if current is None:
        return {}
    if not isinstance(current, Mapping):
        raise ValueError(f"service {'.'.join(path)} must be a mapping of names to strings")
    return {str(key): "" if value is None else str(value) for key, value in current.items()}


def _labels(service: Mapping[str, Any], name: str, job_name: str) -> dict[str, str]:
    labels = _string_map(service, "labels")
    labels.setdefault("oscar_service", name)
    labels.setdefault("oscar.grycap/user-service", "true")
    labels["batch.kubernetes.io/job-name"] = job_name
    labels["job-name"] = job_name
    return labels


def _environment(
    service: Mapping[str, Any], name: str, node: str, job_name: str, body: bytes
) -> list[dict[str, str]]:
    # OSCAR's order: service variables, OSCAR_SERVICE_*, watchdog, EVENT, JOB_UUID,
    # RESOURCE_ID. The service secrets are not here: they come through envFrom.
    variables = _string_map(service, "environment", "variables")
    env = [{"name": key, "value": value} for key, value in variables.items()]
    exposed = bool((service.get("expose") or {}).get("api_port"))
    env += [
        {"name": "OSCAR_SERVICE_NAME", "value": name},
        {"name": "OSCAR_SERVICE_TOKEN", "value": str(service.get("token") or "")},
        {
            "name": "OSCAR_SERVICE_BASE_PATH",
            "value": f"/system/services/{name}/exposed" if exposed else "",
        },
    ]
    env += [{"name": k, "value": v} for k, v in _WATCHDOG_ENV]
    env += [
        {"name": "EVENT", "value": base64.b64encode(body).decode("ascii")},
        {"name": "JOB_UUID", "value": job_name},
        {"name": "RESOURCE_ID", "value": node},  # fieldRef spec.nodeName, resolved by the VK
    ]
    return env


def resolve_env_from(
    container: dict[str, Any],
    secrets: Mapping[str, Mapping[str, str]],
    interlink_release: str = DEFAULT_INTERLINK_RELEASE,
) -> None:
    """What interLink's virtual kubelet does with a container's ``envFrom`` before the plugin
    sees it (B4, reference OSCAR.md section 13).

    interLink 0.6.2 (``pkg/virtualkubelet/execute.go`` 1168-1235, called at 1285-1290 in
    ``RemoteExecution``; commit 6fb734f8) appends each key of the referenced Secret to ``env``
    unless an explicit variable has that name, then drops ``envFrom``. The Secret's keys come
    in Go map order (random); they are sorted here. interLink 0.6.1 has no such step
    (``execute.go`` 1085-1130 at the 0.6.1 tag): ``envFrom`` reaches the plugin, whose env file
    holds only ``env`` (plugin ``prepare.go`` 485-537, ``createEnvFile``), so the secret
    variables are silently missing in the job.
    """
    check_release("interlink", interlink_release)
    if interlink_release == "0.6.1" or not container.get("envFrom"):
        return
    env = container.setdefault("env", [])
    explicit = {entry["name"] for entry in env}
    for source in container.pop("envFrom"):
        prefix = source.get("prefix") or ""
        name = str((source.get("secretRef") or {}).get("name") or "")
        for key, value in sorted((secrets.get(name) or {}).items()):
            if prefix + key not in explicit:
                env.append({"name": prefix + key, "value": value})
                explicit.add(prefix + key)


def _resources(service: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    limits = {
        "cpu": _quantity(service, "cpu", DEFAULT_CPU),
        "memory": _quantity(service, "memory", DEFAULT_MEMORY),
    }
    if service.get("enable_gpu"):
        limits["nvidia.com/gpu"] = "1"
    resources: dict[str, dict[str, str]] = {"limits": limits}
    if service.get("ephemeral_storage_request"):
        storage = _quantity(service, "ephemeral_storage_request", "")
        resources["requests"] = {"ephemeral-storage": storage}
    return resources


def build_pod(
    service: dict,
    *,
    job_name: str,
    body: bytes,
    pod_uid: str,
    namespace: str = "oscar-svc",
    supervisor_kit_image: str = DEFAULT_SUPERVISOR_KIT_IMAGE,
    interlink_release: str = DEFAULT_INTERLINK_RELEASE,
) -> dict:
    """The pod of one job of an interLink service, as the Slurm plugin receives it from
    ``interlink_release``.

    ``service`` is the service definition (OSCAR's JSON field names) with
    ``interlink_node_name`` set and ``environment.secrets`` holding the secret values;
    ``body`` is the raw request body of ``POST /job/{svc}``.
    """
    check_release("interlink", interlink_release)
    name = _require(service, "name")
    image = _require(service, "image")
    node = service.get("interlink_node_name")
    if not isinstance(node, str) or not node:
        raise ValueError(
            f"service {name!r} has no interlink_node_name; set it to the virtual node's name "
            "(only interLink services are offloaded to Slurm)"
        )
    if not job_name:
        raise ValueError("job_name must not be empty")
    if not pod_uid:
        raise ValueError("pod_uid must not be empty")
    if not isinstance(body, (bytes, bytearray)):
        raise ValueError(f"body must be bytes (got {type(body).__name__})")
    if not supervisor_kit_image:
        raise ValueError("supervisor_kit_image must not be empty (OSCAR's SUPERVISOR_KIT_IMAGE)")

    share_mount = {"name": SHARE_VOLUME, "mountPath": SHARE_PATH}
    main_mounts = [
        {"name": CONFIG_VOLUME, "readOnly": True, "mountPath": CONFIG_PATH},
        dict(share_mount),
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": name, "defaultMode": KUBERNETES_DEFAULT_FILE_MODE},
        },
        {"name": SHARE_VOLUME, "emptyDir": {}},
    ]
    managed_volume = service.get("volume")
    if managed_volume:
        # OSCAR mounts the managed PVC; the Slurm plugin cannot, and interlink.prepare says so.
        main_mounts.append({"name": SERVICE_VOLUME, "mountPath": managed_volume.get("mount_path")})
        claim = (managed_volume.get("name") or "").strip() or name
        volumes.append({"name": SERVICE_VOLUME, "persistentVolumeClaim": {"claimName": claim}})

    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job_name, pod_uid),
            "namespace": namespace,
            "uid": pod_uid,
            "labels": _labels(service, name, job_name),
            "annotations": _string_map(service, "annotations"),
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "imagePullSecrets": [{"name": s} for s in service.get("image_pull_secrets") or []],
            "nodeSelector": {"kubernetes.io/hostname": node},
            "nodeName": node,
            "dnsPolicy": "ClusterFirst",
            "restartPolicy": "Never",
            "tolerations": [{"key": TOLERATION_KEY, "operator": "Exists"}],
            "initContainers": [
                {
                    "name": INIT_CONTAINER,
                    "image": supervisor_kit_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c"],
                    "args": [f"cp -r /supervisor/* {SHARE_PATH}"],
                    "volumeMounts": [dict(share_mount)],
                }
            ],
            "containers": [
                {
                    "name": MAIN_CONTAINER,
                    "image": image,
                    "imagePullPolicy": "Always",
                    "command": ["/bin/sh", "-c"],
                    "args": [f"echo $EVENT | base64 -d | {SHARE_PATH}/supervisor"],
                    "env": _environment(service, name, node, job_name, bytes(body)),
                    "resources": _resources(service),
                    "volumeMounts": main_mounts,
                }
            ],
            "volumes": volumes,
        },
    }
    secrets = _string_map(service, "environment", "secrets")
    if secrets:
        # pkg/handlers/job.go 193-204 (v4.1.2): the service's Secret (named after the service,
        # created when it has secrets) as envFrom of the main container.
        main = pod["spec"]["containers"][0]
        main["envFrom"] = [{"secretRef": {"name": name}}]
        resolve_env_from(main, {name: secrets}, interlink_release)
    return pod


def configmap_data(service: dict) -> dict[str, str]:
    """The service ConfigMap's data: the script and the FDL without it (token included).

    As in OSCAR, the values of ``environment.secrets`` are blanked in the stored FDL.
    """
    script = _require(service, "script")
    fdl = {key: value for key, value in service.items() if key not in _NOT_IN_FDL}
    environment = fdl.get("environment")
    if isinstance(environment, Mapping) and environment.get("secrets"):
        fdl["environment"] = {**environment, "secrets": {key: "" for key in environment["secrets"]}}
    text = yaml.safe_dump(fdl, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return {SCRIPT_KEY: script.replace("\r\n", "\n"), FDL_KEY: text}
