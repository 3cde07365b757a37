"""Pod -> the interLink Slurm plugin's per-pod directory, as plugin 0.6.1 or 0.6.2 writes it
(``PluginConfig.release``; releases.py says what differs and where).

Reproduces what the plugin writes with ``SHARED_FS=true`` and ``ExportPodData: true``:
``job.slurm`` (the sbatch wrapper), ``job.sh`` (the body), one
``<container>_envfile.properties`` per container with env vars, and the volume files under
``configMaps/``, ``secrets/`` and ``emptyDirs/``. The rules (flag splitting and
deduplication, resource flags, image prefixes, quoting, bind strings with their odd spacing)
are described in the project's reference brief, INTERLINK.md sections 2.1-2.13.

Deliberate differences from the plugin: where the plugin would panic, drop mounts silently
or pick a random order, this module raises ``TranslationError`` or sorts (multi-key
ConfigMap and Secret binds are emitted in sorted key order). Not emulated: flavors,
``DefaultUID``, probes, lifecycle hooks, tsocks, enroot, the VK mesh ``mesh.sh`` heredoc.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .releases import DEFAULT_PLUGIN_RELEASE, check_release

FLAGS_ANNOTATION = "slurm-job.vk.io/flags"
PRE_EXEC_ANNOTATION = "slurm-job.vk.io/pre-exec"
MOUNTS_ANNOTATION = "slurm-job.vk.io/singularity-mounts"
OPTIONS_ANNOTATION = "slurm-job.vk.io/singularity-options"
IMAGE_ROOT_ANNOTATION = "slurm-job.vk.io/image-root"
MPI_FLAGS_ANNOTATION = "slurm-job.vk.io/mpi-flags"
POD_IP_ANNOTATION = "interlink.eu/pod-ip"
WSTUNNEL_ANNOTATION = "interlink.eu/wstunnel-client-commands"

DEFAULT_SINGULARITY_OPTIONS = ("--nv", "--no-eval", "--containall")
JOB_SCRIPT_MODE = 0o774
VOLUME_DIR_MODE = 0o755
POD_DIR_MODE = 0o700
KUBERNETES_DEFAULT_FILE_MODE = 0o644  # what the API server fills in for a missing defaultMode


class TranslationError(ValueError):
    """The pod cannot be turned into a Slurm job; the message says what to change."""


@dataclass
class PluginConfig:
    """The subset of the plugin's SlurmConfig.yaml that shapes the generated files."""

    data_root: str
    bash_path: str = "/bin/bash"
    singularity_path: str = "singularity"
    singularity_default_options: list[str] | None = None
    image_prefix: str = "docker://"
    command_prefix: str = ""
    release: str = DEFAULT_PLUGIN_RELEASE  # the plugin release whose files are written
    _options: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.data_root.endswith("/"):
            # The plugin concatenates DataRootFolder + "<ns>-<uid>" without a separator.
            raise ValueError(
                f"PluginConfig.data_root must end with '/' (got {self.data_root!r}); "
                f"use {self.data_root + '/'!r}"
            )
        if not self.bash_path:
            raise ValueError("PluginConfig.bash_path must not be empty: it is job.slurm's #! line")
        if not self.singularity_path:
            raise ValueError("PluginConfig.singularity_path must not be empty")
        check_release("plugin", self.release)
        # An empty list means "unset" to the plugin, like None.
        self._options = list(self.singularity_default_options or DEFAULT_SINGULARITY_OPTIONS)

    @property
    def singularity_options(self) -> list[str]:
        """The options placed right after ``exec``/``run``."""
        return list(self._options)


# --------------------------------------------------------------------------- quoting


_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")


def shell_quote(value: str) -> str:
    """Quote one word the way ``shellescape.Quote`` does (INTERLINK.md 2.8).

    Empty -> ``''``; only ``[A-Za-z0-9_@%+=:,./-]`` (ASCII) -> verbatim; anything else ->
    single-quoted, each ``'`` written as ``'"'"'``.
    """
    if value == "":
        return "''"
    if _SHELL_SAFE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


# --------------------------------------------------------------------------- sbatch flags

# Go's unicode.IsSpace, which the plugin's word splitter and TrimSpace use. It differs from
# Python's str.isspace (which also treats \x1c-\x1f as space).
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_FLAG_ALIASES = {
    "-A": "--account",
    "-C": "--constraint",
    "-D": "--chdir",
    "-G": "--gpus",
    "-J": "--job-name",
    "-N": "--nodes",
    "-c": "--cpus-per-task",
    "-n": "--ntasks",
    "-o": "--output",
    "-p": "--partition",
    "-t": "--time",
    "-w": "--nodelist",
}


def _go_trim_space(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in _GO_SPACE:
        start += 1
    while end > start and text[end - 1] in _GO_SPACE:
        end -= 1
    return text[start:end]


def _shell_words(text: str) -> list[str]:
    """Shell-style split with quotes removed; a backslash escapes outside single quotes."""
    words: list[str] = []
    current: list[str] = []
    started = in_single = in_double = escaping = False
    for char in text:
        if escaping:
            current.append(char)
            escaping = False
        elif char == "\\" and not in_single:
            escaping = True
            started = True
        elif char == "'" and not in_double:
            in_single = not in_single
            started = True
        elif char == '"' and not in_single:
            in_double = not in_double
            started = True
        elif char in _GO_SPACE and not in_single and not in_double:
            if started:
                words.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if escaping:
        current.append("\\")
    if started:
        words.append("".join(current))
    return words


def split_slurm_flags(text: str) -> list[str]:
    """Split the flags annotation: shell words, each value word joined to the flag before it.

    ``"--job-name=a -p debug"`` -> ``["--job-name=a", "-p debug"]``. Quotes are removed,
    as the plugin does, so ``--comment="a b"`` becomes ``--comment=a b``.
    """
    words = _shell_words(text)
    flags: list[str] = []
    index = 0
    while index < len(words):
        word = _go_trim_space(words[index])
        index += 1
        if not word:
            continue
        if not word.startswith("-"):
            flags.append(word)
            continue
        parts = [word]
        while index < len(words) and not words[index].startswith("-"):
            parts.append(words[index])
            index += 1
        flags.append(" ".join(parts))
    return flags


def flag_key(flag: str) -> str:
    """The dedup key of one flag: its name before ``=``, short aliases spelled long."""
    words = _shell_words(_go_trim_space(flag))
    if not words:
        return ""
    key = words[0].split("=", 1)[0]
    return _FLAG_ALIASES.get(key, key)


def deduplicate_flags(flags: Iterable[str]) -> list[str]:
    """Keep one flag per key: the last value, at the position where the key first appeared."""
    latest: dict[str, str] = {}
    for raw in flags:
        flag = _go_trim_space(raw)
        key = flag_key(flag) if flag else ""
        if key:
            latest[key] = flag  # dict keeps the first insertion position
    return list(latest.values())


# Plugin 0.6.1 (`pkg/slurm/prepare.go` 929-959 at the 0.6.1 tag): two regexes run over the raw
# annotation. When a container has the matching limit their matches are cut out of the text,
# else a match only records that the annotation sets the value. So `--mem-bind=local` loses its
# `--mem` and becomes `-bind=local`. Go's RE2 `\S` is ASCII: anything but [\t\n\f\r ].
_CPU_FLAG_0_6_1 = re.compile(r"--cpus-per-task(?:[ =][^\t\n\f\r ]+)?")
_MEM_FLAG_0_6_1 = re.compile(r"--mem(?:[ =][^\t\n\f\r ]+)?")


def _go_fields(text: str) -> list[str]:
    """Go's ``strings.Fields``: the runs of non-space characters (``unicode.IsSpace``)."""
    words: list[str] = []
    current: list[str] = []
    for char in text:
        if char in _GO_SPACE:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def split_slurm_flags_0_6_1(text: str) -> list[str]:
    """Plugin 0.6.1's split of the flags annotation: ``strings.Split(text, " ")``
    (``prepare.go`` 957). Single spaces only and quotes kept, so ``"-p debug"`` gives
    ``["-p", "debug"]`` (two ``#SBATCH`` lines) and ``'--comment="a b"'`` gives
    ``['--comment="a', 'b"']``; the empty words of double spaces stay (dedup drops them)."""
    return text.split(" ")


def flag_key_0_6_1(flag: str) -> str:
    """Plugin 0.6.1's dedup key (``prepare.go`` 266-281): the text before ``=``; else, for a
    ``--`` flag, its first word; else the whole flag. No short aliases: ``-p`` and
    ``--partition`` are different keys, and so are ``-p`` and the lone value ``debug``."""
    if "=" in flag:
        return flag.split("=", 1)[0]
    if flag.startswith("--"):
        words = _go_fields(flag)
        if words:
            return words[0]
    return flag


def deduplicate_flags_0_6_1(flags: Iterable[str]) -> list[str]:
    """Plugin 0.6.1's ``deduplicateSlurmFlags`` (``prepare.go`` 259-299): one flag per
    ``flag_key_0_6_1``, the last value at the first position; empty flags dropped."""
    latest: dict[str, str] = {}
    for raw in flags:
        flag = _go_trim_space(raw)
        if flag:
            latest[flag_key_0_6_1(flag)] = flag
    return list(latest.values())


def _annotation_flags_0_6_1(
    text: str, cpus: int | None, memory_mib: int | None
) -> tuple[list[str], bool, bool]:
    """(flags, cpus set by the annotation, memory set by the annotation), plugin 0.6.1."""
    cpus_from_annotation = memory_from_annotation = False
    if cpus is not None:
        text = _CPU_FLAG_0_6_1.sub("", text)
    elif _CPU_FLAG_0_6_1.search(text):
        cpus_from_annotation = True
    if memory_mib is not None:
        text = _MEM_FLAG_0_6_1.sub("", text)
    elif _MEM_FLAG_0_6_1.search(text):
        memory_from_annotation = True
    return split_slurm_flags_0_6_1(text), cpus_from_annotation, memory_from_annotation


def _annotation_flags_0_6_2(
    text: str, cpus: int | None, memory_mib: int | None
) -> tuple[list[str], bool, bool]:
    """The same for plugin 0.6.2 (``prepare.go`` 1071-1090 at 0.6.2-pre5): shell words,
    the cpu/memory flags recognised by their key (short aliases too)."""
    flags: list[str] = []
    cpus_from_annotation = memory_from_annotation = False
    for flag in split_slurm_flags(text):
        key = flag_key(flag)
        if key == "--cpus-per-task":
            if cpus is not None:
                continue
            cpus_from_annotation = True
        elif key == "--mem":
            if memory_mib is not None:
                continue
            memory_from_annotation = True
        flags.append(flag)
    return flags, cpus_from_annotation, memory_from_annotation


# --------------------------------------------------------------------------- resources

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>[eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: Any, *, what: str) -> Decimal:
    """Parse a Kubernetes quantity (``"0.2"``, ``"500m"``, ``"4Gi"``, ``"1e9"``) exactly."""
    match = _QUANTITY.fullmatch(str(text).strip()) if isinstance(text, (str, int)) else None
    if match is None:
        raise TranslationError(
            f"{what}: {text!r} is not a Kubernetes quantity; write e.g. '2', '500m', '4Gi'"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation as error:  # pragma: no cover - the regex admits only numbers
        raise TranslationError(f"{what}: {text!r} is not a number") from error
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        return number.scaleb(int(suffix[1:]))
    return number


def _all_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _resource_limits(pod: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(cpus, memory MiB) from the containers' limits, ``None`` where no container has one.

    Follows the plugin's loop literally (INTERLINK.md 2.5): init containers count, requests
    do not, the max wins, and a container without a limit seen before any limit seeds the
    value with 1 CPU / 1 MiB.
    """
    cpu_value = memory_value = 0
    cpu_default = memory_default = True
    for container in _all_containers(pod):
        name = container.get("name", "?")
        limits = (container.get("resources") or {}).get("limits") or {}
        cpu = limits.get("cpu")
        memory = limits.get("memory")
        cpu_decimal = parse_quantity(cpu, what=f"container {name} limits.cpu") if cpu else 0
        memory_decimal = (
            parse_quantity(memory, what=f"container {name} limits.memory") if memory else 0
        )
        if cpu_decimal < 0 or memory_decimal < 0:
            raise TranslationError(f"container {name}: resource limits must not be negative")
        cpu_count = math.ceil(float(cpu_decimal))
        # Quantity.AsInt64 fails for a fractional byte count; the plugin then sees 0.
        memory_bytes = int(memory_decimal) if memory_decimal == int(memory_decimal) else 0
        if cpu_count == 0:
            if cpu_default:
                cpu_value = 1
        else:
            cpu_value = max(cpu_value, cpu_count)
            cpu_default = False
        if memory_bytes == 0:
            if memory_default:
                memory_value = 1024 * 1024
        else:
            memory_value = max(memory_value, memory_bytes)
            memory_default = False
    return (
        None if cpu_default else cpu_value,
        None if memory_default else memory_value // 1024 // 1024,
    )


def _annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def sbatch_flags(pod: Mapping[str, Any], release: str = DEFAULT_PLUGIN_RELEASE) -> list[str]:
    """The ``#SBATCH`` flags after the two fixed ones, in the plugin's order.

    Annotation flags first (``--cpus-per-task`` and ``--mem`` dropped when a container has the
    matching limit, recognised as ``release`` does), then ``--uid`` from
    ``securityContext.runAsUser``, then ``--cpus-per-task`` and ``--mem`` (MiB), then
    deduplication (``release``'s keys).
    """
    check_release("plugin", release)
    cpus, memory_mib = _resource_limits(pod)
    flags: list[str] = []
    cpus_from_annotation = memory_from_annotation = False
    annotation = _annotations(pod).get(FLAGS_ANNOTATION)
    if annotation is not None:
        parse = _annotation_flags_0_6_1 if release == "0.6.1" else _annotation_flags_0_6_2
        flags, cpus_from_annotation, memory_from_annotation = parse(annotation, cpus, memory_mib)
    run_as_user = ((pod.get("spec") or {}).get("securityContext") or {}).get("runAsUser")
    if isinstance(run_as_user, int) and run_as_user >= 0:
        flags.append(f"--uid={run_as_user}")
    if cpus is not None:
        flags.append(f"--cpus-per-task={cpus}")
    elif not cpus_from_annotation:
        flags.append("--cpus-per-task=1")
    if memory_mib is not None:
        flags.append(f"--mem={memory_mib}")
    elif not memory_from_annotation:
        flags.append("--mem=1")
    if release == "0.6.1":
        return deduplicate_flags_0_6_1(flags)
    return deduplicate_flags(flags)


# --------------------------------------------------------------------------- image


_URI_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+\-.]*://")


def image_reference(
    image: str, pod_annotations: Mapping[str, str] | None, config: PluginConfig
) -> str:
    """The image as singularity gets it: the plugin's ``prepareImage``.

    An absolute path is kept; otherwise the ``slurm-job.vk.io/image-root`` annotation, or else
    ``config.image_prefix`` (``ImagePrefix``), is put in front:

    * plugin 0.6.1 (``pkg/slurm/prepare.go`` 1838-1860): unless the image already starts with
      it. So a site prefix such as ``/cvmfs/unpacked.cern.ch/`` turns ``docker://python`` into
      ``/cvmfs/unpacked.cern.ch/docker://python``, and ``docker://`` turns ``oras://x`` into
      ``docker://oras://x``.
    * plugin 0.6.2 (``prepare.go`` 1973-2000 at 0.6.2-pre5, commit c380bba): unless the image
      has any ``scheme://``; an empty prefix leaves the image as it is.
    """
    if not image:
        raise TranslationError("a container has no image; set spec.containers[].image")
    annotations = pod_annotations or {}
    prefix = annotations.get(IMAGE_ROOT_ANNOTATION, config.image_prefix)
    if image.startswith("/"):
        return image
    if config.release == "0.6.1":
        return image if image.startswith(prefix) else prefix + image
    if _URI_SCHEME.match(image) or not prefix:
        return image
    return prefix + image


# --------------------------------------------------------------------------- validation

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_POD_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pod_identity(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = pod.get("metadata") or {}
    name = str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    uid = str(metadata.get("uid") or "")
    if not _DNS_SUBDOMAIN.fullmatch(name):
        raise TranslationError(
            f"metadata.name {name!r} is not a DNS-1123 name (lowercase letters, digits, '-', '.')"
        )
    if not _DNS_LABEL.fullmatch(namespace):
        raise TranslationError(
            f"metadata.namespace {namespace!r} is not a DNS-1123 label (lowercase letters, "
            "digits, '-')"
        )
    if not _POD_UID.fullmatch(uid):
        raise TranslationError(
            f"metadata.uid {uid!r} must be a UUID-like string (letters, digits, '-'); "
            "it names the job directory"
        )
    if not (pod.get("spec") or {}).get("containers"):
        raise TranslationError(f"pod {name}: spec.containers is empty; add a container")
    for container in _all_containers(pod):
        container_name = str(container.get("name") or "")
        if not _DNS_LABEL.fullmatch(container_name):
            raise TranslationError(
                f"pod {name}: container name {container_name!r} is not a DNS-1123 label"
            )
    return name, namespace, uid


def files_path(pod: Mapping[str, Any], config: PluginConfig) -> str:
    """``<data_root><namespace>-<uid>``: plain concatenation, as the plugin does."""
    _, namespace, uid = _pod_identity(pod)
    return f"{config.data_root}{namespace}-{uid}"


# --------------------------------------------------------------------------- volumes


@dataclass
class _VolumeFiles:
    directory: str  # removed and recreated, like the plugin does
    files: dict[str, bytes]
    mode: int


@dataclass
class _MountPlan:
    binds: str = ""
    volume_files: list[_VolumeFiles] = field(default_factory=list)
    empty_dirs: list[str] = field(default_factory=list)
    host_dirs_to_create: list[str] = field(default_factory=list)
    host_dirs_required: list[str] = field(default_factory=list)


def _join(*parts: str) -> str:
    """Go's filepath.Join: join, then clean."""
    return posixpath.normpath(posixpath.join(*parts))


def _file_mode(source: Mapping[str, Any]) -> int:
    mode = source.get("defaultMode")
    if mode is None:
        return KUBERNETES_DEFAULT_FILE_MODE
    if not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise TranslationError(f"defaultMode {mode!r} must be an integer between 0 and 0777")
    return mode


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _configmap_bytes(text: str, release: str) -> bytes:
    """A ConfigMap value as the plugin writes it. Plugin 0.6.2 (``normalizeVolumeFileContent``,
    ``prepare.go`` 515-520 and 1806 at 0.6.2-pre5) turns literal ``\\n`` into newlines when the
    text has no real newline; 0.6.1 writes the text as it is (``prepare.go`` 1671)."""
    if release != "0.6.1" and "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    return text.encode("utf-8")


def _keyed_binds(
    plan: _MountPlan,
    kind: str,
    mount: Mapping[str, Any],
    root: str,
    data: Mapping[str, bytes],
    mode: int,
) -> None:
    directory = _join(root, kind, mount["name"])
    access = ":ro" if mount.get("readOnly") else ":rw"
    for key in sorted(data):
        if not _DATA_KEY.fullmatch(key) or key in (".", ".."):
            raise TranslationError(
                f"{kind} key {key!r} of volume {mount['name']!r} is not a valid file name "
                "(letters, digits, '-', '_', '.')"
            )
        # Plugin bug kept: with subPath every key is bound onto the mountPath itself.
        target = mount["mountPath"] if mount.get("subPath") else _join(mount["mountPath"], key)
        plan.binds += f" --bind {_join(directory, key)}:{target}{access} "
    plan.volume_files.append(_VolumeFiles(directory, dict(data), mode))


def _mount_plan(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    root: str,
    configmaps: Mapping[str, Mapping[str, str]] | None,
    secrets: Mapping[str, Mapping[str, str | bytes]] | None,
    release: str = DEFAULT_PLUGIN_RELEASE,
) -> _MountPlan:
    pod_name = (pod.get("metadata") or {}).get("name")
    container_name = container.get("name")
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    plan = _MountPlan()
    for mount in container.get("volumeMounts") or []:
        mount_name = mount.get("name")
        where = f"pod {pod_name}, container {container_name}, volumeMount {mount_name!r}"
        if not mount.get("mountPath"):
            raise TranslationError(f"{where}: mountPath is empty; set an absolute path")
        volume = volumes.get(mount_name)
        if volume is None:
            raise TranslationError(f"{where}: no volume of that name in spec.volumes; add one")
        if "configMap" in volume:
            name = (volume["configMap"] or {}).get("name")
            if configmaps is None or not isinstance(name, str) or name not in configmaps:
                raise TranslationError(
                    f"{where}: ConfigMap {name!r} was not provided; pass its data in "
                    f"configmaps={{{name!r}: {{key: text}}}}"
                )
            data = {key: _configmap_bytes(text, release) for key, text in configmaps[name].items()}
            _keyed_binds(plan, "configMaps", mount, root, data, _file_mode(volume["configMap"]))
        elif "secret" in volume:
            name = (volume["secret"] or {}).get("secretName")
            if secrets is None or not isinstance(name, str) or name not in secrets:
                raise TranslationError(
                    f"{where}: Secret {name!r} was not provided; pass its data in "
                    f"secrets={{{name!r}: {{key: bytes}}}}"
                )
            data = {key: _as_bytes(value) for key, value in secrets[name].items()}
            _keyed_binds(plan, "secrets", mount, root, data, _file_mode(volume["secret"]))
        elif "emptyDir" in volume:
            directory = _join(root, "emptyDirs", volume["name"])
            access = ":ro" if mount.get("readOnly") else ":rw"
            plan.binds += f" --bind {directory}:{mount['mountPath']}{access}  "
            plan.empty_dirs.append(directory)
        elif "hostPath" in volume:
            host = (volume["hostPath"] or {}).get("path") or ""
            kind = (volume["hostPath"] or {}).get("type")
            if not host:
                raise TranslationError(f"{where}: hostPath.path is empty")
            if kind == "Directory":
                plan.host_dirs_required.append(host)
            elif kind == "DirectoryOrCreate":
                plan.host_dirs_to_create.append(host)
            else:
                raise TranslationError(
                    f"{where}: hostPath type {kind!r} is not supported by the Slurm plugin; "
                    "use 'Directory' or 'DirectoryOrCreate'"
                )
            plan.binds += f" --bind {host}:{mount['mountPath']}"
            if mount.get("readOnly"):
                plan.binds += ":ro"
        else:
            kinds = sorted(set(volume) - {"name"}) or ["(none)"]
            raise TranslationError(
                f"{where}: volume type {', '.join(kinds)} is not supported by the Slurm "
                "plugin (it would silently drop all of this container's mounts); use "
                "configMap, secret, emptyDir or hostPath"
            )
    return plan


# --------------------------------------------------------------------------- scripts


def _env_lines(container: Mapping[str, Any]) -> list[str]:
    lines = []
    for entry in container.get("env") or []:
        name = entry.get("name") or ""
        if not _ENV_NAME.fullmatch(name):
            raise TranslationError(
                f"container {container.get('name')}: env name {name!r} cannot be a shell "
                "variable; use letters, digits and '_' (not starting with a digit)"
            )
        if "value" not in entry and entry.get("valueFrom"):
            raise TranslationError(
                f"container {container.get('name')}: env {name} uses valueFrom; the virtual "
                "kubelet resolves it before the plugin, so put the resolved value in 'value'"
            )
        value = entry.get("value")
        lines.append(f"{name}={shell_quote('' if value is None else str(value))}\n")
    return lines


def _envfile_path(
    pod: Mapping[str, Any], container: Mapping[str, Any], config: PluginConfig
) -> str:
    return f"{files_path(pod, config)}/{container['name']}_envfile.properties"


# --------------------------------------------------------------------------- mpi-flags

# Whether the plugin's mpi-flags wrapping reaches job.sh: on no modelled release (see below).
MPI_FLAGS_APPLIED = False


def mpi_command(annotations: Mapping[str, str]) -> list[str]:
    """The words ``slurm-job.vk.io/mpi-flags`` is meant to put before each container's runtime
    command: ``mpiexec -np $SLURM_NTASKS`` and the value split on single spaces (an empty value
    gives one empty word, a double space an empty word between); none without the annotation
    or for the value ``true``, which the plugin special-cases as "no mpiexec". Plugin
    ``pkg/slurm/prepare.go`` lines 961-966 at 0.6.1, 1093-1100 at 0.6.2-pre5.

    Neither release applies it: the plugin assigns the wrapped command to the ``range`` loop's
    copy of each ``ContainerCommand`` (a struct value, not a pointer), so job.sh is the same
    with or without the annotation (INTERLINK.md section 2, "No effect in any version").
    ``MPI_FLAGS_APPLIED`` says so; ``_container_line`` uses these words only when it is True.
    """
    value = annotations.get(MPI_FLAGS_ANNOTATION)
    if value is None or value == "true":
        return []
    return ["mpiexec", "-np", "$SLURM_NTASKS", *value.split(" ")]


def _container_line(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    is_init: bool,
    config: PluginConfig,
    binds: str,
) -> str:
    annotations = _annotations(pod)
    command = list(container.get("command") or [])
    runtime = [
        *(mpi_command(annotations) if MPI_FLAGS_APPLIED else []),
        config.singularity_path,
        "exec" if command else "run",
        *config.singularity_options,
        annotations.get(MOUNTS_ANNOTATION, ""),
        annotations.get(OPTIONS_ANNOTATION, ""),
    ]
    if container.get("env"):
        runtime += ["--env-file", _envfile_path(pod, container, config)]
    runtime += [binds, image_reference(container.get("image") or "", annotations, config)]
    words = [shell_quote(str(item)) for item in command + list(container.get("args") or [])]
    launcher = "runInitCtn" if is_init else "runCtn"
    return (
        f"{launcher} {container['name']} "
        + " ".join(runtime)
        + "".join(" " + word for word in words)
    )


def render_job_slurm(pod: Mapping[str, Any], config: PluginConfig) -> str:
    """The text of ``job.slurm``, the sbatch wrapper (INTERLINK.md 2.5)."""
    _, _, uid = _pod_identity(pod)
    path = files_path(pod, config)
    annotations = _annotations(pod)
    prefix = ""
    if POD_IP_ANNOTATION in annotations:
        prefix += f"\nexport POD_IP={annotations[POD_IP_ANNOTATION]}\n"
    if config.command_prefix:
        prefix += "\n" + config.command_prefix
    if WSTUNNEL_ANNOTATION in annotations:
        prefix += "\n" + annotations[WSTUNNEL_ANNOTATION] + "\n"
    if PRE_EXEC_ANNOTATION in annotations:
        prefix += "\n" + annotations[PRE_EXEC_ANNOTATION]
    flags = "".join(f"\n#SBATCH {flag}" for flag in sbatch_flags(pod, config.release) if flag)
    # B1 (reference OSCAR.md section 13). Plugin 0.6.1 (`pkg/slurm/prepare.go` 1102-1108 at
    # the 0.6.1 tag; the same in 0.4.0-0.6.0) writes `prefix + " " + job.sh`: job.sh's path
    # lands on the prefix's last line, so a pre-exec `module load x` becomes
    # `module load x <dir>/job.sh` and job.sh never runs; without a prefix the line is
    # " <dir>/job.sh". Plugin 0.6.2 (`prepare.go` 1234-1247 at 0.6.2-pre5; commit f83c10a,
    # first in that tag) writes `prefix + "\n" + job.sh`. A pre-exec ending in a newline is
    # safe on both.
    separator = " " if config.release == "0.6.1" else "\n"
    return (
        f"#!{config.bash_path}\n#SBATCH --job-name={uid}\n#SBATCH --output={path}/job.out"
        f"{flags}\n{prefix}{separator}{path}/job.sh\n"
    )


# Our own bash helpers with the plugin's observable behaviour (INTERLINK.md 2.6): init
# containers run in turn and stop the job on failure; the others run in the background;
# every container leaves <init|run>-<name>.out and .status in $workingPath; the job exits
# with the highest status. The block ends like the plugin's: "highestExitCode=0", a blank
# line and a line holding one TAB.
JOB_SH_FUNCTIONS = """

####
# Functions
####

# Shared filesystems can show a file late: look for it up to 60 times, 2 s apart.
waitFileExist() {
  target="$1"
  attempt=1
  while [ "${attempt}" -le 60 ]; do
    if [ -e "${target}" ]; then
      printf '%s\\n' "$(date -Is --utc) ${target} is present (attempt ${attempt})"
      return 0
    fi
    printf '%s\\n' "$(date -Is --utc) ${target} not there yet (attempt ${attempt}/60)"
    attempt=$((attempt + 1))
    sleep 2
  done
}

# runInitCtn NAME CMD...: run to completion; a failure ends the whole job with its code.
runInitCtn() {
  ctn="$1"
  shift
  printf '%s\\n' "$(date -Is --utc) starting init container ${ctn}"
  time ( "$@" ) &> "${workingPath}/init-${ctn}.out"
  exitCode="$?"
  printf '%s\\n' "${exitCode}" > "${workingPath}/init-${ctn}.status"
  waitFileExist "${workingPath}/init-${ctn}.status"
  if [ "${exitCode}" != 0 ]; then
    printf '%s\\n' "$(date -Is --utc) init container ${ctn} exited with ${exitCode}" >&2
    exit "${exitCode}"
  fi
}

# runCtn NAME CMD...: start in the background (bash: the time keyword and the subshell).
runCtn() {
  ctn="$1"
  shift
  time ( "$@" ) >> "${workingPath}/run-${ctn}.out" 2>&1 &
  pid="$!"
  printf '%s\\n' "$(date -Is --utc) container ${ctn} runs as pid ${pid}"
  pidCtns="${pidCtns} ${pid}:${ctn}"
}

# Container names are DNS labels, so ':' separates pid and name safely.
waitCtns() {
  for entry in ${pidCtns}; do
    pid="${entry%%:*}"
    ctn="${entry#*:}"
    wait "${pid}"
    exitCode="$?"
    printf '%s\\n' "${exitCode}" > "${workingPath}/run-${ctn}.status"
    printf '%s\\n' "$(date -Is --utc) container ${ctn} (pid ${pid}) exited with ${exitCode}"
    waitFileExist "${workingPath}/run-${ctn}.status"
  done
  for statusFile in "${workingPath}"/*.status; do
    [ -e "${statusFile}" ] || continue
    exitCode="$(cat "${statusFile}")"
    if [ "${highestExitCode}" -lt "${exitCode}" ] 2>/dev/null; then
      highestExitCode="${exitCode}"
    fi
  done
}

endScript() {
  printf '%s\\n' "$(date -Is --utc) all containers ended, highest exit code ${highestExitCode}"
  exit "${highestExitCode}"
}

####
# Main
####

highestExitCode=0

\t"""


# How runCtn sends a container's output to run-<ctr>.out, per plugin release: 0.6.1 truncates
# it and writes at its own offset (`&>`, `pkg/slurm/prepare.go` 1166 at the 0.6.1 tag), 0.6.2
# appends (`>> ... 2>&1`, `prepare.go` 1304 at 0.6.2-pre5). What else writes to the file (the
# runner's tagger through /proc/<supervisor>/fd/1) must not write over the shell's offset.
_RUN_REDIRECT_0_6_2 = '>> "${workingPath}/run-${ctn}.out" 2>&1 &'
RUN_REDIRECT = {"0.6.1": '&> "${workingPath}/run-${ctn}.out" &', "0.6.2": _RUN_REDIRECT_0_6_2}


def job_sh_functions(release: str = DEFAULT_PLUGIN_RELEASE) -> str:
    """The helper block of job.sh as plugin `release` writes it (JOB_SH_FUNCTIONS is 0.6.2's)."""
    check_release("plugin", release)
    return JOB_SH_FUNCTIONS.replace(_RUN_REDIRECT_0_6_2, RUN_REDIRECT[release], 1)


def render_job_sh(
    pod: Mapping[str, Any],
    config: PluginConfig,
    *,
    configmaps: Mapping[str, Mapping[str, str]] | None = None,
    secrets: Mapping[str, Mapping[str, str | bytes]] | None = None,
) -> str:
    """The text of ``job.sh`` (INTERLINK.md 2.6).

    ``configmaps``/``secrets`` (keyed by the names the pod's volumes reference) are needed
    only to list one bind per key when the pod mounts such volumes.
    """
    name, _, uid = _pod_identity(pod)
    path = files_path(pod, config)
    text = job_sh_functions(config.release)
    text += f"\nprintf '%s\n' \"This pod {name}/{uid} has been submitted to SLURM node "
    text += '${SLURMD_NODENAME}."'
    text += "\nprintf '%s\n' \"To get more info, please run: scontrol show job ${SLURM_JOBID}.\""
    text += f"\nexport workingPath={path}\n\nexport SANDBOX={path}\n"
    init_count = len((pod.get("spec") or {}).get("initContainers") or [])
    for index, container in enumerate(_all_containers(pod)):
        plan = _mount_plan(pod, container, path, configmaps, secrets, config.release)
        text += "\n" + _container_line(pod, container, index < init_count, config, plan.binds)
    return text + "\n\nwaitCtns\nendScript\n\n"


# --------------------------------------------------------------------------- writing


def _write(path: str, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _check_host_dirs(plan: _MountPlan) -> None:
    for required in plan.host_dirs_required:
        if not os.path.isdir(required):
            raise TranslationError(
                f"hostPath directory {required} does not exist; create it or use "
                "type DirectoryOrCreate"
            )


def _materialise(plan: _MountPlan) -> None:
    for directory in plan.host_dirs_to_create:
        os.makedirs(directory, exist_ok=True)
    for volume in plan.volume_files:
        shutil.rmtree(volume.directory, ignore_errors=True)
        os.makedirs(volume.directory, mode=VOLUME_DIR_MODE, exist_ok=True)
        for key, data in volume.files.items():
            _write(_join(volume.directory, key), data, volume.mode)
    for directory in plan.empty_dirs:
        os.makedirs(directory, mode=VOLUME_DIR_MODE, exist_ok=True)


def prepare(
    pod: Mapping[str, Any],
    *,
    configmaps: Mapping[str, Mapping[str, str]],
    config: PluginConfig,
    secrets: Mapping[str, Mapping[str, str | bytes]] | None = None,
) -> Path:
    """Write the plugin's per-pod directory for ``pod`` and return it.

    ``<data_root><ns>-<uid>/`` gets ``job.slurm`` and ``job.sh`` (mode 0774), one
    ``<ctr>_envfile.properties`` per container with env vars, ``configMaps/<mount>/<key>``,
    ``secrets/<mount>/<key>`` and ``emptyDirs/<volume>/``. Everything is checked before the
    first file is written, so a ``TranslationError`` leaves no directory behind.
    """
    path = files_path(pod, config)
    job_slurm = render_job_slurm(pod, config)
    job_sh = render_job_sh(pod, config, configmaps=configmaps, secrets=secrets)
    containers = _all_containers(pod)
    plans = [_mount_plan(pod, c, path, configmaps, secrets, config.release) for c in containers]
    env_files = {c["name"]: "".join(_env_lines(c)) for c in containers if c.get("env")}
    for plan in plans:
        _check_host_dirs(plan)
    # Private to the job's user, unlike the plugin's 0755/0666 (interlink-slurm-plugin
    # pkg/slurm/prepare.go): the env files and the service's config hold its token and values.
    os.makedirs(path, mode=POD_DIR_MODE, exist_ok=True)
    os.chmod(path, POD_DIR_MODE)
    try:
        for plan in plans:
            _materialise(plan)
        for container_name, text in env_files.items():
            _write(f"{path}/{container_name}_envfile.properties", text.encode("utf-8"), 0o600)
        for file_name, text in (("job.slurm", job_slurm), ("job.sh", job_sh)):
            _write(f"{path}/{file_name}", text.encode("utf-8"), JOB_SCRIPT_MODE)
            os.chmod(f"{path}/{file_name}", JOB_SCRIPT_MODE)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # the plugin removes filesPath on failure
        raise
    return Path(path)
