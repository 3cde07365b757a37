"""Which cluster profile each notebook's kernel is connected as, for the sidebar.

`%oscar_connect` (`Session.connect`) calls `note_connection(JPY_SESSION_NAME, profile name)`; the
Jupyter server extension reads it back (`connection_of`, `connection_info`) so that the sidebar
shows the cluster, and so the user, of the notebook in front. One small private JSON file per
notebook, written whole (temp file + rename, 0600) in a private folder next to the job records:
`<job_records.records_root()>/connections/<key>.json`, the key being 24 hex of the sha256 of the
notebook's path (its real path when absolute). A file holds the notebook's path, the profile's
name and when the kernel connected: never a credential nor an endpoint's secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .files import write_atomically
from .job_records import private_folder, records_root
from .timefmt import iso_utc, parse_iso

CONNECTIONS_DIRNAME = "connections"
# A profile name as oscar-cli writes it, or a host:port when the environment named no profile.
MAX_CLUSTER_LENGTH = 255


@dataclass(frozen=True)
class Connection:
    """A notebook's kernel connected as `cluster` (an oscar-cli profile name) at `connected_at`."""

    notebook: str
    cluster: str
    connected_at: str  # ISO UTC, milliseconds: a reconnect to the same cluster is a new value


def connections_dir(*, create: bool = False) -> Path:
    return private_folder(CONNECTIONS_DIRNAME) if create else records_root() / CONNECTIONS_DIRNAME


def _key(notebook_path: str) -> str:
    """One file per notebook: an absolute path by its real path (a symlinked root and the real
    one are the same notebook), a relative one (older servers' JPY_SESSION_NAME) as written."""
    if os.path.isabs(notebook_path):
        name = os.path.realpath(notebook_path)
    else:
        name = os.path.normpath(notebook_path).replace(os.sep, "/")
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _path(notebook_path: str, *, create: bool = False) -> Path:
    return connections_dir(create=create) / f"{_key(notebook_path)}.json"


def note_connection(notebook_path: str | None, cluster: str) -> None:
    """Record that the kernel of `notebook_path` (JPY_SESSION_NAME, often absolute) is connected
    as `cluster`. Nothing without a notebook (plain IPython, a script); a records error is a
    warning, never a failed connect."""
    if not notebook_path or not isinstance(cluster, str) or not cluster.strip():
        return
    if len(cluster) > MAX_CLUSTER_LENGTH:
        return
    data = {
        "notebook": notebook_path,
        "cluster": cluster,
        "connected_at": iso_utc(datetime.now(timezone.utc), "milliseconds"),
    }
    try:
        write_atomically(_path(notebook_path, create=True), json.dumps(data, ensure_ascii=False))
    except OSError as err:  # a full disk or a read-only home must not stop a connect
        warnings.warn(
            f"oscar-jupyter could not note this notebook's connection for the sidebar: {err}",
            RuntimeWarning,
            stacklevel=2,
        )


def connection_info(notebook_path: str | None) -> Connection | None:
    """The last connection the kernel of `notebook_path` noted; None when it noted none."""
    if not notebook_path:
        return None
    try:
        data = json.loads(_path(notebook_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none, or unreadable: the sidebar then keeps its own choice
    if not isinstance(data, dict):
        return None
    cluster, noted, at = data.get("cluster"), data.get("notebook"), data.get("connected_at")
    if not isinstance(cluster, str) or not cluster or not isinstance(noted, str):
        return None
    if _key(noted) != _key(notebook_path):  # another notebook's file (a hash collision)
        return None
    stamp = parse_iso(at) if isinstance(at, str) else None
    return Connection(notebook=noted, cluster=cluster, connected_at=iso_utc(stamp, "milliseconds"))


def connection_of(notebook_path: str | None) -> str | None:
    """The cluster (profile name) the kernel of `notebook_path` last connected as, or None."""
    found = connection_info(notebook_path)
    return found.cluster if found is not None else None


def forget_connection(notebook_path: str | None) -> None:
    """Remove what was noted for `notebook_path` (tests; a kernel that disconnects)."""
    if notebook_path:
        _path(notebook_path).unlink(missing_ok=True)
