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
* ``--time`` is at most 365 days: Slurm counts seconds in 32 bits (longer limits wrap around)
  and squeue shows any limit over 365-00:00:00 as INVALID.
* The Slurm plugin pastes ``--image``, ``--singularity-options`` and the ``--sbatch`` flags into
  its job scripts as they are, so they are checked against a grammar, not a blacklist: an OCI
  reference (optional ``scheme://``) or an absolute ``.sif`` path; singularity option words;
  sbatch options parsed as sbatch's getopt does (unique prefixes of long options, bundled short
  options), with values of safe characters only. ``--pre-exec`` is the user's own shell command
  and travels as one annotation value.
* ``--env`` values travel in the job's program only, never in the service definition: the
  program sets them byte for byte and starts Python again, so that interpreter-start variables
  (``PYTHONPATH``, ``LD_LIBRARY_PATH``) work. So settings that differ only in their environment
  share one runner service, and the supervisor (which reads ``LOG_LEVEL``, ``EXECUTION_MODE`` ...
  from its own environment) never sees them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any

import yaml

from . import options, runner
from .cell_program import SEALED_PREFIX
from .config import DEFAULT_IMAGE_PREFIX, SiteFacts

DEFAULT_IMAGE = "docker://python:3.12-slim"
DEFAULT_MEMORY = "1024Mi"
SERVICE_NAME_MAX = 24
RUNNER_LABEL = "oscar-jupyter/runner"
MPI_ANNOTATION = "slurm-job.vk.io/mpi-flags"
RANKS_SHOWN = ("0", "all")  # OffloadSpec.ranks
MPI_ON = "on"  # OffloadSpec.mpi of the bare --mpi (options.py: the option's const)

MiB = 1024 * 1024
_UNITS = {
    "": MiB,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "m": MiB,
    "mi": MiB,
    "g": 1024 * MiB,
    "gi": 1024 * MiB,
    "t": 1024**2 * MiB,
    "ti": 1024**2 * MiB,
}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]{0,2})")
_TIME_HINT = "use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. --time 02:30:00"
# Slurm stores a limit as whole minutes and counts seconds in 32 bits: sbatch 22.05 takes
# --time 71582789 as 1 minute, and squeue shows any limit over 365 days as INVALID.
MAX_TIME_SECONDS = 365 * 86400
_MEMORY_HINT = (
    "use a number of MiB or a unit K, M, G, T (binary, as sbatch --mem) or Ki, Mi, "
    "Gi, Ti, e.g. --mem 32G"
)
# fullmatch everywhere: "$" would also accept a trailing newline, which breaks job.sh lines.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_NODE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_PREFIX = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLURM_WORD = re.compile(r"[A-Za-z0-9._:+-]+")
_SLURM_LIST = re.compile(r"[A-Za-z0-9._+-]+(?:,[A-Za-z0-9._+-]+)*")
_MOUNT_PATH = re.compile(r"/[A-Za-z0-9._/@%+=-]*")
_COUNT_TEXT = re.compile(r"\s*[0-9]+\s*")
# mpiexec flag words: pasted unquoted into job.sh by the plugin.
_MPI_WORD = re.compile(r"[A-Za-z0-9._:,=+@/%-]+")
# mpiexec's own rank counts: the plugin (or, on one node, the tagger) gives -np.
_MPI_COUNT_FLAGS = frozenset({"-np", "-n", "--np", "--n", "-c", "--c"})

# ---- image references: [scheme://][registry/]path[:tag][@digest] or an absolute .sif path.
# The Slurm plugin pastes the image unquoted into job.sh, so only this grammar gets through.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PORT = r":[0-9]{1,5}"
# A first component is a registry only with a '.', a port or as localhost (Docker's rule).
_REGISTRY = (
    rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})+(?:{_PORT})?|{_HOST_LABEL}{_PORT}"
    r"|localhost)"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_OCI_REFERENCE = re.compile(
    rf"(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")
_IMAGE_MAX = 512
_IMAGE_EXAMPLES = (
    "e.g. --image python:3.12-slim, docker://ghcr.io/org/img:tag or /scratch/images/python.sif"
)

# ---- singularity options: pasted unquoted into job.sh, so option words and plain values only.
_SINGULARITY_OPTION = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9-]*(?:=[A-Za-z0-9._/:,=+@-]+)?")
_SINGULARITY_VALUE = re.compile(r"[A-Za-z0-9._/:,=+@][A-Za-z0-9._/:,=+@-]*")
_SINGULARITY_HINT = (
    "each word must be an option (-x, --long-opt or --opt=value) or a value "
    "after it, of letters, digits and . _ / : , = + @ - (no quotes or shell "
    "characters: the plugin pastes them unquoted into job.sh), e.g. "
    "--singularity-options '--no-home --cleanenv'"
)

# ---- sbatch's long options (sbatch 22.05: `sbatch --help` plus the hidden ones its getopt
# table lists when an abbreviation is ambiguous), by kind of argument.
_SBATCH_NO_VALUE = (
    "contiguous",
    "help",
    "hold",
    "ignore-pbs",
    "no-requeue",
    "overcommit",
    "oversubscribe",
    "parsable",
    "quiet",
    "reboot",
    "requeue",
    "spread-job",
    "test-only",
    "usage",
    "use-min-nodes",
    "verbose",
    "version",
    "wait",
)
_SBATCH_OPTIONAL_VALUE = ("exclusive", "get-user-env", "nice", "no-kill", "propagate")
_SBATCH_VALUE = (
    "account",
    "acctg-freq",
    "array",
    "batch",
    "bb",
    "bbf",
    "begin",
    "chdir",
    "cluster",
    "cluster-constraint",
    "clusters",
    "comment",
    "constraint",
    "container",
    "context",
    "core-spec",
    "cores-per-socket",
    "cpu-freq",
    "cpus-per-gpu",
    "cpus-per-task",
    "deadline",
    "delay-boot",
    "dependency",
    "distribution",
    "error",
    "exclude",
    "export",
    "export-file",
    "extra-node-info",
    "gid",
    "gpu-bind",
    "gpu-freq",
    "gpus",
    "gpus-per-node",
    "gpus-per-socket",
    "gpus-per-task",
    "gres",
    "gres-flags",
    "hint",
    "input",
    "job-name",
    "kill-on-invalid-dep",
    "licenses",
    "mail-type",
    "mail-user",
    "mcs-label",
    "mem",
    "mem-bind",
    "mem-per-cpu",
    "mem-per-gpu",
    "mincpus",
    "network",
    "nodefile",
    "nodelist",
    "nodes",
    "ntasks",
    "ntasks-per-core",
    "ntasks-per-gpu",
    "ntasks-per-node",
    "ntasks-per-socket",
    "ntasks-per-tres",
    "open-mode",
    "output",
    "partition",
    "power",
    "prefer",
    "priority",
    "profile",
    "qos",
    "reservation",
    "signal",
    "sockets-per-node",
    "switches",
    "tasks-per-node",
    "thread-spec",
    "threads-per-core",
    "time",
    "time-min",
    "tmp",
    "uid",
    "wait-all-nodes",
    "wckey",
    "wrap",
)
_NO, _OPTIONAL, _REQUIRED = "no", "optional", "required"
SBATCH_OPTIONS: dict[str, str] = {
    **{name: _NO for name in _SBATCH_NO_VALUE},
    **{name: _OPTIONAL for name in _SBATCH_OPTIONAL_VALUE},
    **{name: _REQUIRED for name in _SBATCH_VALUE},
}
# sbatch's short options (`sbatch --help`); each takes the argument of its long option.
SBATCH_SHORT_OPTIONS: dict[str, str] = {
    "a": "array",
    "A": "account",
    "b": "begin",
    "B": "extra-node-info",
    "c": "cpus-per-task",
    "C": "constraint",
    "d": "dependency",
    "D": "chdir",
    "e": "error",
    "F": "nodefile",
    "G": "gpus",
    "h": "help",
    "H": "hold",
    "i": "input",
    "J": "job-name",
    "k": "no-kill",
    "L": "licenses",
    "m": "distribution",
    "M": "clusters",
    "n": "ntasks",
    "N": "nodes",
    "o": "output",
    "O": "overcommit",
    "p": "partition",
    "q": "qos",
    "Q": "quiet",
    "s": "oversubscribe",
    "S": "core-spec",
    "t": "time",
    "v": "verbose",
    "V": "version",
    "w": "nodelist",
    "W": "wait",
    "x": "exclude",
}
# Values end up in the flags annotation, which the plugin splits and splices into job.slurm.
_SBATCH_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:,=+@/%\[\]!*-]+")
_SBATCH_EXAMPLE = "e.g. --sbatch '--qos=normal --exclusive -C gpu'"

# Variables OSCAR, the supervisor or the runner set themselves; a user value would break the job.
RESERVED_ENV = frozenset(
    {
        "EVENT",
        "INPUT_FILE_PATH",
        "TMP_INPUT_DIR",
        "TMP_OUTPUT_DIR",
        "JOB_UUID",
        "RESOURCE_ID",
        "SCRIPT",
        "FUNCTION_CONFIG",
        "PYTHONUNBUFFERED",
        "LD_LIBRARY_PATH_ORIG",
        "_OJ_ENV_SET",
    }
)
_RESERVED_ENV_PREFIXES = ("OSCAR_",)
# Variables OSCAR's supervisor reads from its own environment (faas-supervisor utils.py:
# ConfigUtils._CUSTOM_VARIABLES upper-cased, SysUtils.is_lambda_environment, the binary
# supervisor's LD_LIBRARY_PATH handling). A service's secrets are in that environment (the
# cell's --env values are not: the job's program sets them), so a secret of one of these names
# changes how the supervisor runs the job: LOG_LEVEL=x kills it.
SUPERVISOR_ENV = frozenset(
    {
        "LOG_LEVEL",
        "EXECUTION_MODE",
        "EXTRA_PAYLOAD",
        "UDOCKER_EXEC",
        "UDOCKER_DIR",
        "UDOCKER_BIN",
        "UDOCKER_LIB",
        "DOWNLOAD_INPUT",
        "SUPERVISOR_TYPE",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_RUNTIME_API",
        "TIMEOUT_THRESHOLD",
        "LD_LIBRARY_PATH",
    }
)

# sbatch options the Slurm plugin sets itself, drops, or chokes on: option -> what to do instead.
# They are refused however they are spelled: in full, abbreviated or as a short option.
_FORBIDDEN_SBATCH = {
    "output": "the plugin writes the job's output to job.out, which is where the logs come "
    "from; remove it",
    "error": "stderr must stay in job.out with the logs; remove it",
    "parsable": "it makes the plugin's sbatch call fail; remove it",
    "cpus-per-task": "use --cpus-per-task / --mem of the magic: the plugin overrides these",
    "mem": "use --cpus-per-task / --mem of the magic: the plugin overrides these",
    "mem-per-cpu": "it conflicts with the --mem the plugin always adds; use --mem of the magic",
    "mem-per-gpu": "it conflicts with the --mem the plugin always adds; use --mem of the magic",
    # B2 (reference OSCAR.md section 13): plugins up to 0.6.1 cut `--mem` and its value out of
    # the flags with a regex (interlink-slurm-plugin pkg/slurm/prepare.go 929-958 at 0.6.1),
    # wherever it starts: sbatch would get `-bind=local` and refuse the job.
    "mem-bind": "Slurm plugins up to 0.6.1 (what most sites run) cut '--mem' out of every "
    "sbatch flag, so sbatch would get '-bind=...' and refuse the job; leave it out (Slurm "
    "binds memory by its own defaults), or ask the site for plugin 0.6.2, which passes it",
    "wrap": "the plugin submits its own batch script; put the code in the cell instead",
    "wait": "it keeps the plugin's sbatch call waiting until the job ends; remove it (the "
    "magic waits for the job already)",
    "nodes": "use --nodes of the magic (with --mpi, so that the cell runs on each node)",
    "ntasks": "use --ntasks of the magic (with --mpi, so that the cell runs as each task)",
    "ntasks-per-node": "use --ntasks-per-node of the magic (with --mpi, so that the cell "
    "runs as each task)",
    "test-only": "sbatch then submits nothing, so the plugin finds no job; remove it",
    "help": "sbatch then prints help and submits nothing; remove it",
    "usage": "sbatch then prints its usage and submits nothing; remove it",
    "version": "sbatch then prints its version and submits nothing; remove it",
}


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


def _require_text(flag: str, value: object, example: str) -> None:
    if not isinstance(value, str):
        raise SpecError(
            flag, f"{flag}: give text (a str), not {type(value).__name__}, e.g. {example}"
        )


def parse_time(text: str) -> int:
    """A Slurm time limit -> seconds. Raises SpecError (flag ``--time``)."""
    value = str(text).strip()
    # the length cap keeps int() away from its 4300-digit limit
    match = re.fullmatch(
        r"(?:([0-9]{1,99})-)?([0-9]{1,99})(?::([0-9]{1,99}))?(?::([0-9]{1,99}))?", value
    )
    if not match:
        if value.upper() in ("UNLIMITED", "INFINITE", "-1"):
            raise _flag_error(
                "--time",
                value,
                "no limit is not accepted here; omit --time to get the partition's default limit",
            )
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
        raise _flag_error(
            "--time",
            value,
            "the limit must be more than zero (Slurm reads 0 as "
            "no limit); omit --time to get the partition's default limit",
        )
    if total > MAX_TIME_SECONDS:
        longest = format_time(MAX_TIME_SECONDS)
        raise _flag_error(
            "--time",
            value,
            f"Slurm's longest limit is {longest} (365 days; "
            "longer ones overflow or show as INVALID); ask for at most "
            f"--time {longest}, or omit --time to get the partition's default",
        )
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
    match = _MEMORY.fullmatch(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or len(match.group(1)) > 30:
        raise _flag_error("--mem", value, _MEMORY_HINT)
    size = math.ceil(float(match.group(1)) * _UNITS[unit])
    if size < MiB:
        raise _flag_error("--mem", value, "ask for at least 1 MiB; " + _MEMORY_HINT)
    return size


def format_memory(size: int) -> str:
    """Bytes -> a Kubernetes quantity in whole MiB, rounded up."""
    return f"{math.ceil(size / MiB)}Mi"


def normalise_image(image: str, prefix: str = DEFAULT_IMAGE_PREFIX) -> str:
    """Write a bare reference with the site's image prefix; keep an absolute path or any
    ``scheme://``."""
    if image.startswith("/") or _SCHEME.match(image) or image.startswith(prefix):
        return image
    return prefix + image


def check_image(image: object) -> None:
    """Raise SpecError (flag ``--image``) unless ``image`` is an image reference or .sif path.

    Accepted: ``[scheme://][registry[:port]/]path[:tag][@sha256:<64 hex>]`` with the OCI
    grammar (lowercase path components), a scheme of ``[a-z][a-z0-9+.-]*``, or an absolute
    ``.sif`` path; after a ``...-archive://`` scheme, a path to the archive file.
    """
    if not isinstance(image, str):
        raise SpecError(
            "--image",
            f"--image: give the image as text, not {type(image).__name__}; {_IMAGE_EXAMPLES}",
        )
    if not image.strip() or re.search(r"\s", image):
        raise _flag_error(
            "--image", repr(image), f"give an image without spaces, {_IMAGE_EXAMPLES}"
        )
    if len(image) > _IMAGE_MAX:
        raise _flag_error(
            "--image",
            repr(image[:40] + "..."),
            f"at most {_IMAGE_MAX} characters; {_IMAGE_EXAMPLES}",
        )
    if image.startswith("/"):
        _check_sif_path(image)
        return
    scheme = _SCHEME.match(image)
    rest = image[scheme.end() :] if scheme else image
    if scheme and scheme.group().endswith("-archive://") and _is_safe_path(rest):
        return
    if not scheme and image.endswith(".sif"):
        raise _flag_error(
            "--image",
            image,
            "a .sif file needs an absolute path on the "
            "cluster, e.g. --image /scratch/images/python.sif",
        )
    if _OCI_REFERENCE.fullmatch(rest):
        return
    name, suffix = _split_reference(rest)
    if _OCI_REFERENCE.fullmatch(name.lower() + suffix):
        lowered = image[: len(image) - len(rest)] + name.lower() + suffix
        raise _flag_error(
            "--image",
            image,
            f"repository names are lowercase in image references; write --image {lowered}",
        )
    raise _flag_error(
        "--image",
        repr(image),
        "not an image reference: write "
        "[scheme://][registry/]name[:tag][@sha256:<64 hex digits>] (name in "
        "lowercase letters, digits and . _ - separators) or an absolute .sif "
        f"path; {_IMAGE_EXAMPLES}",
    )


def _check_sif_path(path: str) -> None:
    if not path.endswith(".sif") or not _is_safe_path(path):
        raise _flag_error(
            "--image",
            repr(path),
            "a path must be an absolute .sif file of "
            "letters, digits and . _ / + - (no '..'), e.g. "
            "--image /scratch/images/python.sif",
        )


def _is_safe_path(path: str) -> bool:
    return bool(_SAFE_PATH.fullmatch(path)) and ".." not in path.split("/")


def _split_reference(reference: str) -> tuple[str, str]:
    """``reg:5000/a/b:tag@sha256:x`` -> (``reg:5000/a/b``, ``:tag@sha256:x``)."""
    name, at, digest = reference.partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon:] + at + digest
    return name, at + digest


def parse_sbatch(text: str) -> list[str]:
    """``--sbatch`` text -> sbatch options as single words, read as sbatch's getopt reads them.

    Long options may be abbreviated to any unique prefix (so ``--ou`` is ``--output``) and are
    written back in full; ``--opt value``, ``--opt=value``, ``-o value``, ``-ovalue`` and
    bundled short flags (``-HO``) are understood. Forbidden options, unknown or ambiguous ones,
    stray words and values with characters outside ``_SBATCH_SAFE_VALUE`` raise SpecError.
    """
    try:
        tokens = shlex.split(text)
    except ValueError as error:
        raise _flag_error(
            "--sbatch",
            repr(text),
            f"the quoting is broken ({error}); e.g. --sbatch '--qos=normal --constraint=amd'",
        ) from None
    words: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.startswith("--") and token != "--":
            word, index = _sbatch_long_option(token, tokens, index)
            words.append(word)
        elif token.startswith("-") and token not in ("-", "--"):
            short_words, index = _sbatch_short_options(token, tokens, index)
            words += short_words
        else:
            raise _flag_error(
                "--sbatch",
                repr(token),
                f"every word must be an sbatch option or the value after one; {_SBATCH_EXAMPLE}",
            )
    return words


def _sbatch_long_option(token: str, tokens: list[str], index: int) -> tuple[str, int]:
    given, equals, value = token[2:].partition("=")
    name = _resolve_sbatch_option(given, token)
    _refuse_forbidden_sbatch(name, "--" + given, token)
    kind = SBATCH_OPTIONS[name]
    if equals and kind == _NO:
        raise _flag_error("--sbatch", _shown(token), f"--{name} takes no value; write --{name}")
    if not equals and kind == _REQUIRED:
        value, index = _next_sbatch_value(f"--{name}", tokens, index)
    if equals or kind == _REQUIRED:
        _check_sbatch_value(f"--{name}", value, token)
        return f"--{name}={value}", index
    return f"--{name}", index


def _sbatch_short_options(token: str, tokens: list[str], index: int) -> tuple[list[str], int]:
    words: list[str] = []
    for position, letter in enumerate(token[1:], start=2):
        name = SBATCH_SHORT_OPTIONS.get(letter)
        if name is None:
            raise _flag_error(
                "--sbatch",
                repr(token),
                f"-{letter} is not an sbatch option; "
                f"short options are -{' -'.join(sorted(SBATCH_SHORT_OPTIONS))}; " + _SBATCH_EXAMPLE,
            )
        _refuse_forbidden_sbatch(name, "-" + letter, token)
        kind = SBATCH_OPTIONS[name]
        if kind == _NO:
            words.append("-" + letter)
            continue
        # the rest of the word is the value, as getopt reads "-pdebug"
        value = token[position:]
        if not value and kind == _REQUIRED:
            value, index = _next_sbatch_value("-" + letter, tokens, index)
        if value:
            _check_sbatch_value("-" + letter, value, token)
        words.append(f"-{letter}{value}")
        break
    return words, index


def _resolve_sbatch_option(given: str, token: str) -> str:
    """A long option's name as typed -> sbatch's option (exact, or the one it abbreviates)."""
    if given in SBATCH_OPTIONS:
        return given
    candidates = [name for name in SBATCH_OPTIONS if given and name.startswith(given)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        listed = ", ".join("--" + name for name in sorted(candidates))
        raise _flag_error(
            "--sbatch",
            _shown(token),
            f"--{given} is ambiguous for sbatch: it could be {listed}; write the option in full",
        )
    close = difflib.get_close_matches(given, SBATCH_OPTIONS, n=3)
    hint = (
        f"did you mean {', '.join('--' + name for name in close)}?"
        if close
        else ("see `sbatch --help` for the options")
    )
    raise _flag_error(
        "--sbatch", repr(token), f"--{given} is not an sbatch option; {hint} " + _SBATCH_EXAMPLE
    )


def _refuse_forbidden_sbatch(name: str, spelled: str, token: str) -> None:
    reason = _FORBIDDEN_SBATCH.get(name)
    if reason is None:
        return
    alias = "" if spelled == "--" + name else f"sbatch reads {spelled} as --{name}; "
    raise _flag_error("--sbatch", _shown(token), alias + reason)


def _shown(token: str) -> str:
    """A word for a message: quoted when it holds spaces or quotes, so its ends are visible."""
    return token if _SBATCH_SAFE_VALUE.fullmatch(token) else repr(token)


def _next_sbatch_value(option: str, tokens: list[str], index: int) -> tuple[str, int]:
    if index == len(tokens) or tokens[index].startswith("-"):
        raise _flag_error(
            "--sbatch",
            option,
            f"{option} needs a value, e.g. --sbatch "
            f"'{option}{'=' if option.startswith('--') else ' '}VALUE'",
        )
    return tokens[index], index + 1


def _check_sbatch_value(option: str, value: str, token: str) -> None:
    if not value:
        raise _flag_error(
            "--sbatch",
            repr(token),
            f"{option} needs a value after '=', e.g. --sbatch '--qos=normal'",
        )
    for cut in ("--mem", "--cpus-per-task"):
        if cut in value:  # B2: 0.6.1's regexes cut these out of the flags wherever they are
            raise _flag_error(
                "--sbatch",
                repr(token),
                f"Slurm plugins up to 0.6.1 cut {cut!r} out of the sbatch flags wherever it "
                f"stands, so sbatch would get a broken {option}; write its value without {cut!r}",
            )
    if not _SBATCH_SAFE_VALUE.fullmatch(value):
        raise _flag_error(
            "--sbatch",
            repr(token),
            f"the value of {option} must be letters, "
            "digits and . _ : , = + @ / % [ ] ! * - only: spaces, quotes and "
            "shell characters do not survive the plugin's flag splitting into "
            "job.slurm; e.g. --sbatch '--constraint=amd'",
        )


@dataclass
class OffloadSpec:
    """What a cell asks for. Every field maps to one ``%%oscar_offload`` option (``_`` -> ``-``)."""

    node: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None
    # None: no MPI; "on" (the bare flag, mpi=True): mpiexec without extra flags; else its flags
    mpi: str | bool | None = None
    # Whose output the cell shows of a job of several ranks: None or "0" (rank 0's, and every
    # rank's stderr), "all" (every rank's, labelled). Client-side only.
    ranks: str | None = None
    # Whose --out values come back from a job of several ranks: None or "0" (rank 0's), "all"
    # (each name bound to a list of every rank's value, rank 0 first). Client and program only.
    out_ranks: str | None = None
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
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # LOCAL[:REMOTE] and REMOTE[:LOCAL] (transfers.py): how the job runs, not the service
    uploads: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    prefix: str = "oj"
    site: SiteFacts = field(default_factory=SiteFacts, repr=False)

    def __post_init__(self) -> None:
        # The Python API may pass counts as text ("2"), as the magic's line does.
        for name in _COUNT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) and _COUNT_TEXT.fullmatch(value):
                setattr(self, name, int(value))
        # The Python API's mpi=True / mpi=False, as the magic's bare --mpi / no --mpi.
        if self.mpi is True:
            self.mpi = MPI_ON
        elif self.mpi is False:
            self.mpi = None

    def __repr__(self) -> str:
        # env values may be secrets: show names only
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name not in ("env", "secrets", "site") and getattr(self, f.name) != _default(f)
        ]
        if isinstance(self.env, Mapping) and self.env:
            shown.append(f"env=<{', '.join(sorted(map(str, self.env)))}>")
        elif self.env:
            shown.append(f"env=<{type(self.env).__name__}>")
        if isinstance(self.secrets, Mapping) and self.secrets:
            shown.append(f"secrets=<{', '.join(sorted(map(str, self.secrets)))}>")
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
        for check in (
            self._check_node,
            self._check_time,
            self._check_counts,
            self._check_tasks,
            self._check_mpi,
            self._check_ranks,
            self._check_out_ranks,
            self._check_mem,
            self._check_slurm_words,
            self._check_image,
            self._check_site_prefix,
            self._check_mounts,
            self._check_pre_exec,
            self._check_singularity_options,
            self._check_sbatch,
            self._check_env,
            self._check_secrets,
            self._check_prefix,
        ):
            try:
                if check == self._check_node:
                    self._check_node(known_nodes)
                else:
                    check()  # type: ignore[call-arg]
            except SpecError as error:
                errors.append(error)
        return errors

    def _check_node(self, known_nodes: Collection[str] | None) -> None:
        if self.node is None:
            return
        _require_text("--node", self.node, "--node vega-new-vk")
        if not _NODE.fullmatch(self.node) or len(self.node) > 253:
            raise _flag_error(
                "--node",
                repr(self.node),
                "a node name is lowercase letters, digits, '-' and '.', e.g. --node vega-new-vk",
            )
        if known_nodes is not None and self.node not in known_nodes:
            names = ", ".join(sorted(known_nodes)) or "none"
            raise _flag_error(
                "--node", self.node, f"not a virtual node of this cluster; known nodes: {names}"
            )

    def _check_site_prefix(self) -> None:
        prefix, image = self.site.image_prefix, self.image
        if (
            not isinstance(image, str)
            or self.site.keeps_schemes
            or image.startswith(("/", prefix))
            or not _SCHEME.match(image)
        ):
            return
        # Plugin 0.6.1 would run "<prefix><image>", which no runtime can open.
        if prefix == DEFAULT_IMAGE_PREFIX:
            hint = (
                "write a registry image without a scheme (e.g. --image python:3.12-slim) or "
                "a .sif path; if the site's plugin is newer than 0.6.1 and keeps schemes, "
                "say so in the profile: jupyter: {image_schemes: true}"
            )
        else:
            hint = (
                f"write the reference without a scheme, e.g. --image "
                f"{_SCHEME.sub('', image, count=1)}"
            )
        raise _flag_error(
            "--image",
            image,
            f"this site's Slurm plugin puts its image prefix "
            f"{prefix} before every image that does not start with it, so it would "
            f"run {prefix}{image}; {hint}",
        )

    def _check_time(self) -> None:
        if self.time is not None:
            parse_time(self.time)

    def _check_counts(self) -> None:
        for flag, value in (
            ("--cpus-per-task", self.cpus_per_task),
            ("--nodes", self.nodes),
            ("--ntasks", self.ntasks),
            ("--ntasks-per-node", self.ntasks_per_node),
            ("--gpus", self.gpus),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise _flag_error(
                    flag,
                    repr(value),
                    "give a whole number as an int or a "
                    f"string of digits, not {type(value).__name__}, e.g. {flag} 2",
                )
            if isinstance(value, str) and not _COUNT_TEXT.fullmatch(value):
                raise _flag_error(flag, repr(value), f"use a whole number, e.g. {flag} 2")
            if int(value) < 1:
                raise _flag_error(flag, value, f"use a whole number of at least 1, e.g. {flag} 2")

    def _counts(self) -> dict[str, int]:
        """The task layout's counts that are whole numbers (the others fail _check_counts)."""
        counts: dict[str, int] = {}
        for flag, value in (
            ("--nodes", self.nodes),
            ("--ntasks", self.ntasks),
            ("--ntasks-per-node", self.ntasks_per_node),
        ):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                counts[flag] = value
            elif isinstance(value, str) and _COUNT_TEXT.fullmatch(value) and int(value) >= 1:
                counts[flag] = int(value)
        return counts

    def task_count(self) -> int:
        """How many tasks (ranks) the job gets: --ntasks, else nodes x tasks per node."""
        counts = self._counts()
        if "--ntasks" in counts:
            return counts["--ntasks"]
        return counts.get("--nodes", 1) * counts.get("--ntasks-per-node", 1)

    def node_count(self) -> int | None:
        """How many nodes the job gets, where the request says (--nodes, or --ntasks over
        --ntasks-per-node); None when Slurm chooses."""
        counts = self._counts()
        if "--nodes" in counts:
            return counts["--nodes"]
        if "--ntasks" in counts and "--ntasks-per-node" in counts:
            return math.ceil(counts["--ntasks"] / counts["--ntasks-per-node"])
        return None if "--ntasks" in counts else 1

    def _check_tasks(self) -> None:
        counts = self._counts()
        nodes, ntasks = counts.get("--nodes"), counts.get("--ntasks")
        per_node = counts.get("--ntasks-per-node")
        if ntasks is not None and nodes is not None and ntasks < nodes:
            raise _flag_error(
                "--ntasks",
                ntasks,
                f"fewer tasks than --nodes {nodes}: each node needs at least one task; "
                f"e.g. --nodes {nodes} --ntasks {nodes}",
            )
        if ntasks is not None and nodes is not None and per_node is not None:
            if ntasks > nodes * per_node:
                raise _flag_error(
                    "--ntasks",
                    ntasks,
                    f"more tasks than --nodes {nodes} x --ntasks-per-node {per_node} = "
                    f"{nodes * per_node}; give two of the three, e.g. --nodes {nodes} "
                    f"--ntasks-per-node {per_node}",
                )
        if self.mpi is not None:
            return
        asked = [(flag, value) for flag, value in counts.items() if value > 1]
        if asked:
            flag, value = asked[0]
            what = "nodes" if flag == "--nodes" else "tasks"
            raise _flag_error(
                flag,
                value,
                f"{value} {what} without --mpi: Slurm would hold them all while the cell "
                f"runs once, on the first; add --mpi to run the cell as one rank per task "
                f"(e.g. {flag} {value} --mpi), or leave {flag} out",
            )

    def _check_mpi(self) -> None:
        if self.mpi is None:
            return
        if not isinstance(self.mpi, str):
            raise SpecError(
                "--mpi",
                f"--mpi: give True or the mpiexec flags as one string, not "
                f"{type(self.mpi).__name__}, e.g. mpi=True or mpi='--oversubscribe'",
            )
        if self.mpi != MPI_ON:
            _require_text("--mpi", self.mpi, "--mpi '--oversubscribe'")
            words = self.mpi_words()
            if not words:
                raise SpecError(
                    "--mpi",
                    "--mpi: the flags are empty; write --mpi alone (mpi=True) for mpiexec "
                    "without extra flags, or give them, e.g. --mpi '--oversubscribe'",
                )
            if words == ["true"]:
                raise _flag_error(
                    "--mpi",
                    self.mpi,
                    "the Slurm plugin reads the value 'true' as 'no mpiexec' "
                    "(prepare.go); write --mpi alone to run the ranks without extra flags",
                )
            if not words[0].startswith("-"):
                raise _flag_error(
                    "--mpi",
                    repr(self.mpi),
                    "give mpiexec's own flags, starting with one, e.g. --mpi '--oversubscribe' "
                    "(or --mpi alone)",
                )
            for word in words:
                if not _MPI_WORD.fullmatch(word):
                    raise _flag_error(
                        "--mpi",
                        repr(word),
                        "the Slurm plugin pastes the flags unquoted into job.sh: use letters, "
                        "digits and . _ : , = + @ / % - only, e.g. --mpi '--bind-to none'",
                    )
                if word.split("=", 1)[0] in _MPI_COUNT_FLAGS:
                    raise _flag_error(
                        "--mpi",
                        word,
                        "mpiexec already gets -np from the tasks (-np $SLURM_NTASKS); set the "
                        "number of ranks with --ntasks (or --nodes and --ntasks-per-node)",
                    )
        if self.task_count() > 1 and not self.site.applies_mpi_flags:
            nodes = self.node_count()
            if nodes is not None and nodes > 1:
                raise SpecError(
                    "--mpi",
                    f"--mpi on {nodes} nodes: ranks on more than one node need the site's "
                    "Slurm plugin to start the container under mpiexec "
                    "(slurm-job.vk.io/mpi-flags), which no release up to 0.6.2-pre5 does "
                    "(pkg/slurm/prepare.go 961-966 at 0.6.1 change only a copy); where the "
                    "site's plugin has the fix, say so in the profile: jupyter: "
                    "{mpi_flags: true}. On one node oscar-jupyter starts the ranks itself: "
                    f"--nodes 1 --ntasks {self.task_count()} --mpi",
                )

    def _check_ranks(self) -> None:
        if self.ranks is not None and self.ranks not in RANKS_SHOWN:
            raise _flag_error(
                "--ranks",
                repr(self.ranks),
                "give 0 (rank 0's output and every rank's stderr, the default) or all "
                "(every rank's output, each line labelled [r3]), e.g. --ranks all",
            )

    def _check_out_ranks(self) -> None:
        if self.out_ranks is None:
            return
        if self.out_ranks not in RANKS_SHOWN:
            raise _flag_error(
                "--out-ranks",
                repr(self.out_ranks),
                "give 0 (rank 0's values, the default) or all (each --out name becomes a list "
                "of every rank's value, rank 0 first), e.g. --out-ranks all",
            )
        if self.out_ranks == "all" and (self.mpi is None or self.task_count() < 2):
            raise SpecError(
                "--out-ranks",
                "--out-ranks all: the cell runs once, so each --out name has one value; run it "
                "as ranks (e.g. --ntasks 4 --mpi) or leave --out-ranks out",
            )

    def values_from_all_ranks(self) -> bool:
        """Whether each --out name comes back as a list of every rank's value."""
        return self.out_ranks == "all"

    def shows_all_ranks(self) -> bool:
        return self.ranks == "all"

    def launches_ranks(self) -> bool:
        """Whether the job's own runner starts the ranks, on one node (issue 21): more than one
        task under --mpi where the site's plugin does not start the container under mpiexec."""
        return (
            self.mpi is not None
            and self.task_count() > 1
            and not self.site.applies_mpi_flags
            and (self.node_count() or 1) == 1
        )

    def mpi_words(self) -> list[str]:
        """The extra mpiexec flags as words ([] for the bare --mpi or no MPI)."""
        if not isinstance(self.mpi, str) or self.mpi == MPI_ON:
            return []
        return [word for word in re.split(r"[ \t]+", self.mpi.strip()) if word]

    def _check_mem(self) -> None:
        if self.mem is not None:
            parse_memory(self.mem)

    def _check_slurm_words(self) -> None:
        for flag, value, pattern, example in (
            ("--job-name", self.job_name, _SLURM_WORD, "my-analysis"),
            ("--partition", self.partition, _SLURM_LIST, "gpu"),
            ("--account", self.account, _SLURM_WORD, "project123"),
        ):
            if value is None:
                continue
            _require_text(flag, value, f"{flag} {example}")
            if not pattern.fullmatch(value) or len(value) > 128:
                raise _flag_error(
                    flag,
                    repr(value),
                    "use letters, digits and . _ : + - only "
                    f"(no spaces or quotes: the plugin splits flags on them), "
                    f"e.g. {flag} {example}",
                )

    def _check_image(self) -> None:
        prefix = self.site.image_prefix
        if (
            isinstance(self.image, str)
            and prefix != DEFAULT_IMAGE_PREFIX
            and self.image.startswith(prefix)
            and len(self.image) > len(prefix)
        ):
            check_image(self.image[len(prefix) :])  # the site's prefix, written out: check the rest
            return
        check_image(self.image)

    def _check_mounts(self) -> None:
        if isinstance(self.mounts, str) or not isinstance(self.mounts, (list, tuple)):
            raise SpecError(
                "--mount",
                "--mount: pass mounts as a list of 'SRC:DST[:ro|rw]' "
                f"strings, not {type(self.mounts).__name__}, e.g. "
                "mounts=['/scratch/me:/data:ro'] (on the magic's line: "
                "--mount /scratch/me:/data:ro)",
            )
        for mount in self.mounts:
            _require_text("--mount", mount, "--mount /scratch/me:/data:ro")
            parts = mount.split(":")
            mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in ("ro", "rw"))
            if not mode_ok or not all(_MOUNT_PATH.fullmatch(p) for p in parts[:2]):
                raise _flag_error(
                    "--mount",
                    repr(mount),
                    "use SRC:DST or SRC:DST:ro|rw with "
                    "absolute paths (letters, digits, / . _ - @ % + =), "
                    "e.g. --mount /scratch/me:/data:ro",
                )

    def _check_pre_exec(self) -> None:
        # The user's own shell command: the plugin runs it before the job, so any text goes.
        if self.pre_exec is not None:
            _require_text("--pre-exec", self.pre_exec, "--pre-exec 'module load cuda'")

    def _check_singularity_options(self) -> None:
        options = self.singularity_options
        if options is None:
            return
        _require_text("--singularity-options", options, "--singularity-options '--no-home'")
        if "\n" in options or "\r" in options:
            raise _flag_error(
                "--singularity-options",
                repr(options),
                "give the options on one line, e.g. --singularity-options '--no-home'",
            )
        words = [word for word in re.split(r"[ \t]+", options) if word]
        for index, word in enumerate(words):
            if _SINGULARITY_OPTION.fullmatch(word):
                continue
            if index and _SINGULARITY_VALUE.fullmatch(word):
                continue
            if _SINGULARITY_VALUE.fullmatch(word):
                raise _flag_error(
                    "--singularity-options",
                    repr(word),
                    "a value must follow "
                    "an option (singularity would read it as the image); " + _SINGULARITY_HINT,
                )
            raise _flag_error("--singularity-options", repr(word), _SINGULARITY_HINT)

    def _check_sbatch(self) -> None:
        self.sbatch_words()

    def _check_env(self) -> None:
        _check_variables(
            "--env",
            self.env,
            "env={'OMP_NUM_THREADS': '8'} (on the magic's line: --env OMP_NUM_THREADS=8)",
            "--env MY_VAR=value",
        )
        for name, value in self.env.items():
            if not isinstance(value, str) or "\0" in value:
                # never echo the value: it may be a secret
                raise SpecError(
                    "--env",
                    f"--env {name}: the value must be text without NUL "
                    "bytes; pass binary data through storage instead",
                )

    def _check_secrets(self) -> None:
        check_secret_names(self.secrets)
        for name, value in self.secrets.items():
            if isinstance(self.env, Mapping) and name in self.env:
                raise _flag_error("--secret", name, "it is also an --env variable; keep one")
            if not isinstance(value, str) or not value or "\0" in value:
                # never echo the value
                raise SpecError(
                    "--secret",
                    f"--secret {name}: the value must be non-empty text without NUL bytes",
                )

    def _check_prefix(self) -> None:
        _require_text("--prefix", self.prefix, "--prefix oj")
        if not _PREFIX.fullmatch(self.prefix) or len(self.prefix) > 13:
            raise _flag_error(
                "--prefix",
                repr(self.prefix),
                "use 1-13 lowercase letters, digits "
                "or '-', starting with a letter, e.g. --prefix oj",
            )

    # ---- what the cluster gets --------------------------------------------------------------

    def sbatch_words(self) -> list[str]:
        """The extra ``--sbatch`` options as single words, parsed as sbatch parses them
        (``--qos normal`` -> ``--qos=normal``, ``--reserv=x`` -> ``--reservation=x``,
        ``-p debug`` -> ``-pdebug``). Raises SpecError (flag ``--sbatch``)."""
        if self.sbatch is None or self.sbatch == "":
            return []
        if not isinstance(self.sbatch, str):
            raise SpecError(
                "--sbatch",
                "--sbatch: give the options as one string, not "
                f"{type(self.sbatch).__name__}, e.g. "
                "sbatch='--qos=normal --exclusive' (words joined by spaces)",
            )
        words = parse_sbatch(self.sbatch)
        if not self.site.plugin_keeps_mem_options:
            for word in words:
                if word.startswith("--mem"):
                    raise SpecError(
                        "--sbatch",
                        f"--sbatch {word}: interLink's Slurm plugin up to 0.6.1 (what sites run "
                        "unless the profile says jupyter: {plugin_version: 0.6.2}) cuts --mem out "
                        f"of any option (pkg/slurm/prepare.go): {word} would reach sbatch as "
                        f"{word[5:]!r} and the job be refused; leave it out (memory: --mem)",
                    )
        return words

    def time_limit_seconds(self) -> int | None:
        return None if self.time is None else parse_time(self.time)

    def slurm_flags(self) -> list[str]:
        flags = []
        if self.time is not None:
            flags.append(f"--time={format_time(parse_time(self.time))}")
        for option, value in (
            ("--nodes", self.nodes),
            ("--ntasks", self.ntasks),
            ("--ntasks-per-node", self.ntasks_per_node),
            ("--job-name", self.job_name),
            ("--partition", self.partition),
            ("--account", self.account),
        ):
            if value is not None:
                flags.append(f"{option}={value}")
        if self.nodes is None and self.launches_ranks():
            flags.insert(1 if self.time is not None else 0, "--nodes=1")  # the ranks' one node
        if self.gpus:
            flags.append(f"--gres=gpu:{self.gpus}")
        return flags + self.sbatch_words()

    def _annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = {}
        flags = self.slurm_flags()
        if flags:
            annotations["slurm-job.vk.io/flags"] = " ".join(flags)
        if self.pre_exec:
            # Plugins up to 0.6.1 write the pre-exec command and the job script on one line
            # (interlink-slurm-plugin pkg/slurm/prepare.go, 0.6.1: prefix + " " + job.sh):
            # `module load x` would swallow job.sh and the cell never runs. A command that ends
            # with a newline leaves job.sh a line of its own on every release.
            pre_exec = self.pre_exec.rstrip("\n") + "\n"
            annotations["slurm-job.vk.io/pre-exec"] = pre_exec
            annotations["job.vk.io/pre-exec"] = pre_exec
        if self.mounts:
            binds = " ".join(f"--bind {mount}" for mount in self.mounts)
            annotations["slurm-job.vk.io/singularity-mounts"] = binds
            annotations["job.vk.io/singularity-mounts"] = binds
        if self.singularity_options:
            annotations["slurm-job.vk.io/singularity-options"] = self.singularity_options
        if self.mpi is not None and not self.launches_ranks():
            # The plugin prepends `mpiexec -np $SLURM_NTASKS` and the value split on single
            # spaces to the container's command, except for the value "true" (no mpiexec). The
            # bare --mpi sends "": one empty word, a double space in job.sh's line.
            annotations[MPI_ANNOTATION] = " ".join(self.mpi_words())
        return annotations

    def _definition_without_name(self) -> dict[str, Any]:
        self.validate()
        definition: dict[str, Any] = {
            "image": normalise_image(self.image, self.site.image_prefix),
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
        if self.gpus and self.site.schedules_gpus:
            # Only where the site schedules GPUs: elsewhere the pod's nvidia.com/gpu limit is never
            # scheduled (0 GPUs on the virtual node, 0 in the Kueue quota); --gres reaches Slurm.
            definition["enable_gpu"] = True
        definition["environment"] = {"variables": {"PYTHONUNBUFFERED": "1"}}
        if self.secrets:
            # OSCAR keeps these in a Kubernetes Secret and blanks them when the service is read;
            # they reach the job as environment variables, never through its body or its log.
            definition["environment"]["secrets"] = dict(self.secrets)
        definition["labels"] = {RUNNER_LABEL: "true"}
        return definition

    def service_name(
        self, owner: str | None = None, endpoint: str | None = None, salt: int = 0
    ) -> str:
        """The runner service's name, DNS-1123.

        Without ``owner``: ``<prefix>-<hash of the definition>``, at most 24 characters (the name
        an FDL or a dry run shows). With ``owner`` (the OIDC ``sub`` or the basic-auth user) and
        the cluster's ``endpoint``: ``<prefix>-<owner tag>-<hash of definition, owner, endpoint
        and salt>``, at most 30 characters. OSCAR's names are unique cluster-wide and services
        private, so two users with the same settings need two names; ``salt`` gives the next
        candidate when a name is taken by someone else.
        """
        canonical = json.dumps(
            self._definition_without_name(),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        if owner is None:
            digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
            return f"{self.prefix}-{digest[: SERVICE_NAME_MAX - len(self.prefix) - 1]}"
        tag = self.owner_tag(owner, endpoint or "")
        limit = 30  # OSCAR allows 39; job names add -<kernel tag>-<12 hex> within k8s's 63
        keyed = "\n".join((canonical, owner, endpoint or "", str(salt)))
        digest = hashlib.sha256(keyed.encode("utf-8")).hexdigest()
        return f"{self.prefix}-{tag}-{digest[: limit - len(self.prefix) - 8]}"

    @staticmethod
    def owner_tag(owner: str, endpoint: str) -> str:
        """6 hex characters naming (owner, cluster) in runner service names."""
        return hashlib.sha256(f"{endpoint}\n{owner}".encode()).hexdigest()[:6]

    @staticmethod
    def is_owned_service_name(name: str, owner: str, endpoint: str) -> bool:
        """Whether ``name`` is a runner service name made by ``service_name(owner, endpoint)``."""
        tag = OffloadSpec.owner_tag(owner, endpoint)
        return bool(re.fullmatch(rf"{_PREFIX.pattern}-{tag}-[0-9a-f]+", name))

    def service_definition(self) -> dict[str, Any]:
        """The OSCAR Service JSON for ``POST /system/services``."""
        return {"name": self.service_name(), **self._definition_without_name()}

    def script_filename(self, name: str | None = None) -> str:
        return f"{name or self.service_name()}.sh"

    def fdl(self, cluster_id: str, name: str | None = None) -> str:
        """YAML for ``oscar-cli apply``; ``script:`` names the file ``fdl_files()`` provides.
        ``name``: the service's name (default: the owner-less ``service_name()``)."""
        if not cluster_id or not re.fullmatch(r"[A-Za-z0-9._-]+", cluster_id):
            raise _flag_error(
                "--cluster",
                repr(cluster_id),
                "give the cluster id of your oscar-cli config, e.g. oscar-cluster",
            )
        service = self.service_definition()
        if name:
            service["name"] = name
        service["script"] = self.script_filename(name)
        if self.secrets:  # shown blank, as OSCAR shows them: fill them in before `oscar-cli apply`
            service["environment"]["secrets"] = {name: "" for name in self.secrets}
        document = {"functions": {"oscar": [{cluster_id: service}]}}
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)

    def fdl_files(self, name: str | None = None) -> dict[str, str]:
        """The files ``fdl()`` references, by name (write them beside the FDL for oscar-cli)."""
        return {self.script_filename(name): runner.RUNNER_SCRIPT}

    def job_body(
        self,
        code: str,
        inputs: str = "",
        outputs: Sequence[str] = (),
        *,
        check_secrets: bool = True,
    ) -> bytes:
        """The body of ``POST /job/{service}``: base64 of the program carrying ``code``, the
        ``--in`` values (``inputs``, from ``values.pack_inputs``), the ``--out`` names and the
        ``--secret`` names the job checks for (``check_secrets``)."""
        if not isinstance(code, str):
            hint = (
                " (decode bytes first, e.g. code.decode('utf-8'))"
                if isinstance(code, (bytes, bytearray))
                else ""
            )
            raise SpecError(
                "code",
                f"code: give the cell's code as text (a str), not {type(code).__name__}{hint}",
            )
        self._check_env()
        _check_unicode(code)
        if self.values_from_all_ranks() and not outputs:
            raise SpecError(
                "--out-ranks",
                "--out-ranks all: there are no --out names to bring back from each rank; add "
                "--out NAME[,NAME...] (outputs=[...] in the Python API), or leave --out-ranks out",
            )
        ranks = self.task_count() if self.launches_ranks() else 1
        program = runner.build_program(
            code,
            self.env,
            inputs=inputs,
            outputs=list(outputs),
            ranks=ranks,
            mpi_flags=self.mpi_words(),
            secrets=list(self.secrets) if check_secrets else [],
            out_ranks=self.values_from_all_ranks(),
        )
        if len(program) > runner.MAX_PROGRAM_BYTES:
            empty = len(runner.build_program(""))
            parts = {
                "--env": len(runner.build_program("", self.env)) - empty,
                "cell": len(runner.build_program(code)) - empty,
                "--in": len(runner.build_program("", inputs=inputs)) - empty,
            }
            flag = max(parts, key=lambda name: parts[name])
            if flag == "--in" and self.values_from_all_ranks() and inputs.startswith(SEALED_PREFIX):
                raise SpecError(
                    "--out-ranks",
                    f"--out-ranks all: the storage URLs of its {self.task_count()} ranks (one "
                    f"each, for values too large for the log) take {parts[flag] // 1024} KiB "
                    f"once compressed, with the --in values; the job program may be at most "
                    f"{runner.MAX_PROGRAM_BYTES // 1024} KiB: gather the values on rank 0 (e.g. "
                    "torch.distributed.gather_object) and leave --out-ranks out, or use fewer "
                    "ranks",
                )
            what, where = {
                "--env": (
                    "the --env values are",
                    "put large values in a file on a --mount and pass its path",
                ),
                "cell": (
                    "the cell is",
                    "move data into storage (MinIO, a --mount'ed path) and read it from the cell",
                ),
                "--in": (
                    "the --in values are",
                    "write large data to a file on a --mount'ed path and read it in the cell",
                ),
            }[flag]
            raise SpecError(
                flag,
                f"{flag}: {what} {parts[flag] // 1024} KiB once compressed; "
                f"the job program may be at most {runner.MAX_PROGRAM_BYTES // 1024} "
                f"KiB (it travels in an environment variable): {where}",
            )
        return runner.encode_body(program)

    # ---- the magic's line -------------------------------------------------------------------

    def to_flags(self) -> str:
        """The ``%%oscar_offload`` line giving this spec (non-default options only; the site
        comes from the profile, secret values from the kernel's environment)."""
        changed = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "site" and getattr(self, f.name) != _default(f)
        }
        return options.render(options.to_pairs(changed))


_TEXT_FIELDS = options.TEXT_FIELDS
_COUNT_FIELDS = options.COUNT_FIELDS


def check_secret_names(names: object) -> None:
    """Refuse secret names that are not variable names, or that OSCAR or its supervisor read
    (checked before any value is asked for)."""
    _check_variables("--secret", names, "secrets={'API_TOKEN': token}", "--secret API_TOKEN")
    for name in names:  # type: ignore[attr-defined]
        if name in SUPERVISOR_ENV:
            raise _flag_error(
                "--secret",
                name,
                "OSCAR's supervisor reads this variable from the job's environment, where "
                "secrets go, so it would change how the job runs; choose another name, or "
                f"--env {name}=VALUE, which only the cell sees",
            )


def spec_of_service(service: Mapping[str, Any]) -> OffloadSpec:
    """What a runner service asks for, read back from its definition (for a job attached from
    another kernel: its node and walltime); fields it does not carry keep their defaults."""
    annotations = service.get("annotations") or {}
    flags = str(annotations.get("slurm-job.vk.io/flags") or "")
    read: dict[str, Any] = {}
    for word in flags.split():
        option, _, value = word.partition("=")
        if option in ("--time", "--partition", "--account", "--job-name") and value:
            read[option[2:].replace("-", "_")] = value
        elif option in ("--nodes", "--ntasks", "--ntasks-per-node") and value.isdigit():
            read[option[2:].replace("-", "_")] = int(value)
    if isinstance(annotations.get(MPI_ANNOTATION), str):  # the ranks, for the status line
        read["mpi"] = annotations[MPI_ANNOTATION] or MPI_ON
    elif max(read.get("ntasks", 1), read.get("ntasks_per_node", 1)) > 1:
        read["mpi"] = MPI_ON  # ranks the runner starts itself, on one node
    node = service.get("interlink_node_name")
    return OffloadSpec(node=node if isinstance(node, str) and node else None, **read)


def _check_variables(flag: str, variables: object, dict_example: str, flag_example: str) -> None:
    """`variables` must be a mapping of environment variable names we may set."""
    if not isinstance(variables, Mapping):
        what = flag.lstrip("-").replace("secret", "secrets")
        raise SpecError(
            flag,
            f"{flag}: pass {what} as a dict of NAME -> text value, not "
            f"{type(variables).__name__}, e.g. {dict_example}",
        )
    for name in variables:
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise _flag_error(
                flag,
                repr(name),
                "a variable name is letters, digits and '_', "
                f"not starting with a digit, e.g. {flag_example}",
            )
        if name in RESERVED_ENV or name.startswith(_RESERVED_ENV_PREFIXES):
            raise _flag_error(
                flag,
                name,
                "this variable is set by OSCAR, its supervisor or the runner; choose another name",
            )


def _check_unicode(code: str) -> None:
    """Refuse text that cannot be written as UTF-8 (lone surrogates), naming where it is."""
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as err:
        line = code.count("\n", 0, err.start) + 1
        column = err.start - (code.rfind("\n", 0, err.start) + 1) + 1
        raise SpecError(
            "code",
            f"code: line {line}, column {column} holds {code[err.start]!r}, "
            "half of a surrogate pair, which is not text; remove it or write the "
            "character whole",
        ) from None


def parse_count(option: str, text: object) -> int:
    """A count option's text -> int, with the same message `validate` gives for a bad count."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise _flag_error(
            option, text, f"use a whole number of at least 1, e.g. {option} 2"
        ) from None
    return value


def parse_env_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (name, value); the value is kept byte for byte."""
    if not isinstance(text, str):
        raise SpecError(
            "--env",
            f"--env: give each variable as 'NAME=VALUE' text, not "
            f"{type(text).__name__}, e.g. --env MY_VAR=value",
        )
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
    if isinstance(mounts, str):
        raise SpecError(
            "--mount",
            "--mount: give a list of 'SRC:DST[:ro|rw]' strings, e.g. ['/scratch/me:/data:ro']",
        )
    if mounts:
        settings["mounts"] = list(mounts)
    for name in ("uploads", "downloads"):
        items = options.get(name) or []
        if isinstance(items, str):  # the panel's text field: one a word
            items = items.split()
        if items:
            settings[name] = list(items)
    env_items = options.get("env") or []
    if isinstance(env_items, str):
        raise SpecError(
            "--env",
            "--env: give a list of 'NAME=VALUE' strings or a dict, e.g. ['OMP_NUM_THREADS=8']",
        )
    if isinstance(env_items, Mapping):
        settings["env"] = dict(env_items)
    elif env_items:
        settings["env"] = dict(parse_env_item(item) for item in env_items)
    return settings


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default
