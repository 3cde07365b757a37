"""``singularity exec|run`` emulated with bubblewrap, for machines without singularity/apptainer.

    python -m oscar_jupyter.local.singularity exec|run [options] IMAGE [CMD ARGS...]

No image can be pulled here, so the host's ``/usr`` and ``/etc`` (read-only) stand in for every
image's root; the image argument only names the container. ``--containall`` semantics always
apply: a clean environment, fresh ``/tmp``, ``/var/tmp`` and home, an own pid and IPC namespace,
and a read-only root. ``/supervisor`` holds the supervisor kit (see supervisor_kit.py), whose
``.binds`` lists host paths (its venv, the base python) bound read-only at their own path.
An image's own interpreter can be played too (``oscar-jupyter local start --job-python PATH``):
``$OSCAR_JUPYTER_JOB_PYTHON`` names a python3 that the container finds first on its PATH (as
``/opt/job-python/bin/python3``), its installation bound read-only at its own path.

B11 (reference OSCAR.md section 13): the plugin runs every container with ``--containall``
(plugin ``pkg/slurm/func.go`` 126, default ``SingularityDefaultOptions``), so apptainer makes
``/tmp``, ``/var/tmp`` and home in its session directory, a tmpfs capped by ``sessiondir max
size`` (64 MiB in the default apptainer.conf): data-heavy cells hit ENOSPC there. Each of the
three is a bwrap tmpfs of that size here (``--size``, bubblewrap 0.6 and later; apptainer
shares one cap among them, so a site may refuse a little sooner). ``$OSCAR_JUPYTER_SESSIONDIR``
``_MAX_SIZE`` (MiB, 0 = no cap; the wrapper ``runtime_command`` writes sets it) changes it.

The plugin's options that matter are honoured (``--bind``, ``--env-file``, ``--env``, ``--pwd``,
``--home``); the rest (``--nv``, ``--no-eval``, ``--containall``, ``--no-home``, ...) are accepted
and ignored. This file imports nothing from its package: the wrapper runs it as a plain script.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

KIT_BINDS_FILE = ".binds"
KIT_ENV = "OSCAR_JUPYTER_SUPERVISOR_KIT"
JOB_PYTHON_ENV = "OSCAR_JUPYTER_JOB_PYTHON"
JOB_PYTHON_DIR = "/opt/job-python/bin"  # first on the container's PATH when a job python is set
SESSIONDIR_ENV = "OSCAR_JUPYTER_SESSIONDIR_MAX_SIZE"
DEFAULT_SESSIONDIR_MAX_SIZE_MIB = 64  # apptainer.conf `sessiondir max size`
CACHE_ENV = "OSCAR_JUPYTER_CACHE"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROGRAM = "singularity (bubblewrap stand-in)"
FATAL_EXIT = 255
MAX_ENV_STRING = 131072  # the kernel's MAX_ARG_STRLEN, "NAME=value\0" included

# Options of singularity/apptainer exec|run that take a value; anything else is a flag.
_VALUE_OPTIONS = {
    "--bind",
    "-B",
    "--env-file",
    "--env",
    "--pwd",
    "--home",
    "-H",
    "--mount",
    "--no-mount",
    "--security",
    "--overlay",
    "-o",
    "--scratch",
    "-S",
    "--workdir",
    "-W",
    "--hostname",
    "--network",
    "--network-args",
    "--dns",
    "--apply-cgroups",
    "--app",
    "--fusemount",
    "--cpus",
    "--memory",
    "--memory-reservation",
    "--memory-swap",
    "--cpu-shares",
    "--cpuset-cpus",
    "--cpuset-mems",
    "--blkio-weight",
    "--blkio-weight-device",
    "--pids-limit",
    "--add-caps",
    "--drop-caps",
    "--pem-path",
    "--authfile",
    "--docker-host",
    "--docker-login",
    "--oci",
    "--config",
    "--library",
    "--keyserver",
    "--bind-path",
}
_FLAG_OPTIONS = {
    "--nv",
    "--nvccli",
    "--rocm",
    "--no-eval",
    "--containall",
    "-C",
    "--contain",
    "-c",
    "--cleanenv",
    "-e",
    "--no-home",
    "--no-init",
    "--no-privs",
    "--writable",
    "-w",
    "--writable-tmpfs",
    "--fakeroot",
    "-f",
    "--userns",
    "-u",
    "--ipc",
    "-i",
    "--pid",
    "-p",
    "--net",
    "-n",
    "--compat",
    "--no-https",
    "--nohttps",
    "--disable-cache",
    "--keep-privs",
    "--no-umask",
    "--allow-setuid",
    "--boot",
    "--uts",
    "--passphrase",
    "--sif-fuse",
    "--unsquash",
    "--no-setgroups",
    "--no-pid",
}
_GLOBAL_FLAGS = {
    "-q",
    "--quiet",
    "-s",
    "--silent",
    "-d",
    "--debug",
    "-v",
    "--verbose",
    "--nocolor",
    "-c",
    "--config",
}


class UsageError(Exception):
    """A bad command line or env file; the message names what to change."""


class EnvFileError(UsageError):
    pass


# --- env files ---------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _EnvFileParser:
    """POSIX shell assignments (``NAME=value``, quoted, ``export``, comments), as singularity reads
    an ``--env-file``: single quotes are literal, double quotes and bare words expand
    ``$NAME``/``${NAME}`` from earlier assignments, backslashes escape."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.values: dict[str, str] = {}

    def error(self, message: str) -> EnvFileError:
        line = self.text.count("\n", 0, self.pos) + 1
        return EnvFileError(f"{self.source}, line {line}: {message}")

    def parse(self) -> dict[str, str]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n;":
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                self._statement_word()
        return self.values

    def _statement_word(self) -> None:
        match = _NAME_RE.match(self.text, self.pos)
        if match and self.text.startswith("=", match.end()):
            self.pos = match.end() + 1
            self.values[match.group()] = self._word()
            return
        if match and match.group() == "export" and self._word_ends(match.end()):
            self.pos = match.end()
            return
        # The text itself is not shown: env files carry tokens.
        raise self.error("expected NAME=VALUE (a value with spaces or newlines needs quotes)")

    def _word_ends(self, index: int) -> bool:
        return index >= len(self.text) or self.text[index] in " \t\r\n;"

    def _word(self) -> str:
        text, out = self.text, []
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n;":
                break
            if char == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.error("unterminated single quote")
                out.append(text[self.pos + 1 : end])
                self.pos = end + 1
            elif char == '"':
                self.pos += 1
                out.append(self._double_quoted())
            elif char == "\\":
                following = text[self.pos + 1 : self.pos + 2]
                self.pos += 2
                if following != "\n":
                    out.append(following)
            elif char == "$":
                out.append(self._expansion())
            elif char in "`|&<>()":
                raise self.error(f"{char!r} is not allowed in a value; quote the value")
            else:
                out.append(char)
                self.pos += 1
        return "".join(out)

    def _double_quoted(self) -> str:
        text = self.text
        out: list[str] = []
        while True:
            if self.pos >= len(text):
                raise self.error("unterminated double quote")
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\" and text[self.pos + 1 : self.pos + 2] in ("$", "`", '"', "\\", "\n"):
                if text[self.pos + 1] != "\n":
                    out.append(text[self.pos + 1])
                self.pos += 2
            elif char == "$":
                out.append(self._expansion())
            elif char == "`":
                raise self.error("command substitution (`) is not supported; quote with '...'")
            else:
                out.append(char)
                self.pos += 1

    def _expansion(self) -> str:
        text = self.text
        start = self.pos + 1
        if text.startswith("{", start):
            end = text.find("}", start)
            name = text[start + 1 : end] if end > 0 else ""
            if not _NAME_RE.fullmatch(name):
                raise self.error("only ${NAME} expansions work; quote a literal $ with '...'")
            self.pos = end + 1
            return self.values.get(name, "")
        if text.startswith("(", start):
            raise self.error("command substitution $(...) is not supported; quote with '...'")
        match = _NAME_RE.match(text, start)
        if not match:
            self.pos += 1
            return "$"
        self.pos = match.end()
        return self.values.get(match.group(), "")


def parse_env_file(text: str, source: str = "env file") -> dict[str, str]:
    """The variables an env file assigns, in order."""
    return _EnvFileParser(text, source).parse()


# --- command line ---------------------------------------------------------------------------


@dataclass
class Bind:
    source: str
    destination: str
    read_only: bool


@dataclass
class Invocation:
    action: str  # "exec" | "run"
    image: str
    command: list[str]
    binds: list[Bind] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    pwd: str | None = None
    home: str | None = None
    ignored: list[str] = field(default_factory=list)


def parse_bind(spec: str) -> list[Bind]:
    """``SRC[:DST[:ro|rw]]``, several separated by commas."""
    binds = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        if len(parts) > 3:
            raise UsageError(f"--bind {item!r}: expected SRC[:DST[:ro|rw]]")
        source = parts[0]
        destination = parts[1] if len(parts) > 1 and parts[1] else source
        mode = parts[2] if len(parts) > 2 else "rw"
        if mode not in ("ro", "rw"):
            raise UsageError(f"--bind {item!r}: the mode must be ro or rw, not {mode!r}")
        if not destination.startswith("/"):
            raise UsageError(f"--bind {item!r}: the destination must be an absolute path")
        binds.append(Bind(os.path.abspath(source), os.path.normpath(destination), mode == "ro"))
    return binds


def parse_command_line(argv: list[str]) -> Invocation:
    args = list(argv)
    while args and args[0] in _GLOBAL_FLAGS:
        args.pop(0)
    if not args or args[0] not in ("exec", "run"):
        raise UsageError("usage: singularity exec|run [options] IMAGE [COMMAND ARGS...]")
    action = args.pop(0)
    invocation = Invocation(action=action, image="", command=[])
    while args and args[0].startswith("-") and args[0] != "-":
        option = args.pop(0)
        if option == "--":
            break
        name, has_value, value = option.partition("=")
        if name in _VALUE_OPTIONS and not has_value:
            if not args:
                raise UsageError(f"{name} needs a value")
            value = args.pop(0)
        elif name not in _VALUE_OPTIONS and name not in _FLAG_OPTIONS:
            print(f"{PROGRAM}: ignoring unknown option {option}", file=sys.stderr)
            invocation.ignored.append(option)
            continue
        if name in ("--bind", "-B"):
            invocation.binds.extend(parse_bind(value))
        elif name == "--env-file":
            invocation.env_files.append(value)
        elif name == "--env":
            invocation.env.extend(part for part in value.split(",") if part)
        elif name == "--pwd":
            invocation.pwd = value
        elif name in ("--home", "-H"):
            invocation.home = value
        else:
            invocation.ignored.append(option)
    if not args:
        raise UsageError(f"singularity {action}: missing the IMAGE argument")
    invocation.image = args.pop(0)
    invocation.command = args
    if action == "exec" and not args:
        raise UsageError("singularity exec: missing the COMMAND to run in the container")
    return invocation


# --- the container ----------------------------------------------------------------------------


def default_supervisor_kit(cache: Path | None = None) -> Path:
    """Where supervisor_kit.ensure_supervisor_kit() puts the kit (the image's /supervisor)."""
    if cache is None:
        configured = os.environ.get(CACHE_ENV)
        cache = Path(configured) if configured else Path.home() / ".cache" / "oscar-jupyter"
    return Path(cache) / "supervisor-kit" / "kit"


def _supervisor_kit() -> Path | None:
    configured = os.environ.get(KIT_ENV)
    kit = Path(configured) if configured else default_supervisor_kit()
    return kit if kit.is_dir() else None


def job_python() -> str | None:
    """The interpreter that plays the image's python3 (``$OSCAR_JUPYTER_JOB_PYTHON``), resolved;
    None for the host's own."""
    configured = os.environ.get(JOB_PYTHON_ENV)
    return os.path.realpath(configured) if configured else None


def installation_of(python: str) -> str:
    """The folder to bind for `python` to work in the container: the one above its ``bin/``
    (where its standard library is), else its own folder."""
    folder = os.path.dirname(python)
    return os.path.dirname(folder) if os.path.basename(folder) == "bin" else folder


def container_environment(
    invocation: Invocation, home: str, python: str | None = None
) -> dict[str, str]:
    name = Path(invocation.image.split("://", 1)[-1]).name or "container"
    environment = {
        "PATH": f"{JOB_PYTHON_DIR}:{DEFAULT_PATH}" if python else DEFAULT_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "PS1": "Singularity> ",
        "SINGULARITY_CONTAINER": invocation.image,
        "SINGULARITY_NAME": name,
        "APPTAINER_CONTAINER": invocation.image,
        "APPTAINER_NAME": name,
    }
    for env_file in invocation.env_files:
        try:
            raw = Path(env_file).read_bytes()
        except OSError as error:
            raise UsageError(f"--env-file {env_file}: {error.strerror}") from None
        text = raw.decode("utf-8", errors="surrogateescape")
        environment.update(parse_env_file(text, env_file))
    for assignment in invocation.env:
        name_, equals, value = assignment.partition("=")
        if not equals or not _NAME_RE.fullmatch(name_):
            raise UsageError(f"--env: expected NAME=VALUE, got a word starting {name_[:20]!r}")
        environment[name_] = value
    for name_, value in environment.items():
        if "\0" in value:
            raise UsageError(f"variable {name_} contains a NUL byte, which no environment holds")
        size = len(name_.encode()) + len(value.encode("utf-8", "surrogateescape")) + 2
        if size > MAX_ENV_STRING:
            raise UsageError(
                f"variable {name_} is {size} bytes; Linux passes at most {MAX_ENV_STRING} bytes "
                "per variable (MAX_ARG_STRLEN, the same under real singularity): send large "
                "data through storage instead"
            )
    return environment


def _root_layout() -> list[str]:
    """The host's /usr and /etc, read-only, as the image's root."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args + ["--ro-bind", "/etc", "/etc"]


def _covered_by_root(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in ("/usr", "/etc"))


def _session_tmpfs(path: str, size_bytes: int) -> list[str]:
    """A fresh tmpfs at ``path``, capped at ``size_bytes`` (0: the kernel's default)."""
    return (["--size", str(size_bytes)] if size_bytes > 0 else []) + ["--tmpfs", path]


def sessiondir_size_bytes(environment: dict[str, str] | None = None) -> int:
    """The session directory cap in bytes from ``$OSCAR_JUPYTER_SESSIONDIR_MAX_SIZE`` (MiB),
    64 MiB when unset, 0 (no cap) for 0."""
    raw = (os.environ if environment is None else environment).get(SESSIONDIR_ENV, "")
    if not raw.strip():
        return DEFAULT_SESSIONDIR_MAX_SIZE_MIB * 1024 * 1024
    try:
        mib = int(raw)
    except ValueError:
        raise UsageError(f"{SESSIONDIR_ENV}={raw!r} is not a whole number of MiB") from None
    if mib < 0:
        raise UsageError(f"{SESSIONDIR_ENV}={raw!r} must not be negative")
    return mib * 1024 * 1024


def bwrap_arguments(
    invocation: Invocation,
    home: str,
    kit: Path | None,
    python: str | None = None,
    tmp_size_bytes: int = 0,
) -> list[str]:
    args = ["bwrap", *_root_layout()]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # apptainer mounts the host's /sys (`mount sys = yes`): MPI's hwloc reads the CPUs there.
    args += ["--ro-bind", "/sys", "/sys"]
    args += _session_tmpfs("/tmp", tmp_size_bytes) + _session_tmpfs("/var/tmp", tmp_size_bytes)
    if invocation.home and ":" in invocation.home:
        source, destination = invocation.home.split(":", 1)
        args += ["--bind", os.path.abspath(source), destination]
    elif invocation.home:
        args += ["--bind", os.path.abspath(invocation.home), invocation.home]
    else:
        args += _session_tmpfs(home, tmp_size_bytes)
    if kit is not None:
        args += ["--ro-bind", str(kit), "/supervisor"]
        for line in _read_lines(kit / KIT_BINDS_FILE):
            if Path(line).exists() and not _covered_by_root(line):
                args += ["--ro-bind", line, line]
    for bind in invocation.binds:
        if not os.path.exists(bind.source):
            raise UsageError(
                f"--bind {bind.source}:{bind.destination}: the source {bind.source} does not exist"
            )
        args += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.destination]
    if python is not None:  # after the tmpfs mounts: the installation may be under /tmp
        installation = installation_of(python)
        if not _covered_by_root(installation):
            args += ["--ro-bind", installation, installation]
        args += ["--symlink", python, f"{JOB_PYTHON_DIR}/python3"]
    args += ["--remount-ro", "/", "--chdir", invocation.pwd or home]
    # The network namespace is the host's, as with apptainer's defaults (--containall does not
    # unshare it): jobs reach the local object store on loopback, as a site's reach MinIO.
    args += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--"]
    if invocation.command:
        args += invocation.command
    else:
        args += ["/bin/sh"]
    return args


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _home_path(invocation: Invocation) -> str:
    if invocation.home:
        return invocation.home.split(":", 1)[-1]
    return os.environ.get("HOME") or "/root"


def main(argv: list[str] | None = None) -> int:
    """Replace this process with bubblewrap; returns only on a usage error."""
    try:
        invocation = parse_command_line(sys.argv[1:] if argv is None else argv)
        if invocation.image.startswith("/") and not Path(invocation.image).exists():
            # A site ImagePrefix (e.g. /cvmfs/unpacked.cern.ch/) in front of docker://...:
            # singularity cannot open such a path, and neither do we.
            raise UsageError(
                f"could not open image {invocation.image}: failed to retrieve path for "
                f"{invocation.image}: lstat {invocation.image}: no such file or directory"
            )
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise UsageError(
                "bubblewrap (bwrap) is not installed; run scripts/slurm-cluster.sh install "
                "or apt-get install bubblewrap"
            )
        home = _home_path(invocation)
        python = job_python()
        if python is not None and not os.access(python, os.X_OK):
            raise UsageError(
                f"{JOB_PYTHON_ENV}={python} is not an executable file; give the path of a "
                "python3 (oscar-jupyter local start --job-python PATH)"
            )
        environment = container_environment(invocation, home, python)
        args = bwrap_arguments(invocation, home, _supervisor_kit(), python, sessiondir_size_bytes())
    except UsageError as error:
        print(f"FATAL: {error}", file=sys.stderr)
        return FATAL_EXIT
    sys.stdout.flush()
    sys.stderr.flush()
    # bwrap's own environment becomes the container's: nothing from the host gets through.
    try:
        os.execve(bwrap, args, environment)
    except OSError as error:
        print(f"FATAL: could not start {bwrap}: {error.strerror}", file=sys.stderr)
    return FATAL_EXIT


# --- the plugin's SingularityPath ------------------------------------------------------------


class ContainerRuntimeError(RuntimeError):
    pass


def _version_of(program: str) -> str:
    try:
        result = subprocess.run(
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return Path(program).name
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else Path(program).name


def bwrap_caps_tmpfs(bwrap: str) -> bool:
    """Whether this bubblewrap has ``--size`` (a size cap for the next ``--tmpfs``; 0.6+)."""
    try:
        result = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in result.stdout + result.stderr


def runtime_command(
    home: Path,
    supervisor_kit: Path | None = None,
    job_python: str | None = None,
    *,
    sessiondir_max_size_mib: int = DEFAULT_SESSIONDIR_MAX_SIZE_MIB,
) -> tuple[str, str]:
    """(the plugin's SingularityPath, a human description of the container runtime).

    A real singularity or apptainer on PATH wins (its own apptainer.conf caps its session
    directory); otherwise ``home/bin/singularity`` is written: a wrapper that runs this file
    with the current python, names the supervisor kit and the `job_python` that plays the
    image's python3, and caps ``/tmp``, ``/var/tmp`` and home at ``sessiondir_max_size_mib`` MiB
    (B11; 0 = no cap; no cap either with a bubblewrap that lacks ``--size``, which the
    description then says).
    """
    if sessiondir_max_size_mib < 0:
        raise ValueError("the session directory size must not be negative (0 = no cap)")
    if job_python is not None:
        job_python = os.path.abspath(job_python)
        if not (os.path.isfile(job_python) and os.access(job_python, os.X_OK)):
            raise ContainerRuntimeError(
                f"--job-python {job_python}: not an executable file; give the path of a python3"
            )
    for name in ("singularity", "apptainer"):
        found = shutil.which(name)
        if found and job_python is None:
            return found, _version_of(found)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ContainerRuntimeError(
            "no container runtime: install bubblewrap (apt-get install bubblewrap, or "
            "scripts/slurm-cluster.sh install), singularity or apptainer"
        )
    version = _version_of(bwrap).replace("bubblewrap ", "")
    size = sessiondir_max_size_mib
    if size and bwrap_caps_tmpfs(bwrap):
        tmp_note = f"/tmp capped at {size} MiB"
    elif size:
        tmp_note = f"/tmp NOT capped: bubblewrap {version} has no --size (a site caps it)"
        size = 0
    else:
        tmp_note = "/tmp not capped (asked for)"
    wrapper = Path(home) / "bin" / "singularity"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", f"# Written by oscar-jupyter: {PROGRAM}."]
    if supervisor_kit is not None:
        lines.append(f"{KIT_ENV}={shlex.quote(str(supervisor_kit))}; export {KIT_ENV}")
    if job_python is not None:
        lines.append(f"{JOB_PYTHON_ENV}={shlex.quote(job_python)}; export {JOB_PYTHON_ENV}")
    else:  # only the server's option sets it, not a variable left in a job's environment
        lines.append(f"unset {JOB_PYTHON_ENV}")
    lines.append(f"{SESSIONDIR_ENV}={size}; export {SESSIONDIR_ENV}")
    lines.append(
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} "$@"'
    )
    text = "\n".join(lines) + "\n"
    temporary = wrapper.with_name(f".singularity.{os.getpid()}")
    temporary.write_text(text)
    temporary.chmod(0o755)
    os.replace(temporary, wrapper)
    description = f"bubblewrap {version} (emulates singularity exec --containall; {tmp_note})"
    if job_python is not None:
        description += f"; the image's python3 is {job_python}"
    return str(wrapper), description


if __name__ == "__main__":
    sys.exit(main())
