"""Cluster profiles: oscar-cli's config file, ``OSCAR_*`` environment, explicit arguments.

The file is oscar-cli's own (``~/.oscar-cli/config.yaml``), so people who already use oscar-cli
have nothing to set up::

    oscar:
      my-cluster:
        endpoint: https://oscar.example.org
        auth_user: oscar
        auth_password: ...
        oidc_refresh_token: ...     # Keycloak refresh token (instead of user/password)
        oidc_account_name: egi      # oidc-agent short name
        ssl_verify: true
        memory: 256Mi
        log_level: INFO
        jupyter: {node: vega, time: "01:00:00"}   # our own offload defaults
    default: my-cluster

A ``.yaml``/``.yml`` path is read as YAML, anything else as JSON (as oscar-cli does).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from .files import write_atomically

__all__ = [
    "ClusterProfile",
    "ConfigError",
    "Secret",
    "TokenRefreshError",
    "agent_access_token",
    "default_config_path",
    "default_profile_name",
    "list_profiles",
    "load_profile",
    "refresh_access_token",
    "save_profile",
    "record_site_check",
    "JupyterSettings",
    "SiteFacts",
    "jwt_claims",
]

ENV_CONFIG = "OSCAR_CLI_CONFIG"
ENV_ENDPOINT = "OSCAR_ENDPOINT"
ENV_USER = "OSCAR_USER"
ENV_PASSWORD = "OSCAR_PASSWORD"
ENV_TOKEN = "OSCAR_TOKEN"
ENV_SSL_VERIFY = "OSCAR_SSL_VERIFY"

# Keys of a cluster entry that ClusterProfile owns; every other key is kept as it is on save.
_OSCAR_CLI_DEFAULT_KEYS = ("memory", "log_level")
_JUPYTER_KEY = "jupyter"
_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}
_REFRESH_TIMEOUT = 15.0
_AGENT_COMMAND = "oidc-token"
_AGENT_MIN_VALIDITY_SECONDS = 600


class ConfigError(ValueError):
    """A cluster profile cannot be built; the message says what to change."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class TokenRefreshError(ConfigError):
    """The refresh token could not be exchanged for an access token."""


class Secret:
    """A string that never shows itself in a repr, a str, a log or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret takes a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def _as_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value or None
    if isinstance(value, str):
        return Secret(value) if value else None
    raise TypeError(f"expected a str or Secret, not {type(value).__name__}")


def _normalise_endpoint(endpoint: str, where: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigError(
            f"The OSCAR endpoint is empty ({where}); set it to the cluster's "
            "https:// address, e.g. https://oscar.example.org"
        )
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"The OSCAR endpoint {endpoint!r} ({where}) must be an http:// or "
            "https:// address with a host, e.g. https://oscar.example.org"
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            f"The OSCAR endpoint {endpoint!r} ({where}) must not carry a query or "
            "fragment; give only scheme, host, port and optional path prefix"
        )
    if "@" in parts.netloc:
        raise ConfigError(
            f"The OSCAR endpoint ({where}) must not hold credentials; put the user "
            "and password in auth_user/auth_password or OSCAR_USER/OSCAR_PASSWORD"
        )
    return endpoint.rstrip("/")


@dataclass(frozen=True)
class ClusterProfile:
    """Where an OSCAR cluster is and how to authenticate to it.

    ``defaults`` mirrors the cluster entry's offload defaults: oscar-cli's ``memory`` and
    ``log_level`` at the top, our own keys as a mapping under ``jupyter``.
    """

    cluster_id: str
    endpoint: str
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    refresh_token: Secret | None = None
    oidc_account_name: str | None = None
    ssl_verify: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.cluster_id, str) or not self.cluster_id.strip():
            raise ConfigError("The cluster id is empty; give the profile a name, e.g. 'my-cluster'")
        where = f"cluster {self.cluster_id!r}"
        object.__setattr__(self, "endpoint", _normalise_endpoint(self.endpoint, where))
        for name in ("password", "token", "refresh_token"):
            object.__setattr__(self, name, _as_secret(getattr(self, name)))
        for name in ("user", "oidc_account_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} of {where} must be a string, not {type(value).__name__}")
            object.__setattr__(self, name, value or None)
        if not isinstance(self.ssl_verify, bool):
            raise ConfigError(f"ssl_verify of {where} must be true or false")
        if self.password and not self.user:
            raise ConfigError(
                f"{where} has a password but no user; set auth_user in the config "
                f"file, {ENV_USER}, or user=..."
            )
        if not isinstance(self.defaults, Mapping):
            raise ConfigError(
                f"defaults of {where} must be a mapping, e.g. "
                "{'memory': '1Gi', 'jupyter': {'node': 'vega'}}"
            )
        object.__setattr__(self, "defaults", copy.deepcopy(dict(self.defaults)))

    @property
    def auth_kind(self) -> str:
        """How the client authenticates on ``/system``: token, oidc-agent, refresh-token, basic
        or none. An access token given directly wins; otherwise oscar-cli's order applies."""
        if self.token:
            return "token"
        if self.oidc_account_name:
            return "oidc-agent"
        if self.refresh_token:
            return "refresh-token"
        if self.user and self.password:
            return "basic"
        return "none"

    def __repr__(self) -> str:
        user = f", user={self.user!r}" if self.user else ""
        return (
            f"ClusterProfile(cluster_id={self.cluster_id!r}, endpoint={self.endpoint!r}"
            f"{user}, auth_kind={self.auth_kind!r}, ssl_verify={self.ssl_verify!r})"
        )

    __str__ = __repr__

    @property
    def jupyter(self) -> JupyterSettings:
        """The profile's `jupyter:` block (and oscar-cli's `memory`), parsed."""
        return JupyterSettings.of(self)


# --- the profile's `jupyter:` block: offload defaults and what the site is ------------------

DEFAULT_IMAGE_PREFIX = "docker://"
# What sites run unless their profile says otherwise (jupyter: {plugin_version, interlink_version}).
DEFAULT_PLUGIN_VERSION = "0.6.1"
_IMAGE_PREFIX = re.compile(r"[A-Za-z0-9._/:+@-]+")
# Keys of the `jupyter:` block that describe the site rather than a cell's default option.
SITE_KEYS = (
    "image_prefix",
    "image_schemes",
    "gpu_scheduling",
    "nodes",
    "kubeconfig",
    "plugin_version",
    "interlink_version",
    "mpi_flags",
    "site_check",
)
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def _version(text: str) -> tuple[int, int, int]:
    found = _VERSION.match(text.strip())
    if not found:
        return (0, 0, 0)
    return (int(found.group(1)), int(found.group(2)), int(found.group(3)))


@dataclass(frozen=True)
class SiteFacts:
    """What the cluster profile says about the HPC site (not a cell option).

    ``image_prefix``: the Slurm plugin's ``ImagePrefix``; plugin 0.6.1 prepends it to every image
    that does not already start with it (interlink-slurm-plugin ``prepare.go`` prepareImage).
    ``keeps_schemes``: the site's plugin keeps any ``scheme://`` image as it is (releases after
    0.6.1); 0.6.1 would turn ``library://x`` into ``docker://library://x``.
    ``schedules_gpus``: the site's virtual node advertises GPUs and the user's Kueue quota has
    some, so OSCAR's ``enable_gpu`` (a ``nvidia.com/gpu`` limit on the pod) can be scheduled.
    ``applies_mpi_flags``: the site's plugin starts the container under ``mpiexec`` as the
    ``slurm-job.vk.io/mpi-flags`` annotation asks (``jupyter: {mpi_flags: true}``). No release
    does up to 0.6.2-pre5: ``prepare.go`` (0.6.1 lines 961-966) assigns the wrapped command to
    the loop's copy of each container command, so the job script never changes.
    """

    image_prefix: str = DEFAULT_IMAGE_PREFIX
    keeps_schemes: bool = False
    schedules_gpus: bool = False
    plugin_version: str = DEFAULT_PLUGIN_VERSION
    interlink_version: str = DEFAULT_PLUGIN_VERSION
    applies_mpi_flags: bool = False

    @property
    def plugin_keeps_mem_options(self) -> bool:
        """Plugins after 0.6.1 split the flags annotation into shell words; 0.6.1 and older
        first cut `--mem(?:[ =]\\S+)?` out of it (prepare.go), mangling --mem-bind and the like."""
        return _version(self.plugin_version) > (0, 6, 1)

    @property
    def interlink_passes_secrets(self) -> bool:
        """interLink resolves a pod's envFrom (how OSCAR passes service secrets) from 0.6.2."""
        return _version(self.interlink_version) > (0, 6, 1)


@dataclass(frozen=True)
class JupyterSettings:
    """A profile's ``jupyter:`` block, read in one place::

        jupyter: {node: vega, time: "01:00:00",            # offload defaults (option names)
                  image_prefix: docker://, image_schemes: false, gpu_scheduling: false,
                  nodes: [vega, leonardo], kubeconfig: ~/.kube/oscar}   # the site

    ``offload_defaults`` keeps the option keys as written (``-`` read as ``_``) plus oscar-cli's
    ``memory`` as ``mem``; which of them are offload options is the caller's to check."""

    offload_defaults: Mapping[str, Any] = field(default_factory=dict)
    site: SiteFacts = field(default_factory=SiteFacts)
    nodes: tuple[str, ...] = ()
    kubeconfig: str | None = None
    site_check: Mapping[str, Any] = field(default_factory=dict)  # what `check` found, dated

    @classmethod
    def of(cls, profile: ClusterProfile | None) -> JupyterSettings:
        if profile is None:
            return cls()
        raw = dict(profile.defaults or {})
        block = raw.get("jupyter") or {}
        if not isinstance(block, Mapping):
            raise ConfigError(
                f"jupyter: in the profile of {profile.cluster_id} must be a mapping, "
                "e.g. jupyter: {node: vega, time: '01:00:00'}"
            )
        block = {str(k).replace("-", "_"): v for k, v in block.items()}
        defaults: dict[str, Any] = {}
        if raw.get("memory"):
            defaults["mem"] = raw["memory"]
        defaults.update({k: v for k, v in block.items() if k not in SITE_KEYS})
        prefix = block.get("image_prefix", DEFAULT_IMAGE_PREFIX)
        if not isinstance(prefix, str) or not _IMAGE_PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"jupyter: image_prefix {prefix!r} in the profile of {profile.cluster_id}: "
                "write the site's plugin ImagePrefix, e.g. docker:// or /cvmfs/unpacked.cern.ch/"
            )
        names = block.get("nodes") or []
        if isinstance(names, str):
            names = [names]
        kubeconfig = block.get("kubeconfig")
        return cls(
            offload_defaults=defaults,
            site=SiteFacts(
                image_prefix=prefix,
                keeps_schemes=block.get("image_schemes") is True,
                schedules_gpus=block.get("gpu_scheduling") is True,
                plugin_version=_release(block, "plugin_version", profile.cluster_id),
                interlink_version=_release(block, "interlink_version", profile.cluster_id),
                applies_mpi_flags=block.get("mpi_flags") is True,
            ),
            nodes=tuple(str(name) for name in names),
            site_check=dict(block["site_check"])
            if isinstance(block.get("site_check"), Mapping)
            else {},
            kubeconfig=os.path.expanduser(kubeconfig)
            if isinstance(kubeconfig, str) and kubeconfig
            else None,
        )


def _release(block: Mapping[str, Any], key: str, cluster: str) -> str:
    value = block.get(key, DEFAULT_PLUGIN_VERSION)
    if not isinstance(value, str) or not _VERSION.match(value.strip()):
        raise ConfigError(
            f"jupyter: {key} {value!r} in the profile of {cluster}: write the site's release as "
            f"text, e.g. {key}: '0.6.1'"
        )
    return value.strip()


# --- the config file -------------------------------------------------------------------------


def default_config_path() -> Path:
    """``$OSCAR_CLI_CONFIG`` or ``~/.oscar-cli/config.yaml`` (oscar-cli's default)."""
    configured = os.environ.get(ENV_CONFIG)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".oscar-cli" / "config.yaml"


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _read_raw(path: Path) -> dict[str, Any] | None:
    """The file's content as a dict, None when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the OSCAR config file {path}: {exc.strerror}; check its "
            "permissions or point OSCAR_CLI_CONFIG at another file"
        ) from None
    try:
        data = yaml.safe_load(text) if _is_yaml(path) else json.loads(text) if text.strip() else {}
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "YAML" if _is_yaml(path) else "JSON (the name does not end in .yaml/.yml)"
        line = _error_line(exc)
        at = f" near line {line}" if line is not None else ""
        raise ConfigError(
            f"The OSCAR config file {path} is not valid {kind}{at}; fix it or "
            "recreate it with `oscar-cli cluster add`"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"The OSCAR config file {path} must hold a mapping with an 'oscar:' "
            "section of clusters; fix it or recreate it with `oscar-cli cluster add`"
        )
    clusters = data.get("oscar")
    if clusters is not None and not isinstance(clusters, dict):
        raise ConfigError(f"'oscar' in {path} must map cluster names to their settings")
    if clusters:  # YAML turns a cluster named 123 into an int key
        data["oscar"] = {str(name): entry for name, entry in clusters.items()}
    return data


def _error_line(exc: Exception) -> int | None:
    """1-based line of a parse error, when the parser says."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.lineno
    mark = getattr(exc, "problem_mark", None)
    return mark.line + 1 if mark is not None else None


def _clusters(data: Mapping[str, Any]) -> dict[str, Any]:
    return data.get("oscar") or {}


def list_profiles(config_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Cluster names in file order; empty when the file does not exist."""
    path = Path(config_path) if config_path is not None else default_config_path()
    data = _read_raw(path)
    return [str(name) for name in _clusters(data)] if data else []


def default_profile_name(config_path: str | os.PathLike[str] | None = None) -> str | None:
    """The file's ``default``, or its only cluster, or None."""
    path = Path(config_path) if config_path is not None else default_config_path()
    data = _read_raw(path)
    return _default_name(data) if data else None


def _default_name(data: Mapping[str, Any]) -> str | None:
    default = data.get("default")
    if default:
        return str(default)
    clusters = _clusters(data)
    if len(clusters) == 1:
        return str(next(iter(clusters)))
    return None


def _parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ConfigError(f"{where} must be true or false (also accepted: 1/0, yes/no), not {value!r}")


def _entry_str(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string; quote it in the file")
    return value


def _profile_from_entry(name: str, entry: Any, path: Path) -> dict[str, Any]:
    where = f"oscar.{name} in {path}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with at least 'endpoint:'")
    if not entry.get("endpoint"):
        raise ConfigError(
            f"{where} has no 'endpoint'; add e.g. `endpoint: https://oscar.example.org`"
        )
    defaults: dict[str, Any] = {k: entry[k] for k in _OSCAR_CLI_DEFAULT_KEYS if entry.get(k)}
    extra = entry.get(_JUPYTER_KEY)
    if extra is not None:
        if not isinstance(extra, dict):
            raise ConfigError(
                f"{where}.{_JUPYTER_KEY} must be a mapping of offload defaults, "
                "e.g. `jupyter: {node: vega, time: '01:00:00'}`"
            )
        defaults[_JUPYTER_KEY] = dict(extra)
    return {
        "endpoint": (entry["endpoint"], f"oscar.{name}.endpoint in {path}"),
        "user": _entry_str(entry, "auth_user", where),
        "password": _entry_str(entry, "auth_password", where),
        "refresh_token": _entry_str(entry, "oidc_refresh_token", where),
        "oidc_account_name": _entry_str(entry, "oidc_account_name", where),
        "ssl_verify": _parse_bool(entry["ssl_verify"], f"{where}: ssl_verify")
        if "ssl_verify" in entry
        else True,
        "defaults": defaults,
    }


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _same_endpoint(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def load_profile(
    name: str | None = None,
    *,
    endpoint: str | None = None,
    user: str | None = None,
    password: str | Secret | None = None,
    token: str | Secret | None = None,
    ssl_verify: bool | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> ClusterProfile:
    """Build a profile: explicit arguments > ``OSCAR_*`` environment > the config file's
    cluster ``name`` (or its ``default``). With a ``name``, the environment is not consulted.

    When no name is given and the endpoint comes from an argument or the environment, the
    file's default cluster is used only if it has the same endpoint, so its credentials are
    never sent to another server.
    """
    path = Path(config_path) if config_path is not None else default_config_path()
    # A named cluster is used as written: the OSCAR_* variables (maybe meant for another
    # cluster) must not redirect its credentials or replace them. They apply without a name.
    env = (lambda _name: None) if name is not None else _env
    env_endpoint = env(ENV_ENDPOINT)
    override_endpoint = endpoint or env_endpoint
    endpoint_where = "the endpoint argument" if endpoint else f"${ENV_ENDPOINT}"

    from_file: dict[str, Any] = {}
    cluster_id = name
    data = _read_raw(path)
    if name is not None:
        if data is None:
            raise ConfigError(
                f"Cluster {name!r} was asked for, but the OSCAR config file {path} "
                "does not exist; create it with `oscar-cli cluster add`, set "
                f"{ENV_CONFIG} to the right file, or pass endpoint=... without a "
                "name"
            )
        clusters = _clusters(data)
        if name not in clusters:
            known = ", ".join(map(str, clusters)) or "none"
            raise ConfigError(
                f"Cluster {name!r} is not in {path} (known clusters: {known}); "
                "use one of those or add it with `oscar-cli cluster add`"
            )
        from_file = _profile_from_entry(name, clusters[name], path)
    elif data is not None and _clusters(data):
        default = _default_name(data)
        if default is None and override_endpoint is None:
            known = ", ".join(map(str, _clusters(data)))
            raise ConfigError(
                f"{path} has several clusters ({known}) and no 'default'; pass a "
                "cluster name or set one with `oscar-cli cluster default NAME`"
            )
        if default is not None:
            clusters = _clusters(data)
            if default not in clusters:
                raise ConfigError(
                    f"'default: {default}' in {path} names no cluster in its "
                    "'oscar' section; fix it with `oscar-cli cluster default NAME`"
                )
            candidate = _profile_from_entry(default, clusters[default], path)
            if override_endpoint is None or _same_endpoint(
                str(candidate["endpoint"][0]), override_endpoint
            ):
                from_file, cluster_id = candidate, default

    if override_endpoint is None and not from_file:
        raise ConfigError(
            f"No OSCAR cluster is configured: {path} "
            f"{'has no clusters' if data is not None else 'does not exist'} and no "
            f"endpoint was given. Set {ENV_ENDPOINT} (with {ENV_USER}/{ENV_PASSWORD} "
            f"or {ENV_TOKEN}), pass endpoint=..., add a cluster with "
            "`oscar-cli cluster add`, or start the local one with "
            "`oscar-jupyter local start`"
        )

    final_endpoint, where = (
        (override_endpoint, endpoint_where) if override_endpoint else from_file["endpoint"]
    )
    final_endpoint = _normalise_endpoint(final_endpoint, where)
    if cluster_id is None:
        cluster_id = urlsplit(final_endpoint).netloc

    env_ssl = env(ENV_SSL_VERIFY)
    if ssl_verify is not None:
        final_ssl = _parse_bool(ssl_verify, "ssl_verify")
    elif env_ssl is not None:
        final_ssl = _parse_bool(env_ssl, f"${ENV_SSL_VERIFY}")
    else:
        final_ssl = from_file.get("ssl_verify", True)

    final_user = user or env(ENV_USER) or from_file.get("user")
    final_password = (
        _as_secret(password)
        or _as_secret(env(ENV_PASSWORD))
        or _as_secret(from_file.get("password"))
    )
    final_token = _as_secret(token) or _as_secret(env(ENV_TOKEN))
    refresh = _as_secret(from_file.get("refresh_token"))
    agent = from_file.get("oidc_account_name")

    if final_password and not final_user:
        source = (
            "password=..."
            if password
            else f"${ENV_PASSWORD}"
            if env(ENV_PASSWORD)
            else f"auth_password of oscar.{cluster_id} in {path}"
        )
        raise ConfigError(
            f"A password is set ({source}) but no user; set user=..., "
            f"{ENV_USER}, or auth_user in the config file"
        )
    if final_user and not final_password and not (final_token or refresh or agent):
        raise ConfigError(
            f"User {final_user!r} has no password; set password=..., "
            f"{ENV_PASSWORD}, or auth_password in the config file (or use "
            f"{ENV_TOKEN} for an OIDC access token)"
        )

    return ClusterProfile(
        cluster_id=cluster_id,
        endpoint=final_endpoint,
        user=final_user,
        password=final_password,
        token=final_token,
        refresh_token=refresh,
        oidc_account_name=agent,
        ssl_verify=final_ssl,
        defaults=from_file.get("defaults", {}),
    )


def _set_or_drop(entry: dict[str, Any], key: str, value: Any) -> None:
    if value is None or value == "":
        entry.pop(key, None)
    else:
        entry[key] = value


def save_profile(
    profile: ClusterProfile,
    *,
    config_path: str | os.PathLike[str] | None = None,
    make_default: bool = False,
) -> Path:
    """Write the profile into oscar-cli's file (mode 0600, atomically), keeping the other
    clusters, their order and any keys we do not know. A direct access token is not saved
    (oscar-cli's format has no field for it, and it expires within minutes)."""
    path = Path(config_path) if config_path is not None else default_config_path()
    path = path.resolve() if path.is_symlink() else path
    data = _read_raw(path) or {}
    clusters = data.get("oscar")
    if not isinstance(clusters, dict):
        clusters = {}
    data["oscar"] = clusters
    entry = dict(clusters.get(profile.cluster_id) or {})
    entry["endpoint"] = profile.endpoint
    _set_or_drop(entry, "auth_user", profile.user)
    _set_or_drop(entry, "auth_password", profile.password.reveal() if profile.password else None)
    _set_or_drop(entry, "oidc_account_name", profile.oidc_account_name)
    _set_or_drop(
        entry,
        "oidc_refresh_token",
        profile.refresh_token.reveal() if profile.refresh_token else None,
    )
    entry["ssl_verify"] = profile.ssl_verify
    unknown = [k for k in profile.defaults if k not in (*_OSCAR_CLI_DEFAULT_KEYS, _JUPYTER_KEY)]
    if unknown:
        raise ConfigError(
            f"defaults keys {unknown} of cluster {profile.cluster_id!r} have no "
            f"place in oscar-cli's file; put offload defaults under "
            f"defaults['{_JUPYTER_KEY}']"
        )
    for key in _OSCAR_CLI_DEFAULT_KEYS:
        if key in profile.defaults:
            _set_or_drop(entry, key, profile.defaults[key])
    jupyter = profile.defaults.get(_JUPYTER_KEY)
    _set_or_drop(entry, _JUPYTER_KEY, dict(jupyter) if jupyter else None)
    clusters[profile.cluster_id] = entry
    if make_default or not data.get("default") or data.get("default") not in clusters:
        data["default"] = profile.cluster_id

    _write_config(path, data)
    return path


def record_site_check(
    cluster_id: str, facts: Mapping[str, Any], *, config_path: str | os.PathLike[str] | None = None
) -> Path:
    """Keep what `oscar-jupyter check` learned of a site in its profile's `jupyter:` block
    (`site_check:`), leaving everything else of the file as it was."""
    path = Path(config_path) if config_path is not None else default_config_path()
    path = path.resolve() if path.is_symlink() else path
    data = _read_raw(path) or {}
    entry = (data.get("oscar") or {}).get(cluster_id)
    if not isinstance(entry, dict):
        raise ConfigError(
            f"cluster {cluster_id!r} is not in {path}: the check's findings are kept in a "
            "cluster of oscar-cli's config (oscar-cli cluster add, or %oscar_connect NAME)"
        )
    jupyter = entry.get(_JUPYTER_KEY)
    entry[_JUPYTER_KEY] = {
        **(jupyter if isinstance(jupyter, dict) else {}),
        "site_check": dict(facts),
    }
    _write_config(path, data)
    return path


def _write_config(path: Path, data: Mapping[str, Any]) -> None:
    """oscar-cli's file, YAML or JSON as its name says, written whole and private."""
    if _is_yaml(path):
        text = yaml.safe_dump(
            dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True
        )
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _write_private(path, text)


def _write_private(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, text)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the OSCAR config file {path}: {exc.strerror}; check the "
            "folder's permissions or set OSCAR_CLI_CONFIG to another path"
        ) from None


# --- the Keycloak refresh flow (oscar-cli's, OSCAR.md 7.2) ----------------------------------


def jwt_claims(token: Secret | str | None) -> dict[str, Any] | None:
    """The payload of a JWT read without verifying it (the issuer verifies it on use; we only
    name things and plan refreshes with it), or None when `token` is no JWT."""
    if not token:
        return None
    text = token.reveal() if isinstance(token, Secret) else token
    parts = text.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _token_endpoint(refresh_token: Secret) -> tuple[str, str, str]:
    """(token endpoint URL, client_id, scope) from the refresh token's claims, Keycloak style."""
    claims = jwt_claims(refresh_token)
    if claims is None:
        raise TokenRefreshError(
            "The OIDC refresh token is not a JWT whose payload is a JSON object; "
            "copy a fresh refresh token into oidc_refresh_token"
        )
    values = {}
    for claim in ("iss", "azp", "scope"):
        value = claims.get(claim)
        if not isinstance(value, str) or not value:
            raise TokenRefreshError(
                f"The OIDC refresh token has no {claim!r} claim, so the token "
                "endpoint cannot be found; use a Keycloak refresh token or "
                f"set {ENV_TOKEN} to an access token"
            )
        values[claim] = value
    issuer = values["iss"]
    if urlsplit(issuer).scheme not in ("http", "https"):
        raise TokenRefreshError(
            f"The OIDC refresh token's issuer {issuer!r} is not an http(s) "
            "address; use a Keycloak refresh token"
        )
    return issuer.rstrip("/") + "/protocol/openid-connect/token", values["azp"], values["scope"]


def _scrub(text: str, *secrets: Secret | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret.reveal(), "***")
    return text


def refresh_access_token(
    profile: ClusterProfile,
    *,
    verify: bool | str | ssl.SSLContext = True,
    transport: httpx.BaseTransport | None = None,
) -> Secret:
    """Exchange the profile's refresh token for an access token at the issuer's Keycloak token
    endpoint (``grant_type=refresh_token``, ``client_id`` from ``azp``, ``scope`` from the
    token). ``verify`` is httpx's TLS setting for the identity provider."""
    if not profile.refresh_token:
        raise TokenRefreshError(
            f"Cluster {profile.cluster_id!r} has no refresh token; set "
            "oidc_refresh_token in the config file"
        )
    url, client_id, scope = _token_endpoint(profile.refresh_token)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": profile.refresh_token.reveal(),
        "client_id": client_id,
        "scope": scope,
    }
    try:
        with httpx.Client(verify=verify, timeout=_REFRESH_TIMEOUT, transport=transport) as http:
            response = http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise TokenRefreshError(
            f"Cannot reach the OIDC token endpoint {url} "
            f"({type(exc).__name__}); check the network and that the issuer "
            "in your refresh token is reachable"
        ) from None
    if response.status_code != 200:
        detail = _idp_error_text(response)
        hint = (
            (
                "the refresh token has expired or was revoked; log in again and store the new "
                "refresh token in oidc_refresh_token"
            )
            if response.status_code in (400, 401)
            else "check the identity provider"
        )
        raise TokenRefreshError(
            f"The OIDC token endpoint {url} answered "
            f"{response.status_code}: {_scrub(detail, profile.refresh_token)[:300]}; "
            f"{hint}"
        )
    try:
        access = response.json().get("access_token")
    except (ValueError, AttributeError):
        access = None
    if not isinstance(access, str) or not access:
        raise TokenRefreshError(
            f"The OIDC token endpoint {url} gave no access_token; check the identity provider"
        )
    return Secret(access)


def _idp_error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error" in body or "error_description" in body):
        parts = [str(body.get("error", "")), str(body.get("error_description", ""))]
        return " - ".join(p for p in parts if p)
    text = response.text.strip()
    return text if text else response.reason_phrase


def agent_access_token(profile: ClusterProfile) -> Secret:
    """An access token from oidc-agent for the profile's ``oidc_account_name``, through the
    agent's ``oidc-token`` command (valid for at least ten minutes, as oscar-cli asks)."""
    account = profile.oidc_account_name
    if not account:
        raise TokenRefreshError(f"Cluster {profile.cluster_id!r} has no oidc_account_name")
    command = shutil.which(_AGENT_COMMAND)
    if command is None:
        raise TokenRefreshError(
            f"Cluster {profile.cluster_id!r} uses oidc-agent account "
            f"{account!r}, but the `{_AGENT_COMMAND}` command is not on PATH; "
            "install and start oidc-agent, or set OSCAR_TOKEN to an access "
            "token"
        )
    try:
        done = subprocess.run(
            [command, f"--time={_AGENT_MIN_VALIDITY_SECONDS}", account],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TokenRefreshError(
            f"`{_AGENT_COMMAND} {account}` failed ({type(exc).__name__}); "
            "check that oidc-agent is running"
        ) from None
    token = done.stdout.strip()
    if done.returncode != 0 or not token or any(c.isspace() for c in token):
        why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise TokenRefreshError(
            f"`{_AGENT_COMMAND} {account}` gave no token: "
            f"{_scrub(why[0], Secret(token) if token else None)[:300]}; "
            f"check the account with `oidc-add {account}`"
        )
    return Secret(token)
