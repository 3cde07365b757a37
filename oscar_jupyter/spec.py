"""A validated resource request -> the runner service (JSON and FDL) and the job body.

Decisions (see also docs/ARCHITECTURE.md):

* ``--time`` takes Slurm's forms (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) and must be more
  than zero. ``UNLIMITED``/``INFINITE``/``0`` are refused: omit ``--time`` to get the partition's
  default. The flag sent to Slurm is the canonical ``[D-]HH:MM:SS`` form.
* ``--mem``: a number without unit is MiB (as ``sbatch --mem``); ``K``/``M``/``G``/``T`` (any
  case) are binary units as in Slurm, so ``32G`` means 32 GiB; Kubernetes ``Ki``/``Mi``/``Gi``/
  ``Ti`` are accepted too, and ``B`` means bytes. Kubernetes' decimal ``k``/``M``/``G`` are NOT
  honoured as decimal: a Slurm user's ``32G`` must not shrink by 7 %. The service gets the value
  rounded up to whole MiB (the Slurm plugin turns it into ``--mem=<MiB>``); without ``--mem`` it
  gets ``1024Mi`` (the plugin would otherwise ask Slurm for 1 MB and OSCAR's default is 256Mi).
* The FDL names the script as a file beside it (oscar-cli reads ``script:`` as a path relative to
  the FDL file): ``fdl_files()`` gives that file (name -> content).
* ``--env`` values go into the service's environment (so interpreter-start variables such as
  ``PYTHONPATH`` work) and into the job's program, which sets them again byte for byte before the
  cell runs (old Slurm plugins mangle env values with commas or quotes).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from . import runner

DEFAULT_IMAGE = "docker://python:3.12-slim"
DEFAULT_MEMORY = "1024Mi"
SERVICE_NAME_MAX = 24
RUNNER_LABEL = "oscar-jupyter/runner"

MiB = 1024 * 1024
_UNITS = {"": MiB, "b": 1, "k": 1024, "ki": 1024, "m": MiB, "mi": MiB,
          "g": 1024 * MiB, "gi": 1024 * MiB, "t": 1024**2 * MiB, "ti": 1024**2 * MiB}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-zA-Z]{0,2})$")
_TIME_HINT = ("use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. --time 02:30:00")
_MEMORY_HINT = ("use a number of MiB or a unit K, M, G, T (binary, as sbatch --mem) or Ki, Mi, "
                "Gi, Ti, e.g. --mem 32G")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_NODE = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*$")
_PREFIX = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLURM_WORD = re.compile(r"^[A-Za-z0-9._:+-]+$")
_SLURM_LIST = re.compile(r"^[A-Za-z0-9._+-]+(?:,[A-Za-z0-9._+-]+)*$")
_MOUNT_PATH = re.compile(r"^/[A-Za-z0-9._/@%+=-]*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_UNSAFE_IN_FLAGS = re.compile(r"[\s'\"\\$`;|&<>()]")

# Variables OSCAR, the supervisor or the runner set themselves; a user value would break the job.
RESERVED_ENV = frozenset({
    "EVENT", "INPUT_FILE_PATH", "TMP_INPUT_DIR", "TMP_OUTPUT_DIR", "JOB_UUID", "RESOURCE_ID",
    "SCRIPT", "FUNCTION_CONFIG", "PYTHONUNBUFFERED", "LD_LIBRARY_PATH", "LD_LIBRARY_PATH_ORIG",
})
_RESERVED_ENV_PREFIXES = ("OSCAR_",)

# sbatch options the Slurm plugin sets itself, drops, or chokes on: option -> what to do instead.
_FORBIDDEN_SBATCH = {
    "--output": "the plugin writes the job's output to job.out, which is where the logs come "
                "from; remove it",
    "--error": "stderr must stay in job.out with the logs; remove it",
    "--parsable": "it makes the plugin's sbatch call fail; remove it",
    "--cpus-per-task": "use --cpus-per-task / --mem of the magic: the plugin overrides these",
    "--mem": "use --cpus-per-task / --mem of the magic: the plugin overrides these",
    "--mem-per-cpu": "it conflicts with the --mem the plugin always adds; use --mem of the magic",
    "--mem-per-gpu": "it conflicts with the --mem the plugin always adds; use --mem of the magic",
    "--wrap": "the plugin submits its own batch script; put the code in the cell instead",
}
_SHORT_SBATCH = {"o": "--output", "e": "--error", "c": "--cpus-per-task"}


class SpecError(ValueError):
    """A bad resource request: ``flag`` is the magic's option to change, the message says how."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag

    def _render_traceback_(self) -> list[str]:
        # In a notebook the message is the whole story; the magic's internals are noise.
        return [f"SpecError: {self}"]


def _flag_error(flag: str, value: object, hint: str) -> SpecError:
    return SpecError(flag, f"{flag} {value}: {hint}")


def parse_time(text: str) -> int:
    """A Slurm time limit -> seconds. Raises SpecError (flag ``--time``)."""
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        if value.upper() in ("UNLIMITED", "INFINITE", "-1"):
            raise _flag_error("--time", value, "no limit is not accepted here; omit --time to get "
                              "the partition's default limit")
        raise _flag_error("--time", value, _TIME_HINT)
    days, first, second, third = match.groups()
    if days is not None:
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        if hours > 23:
            raise _flag_error("--time", value, "hours after 'D-' must be 0-23; " + _TIME_HINT)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
        checked = [minutes, seconds]
    elif third is not None:
        total = int(first) * 3600 + int(second) * 60 + int(third)
        checked = [int(second), int(third)]
    elif second is not None:
        total = int(first) * 60 + int(second)
        checked = [int(second)]
    else:
        total = int(first) * 60
        checked = []
    if any(part > 59 for part in checked):
        raise _flag_error("--time", value, "minutes and seconds must be 0-59; " + _TIME_HINT)
    if total <= 0:
        raise _flag_error("--time", value, "the limit must be more than zero (Slurm reads 0 as "
                          "no limit); omit --time to get the partition's default limit")
    return total


def format_time(seconds: int) -> str:
    """Seconds -> Slurm's ``[D-]HH:MM:SS``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def parse_memory(text: str) -> int:
    """A memory size (Slurm or Kubernetes units, plain number = MiB) -> bytes. Raises SpecError."""
    value = str(text).strip()
    match = _MEMORY.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise _flag_error("--mem", value, _MEMORY_HINT)
    size = math.ceil(float(match.group(1)) * _UNITS[unit])
    if size < MiB:
        raise _flag_error("--mem", value, "ask for at least 1 MiB; " + _MEMORY_HINT)
    return size


def format_memory(size: int) -> str:
    """Bytes -> a Kubernetes quantity in whole MiB, rounded up."""
    return f"{math.ceil(size / MiB)}Mi"


def normalise_image(image: str) -> str:
    """Add ``docker://`` to a bare reference; keep an absolute path or any ``scheme://``."""
    if image.startswith("/") or _SCHEME.match(image):
        return image
    return "docker://" + image


@dataclass
class OffloadSpec:
    """What a cell asks for. Every field maps to one ``%%oscar_offload`` option (``_`` -> ``-``)."""

    node: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    nodes: int | None = None
    job_name: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus: int | None = None
    image: str = DEFAULT_IMAGE
    mounts: list[str] = field(default_factory=list)
    pre_exec: str | None = None
    singularity_options: str | None = None
    sbatch: str | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    prefix: str = "oj"

    def __repr__(self) -> str:
        # env values may be secrets: show names only
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name != "env" and getattr(self, f.name) != _default(f)]
        if self.env:
            shown.append(f"env=<{', '.join(sorted(self.env))}>")
        return f"OffloadSpec({', '.join(shown)})"

    # ---- validation -------------------------------------------------------------------------

    def validate(self, known_nodes: Collection[str] | None = None) -> None:
        """Raise the first SpecError, if any."""
        errors = self.validate_all(known_nodes)
        if errors:
            raise errors[0]

    def validate_all(self, known_nodes: Collection[str] | None = None) -> list[SpecError]:
        """Every problem, in option order (for the widget panel)."""
        errors: list[SpecError] = []
        for check in (self._check_node, self._check_time, self._check_counts, self._check_mem,
                      self._check_slurm_words, self._check_image, self._check_mounts,
                      self._check_singularity_options, self._check_sbatch, self._check_env,
                      self._check_prefix):
            try:
                if check == self._check_node:
                    check(known_nodes)
                else:
                    check()
            except SpecError as error:
                errors.append(error)
        return errors

    def _check_node(self, known_nodes: Collection[str] | None) -> None:
        if self.node is None:
            return
        if not _NODE.match(self.node) or len(self.node) > 253:
            raise _flag_error("--node", repr(self.node), "a node name is lowercase letters, "
                              "digits, '-' and '.', e.g. --node vega-new-vk")
        if known_nodes is not None and self.node not in known_nodes:
            names = ", ".join(sorted(known_nodes)) or "none"
            raise _flag_error("--node", self.node, f"not a virtual node of this cluster; "
                              f"known nodes: {names}")

    def _check_time(self) -> None:
        if self.time is not None:
            parse_time(self.time)

    def _check_counts(self) -> None:
        for flag, value in (("--cpus-per-task", self.cpus_per_task), ("--nodes", self.nodes),
                            ("--gpus", self.gpus)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise _flag_error(flag, value, f"use a whole number of at least 1, e.g. {flag} 2")

    def _check_mem(self) -> None:
        if self.mem is not None:
            parse_memory(self.mem)

    def _check_slurm_words(self) -> None:
        for flag, value, pattern, example in (
            ("--job-name", self.job_name, _SLURM_WORD, "my-analysis"),
            ("--partition", self.partition, _SLURM_LIST, "gpu"),
            ("--account", self.account, _SLURM_WORD, "project123"),
        ):
            if value is not None and (not pattern.match(value) or len(value) > 128):
                raise _flag_error(flag, repr(value), "use letters, digits and . _ : + - only "
                                  f"(no spaces or quotes: the plugin splits flags on them), "
                                  f"e.g. {flag} {example}")

    def _check_image(self) -> None:
        image = self.image
        if not image or not image.strip() or re.search(r"\s", image):
            raise _flag_error("--image", repr(image), "give an image without spaces, e.g. "
                              "--image python:3.12-slim, docker://ghcr.io/org/img:tag or "
                              "/abs/path/image.sif")
        if image.endswith(".sif") and not image.startswith("/") and not _SCHEME.match(image):
            raise _flag_error("--image", image, "a .sif file needs an absolute path on the "
                              "cluster, e.g. --image /scratch/images/python.sif")

    def _check_mounts(self) -> None:
        for mount in self.mounts:
            parts = mount.split(":")
            mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in ("ro", "rw"))
            if not mode_ok or not all(_MOUNT_PATH.match(p) for p in parts[:2]):
                raise _flag_error("--mount", repr(mount), "use SRC:DST or SRC:DST:ro|rw with "
                                  "absolute paths (letters, digits, / . _ - @ % + =), "
                                  "e.g. --mount /scratch/me:/data:ro")

    def _check_singularity_options(self) -> None:
        if self.singularity_options is not None and "\n" in self.singularity_options:
            raise _flag_error("--singularity-options", repr(self.singularity_options),
                              "give the options on one line, e.g. "
                              "--singularity-options '--no-home'")

    def _check_sbatch(self) -> None:
        self.sbatch_words()

    def _check_env(self) -> None:
        for name, value in self.env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise _flag_error("--env", repr(name), "a variable name is letters, digits and "
                                  "'_', not starting with a digit, e.g. --env MY_VAR=value")
            if name in RESERVED_ENV or name.startswith(_RESERVED_ENV_PREFIXES):
                raise _flag_error("--env", name, "this variable is set by OSCAR, its "
                                  "supervisor or the runner; choose another name")
            if not isinstance(value, str) or "\0" in value:
                # never echo the value: it may be a secret
                raise SpecError("--env", f"--env {name}: the value must be text without NUL "
                                "bytes; pass binary data through storage instead")

    def _check_prefix(self) -> None:
        if not _PREFIX.match(self.prefix or "") or len(self.prefix) > 13:
            raise _flag_error("--prefix", repr(self.prefix), "use 1-13 lowercase letters, digits "
                              "or '-', starting with a letter, e.g. --prefix oj")

    # ---- what the cluster gets --------------------------------------------------------------

    def sbatch_words(self) -> list[str]:
        """The extra ``--sbatch`` options as single words (``--qos normal`` -> ``--qos=normal``)."""
        if not self.sbatch:
            return []
        try:
            tokens = shlex.split(self.sbatch)
        except ValueError as error:
            raise _flag_error("--sbatch", repr(self.sbatch), f"the quoting is broken ({error}); "
                              "e.g. --sbatch '--qos=normal --constraint=amd'") from None
        words: list[str] = []
        for token in tokens:
            if not token.startswith("-"):
                previous = words[-1] if words else ""
                if previous.startswith("--") and "=" not in previous:
                    words[-1] = f"{previous}={token}"
                elif len(previous) == 2 and previous[0] == "-" and previous[1] != "-":
                    words[-1] = previous + token  # "-p debug" -> "-pdebug": one word
                else:
                    raise _flag_error("--sbatch", repr(token), "every word must be an sbatch "
                                      "option, e.g. --sbatch '--qos=normal --exclusive'")
                continue
            words.append(token)
        for word in words:
            self._check_sbatch_word(word)
        return words

    @staticmethod
    def _check_sbatch_word(word: str) -> None:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            forbidden = [f for f in _FORBIDDEN_SBATCH
                         if f == name or (len(name) >= 5 and f.startswith(name))]
            option = forbidden[0] if forbidden else None
        else:
            option = _SHORT_SBATCH.get(word[1:2])
        if option:
            raise _flag_error("--sbatch", word, _FORBIDDEN_SBATCH[option])
        if _UNSAFE_IN_FLAGS.search(word) or word in ("-", "--"):
            raise _flag_error("--sbatch", repr(word), "spaces, quotes and shell characters do "
                              "not survive the plugin's flag splitting; use plain --long=value "
                              "words, e.g. --sbatch '--constraint=amd'")

    def time_limit_seconds(self) -> int | None:
        return None if self.time is None else parse_time(self.time)

    def slurm_flags(self) -> list[str]:
        flags = []
        if self.time is not None:
            flags.append(f"--time={format_time(parse_time(self.time))}")
        for option, value in (("--nodes", self.nodes), ("--job-name", self.job_name),
                              ("--partition", self.partition), ("--account", self.account)):
            if value is not None:
                flags.append(f"{option}={value}")
        if self.gpus:
            flags.append(f"--gres=gpu:{self.gpus}")
        return flags + self.sbatch_words()

    def _annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = {}
        flags = self.slurm_flags()
        if flags:
            annotations["slurm-job.vk.io/flags"] = " ".join(flags)
        if self.pre_exec:
            annotations["slurm-job.vk.io/pre-exec"] = self.pre_exec
            annotations["job.vk.io/pre-exec"] = self.pre_exec
        if self.mounts:
            binds = " ".join(f"--bind {mount}" for mount in self.mounts)
            annotations["slurm-job.vk.io/singularity-mounts"] = binds
            annotations["job.vk.io/singularity-mounts"] = binds
        if self.singularity_options:
            annotations["slurm-job.vk.io/singularity-options"] = self.singularity_options
        return annotations

    def _definition_without_name(self) -> dict:
        self.validate()
        definition: dict = {
            "image": normalise_image(self.image),
            "script": runner.RUNNER_SCRIPT,
            "cpu": str(self.cpus_per_task or 1),
            "memory": format_memory(parse_memory(self.mem)) if self.mem else DEFAULT_MEMORY,
            "log_level": "DEBUG",
        }
        if self.node:
            definition["interlink_node_name"] = self.node
        annotations = self._annotations()
        if annotations:
            definition["annotations"] = annotations
        if self.gpus:
            definition["enable_gpu"] = True
        definition["environment"] = {"variables": {"PYTHONUNBUFFERED": "1", **self.env}}
        definition["labels"] = {RUNNER_LABEL: "true"}
        return definition

    def service_name(self) -> str:
        """``<prefix>-<hash of the definition>``, at most 24 characters, DNS-1123."""
        canonical = json.dumps(self._definition_without_name(), sort_keys=True,
                               ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return f"{self.prefix}-{digest[:SERVICE_NAME_MAX - len(self.prefix) - 1]}"

    def service_definition(self) -> dict:
        """The OSCAR Service JSON for ``POST /system/services``."""
        return {"name": self.service_name(), **self._definition_without_name()}

    def script_filename(self) -> str:
        return f"{self.service_name()}.sh"

    def fdl(self, cluster_id: str) -> str:
        """YAML for ``oscar-cli apply``; ``script:`` names the file ``fdl_files()`` provides."""
        if not cluster_id or not re.fullmatch(r"[A-Za-z0-9._-]+", cluster_id):
            raise _flag_error("--cluster", repr(cluster_id), "give the cluster id of your "
                              "oscar-cli config, e.g. oscar-cluster")
        service = self.service_definition()
        service["script"] = self.script_filename()
        document = {"functions": {"oscar": [{cluster_id: service}]}}
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)

    def fdl_files(self) -> dict[str, str]:
        """The files ``fdl()`` references, by name (write them beside the FDL for oscar-cli)."""
        return {self.script_filename(): runner.RUNNER_SCRIPT}

    def job_body(self, code: str) -> bytes:
        """The body of ``POST /job/{service}``: base64 of the program carrying ``code``."""
        program = runner.build_program(code, self.env)
        if len(program) > runner.MAX_PROGRAM_BYTES:
            raise SpecError("cell", f"cell: the job program is {len(program) // 1024} KiB, over "
                            f"the {runner.MAX_PROGRAM_BYTES // 1024} KiB a job body can carry "
                            "(it travels in an environment variable); move data into storage "
                            "(MinIO, a mounted path) and read it from the cell")
        return runner.encode_body(program)

    # ---- the magic's line -------------------------------------------------------------------

    def to_flags(self) -> str:
        """The ``%%oscar_offload`` line giving this spec (non-default options only)."""
        words = ["%%oscar_offload"]
        for f in fields(self):
            value = getattr(self, f.name)
            if value == _default(f):
                continue
            option = "--" + f.name.replace("_", "-")
            # "--opt=value" keeps a value that starts with "-" from reading as an option
            if f.name == "mounts":
                words += [f"--mount={mount}" for mount in value]
            elif f.name == "env":
                words += [f"--env={name}={text}" for name, text in value.items()]
            else:
                words.append(f"{option}={value}")
        return " ".join(shlex.quote(word) if i else word for i, word in enumerate(words))

    @classmethod
    def from_flags(cls, line: str | Sequence[str]) -> OffloadSpec:
        """Parse the options ``to_flags()`` writes (``--opt=value`` or ``--opt value``; a
        leading ``%%oscar_offload`` is skipped). Raises SpecError."""
        try:
            words = shlex.split(line) if isinstance(line, str) else list(line)
        except ValueError as error:
            raise SpecError("line", f"the option line has broken quoting ({error})") from None
        if words and words[0].lstrip("%") == "oscar_offload":
            words = words[1:]
        values: dict = {"mounts": [], "env": {}}
        index = 0
        while index < len(words):
            option, sep, value = words[index].partition("=")
            name = _OPTION_FIELDS.get(option)
            if name is None:
                raise SpecError("line", f"{words[index]}: not an option; options are "
                                f"{', '.join(_OPTION_FIELDS)}")
            if not sep:
                index += 1
                if index == len(words):
                    raise SpecError(option, f"{option}: give a value, e.g. {option}=...")
                value = words[index]
            index += 1
            if name == "mounts":
                values["mounts"].append(value)
            elif name == "env":
                env_name, env_value = parse_env_item(value)
                values["env"][env_name] = env_value
            elif name in _COUNT_FIELDS:
                values[name] = parse_count(option, value)
            else:
                values[name] = value
        return cls(**values)


_TEXT_FIELDS = ("node", "time", "mem", "job_name", "partition", "account", "image", "pre_exec",
                "singularity_options", "sbatch")
_COUNT_FIELDS = ("cpus_per_task", "nodes", "gpus")


def parse_count(option: str, text: object) -> int:
    """A count option's text -> int, with the same message `validate` gives for a bad count."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise _flag_error(option, text, f"use a whole number of at least 1, e.g. {option} 2"
                          ) from None
    return value


def parse_env_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (name, value); the value is kept byte for byte."""
    name, sep, value = text.partition("=")
    if not sep:
        raise _flag_error("--env", repr(text), "write NAME=VALUE, e.g. --env MY_VAR=value")
    return name, value


def settings_from_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Option values as the magic's parser (or the panel) holds them -> OffloadSpec fields.

    Text options stay text; counts become ints; ``mount``/``mounts`` and ``env`` are lists of
    ``SRC:DST`` and ``NAME=VALUE`` strings. Absent (None or empty) options are left out.
    """
    settings: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        if options.get(name) is not None:
            settings[name] = options[name]
    for name in _COUNT_FIELDS:
        if options.get(name) is not None:
            settings[name] = parse_count("--" + name.replace("_", "-"), options[name])
    mounts = options.get("mounts") or options.get("mount") or []
    if mounts:
        settings["mounts"] = list(mounts)
    env_items = options.get("env") or []
    if env_items:
        settings["env"] = dict(parse_env_item(item) for item in env_items)
    return settings


def _default(f):
    return f.default_factory() if callable(f.default_factory) else f.default


_OPTION_FIELDS = {("--mount" if f.name == "mounts" else "--" + f.name.replace("_", "-")): f.name
                  for f in fields(OffloadSpec)}
