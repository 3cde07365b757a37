"""The one table of `%%oscar_offload` options.

Everything that lists the options is made from `OPTIONS`: the magic's parser and its help, the
flags that take a value, `OffloadSpec.to_flags()`, the conversion of option text to spec fields
(`spec.settings_from_options`), the panel's labels and placeholders, and the flag table in the
README (`python -m oscar_jupyter.options` prints it; a test holds the README to it).
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

# What an option's value is: one text, a whole number, a repeatable text, a repeatable
# comma-separated list of names, a switch, one of `choices`, or a text that may be left out
# ("optional": the bare flag gives `const`).
KINDS = ("text", "count", "repeat", "names", "switch", "choice", "optional")


@dataclass(frozen=True)
class Option:
    flag: str  # as typed: "--cpus-per-task"
    kind: str  # one of KINDS
    metavar: str  # "N", "NAME=VALUE", ...
    help: str  # one line: the parser's help and the magic's docstring
    becomes: str  # the README's "becomes" column: what it does on the cluster
    field: str | None = None  # the OffloadSpec field it sets; None: how the cell runs
    label: str = ""  # the panel's label ("": not a panel text field of its own)
    placeholder: str = ""  # the panel's placeholder
    choices: tuple[str, ...] = ()
    const: str = ""  # an "optional" option's value when its flag comes alone
    also_typed: tuple[str, ...] = ()  # what people type for it ("did you mean --in?")

    @property
    def dest(self) -> str:
        """The parser's attribute: the spec field, else the flag with underscores."""
        names = {"--in": "inputs", "--out": "outputs", "-o": "output_name"}
        return self.field or names.get(self.flag) or self.flag.lstrip("-").replace("-", "_")

    @property
    def takes_value(self) -> bool:
        return self.kind != "switch"

    @property
    def usage(self) -> str:
        """'--time T', '--mount SRC:DST[:ro] (repeatable)', '--dry-run'."""
        if self.kind == "optional":
            return f"{self.flag} [{self.metavar}]"
        text = f"{self.flag} {self.metavar}" if self.metavar else self.flag
        return text + (" (repeatable)" if self.kind == "repeat" else "")


OPTIONS: tuple[Option, ...] = (
    Option(
        "--node",
        "text",
        "NAME",
        "the interLink virtual node (HPC site) to run on",
        "the service's `interlink_node_name`, required (from the cell, the panel, "
        "`%config OscarMagics.default_node` or the profile): without it OSCAR runs the pod on an "
        "ordinary node where it never starts. Checked against the virtual nodes that OSCAR's "
        "`/system/status`, else the Kubernetes API (a kubeconfig at hand), else the profile's "
        "`jupyter: {nodes: [...]}` lists; unchecked, with one warning, when none knows them",
        field="node",
        also_typed=("--vnode", "--site"),
        label="Virtual node",
    ),
    Option(
        "--time",
        "text",
        "T",
        "Slurm walltime, e.g. 02:30:00",
        "`--time` for sbatch (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)",
        field="time",
        label="Walltime",
        placeholder="HH:MM:SS, e.g. 02:30:00",
        also_typed=("--walltime", "--time-limit", "-t"),
    ),
    Option(
        "--cpus-per-task",
        "count",
        "N",
        "CPUs of the cell's task",
        "the service's `cpu` (the Slurm plugin turns it into `--cpus-per-task`)",
        field="cpus_per_task",
        label="CPUs per task",
        placeholder="e.g. 8",
        also_typed=("--cpus", "--cpu", "-c"),
    ),
    Option(
        "--mem",
        "text",
        "M",
        "memory, e.g. 32G or 32Gi",
        "the service's `memory` (the Slurm plugin turns it into `--mem`); `M` in Slurm units "
        "(`32G`) or Kubernetes quantities (`32Gi`)",
        field="mem",
        label="Memory",
        placeholder="e.g. 32G",
        also_typed=("--memory",),
    ),
    Option(
        "--nodes",
        "count",
        "N",
        "Slurm nodes (more than one with --mpi)",
        "`--nodes` in `slurm-job.vk.io/flags`; more than one node needs `--mpi`",
        field="nodes",
        label="Nodes",
        placeholder="e.g. 1",
    ),
    Option(
        "--ntasks",
        "count",
        "T",
        "Slurm tasks: the cell runs as T ranks (with --mpi)",
        "`--ntasks` in `slurm-job.vk.io/flags`; more than one task needs `--mpi` (else the cell "
        "would run once while Slurm holds the rest)",
        field="ntasks",
        label="Tasks (ranks)",
        placeholder="e.g. 4, with MPI",
        also_typed=("--tasks", "--num-tasks"),
    ),
    Option(
        "--ntasks-per-node",
        "count",
        "M",
        "Slurm tasks on each node (with --mpi)",
        "`--ntasks-per-node` in `slurm-job.vk.io/flags`; more than one task needs `--mpi`",
        field="ntasks_per_node",
        label="Tasks per node",
        placeholder="e.g. 4, with MPI",
        also_typed=("--tasks-per-node",),
    ),
    Option(
        "--mpi",
        "optional",
        "FLAGS",
        "run the cell as one rank per task (FLAGS: more mpiexec flags)",
        "on one node (`--nodes 1`, the default with `--ntasks`): the job's runner starts the "
        "cell once per task inside the container, through the image's `mpiexec -np T FLAGS` "
        "where it has one (mpi4py's `COMM_WORLD` holds every rank), with `RANK`, `WORLD_SIZE`, "
        "`LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1`, `MASTER_PORT` set "
        "(torch.distributed `env://`), on every plugin release. More than one node needs the "
        "site's plugin to "
        "start the container as `mpiexec -np $SLURM_NTASKS FLAGS ...` "
        "(`slurm-job.vk.io/mpi-flags`), which interlink-slurm-plugin up to 0.6.2-pre5 ignores "
        "(`prepare.go` changes a copy of each container command): refused unless the profile "
        "says the site's plugin applies it (`jupyter: {mpi_flags: true}`)",
        field="mpi",
        const="on",
        label="MPI",
        placeholder="on, or mpiexec flags, e.g. --oversubscribe",
        also_typed=("--mpiexec", "--mpirun", "--mpi-flags"),
    ),
    Option(
        "--ranks",
        "text",
        "0|all",
        "whose output the cell shows: rank 0's and every rank's stderr (0), or every rank's",
        "nothing on the cluster: with several ranks the cell shows rank 0's output and every "
        "rank's stderr and errors (`0`, the default), or every rank's output (`all`), each "
        "other rank's lines (every line, with `all`) labelled `[r3]`; `%oscar_logs JOB --rank 3` "
        "shows one rank's",
        field="ranks",
        label="Ranks shown",
        placeholder="0 (default) or all",
        also_typed=("--show-ranks", "--rank"),
    ),
    Option(
        "--job-name",
        "text",
        "NAME",
        "Slurm job name",
        "`--job-name` in `slurm-job.vk.io/flags`",
        field="job_name",
        label="Job name",
        placeholder="generated",
    ),
    Option(
        "--partition",
        "text",
        "NAME",
        "Slurm partition",
        "`--partition` in `slurm-job.vk.io/flags`",
        field="partition",
        label="Partition",
        placeholder="site default",
        also_typed=("-p", "--queue"),
    ),
    Option(
        "--account",
        "text",
        "NAME",
        "Slurm account (project)",
        "`--account` in `slurm-job.vk.io/flags`",
        field="account",
        label="Account",
        placeholder="site default",
        also_typed=("-A", "--project"),
    ),
    Option(
        "--gpus",
        "count",
        "N",
        "GPUs",
        "`--gres=gpu:N` in the sbatch flags; `enable_gpu` only where the profile says the site "
        "schedules GPUs (`jupyter: {gpu_scheduling: true}`), since elsewhere the pod's GPU limit "
        "is never scheduled",
        field="gpus",
        label="GPUs",
        placeholder="e.g. 1",
        also_typed=("--gpu", "--gres"),
    ),
    Option(
        "--image",
        "text",
        "IMG",
        "container image: an OCI reference or an absolute .sif path",
        "the container image. A bare reference gets the site's image prefix (`jupyter: "
        "{image_prefix: ...}`, default `docker://`); other schemes (`library://`, `oras://`) "
        "only where the profile says the site's plugin keeps them (`jupyter: {image_schemes: "
        "true}`; plugin 0.6.1 does not)",
        field="image",
        also_typed=("--container",),
        label="Image",
    ),
    Option(
        "--mount",
        "repeat",
        "SRC:DST[:ro]",
        "a path of the HPC file system in the container",
        "`--bind` in `slurm-job.vk.io/singularity-mounts`",
        field="mounts",
        also_typed=("--bind", "--volume", "-v"),
        label="Mounts",
    ),
    Option(
        "--pre-exec",
        "text",
        "CMD",
        "shell commands run before the container, e.g. module load apptainer",
        "`slurm-job.vk.io/pre-exec` (e.g. `module load apptainer`)",
        field="pre_exec",
        also_typed=("--preexec", "--before"),
        label="Pre-exec",
        placeholder="shell commands run before the cell, e.g. module load cuda",
    ),
    Option(
        "--singularity-options",
        "text",
        "OPTS",
        "options of singularity exec, e.g. --nv",
        "`slurm-job.vk.io/singularity-options`",
        field="singularity_options",
        label="Singularity options",
        placeholder="e.g. --nv --cleanenv",
    ),
    Option(
        "--sbatch",
        "text",
        '"FLAGS"',
        "more sbatch flags, e.g. '--qos=normal --exclusive'",
        "more sbatch flags (those the plugin drops or that break it are refused: `--output`, "
        "`--error`, `--parsable`, `--mem-per-cpu`, ...)",
        field="sbatch",
        label="Extra sbatch flags",
        placeholder="e.g. --qos=debug --constraint=gpu",
    ),
    Option(
        "--prefix",
        "text",
        "NAME",
        "first part of the runner service's name (default oj)",
        "the first part of the runner service's name (default `oj`): cells with another prefix "
        "use other runner services",
        field="prefix",
    ),
    Option(
        "--env",
        "repeat",
        "NAME=VALUE",
        "an environment variable of the cell",
        "an environment variable of the cell, set before its Python starts (so `PYTHONPATH`, "
        "`LD_LIBRARY_PATH` work); any value survives byte for byte. It travels in the job, not "
        "the service: readable by whoever can read the job's log, so not for secrets",
        field="env",
        also_typed=("--environment", "-e", "--var"),
        label="Environment variables",
    ),
    Option(
        "--secret",
        "repeat",
        "NAME",
        "a secret variable of the cell: the kernel's $NAME, else asked for",
        "a secret environment variable of the cell: its value is the kernel's `$NAME` (else "
        "asked for; `oscar_jupyter.ask_secret('NAME')` sets it without a trace; the panel's "
        "Secrets field takes names only), sent in the service's `environment.secrets` (a "
        "Kubernetes Secret that OSCAR blanks when read), never in the job, a log or the dry "
        "run. `secrets={...}` in the Python API",
        field="secrets",
        # Names only: each value comes from the kernel's environment, never from a widget
        # (widget state is saved in the notebook).
        label="Secrets (names)",
        placeholder="e.g. API_TOKEN HF_TOKEN",
        also_typed=("--secrets", "--token"),
    ),
    Option(
        "--in",
        "names",
        "NAME[,NAME...]",
        "notebook variables the cell receives",
        "notebook variables the cell receives (a pickle, protocol 4; refused before sending "
        "when a value cannot be pickled or holds a function or class defined in the notebook). "
        "Small values travel in the job; above 32 KiB they go through the user's bucket on the "
        "cluster's object storage, any size, checked by size and SHA-256",
        also_typed=("--inputs", "--input", "--send"),
    ),
    Option(
        "--out",
        "names",
        "NAME[,NAME...]",
        "variables the cell sends back to the notebook",
        "variables the cell sends back into the notebook when it succeeds, checked by size and "
        "SHA-256 (a damaged result is an error, never a value): in the job's log up to 512 KiB, "
        "above that through the user's bucket, any size (at most 8 MB where the cluster has no "
        "object storage); with `--no-wait`, `job.result()` returns them",
        also_typed=("--outputs", "--output", "--return"),
    ),
    Option(
        "--out-ranks",
        "text",
        "0|all",
        "whose --out values come back: rank 0's (0), or a list of every rank's (all)",
        "with several ranks, each `--out` name is bound to rank 0's value (`0`, the default) or "
        "to a list of every rank's, rank 0 first (`all`: each rank sends its own values, "
        "checked as rank 0's are, its share of the log's bound each). Needs `--out` and more "
        "than one rank; not a panel field, as `--out` is the cell's own. `out_ranks='all'` in "
        "the Python API",
        # Not in the panel (no label): a kernel-wide default would refuse every cell without
        # --out or without ranks.
        field="out_ranks",
        also_typed=("--outputs-ranks", "--out-rank", "--values-ranks"),
    ),
    Option(
        "--upload",
        "repeat",
        "LOCAL[:REMOTE]",
        "a file or folder of this machine, copied into the job before the cell runs",
        "a file or folder of this machine, put in the user's bucket on the cluster's object "
        "storage (OSCAR's MinIO) and written at `REMOTE` in the job before the cell runs "
        "(default `/tmp/<name>`; `REMOTE` absolute); checked by size and SHA-256. The job gets a "
        "presigned URL for that object alone, never the user's keys. `uploads=[...]` in the "
        "Python API",
        field="uploads",
        also_typed=("--uploads", "--put", "--copy-in"),
        label="Uploads",
        placeholder="LOCAL[:REMOTE] ..., e.g. data.csv:/tmp/data.csv",
    ),
    Option(
        "--download",
        "repeat",
        "REMOTE[:LOCAL]",
        "a file or folder of the job, copied here after the cell ends (also when it failed)",
        "a file or folder the job leaves at `REMOTE` (absolute), brought back to `LOCAL` "
        "(default: its name in the notebook's folder) after the cell ends, also when it "
        "failed, through the user's bucket; checked by size and SHA-256; what is missing is "
        "said, not an error. `downloads=[...]` in the Python API",
        field="downloads",
        also_typed=("--downloads", "--get", "--copy-out"),
        label="Downloads",
        placeholder="REMOTE[:LOCAL] ..., e.g. /tmp/model.pt",
    ),
    Option(
        "--session",
        "text",
        "NAME",
        "run the cell in persistent session NAME (%oscar_session start NAME ...)",
        "run the cell in the session's Python, started with `%oscar_session start NAME` on its "
        "own allocation: no new job, variables kept between cells; `--in`/`--out` as usual, "
        "resources are the session's",
        also_typed=("--sess",),
    ),
    Option(
        "--dry-run",
        "switch",
        "",
        "show what would be sent, send nothing",
        "print a summary (node, resources, image, sbatch flags), the service as FDL that "
        "`oscar-cli apply` accepts, the job request, and last the runner script; send nothing",
        also_typed=("--dryrun", "-n"),
    ),
    Option(
        "--no-wait",
        "switch",
        "",
        "return at once; a live view keeps updating",
        "return at once; a live job view in the cell keeps updating while other cells run",
        also_typed=("--nowait", "--async", "--background"),
    ),
    Option(
        "-o",
        "text",
        "NAME",
        "keep the Job handle in this variable",
        "keep the `Job` handle in variable `NAME`",
    ),
    Option(
        "--timeout",
        "text",
        "SECONDS",
        "give up (and cancel) after this many seconds",
        "give up (and cancel) after this long",
    ),
    Option(
        "--on-interrupt",
        "choice",
        "cancel|detach",
        "what Ctrl-C does to the remote job (default: cancel)",
        "what Ctrl-C does to the remote job (default: cancel)",
        choices=("cancel", "detach"),
    ),
)

BY_FLAG = {option.flag: option for option in OPTIONS}
BY_FIELD = {option.field: option for option in OPTIONS if option.field}
VALUE_FLAGS = frozenset(
    option.flag for option in OPTIONS if option.takes_value and option.kind != "optional"
)
# Flags whose value may be left out: the next word is their value unless it is a flag of ours.
OPTIONAL_FLAGS = frozenset(option.flag for option in OPTIONS if option.kind == "optional")
TEXT_FIELDS = tuple(o.field for o in OPTIONS if o.field and o.kind in ("text", "optional"))
COUNT_FIELDS = tuple(o.field for o in OPTIONS if o.field and o.kind == "count")


def add_to(parser: argparse.ArgumentParser, options: Iterable[Option] = OPTIONS) -> None:
    """Declare `options` on an argparse parser (the magic's)."""
    for option in options:
        if option.kind == "switch":
            parser.add_argument(
                option.flag, action="store_true", dest=option.dest, help=option.help
            )
        elif option.kind in ("repeat", "names"):
            parser.add_argument(
                option.flag, action="append", default=[], dest=option.dest, help=option.help
            )
        elif option.kind == "optional":
            parser.add_argument(
                option.flag,
                dest=option.dest,
                help=option.help,
                nargs="?",
                const=option.const,
                metavar=option.metavar or None,
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.dest,
                help=option.help,
                choices=option.choices or None,
                metavar=option.metavar or None,
            )


class OptionError(ValueError):
    """A line of options that does not parse; the message names the flag to write instead."""


class OptionParser(argparse.ArgumentParser):
    """argparse that raises `OptionError` (argparse would exit the kernel) with a message that
    names the closest flag instead of printing the whole usage."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise OptionError(f"{self.prog}: {self._explain(message)}")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        for option in OPTIONS:
            # argparse drops a "--" value (`--sbatch=--`) and leaves []: the value was "--",
            # which the option's own check then refuses with its own message.
            text_like = option.kind in ("text", "choice", "optional")
            if text_like and getattr(parsed, option.dest, None) == []:
                setattr(parsed, option.dest, "--")
        return parsed

    def _explain(self, message: str) -> str:
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return f"{message} (all flags: {self.prog}?)"
        words = message[len(prefix) :].split()
        flags = [w for w in words if w.startswith("-")]
        if not flags:
            word = words[0] if words else ""
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
                return f"unexpected word {word!r}: give each variable its own --env: --env {word}"
            return (
                f"unexpected word {word!r}: a value with spaces needs quotes "
                f"(all flags: {self.prog}?)"
            )
        flag = flags[0].split("=", 1)[0]
        known = [o for o in self._option_string_actions if o.startswith("-")]
        close = closest_flag(flag, known)
        if close:
            return f"unknown flag {flag}: did you mean {close}?"
        return f"unknown flag {flag} (all flags: {self.prog}?)"


def split_words(line: str, value_flags: Iterable[str] = ()) -> list[str]:
    """A line as the shell splits it, with `--opt value` joined into `--opt=value` (for the
    offload options and `value_flags`) so that values starting with '-' (`--sbatch
    "--exclusive"`) are not read as flags. A flag whose value may be left out (`--mpi`) takes
    the next word unless that word is one of the offload flags (`--mpi --ntasks 2`: bare)."""
    takes_value = VALUE_FLAGS | set(value_flags)
    try:
        words = shlex.split(line)
    except ValueError as err:
        raise OptionError(f"cannot split the flags ({err}): close the quote") from None
    joined: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in takes_value and index + 1 < len(words):
            joined.append(f"{word}={words[index + 1]}")
            index += 2
        elif (
            word in OPTIONAL_FLAGS
            and index + 1 < len(words)
            and not _is_offload_flag(words[index + 1])
        ):
            joined.append(f"{word}={words[index + 1]}")
            index += 2
        else:
            joined.append(word)
            index += 1
    return joined


def _is_offload_flag(word: str) -> bool:
    return word.split("=", 1)[0] in BY_FLAG or any(
        word == typed for option in OPTIONS for typed in option.also_typed
    )


def offload_parser(prog: str = "%%oscar_offload") -> OptionParser:
    parser = OptionParser(prog)
    add_to(parser)
    return parser


def parse_line(line: str | Sequence[str]) -> dict[str, Any]:
    """The options of a `%%oscar_offload` line (a leading `%%oscar_offload` is skipped), by
    `Option.dest`; raises `OptionError`."""
    words = split_words(line) if isinstance(line, str) else list(line)
    if words and words[0].lstrip("%") == "oscar_offload":
        words = words[1:]
    parsed: dict[str, Any] = vars(offload_parser().parse_args(words))
    return parsed


def quote(word: str) -> str:
    """A word as a person would type it in the magic's line: bare when it is safe, else in
    single quotes, else in double quotes when that needs no escape."""
    if word and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    if "'" not in word:
        return f"'{word}'"
    if not re.search(r'["$`\\!]', word):
        return f'"{word}"'
    return shlex.quote(word)


def flag_help(width: int = 26) -> str:
    """The flags, one a line, for the magic's docstring."""
    return "\n".join(f"  {option.usage:<{width}} {option.help}" for option in OPTIONS)


def readme_table() -> str:
    """The README's table of `%%oscar_offload` flags."""
    rows = ["| flag | becomes |", "|---|---|"]
    for option in OPTIONS:
        usage = f"`{option.usage}`" if option.metavar else f"`{option.flag}`"
        usage = usage.replace("|", "\\|").replace(" (repeatable)`", "`")
        usage += " (repeatable)" if option.kind == "repeat" else ""
        rows.append(f"| {usage} | {option.becomes} |")
    return "\n".join(rows)


def closest_flag(typed: str, known: Iterable[str]) -> str | None:
    """The flag someone who typed `typed` most likely meant: what people type for it
    (`--inputs` -> `--in`), else the most similar known flag."""
    for option in OPTIONS:
        if typed in option.also_typed:
            return option.flag
    close = difflib.get_close_matches(typed, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def to_pairs(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Spec field values -> (flag, value) in table order: one pair per mount, variable and
    secret name (secret values stay in the kernel's environment)."""
    pairs: list[tuple[str, str]] = []
    for option in OPTIONS:
        if option.field is None or option.field not in values:
            continue
        value = values[option.field]
        if option.field == "env":
            pairs += [(option.flag, f"{name}={text}") for name, text in dict(value).items()]
        elif option.kind == "repeat":
            pairs += [(option.flag, str(item)) for item in value]  # secrets: the names
        else:
            pairs.append((option.flag, str(value)))
    return pairs


def render(pairs: Iterable[tuple[str, str]]) -> str:
    """The magic's line for `pairs`: `--time 02:30:00`, and `--sbatch=--exclusive` where a
    value starting with '-' would read as a flag."""
    words = ["%%oscar_offload"]
    for flag, value in pairs:
        option = BY_FLAG.get(flag)
        if option is not None and option.kind == "optional" and value == option.const:
            words.append(flag)
        elif value.startswith("-"):
            words.append(quote(f"{flag}={value}"))
        else:
            words += [flag, quote(value)]
    return " ".join(words)


if __name__ == "__main__":
    print(readme_table())
